/**
 * The daemon's status object: what `GET /v1/status` returns and
 * `mvpn-client status --json` prints as is. Scripts and monitoring read it,
 * so fields may be added but never change meaning (Tailscale docs/cli.md).
 *
 * Fields (schema 1):
 * - `version`: mvpn-client version of the daemon.
 * - `node`: this node's id.
 * - `started_at`: when the daemon started (ISO 8601).
 * - `ready`: true once the first reconcile brought every network to
 *   connected or to a definite failure (the same moment READY=1 is sent).
 * - `membership`: the last accepted membership document — `serial`, `source`
 *   (URL or path it came from; `URL via HOST:PORT` for a source reached
 *   through a TCP relay), `fetched_at` (last time a source confirmed
 *   it, by a new document or a 304), `expires_at` — or null before one was
 *   ever accepted.
 * - `reconcile`: `last_at` (ISO, null before the first), `last_ok_at` (ISO
 *   time of the last reconcile whose discovery succeeded, null before one
 *   did), `last_error`
 *   ({code, message} of the last failed discovery, null when it succeeded —
 *   MVPN_SOURCES_UNREACHABLE while no source answers, the refusal's own code,
 *   e.g. MVPN_SIGNATURE_INVALID or MVPN_MEMBERSHIP_ROLLBACK, when a source
 *   answered with a document this node refuses).
 * - `identity_expires_at`: notAfter (ISO) of the node's API identity
 *   certificate, null when it has none (not enrolled).
 * - `networks[]`, sorted by id:
 *   `id`, `name`; `state`: stopped | starting | connecting | connected |
 *   degraded | reloading | backoff | stopping | failed; `admin_down`: taken down with
 *   `mvpn-client down` (recorded in the state directory: it holds across
 *   agent restarts and reboots until `mvpn-client up`); `admin_down_since`
 *   (ISO time of that `down`, null when not down); `pid` (of the network's current openvpn, null if
 *   none); `tunnel_address` (address/len on the tunnel
 *   interface, null if none); `server` (the remote in use, "host:port", null
 *   when not connected); `uptime_s` (seconds since connected, null when not
 *   connected); `server_tunnel_ip` (the server's own address inside the
 *   tunnel, from network.json: what to ping to test the tunnel end to end;
 *   null when the installed bundle does not name it or none is installed); `connected_since` (ISO or null); `bytes_in`, `bytes_out`
 *   (tunnel counters of the current openvpn); `restarts` (openvpn restarts
 *   since the daemon started); `last_error` ({code, message} or null: the
 *   network's own failure, or the reason its newest bundle was rejected while
 *   the old one keeps running); `bundle_version` (installed, null if none);
 *   `bundle_expires_at` (ISO, the installed bundle's manifest `expires`, null if none);
 *   `cert_expires_at` (ISO notAfter of the installed network certificate, null if none).
 */
import { ExitCode } from '../errors.ts';

export type NetworkState = 'stopped' | 'starting' | 'connecting' | 'connected' | 'degraded' | 'reloading' | 'backoff' | 'stopping' | 'failed';

export interface StatusError {
  readonly code: string;
  readonly message: string;
}

export interface NetworkStatus {
  readonly id: string;
  readonly name: string;
  readonly state: NetworkState;
  readonly admin_down: boolean;
  readonly admin_down_since: string | null;
  readonly pid: number | null;
  readonly tunnel_address: string | null;
  readonly server: string | null;
  /** Absent from daemons before it was added (`status` may talk to an older daemon). */
  readonly server_tunnel_ip?: string | null;
  readonly uptime_s: number | null;
  readonly connected_since: string | null;
  readonly bytes_in: number;
  readonly bytes_out: number;
  readonly restarts: number;
  readonly last_error: StatusError | null;
  readonly bundle_version: number | null;
  readonly bundle_expires_at: string | null;
  /** Added with the agent's metrics. */
  readonly cert_expires_at?: string | null;
  /** The LAN's MTU (network.json `mtu`, 1500 when absent); null: no bundle installed. */
  readonly mtu?: number | null;
  /** The largest underlay datagram openvpn sends (network.json `fragment`): larger frames are split by openvpn on this node's path. null: no fragmentation (or no bundle). */
  readonly fragment?: number | null;
  /** The last frame probe: ok, lost (full-size frames to the server vanish; degraded), unreachable (no ping answered, the server's address resolves: no verdict) or silent (nothing crosses the LAN; degraded); null: not probed (yet, or not a tap network). */
  readonly full_frames?: 'ok' | 'lost' | 'unreachable' | 'silent' | null;
}

