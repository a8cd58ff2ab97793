/**
 * `server run`: the HTTPS API plus one supervised openvpn server per network
 * that should be up, kept in line with the store.
 *
 * Design notes:
 * - The store is the only input. The CLI changes it from other processes;
 *   the daemon reconciles when another connection commits: at once on
 *   PostgreSQL (the store's `changed` event, from LISTEN/NOTIFY), within
 *   about a second on SQLite (it polls `PRAGMA data_version`, a cheap read).
 *   It also reconciles on a slower timer (CRL half-life, sessions to kill)
 *   and whenever an instance changes state. Reconciles are serialised; a
 *   request during one runs one more afterwards.
 * - A store that goes away (PostgreSQL restarted) stops nothing: the
 *   openvpn servers forward without it. The daemon logs the loss and the
 *   return, shows it in the snapshot (and mvpn_server_store_up), and
 *   reconciles when it is back; the store reconnects by itself.
 * - Reconcile per network: write its files (only what changed), start or
 *   stop its supervisor, restart it only when something openvpn reads at
 *   start changed. CRL and ccd changes need no restart: openvpn re-reads
 *   the CRL when it changes and reads ccd files at each connect.
 * - The servers and their sessions are ServerNetworks' (network-runner.ts),
 *   a peer's links the FederationRunner's (federation/runner.ts: bridge,
 *   link client, hub sync, API relay), as the agent has its NetworkRunner.
 * - One daemon per runtime directory (runtime-dir.ts), claimed before
 *   anything is touched. Only then is a leftover openvpn of a crashed
 *   previous daemon stopped (by pid, after checking its command line), so
 *   no network ever runs twice.
 * - READY=1 once the listener is up and every network that should be up is
 *   running or has definitely failed (or a timeout passed); STATUS= carries
 *   "N/M networks up, K clients".
 */
import { readFile, rm } from 'node:fs/promises';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { ConfigError, toMvpnError } from '../errors.ts';
import { nullLogger, type Logger } from '../log.ts';
import { completeRotation } from './anchor-rotation.ts';
import type { OpenvpnEvent } from '../openvpn/events.ts';
import { cleanupLeftovers } from '../openvpn/process.ts';
import { checkReachable, ensureOpenvpnUser, SHARED_DIR_MODE, shareWithOpenvpn, type OpenvpnUser } from '../openvpn/unpriv.ts';
import { checkBuildFingerprint } from './build-fingerprint.ts';
import { defaultHealthPolicy } from '../openvpn/health.ts';
import { HealthRound } from '../openvpn/health-round.ts';
import { Supervisor } from '../openvpn/supervisor.ts';
import type { SupervisorDeps } from '../openvpn/supervisor-deps.ts';
import type { InstanceSpec } from '../openvpn/supervisor-state.ts';
import { every, systemClock, type Cancel, type Clock } from '../util/clock.ts';
import { execCommand, type ExecFn } from '../util/exec.ts';
import { ensureDir } from '../util/fs-atomic.ts';
import { SerialTask } from '../util/serial.ts';
import { createApiServer, type ApiLimits } from './api.ts';
import { loadServerConfig, metricsListen, parseListen } from './config.ts';
import { DocumentService } from './doc-service.ts';
import type { MetricsServer, NetworkFacts, ServerMetrics } from './metrics.ts';
import type { ServerEvent } from './events.ts';
import { FederationRunner } from './federation/runner.ts';
import { linkPayload } from './federation/links.ts';
import { L3Runner, l3Plan, type L3Plan } from './routing/l3-runner.ts';
import { DEFAULT_HOST_ID, Leases, RENEW_MS } from './lease.ts';
import { writeNetworkFiles } from './network-files.ts';
import { claimRuntimeDir, releaseRuntimeDir } from './runtime-dir.ts';
import { ServerNetworks } from './network-runner.ts';
import type { ServerContext } from './ops/context.ts';
import { Upkeep } from './ops/upkeep.ts';
import { networkFacts } from './ops/networks.ts';
import { writeStatus, statusPath, type StatusSnapshot } from './status.ts';
import { Credentials } from './credentials.ts';
import { openStore } from './store/open.ts';
import type { Store, StoreEvent } from './store/store.ts';

