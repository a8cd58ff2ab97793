/**
 * The CLI side of the local API: one HTTP request over a unix socket.
 *
 * One HTTP/1.0 exchange on a plain `node:net` socket: the daemon's server
 * (node:http, control-api.ts) answers an HTTP/1.0 request with a
 * Content-Length body and closes, so the reply is the bytes up to EOF. No
 * HTTP client library: undici cost ~90 ms of `mvpn-client status`, and
 * node:http's client (module load, agent, request machinery, all compiled
 * on first use) ~5 ms of its ~15 ms over a bare `node -e 0` (issue 14).
 * Transport failures become typed
 * errors with a hint, because the person reading them is usually an
 * experimenter on the node, not the admin who set it up:
 * - no socket / connection refused → MVPN_DAEMON_UNREACHABLE (exit 3),
 * - EACCES on the root-only control socket → MVPN_PERMISSION_DENIED (exit 4).
 */
import { join } from 'node:path';
import { connect } from 'node:net';
import { DaemonError, MvpnError } from '../errors.ts';
import { parseJsonBounded } from '../util/json.ts';
import { CONTROL_SOCKET, STATUS_SOCKET } from './control-api.ts';
import { parseWireError } from '../util/wire-error.ts';

const MAX_REPLY_BYTES = 4 << 20;
/** Room for the status line and headers on top of the body's cap. */
const MAX_HEAD_BYTES = 16 << 10;

export const DAEMON_HINT = 'is the mvpn-client service running? try: systemctl status mvpn-client';

export interface DaemonRequest {
  readonly runtimeDir: string;
  readonly socket: 'status' | 'control';
  readonly method: 'GET' | 'POST';
  readonly path: string;
  /** What the user asked for, for messages ("down net1"). */
  readonly action: string;
  readonly timeoutMs?: number;
  /** The reply body of a 2xx is text (metrics), returned as a string; errors are JSON either way. */
  readonly text?: boolean;
}

function errnoOf(err: unknown): string | undefined {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
  }
  return undefined;
}

/** One HTTP/1.0 request on a new connection; the reply's status code and body (read to EOF, checked against Content-Length). */
function exchange(socketPath: string, r: DaemonRequest, timeout: number): Promise<{ statusCode: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const sock = connect({ path: socketPath });
    const chunks: Buffer[] = [];
    let size = 0;
    sock.setTimeout(timeout, () => sock.destroy(Object.assign(new Error(`no answer within ${timeout} ms`), { code: 'ETIMEDOUT' })));
    sock.on('connect', () => sock.write(`${r.method} ${r.path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n`));
    sock.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_REPLY_BYTES + MAX_HEAD_BYTES) {
        sock.destroy(new DaemonError('MVPN_INTERNAL', `${r.action}: the daemon's reply is over ${MAX_REPLY_BYTES} bytes`));
        return;
      }
      chunks.push(c);
    });
    sock.on('error', reject);
    sock.on('end', () => {
      sock.destroy();
      try {
        resolve(parseReply(Buffer.concat(chunks), r.action));
      } catch (err) {
        reject(err);
      }
    });
  });
}

/** Status code and body of a whole HTTP/1.x reply; a cut-off or malformed one is MVPN_INTERNAL. */
function parseReply(raw: Buffer, action: string): { statusCode: number; body: Buffer } {
  const bad = (what: string): DaemonError => new DaemonError('MVPN_INTERNAL', `${action}: the daemon's reply ${what}`);
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0 || end > MAX_HEAD_BYTES) throw bad(raw.length === 0 ? 'was empty (connection closed)' : 'has no complete HTTP header');
  const [statusLine = '', ...headers] = raw.toString('latin1', 0, end).split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(statusLine);
  if (!m) throw bad(`does not start with an HTTP status line: ${JSON.stringify(statusLine.slice(0, 80))}`);
  const body = raw.subarray(end + 4);
  if (body.length > MAX_REPLY_BYTES) throw bad(`is over ${MAX_REPLY_BYTES} bytes`);
  for (const h of headers) {
    const colon = h.indexOf(':');
    if (colon < 0) continue;
    const name = h.slice(0, colon).trim().toLowerCase();
    const value = h.slice(colon + 1).trim();
    if (name === 'transfer-encoding') throw bad(`uses Transfer-Encoding ${value}, which an HTTP/1.0 reply never has`);
    if (name === 'content-length' && Number(value) !== body.length) throw bad(`was cut off (${body.length} of ${value} bytes)`);
  }
  return { statusCode: Number(m[1]), body };
}

/** Send one request; resolves to the parsed JSON body of a 2xx reply (its text with `text`). */
export async function daemonRequest(r: DaemonRequest): Promise<unknown> {
  const socketPath = join(r.runtimeDir, r.socket === 'status' ? STATUS_SOCKET : CONTROL_SOCKET);
  const timeout = r.timeoutMs ?? 30_000;
  try {
    const res = await exchange(socketPath, r, timeout);
    const body = res.body;
    if (r.text && res.statusCode >= 200 && res.statusCode < 300) return body.toString('utf8');
    const json = body.length > 0 ? parseJsonBounded(body, { maxBytes: MAX_REPLY_BYTES, maxDepth: 16 }, 'daemon reply') : {};
    if (res.statusCode >= 200 && res.statusCode < 300) return json;
    const e = parseWireError(json);
    throw new DaemonError(e.code ?? 'MVPN_INTERNAL', `${r.action}: ${e.message ?? `daemon answered HTTP ${res.statusCode}`}`, { context: { status: res.statusCode } });
  } catch (err) {
    if (err instanceof MvpnError) throw err;
    const errno = errnoOf(err);
    if (errno === 'EACCES' || errno === 'EPERM') {
      throw new DaemonError('MVPN_PERMISSION_DENIED', `permission denied: ${r.action} needs root (try sudo)`, {
        context: { socket: socketPath },
        cause: err,
      });
    }
    throw new DaemonError('MVPN_DAEMON_UNREACHABLE', `cannot reach the mvpn-client daemon at ${socketPath}: ${errno ?? (err as Error).message}`, {
      context: { socket: socketPath },
      hint: DAEMON_HINT,
      cause: err,
    });
  }
}