export interface MembershipStatus {
  readonly serial: number;
  readonly source: string;
  readonly fetched_at: string;
  readonly expires_at: string;
}

/** Automatic renewal (renew.ts): null when the node has no API identity (not enrolled, or only exported bundles). */
export interface RenewalStatus {
  /** idle: nothing due; confirming: new certificates installed, old ones not yet revoked; failed: the last attempt failed (retrying). */
  readonly state: 'idle' | 'confirming' | 'failed';
  /** When the next certificate passes two thirds of its lifetime. */
  readonly due_at: string | null;
  readonly last_renewed_at: string | null;
  readonly next_retry_at: string | null;
  readonly last_error: StatusError | null;
}

/** The API CA the node trusts (api-ca.ts): null before the node is enrolled. */
export interface ApiCaStatus {
  /** True once the node followed an API CA roll (the pin file, not the config's server_ca, is what it trusts). */
  readonly pinned: boolean;
  /** Names of the trusted API CAs (two during a roll's overlap). */
  readonly cas: readonly string[];
  /** Why the last `v1/api-ca.json` was not followed (refused roll, unreachable): the trust did not change. */
  readonly last_error: StatusError | null;
}

export interface AgentStatus {
  readonly version: string;
  readonly node: string;
  readonly started_at: string;
  readonly ready: boolean;
  readonly membership: MembershipStatus | null;
  /** The anchor documents must be signed with now: the config's, or where its rotation statements led (chain_version null: no rotation applied). */
  readonly trust_anchor?: { readonly key_id: string; readonly chain_version: number | null; readonly serial_floor: number };
  readonly reconcile: { readonly last_at: string | null; readonly last_ok_at?: string | null; readonly last_error: StatusError | null };
  /** Added with the agent's metrics; always present from the daemon. */
  readonly identity_expires_at?: string | null;
  readonly networks: readonly NetworkStatus[];
  /** Added with automatic renewal; always present from the daemon. */
  readonly renewal?: RenewalStatus | null;
  /** Added with the API CA roll; always present from the daemon. */
  readonly api_ca?: ApiCaStatus | null;
}

/** 0 when every network is connected (also when there are none), 1 otherwise. */
export function statusExitCode(s: Pick<AgentStatus, 'networks'>): number {
  return s.networks.every((n) => n.state === 'connected') ? ExitCode.ok : ExitCode.notAllConnected;
}

