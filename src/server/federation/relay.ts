/**
 * A peer server's API relay: a plain TCP forwarder from an address the nodes
 * behind the peer can reach (its internal address) to the hub's HTTPS API,
 * which they cannot. With it those nodes enroll with a token and fetch
 * their signed documents and bundles online, like the hub's own nodes.
 *
 * Design notes:
 * - No TLS termination: the node's TLS session (its pinned API CA, its
 *   identity certificate) runs end to end with the hub, the agent connects
 *   "via" the relay but verifies the hub's certificate (agent config
 *   `sources[].via`). The peer sees ciphertext only and holds no secret of
 *   the nodes; a relay that lied could only drop or delay, and documents are
 *   signed anyway.
 * - One fixed destination, the hub's API from the link bundle: the relay is
 *   not a proxy a client can point anywhere.
 * - Bounded: at most `maxConnections` at once (more are closed at accept),
 *   a connect timeout to the hub, and an idle timeout on both sides, so a
 *   testbed swapping in or a stuck client cannot pile up sockets.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { joinHostPort, portNumber, splitHostPort } from '../../util/host-port.ts';

export interface RelayLimits {
  readonly maxConnections: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
}

export const defaultRelayLimits: RelayLimits = { maxConnections: 512, connectTimeoutMs: 10_000, idleTimeoutMs: 120_000 };

export interface RelayStats {
  readonly listen: string;
  readonly target: string;
  /** Open client connections now. */
  readonly connections: number;
  /** Connections relayed since start, and those refused (limit) or failed (hub unreachable). */
  readonly accepted: number;
  readonly refused: number;
  readonly failed: number;
}

/** The hub's API address "HOST:PORT" (an IPv6 host in brackets, the port required) → parts, split by host-port.ts. */
export function relayTarget(text: string): { host: string; port: number } {
  const parts = splitHostPort(text);
  const port = parts?.port === undefined ? undefined : portNumber(parts.port);
  if (parts === undefined || parts.host === '' || port === undefined || port < 1 || port > 65535) throw new Error(`not HOST:PORT: ${JSON.stringify(text)}`);
  return { host: parts.host, port };
}

export class ApiRelay {
  readonly listen: { host: string; port: number };
  readonly target: { host: string; port: number };
  private readonly limits: RelayLimits;
  private readonly server: Server;
  private readonly clients = new Set<Socket>();
  private readonly upstreams = new Set<Socket>();
  private accepted = 0;
  private refused = 0;
  private failed = 0;

  constructor(listen: { host: string; port: number }, target: { host: string; port: number }, limits: RelayLimits = defaultRelayLimits) {
    this.listen = listen;
    this.target = target;
    this.limits = limits;
    this.server = createServer((client) => this.relay(client));
  }

  /** Listens; rejects with the socket error (EADDRINUSE, EADDRNOTAVAIL, ...). */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.listen.port, this.listen.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  private relay(client: Socket): void {
    if (this.clients.size >= this.limits.maxConnections) {
      this.refused++;
      client.destroy();
      return;
    }
    this.accepted++;
    const upstream = connect({ host: this.target.host, port: this.target.port, timeout: this.limits.connectTimeoutMs });
    this.clients.add(client);
    this.upstreams.add(upstream);
    let connected = false;
    const close = (): void => {
      client.destroy();
      upstream.destroy();
    };
    upstream.once('connect', () => {
      connected = true;
      upstream.setTimeout(this.limits.idleTimeoutMs);
    });
    upstream.on('timeout', () => {
      if (!connected) this.failed++;
      close();
    });
    upstream.on('error', () => {
      if (!connected) this.failed++;
      close();
    });
    client.setTimeout(this.limits.idleTimeoutMs, close);
    client.on('error', close);
    client.once('close', () => {
      this.clients.delete(client);
      upstream.destroy();
    });
    upstream.once('close', () => {
      this.upstreams.delete(upstream);
      client.destroy();
    });
    client.pipe(upstream);
    upstream.pipe(client);
  }

  stats(): RelayStats {
    return {
      listen: joinHostPort(this.listen.host, this.port),
      target: joinHostPort(this.target.host, this.target.port),
      connections: this.clients.size,
      accepted: this.accepted,
      refused: this.refused,
      failed: this.failed,
    };
  }

  /** The port actually bound (useful with port 0 in tests). */
  get port(): number {
    const a = this.server.address();
    return a && typeof a === 'object' ? a.port : this.listen.port;
  }

  /** Stops listening and closes every relayed connection. */
  stop(): Promise<void> {
    for (const s of [...this.clients, ...this.upstreams]) s.destroy();
    return new Promise((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
    });
  }
}