/** fenceOverdue: SIGTERM, a second one after this long (openvpn's exit notice cut short), SIGKILL after FENCE_KILL_MS. */
const FENCE_SECOND_TERM_MS = 300;
const FENCE_KILL_MS = 5_000;

/** What the daemon tells systemd (src/systemd/notify.ts Notifier, narrowed). */
export interface DaemonNotifier {
  ready(status?: string): Promise<void>;
  status(text: string): Promise<void>;
  stopping(): Promise<void>;
}

export interface DaemonOptions {
  readonly stateDir: string;
  readonly clock?: Clock;
  readonly logger?: Logger<ServerEvent>;
  readonly openvpnLogger?: Logger<OpenvpnEvent>;
  /** Passed to every Supervisor (tests run openvpn inside a namespace through `spawn`/`exec`). */
  readonly supervisorDeps?: Partial<SupervisorDeps>;
  readonly notifier?: DaemonNotifier;
  /** data_version poll interval. */
  readonly pollMs?: number;
  /** Full reconcile interval (CRL half-life, session checks) even without changes. */
  readonly periodicMs?: number;
  /** How often connected clients are read for the status snapshot. */
  readonly statusMs?: number;
  /** READY=1 at the latest after this long, even if a network is still starting. */
  readonly readyTimeoutMs?: number;
  readonly apiLimits?: Partial<ApiLimits>;
  /** Runs `ping` for L2 neighbour priming and `ip` for a link's bridge. */
  readonly exec?: ExecFn;
  /** How often a peer copies its hubs' members and CRLs (revocation reaches the peer within about this long). */
  readonly linkSyncMs?: number;
}

export class ServerDaemon {
  private readonly ctx: ServerContext;
  private readonly store: Store;
  private readonly server: Server;
  private readonly opts: DaemonOptions;
  private readonly clock: Clock;
  private readonly logger: Logger<ServerEvent>;
  private readonly upkeep: Upkeep;
  private readonly networks: ServerNetworks;
  /** Which networks this host may run (src/server/lease.ts); with SQLite always all of them. */
  private readonly leases: Leases;
  private readonly federation: FederationRunner;
  /** L3 networks across servers: devices, the hub's backbone, BIRD (src/server/routing). */
  private readonly l3: L3Runner;
  private readonly timers: Cancel[] = [];
  private readonly startedAt: number;
  private lastDataVersion = -1;
  private leaseDeadline: Cancel | undefined;
  /** Servers fenceOverdue signalled (pid → when, and whether the second SIGTERM went). */
  private readonly fenced = new Map<number, { at: number; second: boolean }>();
  private readonly reconciler = new SerialTask(
    (cause) => this.reconcileOnce(cause),
    (err) => {
      const e = toMvpnError(err);
      // While the store is known to be away, store-lost said it once and store-back says how many passes it cost:
      // a line per pass (every 30 s, and at each lease change) for the length of an outage would only bury the rest.
      if (!this.storeState.up && e.code === 'MVPN_STORE_UNREACHABLE') {
        this.storeState.missedPasses++;
        return;
      }
      this.logger.emit({ kind: 'server.reconcile-failed', code: e.code, message: e.message });
    },
  );
  private stopped = false;
  private claimed = false;
  /** The user every openvpn drops to (undefined: not root, openvpn stays as we are). */
  private runAs: OpenvpnUser | undefined;
  private statusWrite: Promise<void> = Promise.resolve();
  private creds: Credentials | undefined;
  /** inode and mtime of signing.key when it was loaded: a change means `server anchor rotate` ran. */
  private metricsServer: MetricsServer | undefined;
  private facts: { at: number; value: NetworkFacts[] } | undefined;
  private counters: Record<string, number> | undefined;
  /** The store's connection as its last event said (a SQLite store is always up). */
  private storeState: { up: boolean; since: number; lastError?: string; missedPasses: number };

