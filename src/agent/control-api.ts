/**
 * The daemon's local API: HTTP over two unix sockets in the runtime dir.
 *
 * - `status.sock` (0666): read-only, `GET /v1/status` and `GET /v1/metrics`
 *   (Prometheus text format, src/agent/metrics.ts, loaded on the first such request). Experimenters run
 *   `mvpn-client status` without root, so any local user may connect.
 * - `control.sock` (0600, owned by root): `POST /v1/networks/<id>/up|down|restart`,
 *   `POST /v1/reload`, and the two GETs. The file mode is the access
 *   check: connecting needs write permission on the socket, which only root
 *   has. The socket is created under a 0077 umask so it is never reachable
 *   by others, not even between bind and chmod.
 *
 * Paths are versioned (`/v1/`); replies are JSON, errors
 * `{ "error": { "code", "message" } }` like the server API.
 *
 * Only one daemon may own a runtime dir: a socket that answers means another
 * agent is running (MVPN_DAEMON_RUNNING); a socket that refuses connections
 * is a leftover of a crashed run and is replaced.
 */
import { createConnection } from 'node:net';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmod, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonError, isMvpnError, toMvpnError } from '../errors.ts';
import type { AgentStatus } from './status.ts';
import { wireError } from '../util/wire-error.ts';

export const STATUS_SOCKET = 'status.sock';
export const CONTROL_SOCKET = 'control.sock';

export type NetworkVerb = 'up' | 'down' | 'restart';

/** What the API needs from the daemon; narrow so a test double is a few lines. */
export interface ControlHandlers {
  status(): AgentStatus;
  /** Throws DaemonError MVPN_NETWORK_UNKNOWN for an id the node is not in. */
  network(id: string, verb: NetworkVerb): Promise<void>;
  /** Runs a reconcile now and resolves when it finished. */
  reload(): Promise<{ readonly ok: boolean; readonly error?: { code: string; message: string } }>;
}

export interface ControlApi {
  readonly statusSocket: string;
  readonly controlSocket: string;
  close(): Promise<void>;
}

const MAX_BODY = 16 * 1024;

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  send(res, status, wireError(code, message));
}

/** Drain (and cap) a request body; the API takes no bodies but must not hang on one. */
async function drain(req: IncomingMessage): Promise<boolean> {
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) return false;
  }
  return true;
}

const NETWORK_PATH = /^\/v1\/networks\/([a-z][a-z0-9-]{0,11})\/(up|down|restart)$/;

function handler(h: ControlHandlers, control: boolean) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    try {
      if (!(await drain(req))) return sendError(res, 413, 'MVPN_API_TOO_LARGE', 'request body too large');
      const path = new URL(req.url ?? '/', 'http://local').pathname;
      if (path === '/v1/status') {
        if (req.method !== 'GET') return sendError(res, 405, 'MVPN_API_BAD_REQUEST', `${req.method} not allowed on ${path}`);
        return send(res, 200, h.status());
      }
      if (path === '/v1/metrics') {
        if (req.method !== 'GET') return sendError(res, 405, 'MVPN_API_BAD_REQUEST', `${req.method} not allowed on ${path}`);
        const { renderAgentMetrics, METRICS_CONTENT_TYPE } = await import('./metrics.ts');
        const text = await renderAgentMetrics(h.status());
        res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text) });
        res.end(text);
        return;
      }
      const m = NETWORK_PATH.exec(path);
      if (m || path === '/v1/reload') {
        if (!control) {
          return sendError(res, 403, 'MVPN_PERMISSION_DENIED', 'the status socket is read-only; use the control socket (needs root)');
        }
        if (req.method !== 'POST') return sendError(res, 405, 'MVPN_API_BAD_REQUEST', `${req.method} not allowed on ${path}`);
        if (m) {
          await h.network(m[1]!, m[2] as NetworkVerb);
          return send(res, 200, { ok: true });
        }
        const r = await h.reload();
        return send(res, 200, r);
      }
      return sendError(res, 404, 'MVPN_NOT_FOUND', `no such endpoint: ${path}`);
    } catch (err) {
      const e = toMvpnError(err);
      const status = e.code === 'MVPN_NETWORK_UNKNOWN' ? 404 : isMvpnError(err) ? 409 : 500;
      if (!res.headersSent) sendError(res, status, e.code, e.message);
      else res.destroy();
    }
  };
}

/** True when something accepts connections on `path`. */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

async function bindSocket(server: Server, path: string, mode: number): Promise<void> {
  if (await socketAnswers(path)) {
    throw new DaemonError('MVPN_DAEMON_RUNNING', `another mvpn-client daemon is already answering on ${path}`, {
      context: { path },
      hint: 'stop it first (systemctl stop mvpn-client), or give this one its own runtime_dir',
    });
  }
  await rm(path, { force: true });
  const old = process.umask(0o077);
  try {
    await listen(server, path);
  } finally {
    process.umask(old);
  }
  await chmod(path, mode);
}

/** Start both sockets; on failure nothing is left listening. */
export async function startControlApi(runtimeDir: string, h: ControlHandlers): Promise<ControlApi> {
  const statusSocket = join(runtimeDir, STATUS_SOCKET);
  const controlSocket = join(runtimeDir, CONTROL_SOCKET);
  const statusServer = createServer(handler(h, false));
  const controlServer = createServer(handler(h, true));
  for (const s of [statusServer, controlServer]) {
    s.headersTimeout = 10_000;
    s.requestTimeout = 60_000;
    s.keepAliveTimeout = 1_000;
  }
  const close = async (): Promise<void> => {
    const stop = (s: Server): Promise<void> =>
      new Promise((resolve) => {
        if (!s.listening) return resolve();
        s.close(() => resolve());
        s.closeAllConnections();
      });
    await Promise.all([stop(statusServer), stop(controlServer)]);
  };
  try {
    await bindSocket(controlServer, controlSocket, 0o600);
    await bindSocket(statusServer, statusSocket, 0o666);
  } catch (err) {
    await close();
    throw err;
  }
  return { statusSocket, controlSocket, close };
}
