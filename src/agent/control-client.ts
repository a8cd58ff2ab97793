/**
 * The CLI side of the local API: one HTTP request over a unix socket
 * (undici Client with `connect.socketPath`). Transport failures become typed
 * errors with a hint, because the person reading them is usually an
 * experimenter on the node, not the admin who set it up:
 * - no socket / connection refused → MVPN_DAEMON_UNREACHABLE (exit 3),
 * - EACCES on the root-only control socket → MVPN_PERMISSION_DENIED (exit 4).
 */
import { join } from 'node:path';
import { Client } from 'undici';
import { DaemonError, MvpnError, type ErrorCode } from '../errors.ts';
import { parseJsonBounded } from '../util/json.ts';
import { CONTROL_SOCKET, STATUS_SOCKET } from './control-api.ts';

export const DAEMON_HINT = 'is the mvpn-client service running? try: systemctl status mvpn-client';

export interface DaemonRequest {
  readonly runtimeDir: string;
  readonly socket: 'status' | 'control';
  readonly method: 'GET' | 'POST';
  readonly path: string;
  /** What the user asked for, for messages ("down net1"). */
  readonly action: string;
  readonly timeoutMs?: number;
}

function errnoOf(err: unknown): string | undefined {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
  }
  return undefined;
}

/** Send one request; resolves to the parsed JSON body of a 2xx reply. */
export async function daemonRequest(r: DaemonRequest): Promise<unknown> {
  const socketPath = join(r.runtimeDir, r.socket === 'status' ? STATUS_SOCKET : CONTROL_SOCKET);
  const timeout = r.timeoutMs ?? 30_000;
  const client = new Client('http://localhost', {
    connect: { socketPath, timeout: 5_000 },
    headersTimeout: timeout,
    bodyTimeout: timeout,
    maxResponseSize: 4 << 20,
  });
  try {
    const res = await client.request({ method: r.method, path: r.path });
    const body = Buffer.from(await res.body.arrayBuffer());
    const json = body.length > 0 ? parseJsonBounded(body, { maxBytes: 4 << 20, maxDepth: 16 }, 'daemon reply') : {};
    if (res.statusCode >= 200 && res.statusCode < 300) return json;
    const e = (json as { error?: { code?: string; message?: string } }).error;
    const code = (typeof e?.code === 'string' && e.code.startsWith('MVPN_') ? e.code : 'MVPN_INTERNAL') as ErrorCode;
    throw new DaemonError(code, `${r.action}: ${e?.message ?? `daemon answered HTTP ${res.statusCode}`}`, { context: { status: res.statusCode } });
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
  } finally {
    await client.close().catch(() => undefined);
  }
}