  private constructor(ctx: ServerContext & { store: Store }, server: Server, opts: DaemonOptions) {
    this.ctx = ctx;
    this.store = ctx.store;
    this.server = server;
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger ?? nullLogger();
    this.startedAt = this.clock.now();
    this.storeState = { up: true, since: this.startedAt, missedPasses: 0 };
    this.leases = new Leases({ store: ctx.store, hostId: ctx.config.host_id ?? DEFAULT_HOST_ID, clock: this.clock });
    this.upkeep = new Upkeep(ctx, this.logger, this.leases);
    const exec = opts.exec ?? execCommand;
    // One timer and one interface read per interval for the health checks of every openvpn here (as in the agent: with a
    // timer and an interface dump per supervisor, the work grew with the square of the networks).
    const healthRound = new HealthRound(opts.supervisorDeps?.clock ?? systemClock, (opts.supervisorDeps?.health ?? defaultHealthPolicy).intervalMs);
    // Every openvpn of this server (networks and links) drops to the openvpn user.
    const supervisor = (spec: InstanceSpec) =>
      new Supervisor(spec, { runAs: this.runAs, healthRound, ...(opts.openvpnLogger ? { logger: opts.openvpnLogger } : {}), ...opts.supervisorDeps });
    this.federation = new FederationRunner({
      ctx,
      clock: this.clock,
      logger: this.logger,
      exec,
      supervisor,
      onChange: () => void this.writeSnapshot(),
      requestReconcile: (cause) => this.requestReconcile(cause),
    });
    this.networks = new ServerNetworks({
      paths: ctx.paths,
      runtimeDir: ctx.config.runtime_dir,
      openvpnPath: ctx.config.openvpn_path,
      logger: this.logger,
      exec,
      supervisor,
      addressDev: (id) => this.federation.addressDev(id),
      onChange: () => {
        void this.writeSnapshot();
        void this.updateStatusLine();
      },
    });
    ctx.store.whileBlocked?.(() => this.fenceOverdue());
    this.l3 = new L3Runner({
      config: ctx.config,
      paths: ctx.paths,
      exec,
      logger: this.logger,
      supervisor,
      management: (id) => this.networks.management(id),
      onChange: () => void this.writeSnapshot(),
    });
  }