/** "3/3 networks connected" — systemd STATUS= and the first line people see. */
export function summaryLine(s: Pick<AgentStatus, 'networks'>): string {
  const up = s.networks.filter((n) => n.state === 'connected').length;
  return `${up}/${s.networks.length} networks connected`;
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86_400);
  const h = Math.floor((s % 86_400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d${String(h).padStart(2, '0')}h`;
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v}B` : `${v < 10 ? v.toFixed(1) : Math.round(v)}${units[i]}`;
}

/**
 * Characters a terminal may act on rather than show: C0 and C1 controls
 * (U+009B is a one-byte CSI, U+0085 a line break), DEL, format characters
 * (bidi overrides and isolates U+202A-U+202E, U+2066-U+2069, zero-width
 * marks), line and paragraph separators, private-use, unassigned and lone
 * surrogate code points.
 */
const NON_PRINTABLE_RE = /[\p{C}\p{Zl}\p{Zp}]/gu;

function hexEscape(ch: string): string {
  const cp = ch.codePointAt(0)!;
  if (cp < 0x100) return `\\x${cp.toString(16).padStart(2, '0')}`;
  if (cp < 0x10000) return `\\u${cp.toString(16).padStart(4, '0')}`;
  return `\\u{${cp.toString(16)}}`;
}

/**
 * `s` with every non-printable character written as a visible escape
 * (`\x9b`, `\u202e`), for text people read in a terminal. Error messages
 * carry text from documents a hostile server chose; it must never drive the
 * terminal of whoever runs `mvpn-client status`.
 */
export function printable(s: string): string {
  return s.replace(NON_PRINTABLE_RE, hexEscape);
}

/**
 * JSON text with the characters JSON.stringify leaves raw (C1 controls,
 * format characters, U+2028/U+2029, ...) written as \u escapes: the same
 * JSON value, safe to print to a terminal. C0 controls inside strings are
 * already escaped by JSON.stringify; raw newlines here are its indentation.
 */
export function terminalSafeJson(json: string): string {
  return json.replace(/[\x7f-\x9f\p{Cf}\p{Zl}\p{Zp}\p{Co}\p{Cn}]/gu, (ch) =>
    [...ch]
      .flatMap((c) => {
        const cp = c.codePointAt(0)!;
        return cp < 0x10000 ? [cp] : [0xd800 + ((cp - 0x10000) >> 10), 0xdc00 + ((cp - 0x10000) & 0x3ff)];
      })
      .map((u) => `\\u${u.toString(16).padStart(4, '0')}`)
      .join(''),
  );
}

/**
 * The plain aligned table of `mvpn-client status`. Columns:
 * NETWORK STATE ADDRESS SERVER UPTIME RX TX LAST-ERROR. Every cell goes
 * through printable().
 */
/** "1500 frag 1280 ok": the LAN MTU, the datagram size openvpn fragments to (if it does), the frame probe's verdict. */
export function formatMtu(n: Pick<NetworkStatus, 'mtu' | 'fragment' | 'full_frames'>): string {
  if (n.mtu === undefined || n.mtu === null) return '-';
  return [String(n.mtu), ...(n.fragment ? [`frag ${n.fragment}`] : []), ...(n.full_frames ? [n.full_frames] : [])].join(' ');
}

export function renderStatusTable(s: AgentStatus): string {
  const head = ['NETWORK', 'STATE', 'ADDRESS', 'SERVER', 'UPTIME', 'RX', 'TX', 'MTU', 'LAST-ERROR'];
  const rows = s.networks.map((n) => [
    n.id,
    n.admin_down && n.state === 'stopped' ? 'down (admin)' : n.state,
    n.tunnel_address ?? '-',
    n.server ?? '-',
    n.uptime_s === null ? '-' : formatDuration(n.uptime_s),
    formatBytes(n.bytes_in),
    formatBytes(n.bytes_out),
    formatMtu(n),
    n.last_error ? `${n.last_error.code}: ${n.last_error.message}` : '-',
  ].map(printable));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  const out = [line(head), ...rows.map(line)];
  if (rows.length === 0) out.push('(this node is in no network)');
  // Renewal trouble only: the certificates still work, but someone should know before they expire.
  const r = s.renewal;
  // The message may carry text the server chose: escaped like every cell.
  if (r?.state === 'failed' && r.last_error) out.push(printable(`renewal failed (retry ${r.next_retry_at ?? 'pending'}): ${r.last_error.code}: ${r.last_error.message}`));
  const a = s.api_ca;
  if (a?.last_error) out.push(printable(`API CA not followed (still trusting ${a.cas.join(', ')}): ${a.last_error.code}: ${a.last_error.message}`));
  return out.join('\n') + '\n';
}
