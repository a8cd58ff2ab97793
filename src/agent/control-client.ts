/**
 * The CLI side of the local API: one HTTP request over a unix socket.
 *
 * This uses node:http (`socketPath`) rather than undici: loading undici costs
 * ~90 ms of the ~150 ms budget of `mvpn-client status` (measured with
 * --cpu-prof on the executable), and one local request needs none of what
 * it adds. Transport failures become typed
 * errors with a hint, because the person reading them is usually an
 * experimenter on the node, not the admin who set it up:
 * - no socket / connection refused → MVPN_DAEMON_UNREACHABLE (exit 3),
 * - EACCES on the root-only control socket → MVPN_PERMISSION_DENIED (exit 4).
 */
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import { DaemonError, MvpnError } from '../errors.ts';
import { parseJsonBounded } from '../util/json.ts';
import { CONTROL_SOCKET, STATUS_SOCKET } from './control-api.ts';
import { parseWireError } from '../util/wire-error.ts';

const MAX_REPLY_BYTES = 4 << 20;

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

/** Send one request; resolves to the parsed JSON body of a 2xx reply (its text with `text`). */
export async function daemonRequest(r: DaemonRequest): Promise<unknown> {
  const socketPath = join(r.runtimeDir, r.socket === 'status' ? STATUS_SOCKET : CONTROL_SOCKET);
  const timeout = r.timeoutMs ?? 30_000;
  try {
    const res = await new Promise<{ statusCode: number; body: Buffer }>((resolve, reject) => {
      const req = httpRequest({ socketPath, method: r.method, path: r.path, host: 'localhost', timeout }, (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_REPLY_BYTES) {
            req.destroy(new DaemonError('MVPN_INTERNAL', `${r.action}: the daemon's reply is over ${MAX_REPLY_BYTES} bytes`));
            return;
          }
          chunks.push(c);
        });
        response.on('end', () => resolve({ statusCode: response.statusCode ?? 0, body: Buffer.concat(chunks) }));
        response.on('error', reject);
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeout} ms`), { code: 'ETIMEDOUT' })));
      req.on('error', reject);
      req.end();
    });
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
