/**
 * Log events of the openvpn runtime (supervisor, leftover cleanup). Every
 * event names the instance it is about, so one journal shows many networks
 * side by side; the formatter table makes the compiler refuse an event kind
 * without a line format.
 */
import type { Formatters } from '../log.ts';
import type { HealthVerdict } from './health.ts';
import type { InstanceState } from './supervisor-state.ts';

export type OpenvpnEvent =
  | { readonly kind: 'openvpn.transition'; readonly id: string; readonly from: InstanceState; readonly to: InstanceState; readonly cause: string }
  | { readonly kind: 'openvpn.spawned'; readonly id: string; readonly pid: number; readonly argv: readonly string[] }
  | { readonly kind: 'openvpn.spawn-failed'; readonly id: string; readonly code: string; readonly message: string }
  | { readonly kind: 'openvpn.refused'; readonly id: string; readonly pid: number; readonly reason: string }
  | {
      readonly kind: 'openvpn.exited';
      readonly id: string;
      readonly pid: number;
      readonly exitCode: number | null;
      readonly signal: string | null;
      readonly expected: boolean;
    }
  | { readonly kind: 'openvpn.output'; readonly id: string; readonly pid: number; readonly line: string }
  | { readonly kind: 'openvpn.push-refused'; readonly id: string; readonly pid: number; readonly option: string }
  | { readonly kind: 'openvpn.fatal'; readonly id: string; readonly pid: number; readonly text: string }
  | { readonly kind: 'openvpn.mgmt-connected'; readonly id: string; readonly socket: string }
  | { readonly kind: 'openvpn.mgmt-failed'; readonly id: string; readonly code: string; readonly message: string }
  | { readonly kind: 'openvpn.health'; readonly id: string; readonly verdict: HealthVerdict; readonly reason: string }
  | { readonly kind: 'openvpn.backoff'; readonly id: string; readonly attempt: number; readonly delayMs: number }
  | { readonly kind: 'openvpn.signal'; readonly id: string; readonly pid: number; readonly signal: string; readonly reason: string }
  | { readonly kind: 'openvpn.kill-stuck'; readonly id: string; readonly pid: number }
  | { readonly kind: 'leftover.stopped'; readonly pid: number; readonly file: string }
  | { readonly kind: 'leftover.skipped'; readonly pid: number; readonly file: string; readonly reason: string }
  | { readonly kind: 'leftover.removed'; readonly path: string };

export const openvpnFormatters: Formatters<OpenvpnEvent> = {
  'openvpn.transition': (e) => ({ level: e.to === 'failed' || e.to === 'backoff' ? 'warning' : 'notice', text: `${e.id}: ${e.from} -> ${e.to} (${e.cause})` }),
  'openvpn.spawned': (e) => ({ level: 'info', text: `${e.id}: started openvpn pid ${e.pid}: ${e.argv.join(' ')}` }),
  'openvpn.spawn-failed': (e) => ({ level: 'error', text: `${e.id}: cannot start openvpn: ${e.message} [${e.code}]` }),
  'openvpn.refused': (e) => ({ level: 'error', text: `${e.id}: not starting: openvpn pid ${e.pid} still runs this network (${e.reason})` }),
  'openvpn.exited': (e) => ({
    level: e.expected ? 'info' : 'warning',
    text: `${e.id}: openvpn pid ${e.pid} exited (${e.signal === null ? `code ${String(e.exitCode)}` : `signal ${e.signal}`})${e.expected ? '' : ' unexpectedly'}`,
  }),
  // openvpn logs every management command at verb 3; the health check's `state` every few seconds would flood the journal.
  'openvpn.output': (e) => ({ level: e.line.includes('MANAGEMENT: ') ? 'debug' : 'info', text: `${e.id}[${e.pid}]: ${e.line}` }),
  'openvpn.push-refused': (e) => ({ level: 'warning', text: `${e.id}[${e.pid}]: refused pushed option '${e.option}' (not this node's address or a listed route prefix)` }),
  'openvpn.fatal': (e) => ({ level: 'error', text: `${e.id}[${e.pid}]: FATAL ${e.text}` }),
  'openvpn.mgmt-connected': (e) => ({ level: 'debug', text: `${e.id}: management interface connected (${e.socket})` }),
  'openvpn.mgmt-failed': (e) => ({ level: 'warning', text: `${e.id}: management interface: ${e.message} [${e.code}]` }),
  'openvpn.health': (e) => ({ level: e.verdict === 'failed' ? 'error' : e.verdict === 'degraded' ? 'warning' : 'debug', text: `${e.id}: health ${e.verdict}: ${e.reason}` }),
  'openvpn.backoff': (e) => ({ level: 'info', text: `${e.id}: restarting in ${e.delayMs} ms (attempt ${e.attempt})` }),
  'openvpn.signal': (e) => ({ level: 'info', text: `${e.id}: sending ${e.signal} to openvpn pid ${e.pid} (${e.reason})` }),
  'openvpn.kill-stuck': (e) => ({ level: 'error', text: `${e.id}: openvpn pid ${e.pid} did not exit even after SIGKILL` }),
  'leftover.stopped': (e) => ({ level: 'notice', text: `stopped leftover openvpn pid ${e.pid} of a previous run (${e.file})` }),
  'leftover.skipped': (e) => ({ level: 'info', text: `left pid ${e.pid} alone (${e.reason}; ${e.file})` }),
  'leftover.removed': (e) => ({ level: 'info', text: `removed stale ${e.path}` }),
};
