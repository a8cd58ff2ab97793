/**
 * The server's Prometheus metrics: `GET /metrics` on its own plain-HTTP
 * listener (`metrics_listen`, default 127.0.0.1:9474), never on the public
 * API listener. The daemon imports this module (and with it prom-client)
 * only when metrics are on.
 *
 * Design notes:
 * - State lives where it already is: the gauges are filled at scrape time
 *   from the daemon's status snapshot (the same object `network show`
 *   reads) and from the store (CRL, bundle versions), so nothing is counted
 *   twice and a scrape never sees numbers the status file contradicts.
 *   Issuance counters are kept in the store (StoreTx.count, in the
 *   transaction that issues), because CLI calls issue too, in other
 *   processes. Only the API's events (requests, enrollments, TLS
 *   failures), which are not kept anywhere else, are counted here as they
 *   happen.
 * - Cardinality is bounded by the number of networks and links: labels are
 *   `network`, `state` (8 values), `route` (5 values), `code` (the HTTP
 *   status) and `kind` (the 6 issuance reasons of ISSUANCE_KINDS). Per-node series (label `node`) exist only with
 *   `metrics_per_client: true`, one per connected client.
 * - Units are base units (bytes, seconds); timestamps are Unix seconds, so
 *   alerts compute "time left" as `x - time()`.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { VERSION } from '../version.ts';
import type { ApiObserver, ApiRoute } from './api.ts';
import type { StatusSnapshot, SupervisedSnapshot } from './status.ts';
import { ISSUANCE_KINDS, type StoreCounter } from './store/store.ts';

/** The supervisor states, so every network exports all of them (0 or 1) and a state change is a value change, not a new series. */
const STATES = ['stopped', 'starting', 'connecting', 'connected', 'degraded', 'reloading', 'backoff', 'stopping', 'failed'] as const;

/** What a scrape reads from the store, per network. */
export interface NetworkFacts {
  readonly id: string;
  /** ms since the epoch */
  readonly crlNextUpdate: number;
  readonly crlNumber: number;
  /** Highest bundle version of the network's members (0 with no members). */
  readonly bundleVersion: number;
  readonly members: number;
}

/** What the metrics need from the daemon; narrow, so a test passes two closures. */
export interface MetricsSource {
  snapshot(): StatusSnapshot;
  networks(): readonly NetworkFacts[];
  /** The store's issuance counters (StoreTx.counters). */
  counters(): Partial<Record<StoreCounter, number>>;
}

export interface ServerMetricsOptions {
  readonly perClient?: boolean;
}

export class ServerMetrics implements ApiObserver {
  readonly registry = new Registry();
  private readonly requests: Counter<'route' | 'code'>;
  private readonly latency: Histogram<'route'>;
  private readonly enrollments: Counter<'result'>;
  private readonly tlsFailures: Counter;

  constructor(source: MetricsSource, opts: ServerMetricsOptions = {}) {
    const registers = [this.registry];
    // No prom-client default (process/nodejs_*) metrics: some of them are gauges named *_total, which
    // `promtool check metrics` rejects, and node_exporter already covers the process.
    new Gauge({ name: 'mvpn_build_info', help: 'Always 1; the version of the running mvpn-client.', labelNames: ['version'], registers }).set({ version: VERSION }, 1);
    new Gauge({
      name: 'mvpn_server_start_time_seconds',
      help: 'When the server daemon started, Unix seconds.',
      registers,
      collect() {
        this.set(Date.parse(source.snapshot().started_at) / 1000);
      },
    });

    const supervised = (prefix: 'network' | 'link', what: string, pick: (s: StatusSnapshot) => Readonly<Record<string, SupervisedSnapshot>>) => {
      new Gauge({
        name: `mvpn_${prefix}_up`,
        help: `1 while ${what} is connected or degraded (serving), else 0.`,
        labelNames: ['network'],
        registers,
        collect() {
          this.reset();
          for (const [id, s] of Object.entries(pick(source.snapshot()))) this.set({ network: id }, s.state === 'connected' || s.state === 'degraded' ? 1 : 0);
        },
      });
      new Gauge({
        name: `mvpn_${prefix}_state`,
        help: `The supervisor state of ${what}: 1 for the current state, 0 for the others.`,
        labelNames: ['network', 'state'],
        registers,
        collect() {
          this.reset();
          for (const [id, s] of Object.entries(pick(source.snapshot()))) for (const st of STATES) this.set({ network: id, state: st }, s.state === st ? 1 : 0);
        },
      });
      new Gauge({
        name: `mvpn_${prefix}_openvpn_restarts`,
        help: `openvpn processes of ${what} started after the first one since the daemon started (crash, hang, restart).`,
        labelNames: ['network'],
        registers,
        collect() {
          this.reset();
          for (const [id, s] of Object.entries(pick(source.snapshot()))) this.set({ network: id }, s.restarts);
        },
      });
    };
    supervised('network', "the network's openvpn server", (s) => s.networks);
    supervised('link', "the peer's link to its hub", (s) => s.links ?? {});

    new Gauge({
      name: 'mvpn_network_clients',
      help: 'Clients connected to the network (openvpn status, refreshed every few seconds).',
      labelNames: ['network'],
      registers,
      collect() {
        this.reset();
        for (const [id, n] of Object.entries(source.snapshot().networks)) this.set({ network: id }, n.clients.length);
      },
    });
    // Sums over the sessions connected now: a session that ends takes its bytes with it, so these are gauges, not counters.
    const bytes = (dir: 'received' | 'sent', field: 'bytes_in' | 'bytes_out') =>
      new Gauge({
        name: `mvpn_network_${dir}_bytes`,
        help: `Bytes the network's openvpn server ${dir} from the clients connected now (sum over their sessions).`,
        labelNames: ['network'],
        registers,
        collect() {
          this.reset();
          for (const [id, n] of Object.entries(source.snapshot().networks)) this.set({ network: id }, n.clients.reduce((a, c) => a + c[field], 0));
        },
      });
    bytes('received', 'bytes_in');
    bytes('sent', 'bytes_out');
    if (opts.perClient) {
      const perClient = (dir: 'received' | 'sent', field: 'bytes_in' | 'bytes_out') =>
        new Gauge({
          name: `mvpn_client_${dir}_bytes`,
          help: `Bytes the server ${dir} from one connected client in its current session (metrics_per_client).`,
          labelNames: ['network', 'node'],
          registers,
          collect() {
            this.reset();
            for (const [id, n] of Object.entries(source.snapshot().networks)) for (const c of n.clients) this.set({ network: id, node: c.cn }, c[field]);
          },
        });
      perClient('received', 'bytes_in');
      perClient('sent', 'bytes_out');
    }

    const fact = (name: string, help: string, value: (f: NetworkFacts) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['network'],
        registers,
        collect() {
          this.reset();
          for (const f of source.networks()) this.set({ network: f.id }, value(f));
        },
      });
    fact('mvpn_network_crl_expiry_timestamp_seconds', "When the network's CRL expires (its nextUpdate), Unix seconds; openvpn refuses every client after it.", (f) => f.crlNextUpdate / 1000);
    fact('mvpn_network_crl_number', "The network's CRL number (increases with every revocation and re-issue).", (f) => f.crlNumber);
    fact('mvpn_network_bundle_version', "The highest bundle version among the network's members.", (f) => f.bundleVersion);
    fact('mvpn_network_members', 'Nodes in the network (registered, including not yet enrolled and revoked).', (f) => f.members);