  /** Loads the state directory, cleans up after a crashed previous run, starts the API and every network that is up. */
  static async start(opts: DaemonOptions): Promise<ServerDaemon> {
    const { config, paths } = await loadServerConfig(opts.stateDir);
    await completeRotation(paths);
    await Promise.all(
      [paths.signingKey, paths.apiCaCert, paths.apiCaKey, paths.apiCert, paths.apiKey].map((p) =>
        readFile(p, 'utf8').catch((err: unknown) => {
          throw new ConfigError('MVPN_CONFIG_MISSING', `cannot read ${p}: ${(err as Error).message}`, { hint: 'is the state directory complete? (server init)' });
        }),
      ),
    );
    const logger = opts.logger ?? nullLogger<ServerEvent>();
    const creds = await Credentials.load(paths, logger);
    const store = await openStore(config, paths, { applicationName: `mvpn-server ${config.host_id ?? DEFAULT_HOST_ID}` });
    const clock = opts.clock ?? systemClock;
    const ctx = { config, paths, store, clock };
    const docs = new DocumentService(ctx, creds.signingKey);
    // prom-client loads only when metrics are on. Scrapes read the daemon, which exists before the listener starts.
    const metrics = metricsListen(config) === null
      ? undefined
      : new (await import('./metrics.ts')).ServerMetrics(
          { snapshot: () => daemon.snapshot(), networks: () => daemon.networkFacts(), counters: () => daemon.storeCounters() },
          { perClient: config.metrics_per_client === true },
        );
    const server = createApiServer({
      ctx,
      docs,
      apiCa: () => creds.apiCa(),
      logger,
      ...(opts.apiLimits ? { limits: opts.apiLimits } : {}),
      ...(metrics ? { observer: metrics } : {}),
      // Only called for requests, which are served after `daemon` below exists.
      onStoreChanged: (cause) => daemon.storeChanged(cause),
      beforeDocument: () => creds.reloadSigningKey(),
    });
    const daemon = new ServerDaemon(ctx, server, opts);
    daemon.creds = creds;
    store.watch?.((e) => daemon.storeEvent(e));
    creds.attach(docs, server);
    try {
      await ensureDir(config.runtime_dir, 0o700);
      await claimRuntimeDir(config.runtime_dir);
      daemon.claimed = true;
      await cleanupLeftovers(config.runtime_dir, { ...(opts.openvpnLogger ? { logger: opts.openvpnLogger } : {}) });
      // openvpn re-reads CRLs and ccd files after dropping root: it must reach them (src/openvpn/unpriv.ts).
      daemon.runAs = await ensureOpenvpnUser();
      for (const dir of [paths.stateDir, paths.networksDir]) {
        await ensureDir(dir, SHARED_DIR_MODE);
        await shareWithOpenvpn(dir, daemon.runAs, SHARED_DIR_MODE);
      }
      await checkReachable(paths.networksDir, daemon.runAs);
      // Before the first document is served: an upgraded build must not re-sign a serial nodes already hold.
      const fp = await checkBuildFingerprint(ctx);
      if (fp.bumped > 0) logger.emit({ kind: 'server.documents-renewed', nodes: fp.bumped, reason: fp.previous === null ? 'first-start' : 'build-changed' });
      const { host, port } = parseListen(config.listen);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      if (metrics) await daemon.startMetrics(metrics);
      const nets = store.read((tx) => tx.listNetworks());
      logger.emit({ kind: 'server.started', listen: daemon.listenAddress(), networks: nets.length });
      daemon.registerHost();
      daemon.leasePass();
      await daemon.reconcile('start');
      daemon.startTimers();
      void daemon.announceReady();
    } catch (err) {
      await daemon.stop('start failed').catch(() => undefined);
      throw err;
    }
    return daemon;
  }

