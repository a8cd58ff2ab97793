/**
 * Log events of the server daemon and its HTTPS API. openvpn instance events
 * (transitions, exits, backoff) come from src/openvpn/events.ts.
 */
import type { Formatters } from '../log.ts';

export type ServerEvent =
  | { readonly kind: 'server.started'; readonly listen: string; readonly networks: number }
  | { readonly kind: 'server.ready'; readonly status: string }
  | { readonly kind: 'server.documents-renewed'; readonly nodes: number; readonly reason: 'first-start' | 'build-changed' }
  | { readonly kind: 'server.anchor-rotated'; readonly from: string; readonly to: string }
  | { readonly kind: 'server.api-ca-reloaded'; readonly trusted: number; readonly rolling: boolean }
  | { readonly kind: 'server.stopping'; readonly reason: string }
  | { readonly kind: 'server.stopped' }
  | { readonly kind: 'server.reconcile'; readonly cause: string; readonly up: readonly string[]; readonly stopped: readonly string[] }
  | { readonly kind: 'server.leases'; readonly host: string; readonly running: readonly string[] }
  | { readonly kind: 'server.reconcile-failed'; readonly code: string; readonly message: string }
  | { readonly kind: 'server.store-lost'; readonly message: string }
  | { readonly kind: 'server.store-back'; readonly downMs: number; readonly missedPasses: number }
  | { readonly kind: 'server.network-start'; readonly network: string }
  | { readonly kind: 'server.network-stop'; readonly network: string; readonly reason: string }
  | { readonly kind: 'server.network-restart'; readonly network: string; readonly reason: string }
  | { readonly kind: 'server.files-failed'; readonly network: string; readonly code: string; readonly message: string }
  | { readonly kind: 'server.crl-refreshed'; readonly network: string; readonly number: number; readonly nextUpdate: string }
  | { readonly kind: 'server.ca-roll-finished'; readonly network: string }
  | { readonly kind: 'server.ca-expiring'; readonly which: string; readonly daysLeft: number; readonly message: string }
  | { readonly kind: 'server.session-killed'; readonly network: string; readonly cn: string; readonly reason: string }
  | { readonly kind: 'server.kill-failed'; readonly network: string; readonly cn: string; readonly message: string }
  | { readonly kind: 'server.link-start'; readonly network: string; readonly hub: string }
  | { readonly kind: 'server.metrics-start'; readonly listen: string }
  | { readonly kind: 'server.metrics-failed'; readonly listen: string; readonly code: string; readonly message: string }
  | { readonly kind: 'server.relay-start'; readonly network: string; readonly listen: string; readonly target: string }
  | { readonly kind: 'server.link-failed'; readonly network: string; readonly code: string; readonly message: string }
  | { readonly kind: 'server.link-synced'; readonly network: string; readonly members: number; readonly crlNumber: number }
  | { readonly kind: 'server.link-anchor'; readonly network: string; readonly from: string; readonly to: string; readonly version: number }
  | { readonly kind: 'server.routing'; readonly what: 'bird-start' | 'bird-exit' | 'bird-failed' | 'routing-failed'; readonly network?: string | undefined; readonly pid?: number | undefined; readonly message?: string | undefined }
  | { readonly kind: 'api.request'; readonly method: string; readonly path: string; readonly status: number; readonly node?: string | undefined; readonly ms: number }
  | { readonly kind: 'api.error'; readonly method: string; readonly path: string; readonly status: number; readonly code: string; readonly message: string }
  | { readonly kind: 'api.enrolled'; readonly node: string; readonly networks: readonly string[] }
  | { readonly kind: 'api.renewed'; readonly node: string; readonly networks: readonly string[] }
  | { readonly kind: 'api.renew-confirmed'; readonly node: string; readonly revoked: Readonly<Record<string, string>> }
  | { readonly kind: 'api.client-error'; readonly message: string };

