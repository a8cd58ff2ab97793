/**
 * Log events of the agent daemon (discovery, reconcile, enrollment,
 * lifecycle). openvpn processes log through src/openvpn/events.ts; both go to
 * the same stderr sink, one event per line.
 */
import type { Formatters } from '../log.ts';

export type AgentEvent =
  | { readonly kind: 'agent.started'; readonly node: string; readonly version: string; readonly config: string }
  | { readonly kind: 'agent.stopping'; readonly reason: string }
  | { readonly kind: 'agent.stopped' }
  | { readonly kind: 'agent.ready'; readonly summary: string; readonly timedOut: boolean }
  | { readonly kind: 'agent.leftovers'; readonly stopped: readonly number[]; readonly removed: number }
  | { readonly kind: 'agent.membership-state-ignored'; readonly message: string }
  | { readonly kind: 'anchor.rotated'; readonly from: string; readonly to: string; readonly version: number; readonly serialFloor: number; readonly source: string }
  | { readonly kind: 'agent.admin-state-ignored'; readonly message: string }
  | { readonly kind: 'agent.notify-failed'; readonly message: string }
  | { readonly kind: 'agent.metrics-start'; readonly listen: string }
  | { readonly kind: 'agent.metrics-failed'; readonly listen: string; readonly code: string; readonly message: string }
  | { readonly kind: 'enroll.ok'; readonly node: string; readonly url: string }
  | { readonly kind: 'enroll.failed'; readonly code: string; readonly message: string; readonly permanent: boolean }
  | { readonly kind: 'enroll.skipped'; readonly reason: string }
  | { readonly kind: 'renew.start'; readonly reason: string }
  | { readonly kind: 'renew.ok'; readonly serial: string }
  | { readonly kind: 'renew.failed'; readonly code: string; readonly message: string; readonly retryInMs: number }
  | { readonly kind: 'renew.confirmed'; readonly revoked: Readonly<Record<string, string>>; readonly removedKeys: number }
  | { readonly kind: 'discovery.ok'; readonly source: string; readonly serial: number; readonly notModified: boolean }
  | { readonly kind: 'discovery.not-saved'; readonly serial: number; readonly failed: readonly string[] }
  | { readonly kind: 'discovery.source-failed'; readonly source: string; readonly code: string; readonly message: string }
  | { readonly kind: 'discovery.failed'; readonly code: string; readonly message: string }
  | { readonly kind: 'reconcile.start'; readonly reason: string }
  | { readonly kind: 'reconcile.action'; readonly network: string; readonly action: string }
  | { readonly kind: 'reconcile.rejected'; readonly network: string; readonly code: string; readonly message: string }
  | { readonly kind: 'reconcile.done'; readonly actions: number; readonly durationMs: number }
  | { readonly kind: 'reconcile.next'; readonly delayMs: number }
  | { readonly kind: 'install.broken'; readonly network: string; readonly message: string }
  | { readonly kind: 'install.route-refused'; readonly network: string; readonly prefix: string; readonly reason: string }
  | { readonly kind: 'ca.pinned'; readonly network: string; readonly pins: readonly string[]; readonly previous: readonly string[] }
  | { readonly kind: 'api-ca.pinned'; readonly cas: readonly string[]; readonly previous: readonly string[] }
  | { readonly kind: 'api-ca.refused'; readonly code: string; readonly message: string }
  | { readonly kind: 'network.admin'; readonly network: string; readonly verb: string };