    new Gauge({
      name: 'mvpn_server_store_up',
      help: '1 while the daemon is connected to its state store, 0 while it is reconnecting (PostgreSQL restarted or unreachable); always 1 on SQLite.',
      registers,
      collect() {
        this.set(source.snapshot().store?.up === false ? 0 : 1);
      },
    });
    new Gauge({
      name: 'mvpn_link_sync_ok',
      help: "1 when the peer's last copy of its hub's members and CRL succeeded, 0 when it failed.",
      labelNames: ['network'],
      registers,
      collect() {
        this.reset();
        for (const [id, l] of Object.entries(source.snapshot().links ?? {})) if (l.sync) this.set({ network: id }, l.sync.ok ? 1 : 0);
      },
    });

    // Counted in the store with the change they count (CLI operations too), read at scrape time: they survive restarts.
    new Counter({
      name: 'mvpn_certificates_issued_total',
      help: 'Client certificates issued (node identities, network certificates, link certificates), by why: enroll, renew, export, membership, ca_roll, link.',
      labelNames: ['kind'],
      registers,
      collect() {
        this.reset();
        const c = source.counters();
        for (const kind of ISSUANCE_KINDS) this.inc({ kind }, c[`issued.${kind}`] ?? 0);
      },
    });
    new Counter({
      name: 'mvpn_crl_publications_total',
      help: 'CRLs published, all networks (revocations, half-life re-issues, CA rolls); per network, see changes(mvpn_network_crl_number).',
      registers,
      collect() {
        this.reset();
        this.inc(source.counters()['crl.published'] ?? 0);
      },
    });

    this.requests = new Counter({ name: 'mvpn_api_requests_total', help: 'HTTPS API requests answered, by route and HTTP status.', labelNames: ['route', 'code'], registers });
    this.latency = new Histogram({
      name: 'mvpn_api_request_duration_seconds',
      help: 'HTTPS API request latency, from the request to the last byte handed to the socket.',
      labelNames: ['route'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.enrollments = new Counter({ name: 'mvpn_api_enrollments_total', help: 'Enrollment requests by result (ok: a certificate was issued; refused: anything else).', labelNames: ['result'], registers });
    this.tlsFailures = new Counter({ name: 'mvpn_api_tls_handshake_failures_total', help: 'TLS handshakes on the API listener that failed.', registers });
    // Present from the first scrape, so rate() and alerts work before the first event.
    this.enrollments.inc({ result: 'ok' }, 0);
    this.enrollments.inc({ result: 'refused' }, 0);
  }

  request(route: ApiRoute, status: number, seconds: number): void {
    this.requests.inc({ route, code: String(status) });
    this.latency.observe({ route }, seconds);
  }

  enrollment(ok: boolean): void {
    this.enrollments.inc({ result: ok ? 'ok' : 'refused' });
  }

  tlsFailure(): void {
    this.tlsFailures.inc();
  }
}

// The listener serves the agent's metrics too; it lives with the other shared plumbing.
export { startMetricsServer, type MetricsServer } from '../util/metrics-http.ts';
