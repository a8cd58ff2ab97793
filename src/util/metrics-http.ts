/**
 * The plain-HTTP Prometheus listener of the server (`metrics_listen`) and of
 * the agent (its optional `metrics_listen`): `GET /metrics` and nothing
 * else, on its own socket, never the server's public API listener. It knows
 * nothing of prom-client: the caller hands it something that renders the
 * text, so importing this module loads no metrics library.
 */
import { joinHostPort } from './host-port.ts';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface MetricsServer {
  /** "host:port" (the real port when the config said 0). */
  readonly address: string;
  close(): Promise<void>;
}

/** What the listener serves: a prom-client Registry is one; the agent passes a render of its status. */
export interface MetricsRenderer {
  metrics(): Promise<string>;
  readonly contentType: string;
}

/** Serves `registry` at GET /metrics on host:port; anything else is 404/405. */
export async function startMetricsServer(registry: MetricsRenderer, host: string, port: number): Promise<MetricsServer> {
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only /metrics is served here\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end(`${req.method} is not allowed on /metrics\n`);
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(text) });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error).message}\n`);
      },
    );
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  return {
    address: joinHostPort(a.address, a.port),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