export const agentFormatters: Formatters<AgentEvent> = {
  'agent.started': (e) => ({ level: 'notice', text: `mvpn-client ${e.version} agent started for node ${e.node} (config ${e.config})` }),
  'agent.stopping': (e) => ({ level: 'notice', text: `stopping (${e.reason}): stopping every network` }),
  'agent.stopped': () => ({ level: 'notice', text: 'stopped' }),
  'agent.ready': (e) => ({ level: 'notice', text: `ready: ${e.summary}${e.timedOut ? ' (stopped waiting for the rest)' : ''}` }),
  'agent.leftovers': (e) => ({
    level: e.stopped.length > 0 ? 'warning' : 'info',
    text: `previous run left ${e.stopped.length} openvpn process(es) [${e.stopped.join(', ')}] and ${e.removed} stale file(s); cleaned up`,
  }),
  'agent.membership-state-ignored': (e) => ({ level: 'warning', text: `stored membership state not used: ${e.message}` }),
  'anchor.rotated': (e) => ({
    level: 'notice',
    text: `trust anchor rotated: key ${e.from} -> ${e.to} (chain version ${e.version}, serial floor ${e.serialFloor}, from ${e.source}); pinned, the old key is no longer accepted`,
  }),
  'agent.admin-state-ignored': (e) => ({ level: 'warning', text: `stored down marks (admin.json) not used, every network may start: ${e.message}` }),
  'agent.notify-failed': (e) => ({ level: 'warning', text: `sd_notify failed: ${e.message}` }),
  'agent.metrics-start': (e) => ({ level: 'notice', text: `Prometheus metrics on http://${e.listen}/metrics` }),
  'agent.metrics-failed': (e) => ({
    level: 'warning',
    text: `no metrics listener on ${e.listen}: ${e.message} [${e.code}]; the networks run on (set metrics_listen to a free ADDR:PORT, or remove it; status --prometheus still works)`,
  }),
  'enroll.ok': (e) => ({ level: 'notice', text: `enrolled node ${e.node} with ${e.url}` }),
  'enroll.failed': (e) => ({ level: 'error', text: `enrollment failed: ${e.message} [${e.code}]${e.permanent ? ' (not retried with this token)' : ''}` }),
  'enroll.skipped': (e) => ({ level: 'warning', text: `not enrolling: ${e.reason}` }),
  'renew.start': (e) => ({ level: 'notice', text: `renewing this node's key and certificates: ${e.reason}` }),
  'renew.ok': (e) => ({ level: 'notice', text: `renewed: new key, identity certificate ${e.serial}; installing the new network certificates` }),
  'renew.failed': (e) => ({ level: 'error', text: `renewal failed, the current certificates keep working: ${e.message} [${e.code}]; retry in ${Math.round(e.retryInMs / 1000)} s` }),
  'renew.confirmed': (e) => ({
    level: 'notice',
    text: `renewal complete: the server revoked the old certificates (${Object.entries(e.revoked).map(([n, s]) => `${n} ${s}`).join(', ') || 'identity only'}); ${e.removedKeys} old key file(s) removed`,
  }),
  'discovery.ok': (e) => ({ level: 'info', text: `membership serial ${e.serial} from ${e.source}${e.notModified ? ' (not modified)' : ''}` }),
  'discovery.not-saved': (e) => ({
    level: 'warning',
    text: `membership serial ${e.serial} not kept as last-good: the bundles of ${e.failed.join(', ')} failed; the previous document stays the one a restart boots from`,
  }),
  'discovery.source-failed': (e) => ({ level: 'warning', text: `source ${e.message.startsWith(e.source) ? e.message : `${e.source}: ${e.message}`} [${e.code}]` }),
  'discovery.failed': (e) => ({ level: 'warning', text: `no membership document this time, keeping what runs: ${e.message} [${e.code}]` }),
  'reconcile.start': (e) => ({ level: 'info', text: `reconcile (${e.reason})` }),
  'reconcile.action': (e) => ({ level: 'notice', text: `${e.network}: ${e.action}` }),
  'reconcile.rejected': (e) => ({ level: 'error', text: `${e.network}: new bundle rejected, keeping what runs: ${e.message} [${e.code}]` }),
  'reconcile.done': (e) => ({ level: 'info', text: `reconcile done: ${e.actions} change(s) in ${e.durationMs} ms` }),
  'reconcile.next': (e) => ({ level: 'debug', text: `next reconcile in ${Math.round(e.delayMs / 1000)} s` }),
  'install.route-refused': (e) => ({ level: 'warning', text: `${e.network}: pushed routes for ${e.prefix} refused on this node: ${e.reason}` }),
  'install.broken': (e) => ({ level: 'warning', text: `${e.network}: installed files are not usable, reinstalling: ${e.message}` }),
  'api-ca.pinned': (e) => ({
    level: 'notice',
    text: `API CA pin ${e.previous.length === 0 ? 'set' : `moved from ${e.previous.map((p) => p.slice(0, 16)).join(', ')}`} to ${e.cas.join(', ')} (a roll certified by the pinned CA)`,
  }),
  'api-ca.refused': (e) => ({ level: 'warning', text: `the server's API CA list was not followed: ${e.code}: ${e.message}; the API CA pin stays as it was` }),
  'ca.pinned': (e) => ({
    level: 'notice',
    text: `${e.network}: CA pin ${e.previous.length === 0 ? 'set' : `moved from ${e.previous.map((p) => p.slice(0, 16)).join(', ')}`} to ${e.pins.map((p) => p.slice(0, 16)).join(', ')}`,
  }),
  'network.admin': (e) => ({ level: 'notice', text: `${e.network}: ${e.verb} requested by an operator` }),
};
