/** Log events of the systemd integration (sd_notify sender, watchdog). */
import type { Formatters } from '../log.ts';

export type SystemdEvent =
  | { readonly kind: 'notify.failed'; readonly fields: string; readonly message: string }
  | { readonly kind: 'notify.dropped'; readonly fields: string; readonly pending: number }
  | { readonly kind: 'watchdog.started'; readonly intervalMs: number }
  | { readonly kind: 'watchdog.not-ours'; readonly watchdogPid: string };

export const systemdFormatters: Formatters<SystemdEvent> = {
  'notify.failed': (e) => ({ level: 'warning', text: `sd_notify ${e.fields} failed: ${e.message}` }),
  'notify.dropped': (e) => ({ level: 'warning', text: `sd_notify ${e.fields} dropped: ${e.pending} notifications already waiting` }),
  'watchdog.started': (e) => ({ level: 'info', text: `systemd watchdog: WATCHDOG=1 every ${e.intervalMs} ms` }),
  'watchdog.not-ours': (e) => ({ level: 'info', text: `systemd watchdog is for pid ${e.watchdogPid}, not this process; not sending WATCHDOG=1` }),
};