  /** "host:port" the API listens on (the port is real even when config said 0). */
  listenAddress(): string {
    const a = this.server.address() as AddressInfo | null;
    if (!a) return this.ctx.config.listen;
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  /** "host:port" of the metrics listener, undefined when metrics are off or it could not bind. */
  metricsAddress(): string | undefined {
    return this.metricsServer?.address;
  }

  /**
   * A metrics listener that cannot bind (port taken) is reported, not fatal:
   * the API and the networks matter more than their monitoring.
   */
  private async startMetrics(metrics: ServerMetrics): Promise<void> {
    const listen = metricsListen(this.ctx.config)!;
    const { host, port } = parseListen(listen);
    try {
      this.metricsServer = await (await import('./metrics.ts')).startMetricsServer(metrics.registry, host, port);
      this.logger.emit({ kind: 'server.metrics-start', listen: this.metricsServer.address });
    } catch (err) {
      this.logger.emit({ kind: 'server.metrics-failed', listen, code: 'MVPN_METRICS_LISTEN_FAILED', message: (err as Error).message });
    }
  }

  /** networkFacts for a scrape, cached for a second (one scrape reads them for several metrics). */
  networkFacts(): NetworkFacts[] {
    const now = Date.now();
    if (this.facts && now - this.facts.at < 1_000) return this.facts.value;
    let value: NetworkFacts[];
    try {
      value = networkFacts(this.ctx);
    } catch (err) {
      // The store is away: a scrape still answers (mvpn_server_store_up 0) with the facts last read.
      if (this.facts) return this.facts.value;
      throw err;
    }
    this.facts = { at: now, value };
    return value;
  }

  /** The store's counters for a scrape; the last ones read while the store is away (counters never go back). */
  storeCounters(): Record<string, number> {
    try {
      this.counters = this.store.read((tx) => tx.counters());
    } catch (err) {
      if (this.counters === undefined) throw err;
    }
    return this.counters;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  private startTimers(): void {
    const repeat = (ms: number, fn: () => void) => this.timers.push(every(this.clock, ms, () => !this.stopped && fn()));
    repeat(this.opts.pollMs ?? 1_000, () => {
      let v: number;
      try {
        v = this.store.dataVersion();
      } catch {
        return;
      }
      if (v !== this.lastDataVersion) this.requestReconcile('store changed');
      void this.creds?.reload();
    });
    repeat(RENEW_MS, () => this.leasePass());
    repeat(this.opts.periodicMs ?? 30_000, () => this.requestReconcile('periodic'));
    repeat(this.opts.linkSyncMs ?? 2_000, () => void this.federation.sync());
    repeat(1_000, () => void this.l3.tick());
    repeat(this.opts.statusMs ?? 5_000, () =>
      void this.networks
        .refreshClients()
        .then(() => this.updateStatusLine())
        .then(() => this.writeSnapshot()),
    );
  }

  private storeEvent(e: StoreEvent): void {
    if (e.kind === 'changed') return this.requestReconcile('store notified');
    if (e.kind === 'lost') {
      if (this.storeState.up) {
        this.logger.emit({ kind: 'server.store-lost', message: e.message });
        this.storeState = { up: false, since: this.clock.now(), lastError: e.message, missedPasses: 0 };
      } else {
        this.storeState.lastError = e.message;
      }
    } else {
      this.logger.emit({ kind: 'server.store-back', downMs: e.downMs, missedPasses: this.storeState.missedPasses });
      this.storeState = { up: true, since: this.clock.now(), missedPasses: 0 };
      this.requestReconcile('store reconnected');
    }
    void this.writeSnapshot();
  }

  /**
   * Runs while a store request blocks the thread (PostgresStore
   * whileBlocked, every ~100 ms): the server of a network whose local lease
   * deadline has passed is stopped here, by pid — SIGTERM, a second one
   * 300 ms later, SIGKILL after 5 s. A request that hangs (the database
   * partitioned away) would otherwise hold the event loop, and with it the
   * lease pass that stops the network, for up to 20 s while another host
   * took the lease over. Once the loop runs again, the lease pass stops the
   * network properly (retain) and its supervisor does not start it again.
   */
  private fenceOverdue(): void {
    const now = this.clock.now();
    for (const id of this.networks.ids()) {
      const until = this.leases.until(id);
      const pid = this.networks.pid(id);
      if (until === undefined || until > now || pid === undefined) continue;
      const f = this.fenced.get(pid);
      const signal = (sig: NodeJS.Signals) => {
        try {
          process.kill(pid, sig);
        } catch {
          // gone already
        }
      };
      if (!f) {
        this.fenced.set(pid, { at: now, second: false });
        this.logger.emit({ kind: 'server.network-stop', network: id, reason: 'its lease ran out while the state store did not answer' });
        signal('SIGTERM');
      } else if (!f.second && now - f.at >= FENCE_SECOND_TERM_MS) {
        f.second = true;
        signal('SIGTERM');
      } else if (now - f.at >= FENCE_KILL_MS) {
        signal('SIGKILL');
      }
    }
  }

  /** This host in the store's `hosts`, with the remotes nodes reach it at (its config's names and addresses). */
  private registerHost(): void {
    const { config } = this.ctx;
    const remotes = [...config.hostnames, ...config.addresses].map((host) => ({ host }));
    this.store.write((tx) => tx.putHost({ id: this.leases.hostId, remotes, joinedAt: this.clock.now() }));
  }

  /** Renews this host's leases: a network whose lease was lost stops at once (before it can expire elsewhere), a new one starts. */
  private leasePass(): void {
    for (const [pid, f] of this.fenced) if (this.clock.now() - f.at > 60_000) this.fenced.delete(pid);
    let up: string[];
    try {
      up = this.store.read((tx) => tx.listNetworks()).filter((n) => n.state === 'up').map((n) => n.id);
    } catch {
      // The store cannot say: keep wanting what runs here (renewals fail alike while it is away).
      up = this.networks.ids();
    }
    const changed = this.leases.renew(up);
    this.armLeaseDeadline();
    if (!changed) return;
    const running = this.leases.running();
    this.logger.emit({ kind: 'server.leases', host: this.leases.hostId, running: [...running].sort() });
    void this.networks.retain(running, new Set(up), 'this host does not hold its lease', true);
    this.requestReconcile('lease changed');
  }

  /**
   * One more pass just after the earliest local deadline of a network that
   * runs here, so a network whose renewals fail stops at its deadline, not up
   * to one renewal period (2 s) later: with openvpn's exit that was the
   * whole 4 s between the local deadline and the lease's expiry.
   */
  private armLeaseDeadline(): void {
    this.leaseDeadline?.();
    const untils = this.networks.ids().map((id) => this.leases.until(id) ?? 0);
    if (untils.length === 0 || this.stopped) return;
    const ms = Math.min(...untils) - this.clock.now();
    // Renewed in time, the deadline lies beyond the next pass anyway.
    if (ms >= RENEW_MS || ms < 0) return;
    this.leaseDeadline = this.clock.setTimeout(() => !this.stopped && this.leasePass(), ms + 10);
  }

  /** A change this process committed itself (invisible to the data_version poll). */
  storeChanged(cause: string): void {
    this.requestReconcile(cause);
  }

  private requestReconcile(cause: string): void {
    if (!this.stopped) void this.reconciler.run(cause);
  }

  /** One pass: store → files → supervisors → sessions. Serialised. */
  reconcile(cause: string): Promise<void> {
    return this.reconciler.run(cause);
  }

  private async reconcileOnce(cause: string): Promise<void> {
    if (this.stopped) return;
    // Read data_version first: a commit after this point triggers another pass.
    this.lastDataVersion = this.store.dataVersion();
    await this.upkeep.run();
    const { nets, members, links } = this.store.read((tx) => {
      const ns = tx.listNetworks();
      return { nets: ns, members: new Map(ns.map((n) => [n.id, tx.memberAddresses(n.id)])), links: new Map(tx.listLinks().map((l) => [l.network, l])) };
    });
    const up: string[] = [];
    // Only the networks this host holds the lease of (src/server/lease.ts).
    const wanted = new Set(nets.filter((n) => n.state === 'up' && this.leases.epoch(n.id) !== undefined).map((n) => n.id));
    const plans = new Map<string, L3Plan>();
    for (const net of nets) {
      const link = links.get(net.id);
      const plan = wanted.has(net.id) ? l3Plan(net, members.get(net.id) ?? [], link && { payload: linkPayload(link), servers: this.federation.servers(net.id) }) : undefined;
      if (plan) plans.set(net.id, plan);
    }
    // A network that becomes routed (or stops being routed) gets its openvpn stopped before its devices change.
    const flipping = this.l3.flipping(plans, wanted);
    const stoppedNow = await this.networks.retain(new Set([...wanted].filter((id) => !flipping.has(id))), new Set(nets.map((n) => n.id)), 'its routing changes');
    await this.federation.retain(new Set([...wanted].filter((id) => links.has(id))));
    await this.l3.release(plans);
    for (const net of nets) {
      if (!wanted.has(net.id) || this.stopped) continue;
      const ms = members.get(net.id) ?? [];
      const link = links.get(net.id);
      const plan = plans.get(net.id);
      let restartNeeded: boolean;
      try {
        const bridge = plan ? await this.l3.prepare(plan) : await this.federation.prepare(net, link);
        restartNeeded = (await writeNetworkFiles(this.ctx.config, this.ctx.paths, net, ms, bridge, this.runAs)).restartNeeded;
      } catch (err) {
        const e = toMvpnError(err);
        this.logger.emit({ kind: 'server.files-failed', network: net.id, code: e.code, message: e.message });
        continue;
      }
      // The lease may have gone while the files were written.
      if (this.leases.epoch(net.id) === undefined) continue;
      this.networks.ensure(net, restartNeeded, this.federation.isBridged(net.id) || plan !== undefined);
      up.push(net.id);
      if (link) await this.federation.ensure(link);
      if (plan?.role === 'hub') {
        await this.l3.ensureBackbone(net, ms, this.runAs).catch((err: unknown) => {
          const e = toMvpnError(err);
          this.logger.emit({ kind: 'server.files-failed', network: net.id, code: e.code, message: `backbone: ${e.message}` });
        });
      }
      await this.networks.killDisallowed(net, ms);
    }
    this.l3.use(plans);
    this.logger.emit({ kind: 'server.reconcile', cause, up, stopped: stoppedNow });
    await this.writeSnapshot();
  }

  /** The status snapshot `network show` reads. */
  snapshot(): StatusSnapshot {
    return {
      pid: process.pid,
      started_at: new Date(this.startedAt).toISOString(),
      updated_at: new Date(this.clock.now()).toISOString(),
      listen: this.listenAddress(),
      networks: this.networks.snapshot(),
      links: this.federation.snapshot(),
      ...(this.l3.view() ? { routing: this.l3.view() } : {}),
      store: {
        up: this.storeState.up,
        since: new Date(this.storeState.since).toISOString(),
        ...(this.storeState.lastError === undefined ? {} : { last_error: this.storeState.lastError }),
      },
    };
  }

  private writeSnapshot(): Promise<void> {
    if (this.stopped || !this.claimed) return this.statusWrite;
    this.statusWrite = this.statusWrite.then(() => writeStatus(this.ctx.config.runtime_dir, this.snapshot()).catch(() => undefined));
    return this.statusWrite;
  }

  private async updateStatusLine(): Promise<void> {
    await this.opts.notifier?.status(this.networks.statusLine()).catch(() => undefined);
  }

  private async announceReady(): Promise<void> {
    const deadline = this.clock.now() + (this.opts.readyTimeoutMs ?? 60_000);
    while (!this.stopped && this.clock.now() < deadline) {
      if (this.networks.settled()) break;
      await new Promise<void>((r) => this.clock.setTimeout(r, 200));
    }
    if (this.stopped) return;
    const line = this.networks.statusLine();
    this.logger.emit({ kind: 'server.ready', status: line });
    await this.opts.notifier?.ready(line).catch(() => undefined);
  }

  /** Stops every openvpn (by pid, through its supervisor), closes the listener and the store. */
  async stop(reason = 'stop requested'): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.logger.emit({ kind: 'server.stopping', reason });
    await this.opts.notifier?.stopping().catch(() => undefined);
    for (const t of this.timers.splice(0)) t();
    this.leaseDeadline?.();
    await this.reconciler.close();
    await this.federation.stop();
    await this.networks.stop();
    await this.l3.stop();
    // Only once its openvpns are gone: another host may take the networks over at once.
    if (this.claimed) this.leases.releaseAll();
    await this.federation.removeBridges();
    await new Promise<void>((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    await this.metricsServer?.close();
    this.metricsServer = undefined;
    await this.statusWrite;
    // The runtime files belong to whoever claimed the directory: a daemon that was refused leaves them alone.
    if (this.claimed) {
      await rm(statusPath(this.ctx.config.runtime_dir), { force: true });
      await releaseRuntimeDir(this.ctx.config.runtime_dir);
    }
    this.store.close();
    this.logger.emit({ kind: 'server.stopped' });
  }
}