export const serverFormatters: Formatters<ServerEvent> = {
  'server.documents-renewed': (e) => ({
    level: 'notice',
    text: `server: ${e.nodes} node document(s) moved to a new serial (${e.reason === 'first-start' ? 'first start of this build check' : 'this build makes documents differently from the last one'}), so no serial names two different documents`,
  }),
  'server.started': (e) => ({ level: 'notice', text: `server: HTTPS API listening on ${e.listen}; ${e.networks} network(s) in the store` }),
  'server.ready': (e) => ({ level: 'notice', text: `server: ready (${e.status})` }),
  'server.api-ca-reloaded': (e) => ({
    level: 'notice',
    text: `server: API CA files changed; the listener now accepts identities of ${e.trusted} CA(s)${e.rolling ? ' (an API CA roll overlaps)' : ''} and serves its current certificate`,
  }),
  'server.anchor-rotated': (e) => ({ level: 'notice', text: `server: trust anchor rotated, signing with key ${e.to} instead of ${e.from}; every document is re-signed` }),
  'server.stopping': (e) => ({ level: 'notice', text: `server: stopping (${e.reason})` }),
  'server.stopped': () => ({ level: 'notice', text: 'server: stopped' }),
  'server.leases': (e) => ({ level: 'notice', text: `server: host ${e.host} now holds the leases of [${e.running.join(', ')}]` }),
  'server.reconcile': (e) => ({
    level: 'info',
    text: `server: reconciled (${e.cause}); up: [${e.up.join(', ')}]${e.stopped.length ? `; stopped: [${e.stopped.join(', ')}]` : ''}`,
  }),
  'server.reconcile-failed': (e) => ({ level: 'error', text: `server: reconcile failed: ${e.message} [${e.code}]` }),
  'server.store-lost': (e) => ({
    level: 'error',
    text: `server: lost the state store (${e.message}); reconnecting. The networks keep running; API calls that need the store answer 503 MVPN_STORE_UNREACHABLE until it is back`,
  }),
  'server.store-back': (e) => ({
    level: 'notice',
    text: `server: the state store is back after ${(e.downMs / 1000).toFixed(1)} s${e.missedPasses > 0 ? ` (${e.missedPasses} reconcile pass${e.missedPasses === 1 ? '' : 'es'} could not read it meanwhile)` : ''}; reconciling`,
  }),
  'server.network-start': (e) => ({ level: 'notice', text: `${e.network}: starting its openvpn server` }),
  'server.network-stop': (e) => ({ level: 'notice', text: `${e.network}: stopping its openvpn server (${e.reason})` }),
  'server.network-restart': (e) => ({ level: 'notice', text: `${e.network}: restarting its openvpn server (${e.reason})` }),
  'server.files-failed': (e) => ({ level: 'error', text: `${e.network}: cannot write its server files: ${e.message} [${e.code}]` }),
  'server.ca-roll-finished': (e) => ({ level: 'notice', text: `${e.network}: CA roll overlap over: server certificate from the new CA, old CA dropped` }),
  'server.ca-expiring': (e) => ({ level: 'warning', text: e.message }),
  'server.crl-refreshed': (e) => ({ level: 'info', text: `${e.network}: CRL #${e.number} issued, next update ${e.nextUpdate}` }),
  'server.session-killed': (e) => ({ level: 'notice', text: `${e.network}: killed the session of ${e.cn} (${e.reason})` }),
  'server.kill-failed': (e) => ({ level: 'warning', text: `${e.network}: could not kill the session of ${e.cn}: ${e.message}` }),
  'server.link-start': (e) => ({ level: 'notice', text: `${e.network}: starting its link to the hub ${e.hub}` }),
  'server.metrics-start': (e) => ({ level: 'notice', text: `server: Prometheus metrics on http://${e.listen}/metrics` }),
  'server.metrics-failed': (e) => ({ level: 'warning', text: `server: no metrics listener on ${e.listen}: ${e.message} [${e.code}]; the API and networks run on (set metrics_listen to a free ADDR:PORT, or null)` }),
  'server.relay-start': (e) => ({ level: 'notice', text: `${e.network}: relaying TCP from ${e.listen} to the hub's API ${e.target} for the nodes behind this server` }),
  'server.routing': (e) => ({
    level: e.what === 'bird-start' ? 'info' : 'warning',
    text: `${e.network ? `${e.network}: ` : ''}routing: ${e.what === 'bird-start' ? `BIRD started (pid ${e.pid ?? '?'})` : `${e.what}: ${e.message ?? ''}`}`,
  }),
  'server.link-failed': (e) => ({ level: 'warning', text: `${e.network}: link: ${e.message} [${e.code}]` }),
  'server.link-synced': (e) => ({ level: 'info', text: `${e.network}: copied the hub's state (${e.members} members, CRL #${e.crlNumber})` }),
  'server.link-anchor': (e) => ({ level: 'notice', text: `${e.network}: the hub rotated its trust anchor (statement ${e.version}); this link now trusts ${e.to} instead of ${e.from}` }),
  'api.request': (e) => ({ level: 'debug', text: `api: ${e.method} ${e.path} -> ${e.status}${e.node ? ` (${e.node})` : ''} ${e.ms} ms` }),
  'api.error': (e) => ({ level: e.status >= 500 ? 'error' : 'info', text: `api: ${e.method} ${e.path} -> ${e.status} ${e.code}: ${e.message}` }),
  'api.enrolled': (e) => ({ level: 'notice', text: `api: node ${e.node} enrolled (networks: ${e.networks.join(', ') || 'none yet'})` }),
  'api.renewed': (e) => ({ level: 'notice', text: `api: node ${e.node} renewed its key; new certificates for ${e.networks.join(', ') || 'no network'} (old ones valid until it confirms)` }),
  'api.renew-confirmed': (e) => ({
    level: 'notice',
    text: `api: node ${e.node} confirmed its renewal; superseded: ${Object.entries(e.revoked).map(([n, s]) => `${n} ${s}`).join(', ') || 'identity only'}`,
  }),
  'api.client-error': (e) => ({ level: 'debug', text: `api: connection error: ${e.message}` }),
};
