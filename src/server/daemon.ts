/**
 * `server run`: the HTTPS API plus one supervised openvpn server per network
 * that should be up, kept in line with the store.
 *
 * Design notes:
 * - The store is the only input. The CLI changes it from other processes;
 *   the daemon polls `PRAGMA data_version` (a cheap read that changes when
 *   another connection commits) about once a second and reconciles, and
 *   also reconciles on a slower timer (CRL half-life, sessions to kill) and
 *   whenever an instance changes state. Reconciles are serialised; a request
 *   during one runs one more afterwards.
 * - Reconcile per network: write its files (only what changed), start or
 *   stop its supervisor, restart it only when something openvpn reads at
 *   start changed. CRL and ccd changes need no restart: openvpn re-reads
 *   the CRL when it changes and reads ccd files at each connect.
 * - Sessions that must end: after files are written, every connected client
 *   (`status 3`) whose CN is no longer allowed (removed, revoked, no ccd),
 *   or whose certificate was replaced since the last reconcile, is ended
 *   with `client-kill ID RESTART` (`kill CN` where openvpn gives no id).
 * - One daemon per runtime directory: `server.pid` there names the running
 *   one (checked against /proc/<pid>/cmdline), and a second `server run`
 *   refuses with MVPN_DAEMON_RUNNING before it touches anything. Only then
 *   is a leftover openvpn of a crashed previous daemon stopped (by pid, after
 *   checking its command line), so no network ever runs twice.
 * - L2 neighbour priming: openvpn in bridge mode forwards a unicast frame to
 *   a client only once it has seen a frame from that client's MAC; unknown
 *   destinations go to the server's tap, not to the other clients. After a
 *   server restart (its MAC table is empty) two clients with warm ARP caches
 *   would not reach each other until one of them happens to send a
 *   broadcast. So when a session appears, the daemon pings the node's
 *   address once from the server side: the ARP request reaches every client
 *   and the node's reply teaches openvpn its MAC.
 * - READY=1 once the listener is up and every network that should be up is
 *   running or has definitely failed (or a timeout passed); STATUS= carries
 *   "N/M networks up, K clients".
 */
import { open, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { ConfigError, DaemonError, toMvpnError } from '../errors.ts';
import { nullLogger, type Logger } from '../log.ts';
import { signingKeyFromPem } from '../bundle/sign.ts';
import { completeRotation } from './anchor-rotation.ts';
import type { CaMaterial } from '../pki/ca.ts';
import type { OpenvpnEvent } from '../openvpn/events.ts';
import { cleanupLeftovers, isAlive, readCmdline, runtimePaths } from '../openvpn/process.ts';
import { checkReachable, ensureOpenvpnUser, SHARED_DIR_MODE, shareWithOpenvpn, type OpenvpnUser } from '../openvpn/unpriv.ts';
import { checkBuildFingerprint } from './build-fingerprint.ts';
import { Supervisor } from '../openvpn/supervisor.ts';
import type { SupervisorDeps } from '../openvpn/supervisor-deps.ts';
import type { InstanceStatus } from '../openvpn/supervisor-state.ts';
import { systemClock, type Cancel, type Clock } from '../util/clock.ts';
import { execCommand, type ExecFn } from '../util/exec.ts';
import { ensureDir } from '../util/fs-atomic.ts';
import { intToIp, parseCidr, serverAddress } from './alloc.ts';
import { createApiServer, type ApiLimits } from './api.ts';
import { loadServerConfig, metricsListen, parseListen } from './config.ts';
import { DocumentService } from './doc-service.ts';
import type { MetricsServer, NetworkFacts, ServerMetrics } from './metrics.ts';
import type { ServerEvent } from './events.ts';
import type { LinkPayload } from './federation/link-bundle.ts';
import { bridgeDev, ensureBridge, fetchLinkState, linkDev, removeBridge, writeLinkFiles } from './federation/link-runtime.ts';
import { applyLinkState, hubApiTarget, linkPayload } from './federation/links.ts';
import { ApiRelay, splitHostPort } from './federation/relay.ts';
import { allowedMembers, networkFilePaths, serverDev, writeNetworkFiles } from './network-files.ts';
import type { ServerContext } from './ops/context.ts';
import { caExpiries, finishDueCaRolls } from './ops/ca-roll.ts';
import { DAY } from './ops/context.ts';
import { refreshDueCrls } from './ops/crl.ts';
import { writeStatus, statusPath, type ClientSnapshot, type InstanceSnapshot, type LinkSnapshot, type StatusSnapshot, type SupervisedSnapshot } from './status.ts';
import { openStore } from './store/open.ts';
import type { LinkRecord, MemberSummary, NetworkRecord, Store } from './store/store.ts';

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

/** A peer's link: the openvpn client to the hub, and the last state sync. */
interface LinkInstance {
  readonly sup: Supervisor;
  readonly payload: LinkPayload;
  lastSync?: { ok: boolean; at: number; error?: string };
  /** The API relay for the nodes behind this server (link `relay_listen`), once it listens. */
  relay?: ApiRelay;
  relayError?: string;
}

interface Instance {
  readonly sup: Supervisor;
  /** CN → certificate serial at the last reconcile (a change means: kill the old session). */
  serials: Map<string, string>;
  /** CN → tunnel address of the allowed members (for priming). */
  addresses: Map<string, string>;
  clients: ClientSnapshot[];
}

const SETTLED = new Set(['connected', 'degraded', 'failed', 'backoff']);

const PID_FILE = 'server.pid';

/**
 * Claims the runtime directory for this process, or throws MVPN_DAEMON_RUNNING
 * when a live `server run` (or another daemon in this process) holds it. A
 * pid file naming a dead process or something else is stale and replaced.
 */
export async function claimRuntimeDir(runtimeDir: string): Promise<void> {
  const path = join(runtimeDir, PID_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o644);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
    if (Number.isSafeInteger(pid) && pid > 0 && (await isAlive(pid))) {
      const argv = (await readCmdline(pid)) ?? [];
      if (pid === process.pid || (argv.includes('server') && argv.includes('run'))) {
        throw new DaemonError('MVPN_DAEMON_RUNNING', `a server daemon (pid ${pid}) is already running on ${runtimeDir}`, {
          context: { pid, runtimeDir },
          hint: 'stop it first (systemctl stop mvpn-server), or use another --state-dir',
        });
      }
    }
    await rm(path, { force: true });
  }
  throw new DaemonError('MVPN_DAEMON_RUNNING', `cannot claim ${path}: another daemon keeps recreating it`);
}

export class ServerDaemon {
  private readonly ctx: ServerContext;
  private readonly store: Store;
  private readonly server: Server;
  private readonly opts: DaemonOptions;
  private readonly clock: Clock;
  private caWarnedAt: number | undefined;
  private readonly logger: Logger<ServerEvent>;
  private readonly instances = new Map<string, Instance>();
  private readonly links = new Map<string, LinkInstance>();
  /** Mirrors whose bridge and taps exist. */
  private readonly bridged = new Set<string>();
  private readonly timers: Cancel[] = [];
  private readonly startedAt: number;
  private lastDataVersion = -1;
  private reconciling: Promise<void> | undefined;
  private again: string | undefined;
  private stopped = false;
  private claimed = false;
  /** The user every openvpn drops to (undefined: not root, openvpn stays as we are). */
  private runAs: OpenvpnUser | undefined;
  private statusWrite: Promise<void> = Promise.resolve();
  private docs: DocumentService | undefined;
  /** inode and mtime of signing.key when it was loaded: a change means `server anchor rotate` ran. */
  private signingKeyStamp = '';
  private metricsServer: MetricsServer | undefined;
  private facts: { at: number; value: NetworkFacts[] } | undefined;

  private constructor(ctx: ServerContext & { store: Store }, server: Server, opts: DaemonOptions) {
    this.ctx = ctx;
    this.store = ctx.store;
    this.server = server;
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger ?? nullLogger();
    this.startedAt = this.clock.now();
  }

  /** Loads the state directory, cleans up after a crashed previous run, starts the API and every network that is up. */
  static async start(opts: DaemonOptions): Promise<ServerDaemon> {
    const { config, paths } = await loadServerConfig(opts.stateDir);
    await completeRotation(paths);
    const [signingPem, caCertPem, caKeyPem, certPem, keyPem] = await Promise.all(
      [paths.signingKey, paths.apiCaCert, paths.apiCaKey, paths.apiCert, paths.apiKey].map((p) =>
        readFile(p, 'utf8').catch((err: unknown) => {
          throw new ConfigError('MVPN_CONFIG_MISSING', `cannot read ${p}: ${(err as Error).message}`, { hint: 'is the state directory complete? (server init)' });
        }),
      ),
    );
    const signingKey = signingKeyFromPem(signingPem!);
    const apiCa: CaMaterial = { alg: 'ec-p256', certPem: caCertPem!, keyPem: caKeyPem! };
    const store = await openStore(config, paths);
    const clock = opts.clock ?? systemClock;
    const ctx = { config, paths, store, clock };
    const logger = opts.logger ?? nullLogger<ServerEvent>();
    const docs = new DocumentService(ctx, signingKey);
    // prom-client loads only when metrics are on. Scrapes read the daemon, which exists before the listener starts.
    const metrics = metricsListen(config) === null
      ? undefined
      : new (await import('./metrics.ts')).ServerMetrics(
          { snapshot: () => daemon.snapshot(), networks: () => daemon.networkFacts() },
          { perClient: config.metrics_per_client === true },
        );
    const server = createApiServer({
      ctx,
      docs,
      apiCa,
      tls: { certPem: certPem!, keyPem: keyPem! },
      logger,
      ...(opts.apiLimits ? { limits: opts.apiLimits } : {}),
      ...(metrics ? { observer: metrics } : {}),
      // Only called for requests, which are served after `daemon` below exists.
      onStoreChanged: (cause) => daemon.storeChanged(cause),
      beforeDocument: () => daemon.reloadSigningKey(),
    });
    const daemon = new ServerDaemon(ctx, server, opts);
    daemon.docs = docs;
    daemon.signingKeyStamp = await fileStamp(paths.signingKey);
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

  /** Per-network facts from the store for a scrape; cached for a second (one scrape reads them for several metrics). */
  networkFacts(): NetworkFacts[] {
    const now = Date.now();
    if (this.facts && now - this.facts.at < 1_000) return this.facts.value;
    const value = this.store.read((tx) => {
      const ms = tx.listMemberships();
      return tx
        .listNetworks()
        .filter((n) => n.state !== 'deleted')
        .map((n) => {
          const mine = ms.filter((m) => m.network === n.id);
          return { id: n.id, crlNextUpdate: n.crlNextUpdate, crlNumber: n.crlNumber, members: mine.length, bundleVersion: mine.reduce((a, m) => Math.max(a, m.bundleVersion), 0) };
        });
    });
    this.facts = { at: now, value };
    return value;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** Status of one network's openvpn server (undefined if it is not supervised). */
  instanceStatus(id: string): InstanceStatus | undefined {
    return this.instances.get(id)?.sup.status();
  }

  private startTimers(): void {
    const every = (ms: number, fn: () => void) => {
      let cancel: Cancel = () => undefined;
      const tick = () => {
        if (this.stopped) return;
        fn();
        cancel = this.clock.setTimeout(tick, ms);
      };
      cancel = this.clock.setTimeout(tick, ms);
      this.timers.push(() => cancel());
    };
    every(this.opts.pollMs ?? 1_000, () => {
      let v: number;
      try {
        v = this.store.dataVersion();
      } catch {
        return;
      }
      if (v !== this.lastDataVersion) this.requestReconcile('store changed');
      void this.reloadSigningKey();
    });
    every(this.opts.periodicMs ?? 30_000, () => this.requestReconcile('periodic'));
    every(this.opts.linkSyncMs ?? 2_000, () => void this.syncLinks());
    every(this.opts.statusMs ?? 5_000, () => void this.refreshClients().then(() => this.writeSnapshot()));
  }

  /**
   * After `server anchor rotate` (another process): sign with the new key.
   * Checked on the 1 s poll and before every membership document is served
   * (one stat), so the old key signs nothing once signing.key was replaced.
   */
  async reloadSigningKey(): Promise<void> {
    const { paths } = this.ctx;
    try {
      const stamp = await fileStamp(paths.signingKey);
      if (stamp === this.signingKeyStamp || this.docs === undefined) return;
      const key = signingKeyFromPem(await readFile(paths.signingKey, 'utf8'));
      this.signingKeyStamp = stamp;
      if (key.keyId === this.docs.keyId) return;
      const from = this.docs.keyId;
      this.docs.setKey(key);
      this.logger.emit({ kind: 'server.anchor-rotated', from, to: key.keyId });
    } catch (err) {
      const e = toMvpnError(err);
      this.logger.emit({ kind: 'server.reconcile-failed', code: e.code, message: `reloading the signing key: ${e.message}` });
    }
  }

  /** A change this process committed itself (invisible to the data_version poll). */
  storeChanged(cause: string): void {
    this.requestReconcile(cause);
  }

  private requestReconcile(cause: string): void {
    if (this.stopped) return;
    if (this.reconciling) {
      this.again = cause;
      return;
    }
    void this.reconcile(cause);
  }

  /** One pass: store → files → supervisors → sessions. Serialised. */
  async reconcile(cause: string): Promise<void> {
    if (this.reconciling) {
      this.again = cause;
      return this.reconciling;
    }
    this.reconciling = (async () => {
      try {
        await this.reconcileOnce(cause);
      } catch (err) {
        const e = toMvpnError(err);
        this.logger.emit({ kind: 'server.reconcile-failed', code: e.code, message: e.message });
      } finally {
        this.reconciling = undefined;
      }
      if (this.again !== undefined && !this.stopped) {
        const next = this.again;
        this.again = undefined;
        await this.reconcile(next);
      }
    })();
    return this.reconciling;
  }

  /** At start and then once a day: a warning for every CA (networks', the API's) within its warning window. */
  private async warnCaExpiry(): Promise<void> {
    const now = this.clock.now();
    if (this.caWarnedAt !== undefined && now - this.caWarnedAt < DAY) return;
    this.caWarnedAt = now;
    for (const e of await caExpiries(this.ctx, now)) {
      if (e.warning !== undefined) this.logger.emit({ kind: 'server.ca-expiring', which: e.which, daysLeft: e.daysLeft, message: e.warning });
    }
  }

  private async reconcileOnce(cause: string): Promise<void> {
    if (this.stopped) return;
    // Read data_version first: a commit after this point triggers another pass.
    this.lastDataVersion = this.store.dataVersion();
    for (const r of await refreshDueCrls(this.ctx)) {
      this.logger.emit({ kind: 'server.crl-refreshed', network: r.network, number: r.number, nextUpdate: new Date(r.nextUpdate).toISOString() });
    }
    for (const id of await finishDueCaRolls(this.ctx)) this.logger.emit({ kind: 'server.ca-roll-finished', network: id });
    await this.warnCaExpiry();
    const { nets, members, links } = this.store.read((tx) => {
      const ns = tx.listNetworks();
      return { nets: ns, members: new Map(ns.map((n) => [n.id, tx.memberAddresses(n.id)])), links: new Map(tx.listLinks().map((l) => [l.network, l])) };
    });
    const up: string[] = [];
    const stoppedNow: string[] = [];
    const wanted = new Set(nets.filter((n) => n.state === 'up').map((n) => n.id));
    for (const [id, inst] of this.instances) {
      if (!wanted.has(id)) {
        this.logger.emit({ kind: 'server.network-stop', network: id, reason: nets.some((n) => n.id === id) ? 'network is down or deleted' : 'network was purged' });
        this.instances.delete(id);
        await inst.sup.stop();
        stoppedNow.push(id);
      }
    }
    for (const id of [...this.links.keys(), ...this.bridged]) if (!wanted.has(id) || !links.has(id)) await this.stopLink(id);
    for (const net of nets) {
      if (net.state !== 'up' || this.stopped) continue;
      const ms = members.get(net.id) ?? [];
      const link = links.get(net.id);
      const payload = link ? linkPayload(link) : undefined;
      let restartNeeded: boolean;
      try {
        if (payload && !this.bridged.has(net.id)) {
          await ensureBridge(this.exec(), net.id, payload.peer.name, payload.peer.address, parseCidr(net.subnet).prefix);
          this.bridged.add(net.id);
        }
        const bridge = payload ? { address: payload.peer.address } : undefined;
        restartNeeded = (await writeNetworkFiles(this.ctx.config, this.ctx.paths, net, ms, bridge, this.runAs)).restartNeeded;
      } catch (err) {
        const e = toMvpnError(err);
        this.logger.emit({ kind: 'server.files-failed', network: net.id, code: e.code, message: e.message });
        continue;
      }
      let inst = this.instances.get(net.id);
      if (!inst) {
        inst = this.startInstance(net);
      } else if (restartNeeded) {
        this.logger.emit({ kind: 'server.network-restart', network: net.id, reason: 'its config, certificate or keys changed' });
        inst.sup.restart();
      }
      up.push(net.id);
      if (link && payload) await this.ensureLink(link, payload);
      await this.killDisallowed(net, inst, ms);
    }
    this.logger.emit({ kind: 'server.reconcile', cause, up, stopped: stoppedNow });
    await this.writeSnapshot();
  }

  private startInstance(net: NetworkRecord): Instance {
    const f = networkFilePaths(this.ctx.paths, net.id);
    const rt = runtimePaths(this.ctx.config.runtime_dir, `ms-${net.id}`);
    const subnet = parseCidr(net.subnet);
    const sup = new Supervisor(
      {
        id: net.id,
        role: 'server',
        configPath: f.config,
        cwd: f.dir,
        mgmtSocket: rt.mgmtSocket,
        pidFile: rt.pidFile,
        dev: serverDev(net.id),
        // A mirror's address is on its bridge, not on the tap.
        ...(this.bridged.has(net.id) ? {} : { expectedAddress: `${intToIp(serverAddress(subnet))}/${subnet.prefix}` }),
        openvpnPath: this.ctx.config.openvpn_path,
      },
      this.supervisorDeps(),
    );
    const inst: Instance = { sup, serials: new Map(), addresses: new Map(), clients: [] };
    sup.on('change', () => {
      void this.writeSnapshot();
      void this.updateStatusLine();
    });
    this.instances.set(net.id, inst);
    this.logger.emit({ kind: 'server.network-start', network: net.id });
    sup.start();
    return inst;
  }

  /** Every openvpn of this server (networks and links) drops to the openvpn user. */
  private supervisorDeps(): Partial<SupervisorDeps> {
    return { runAs: this.runAs, ...(this.opts.openvpnLogger ? { logger: this.opts.openvpnLogger } : {}), ...this.opts.supervisorDeps };
  }

  private exec(): ExecFn {
    return this.opts.exec ?? execCommand;
  }

  /** Starts the link client of a mirror (or restarts it when its files changed). */
  private async ensureLink(link: LinkRecord, payload: LinkPayload): Promise<void> {
    const { files, changed } = await writeLinkFiles(networkFilePaths(this.ctx.paths, link.network).dir, payload);
    const cur = this.links.get(link.network);
    if (cur) {
      if (changed) cur.sup.restart();
      await this.ensureRelay(link, cur);
      return;
    }
    const rt = runtimePaths(this.ctx.config.runtime_dir, linkDev(link.network));
    const sup = new Supervisor(
      {
        id: `link-${link.network}`,
        role: 'client',
        configPath: files.config,
        cwd: files.dir,
        mgmtSocket: rt.mgmtSocket,
        pidFile: rt.pidFile,
        dev: linkDev(link.network),
        openvpnPath: this.ctx.config.openvpn_path,
      },
      this.supervisorDeps(),
    );
    sup.on('change', () => void this.writeSnapshot());
    const inst: LinkInstance = { sup, payload };
    this.links.set(link.network, inst);
    this.logger.emit({ kind: 'server.link-start', network: link.network, hub: payload.hub.remotes.map((r) => `${r.host}:${r.port}`).join(', ') });
    sup.start();
    void this.syncLink(link.network);
    await this.ensureRelay(link, inst);
  }

  /** Starts the link's API relay if it has one and it does not listen yet (a failure is retried at the next reconcile). */
  private async ensureRelay(link: LinkRecord, inst: LinkInstance): Promise<void> {
    if (link.relayListen === null || inst.relay || this.stopped) return;
    const relay = new ApiRelay(parseListen(link.relayListen), splitHostPort(hubApiTarget(inst.payload)));
    try {
      await relay.start();
      inst.relay = relay;
      delete inst.relayError;
      this.logger.emit({ kind: 'server.relay-start', network: link.network, listen: relay.stats().listen, target: relay.stats().target });
    } catch (err) {
      const message = `API relay on ${link.relayListen}: ${(err as Error).message}`;
      if (inst.relayError !== message) this.logger.emit({ kind: 'server.link-failed', network: link.network, code: 'MVPN_RELAY_FAILED', message });
      inst.relayError = message;
    }
  }

  /** Stops a mirror's link client and removes its bridge and taps. */
  private async stopLink(id: string): Promise<void> {
    const l = this.links.get(id);
    this.links.delete(id);
    await l?.relay?.stop();
    await l?.sup.stop();
    if (this.bridged.delete(id) || l) {
      await removeBridge(this.exec(), id).catch((err: unknown) => {
        const e = toMvpnError(err);
        this.logger.emit({ kind: 'server.link-failed', network: id, code: e.code, message: e.message });
      });
    }
  }

  private async syncLinks(): Promise<void> {
    await Promise.all([...this.links.keys()].map((id) => this.syncLink(id)));
  }

  /** Copies the hub's members and CRL into the mirror; a change reconciles (ccd, CRL, kill). */
  private async syncLink(id: string): Promise<void> {
    const l = this.links.get(id);
    if (!l || this.stopped) return;
    try {
      const state = await fetchLinkState(l.payload);
      if (this.stopped) return;
      const changed = applyLinkState(this.ctx, state);
      const was = l.lastSync;
      l.lastSync = { ok: true, at: this.clock.now() };
      if (changed) {
        this.logger.emit({ kind: 'server.link-synced', network: id, members: state.members.length, crlNumber: state.crl_number });
        this.requestReconcile(`hub state of ${id} changed`);
      } else if (was && !was.ok) void this.writeSnapshot();
    } catch (err) {
      const e = toMvpnError(err);
      if (l.lastSync?.error !== e.message) this.logger.emit({ kind: 'server.link-failed', network: id, code: e.code, message: e.message });
      l.lastSync = { ok: false, at: this.clock.now(), error: e.message };
    }
  }

  /** Kills sessions of CNs that may no longer connect, or whose certificate was replaced. */
  private async killDisallowed(net: NetworkRecord, inst: Instance, memberships: readonly MemberSummary[]): Promise<void> {
    const allowed = new Map(allowedMembers(memberships).map((m) => [m.node, m.certSerial!]));
    const replaced = new Set<string>();
    // A renewal's old certificate stays good until the node confirms (ops/renew.ts): its session is not "replaced".
    const renewing = new Map(allowedMembers(memberships).map((m) => [m.node, m.prevCertSerial ?? null]));
    for (const [cn, serial] of allowed) {
      const before = inst.serials.get(cn);
      if (before !== undefined && before !== serial && before !== renewing.get(cn)) replaced.add(cn);
    }
    inst.serials = allowed;
    inst.addresses = new Map(allowedMembers(memberships).map((m) => [m.node, m.address]));
    const mgmt = inst.sup.management();
    if (!mgmt) return;
    let clients: { cn: string; clientId?: number }[];
    try {
      clients = (await mgmt.status3()).clients;
    } catch {
      return; // not answering now; the next pass tries again
    }
    for (const c of clients) {
      const reason = !allowed.has(c.cn) ? 'no longer allowed in this network' : replaced.has(c.cn) ? 'its certificate was replaced' : undefined;
      if (reason === undefined) continue;
      try {
        // client-kill tells the client to reconnect at once: a node whose
        // membership changed again meanwhile (removed, then re-added before
        // this pass) comes back in seconds instead of after its 60 s
        // ping-restart, and a revoked one learns at once that it is out.
        if (c.clientId !== undefined) await mgmt.clientKill(c.clientId, 'RESTART');
        else await mgmt.kill(c.cn);
        this.logger.emit({ kind: 'server.session-killed', network: net.id, cn: c.cn, reason });
      } catch (err) {
        this.logger.emit({ kind: 'server.kill-failed', network: net.id, cn: c.cn, message: toMvpnError(err).message });
      }
    }
  }

  private async refreshClients(): Promise<void> {
    for (const [id, inst] of this.instances) {
      const mgmt = inst.sup.management();
      if (!mgmt) {
        inst.clients = [];
        continue;
      }
      try {
        const s = await mgmt.status3();
        const before = new Set(inst.clients.map((c) => `${c.cn}@${c.connected_since}`));
        inst.clients = s.clients.map((c) => ({
          cn: c.cn,
          real_address: c.realAddress,
          virtual_address: c.virtualAddress,
          bytes_in: c.bytesIn,
          bytes_out: c.bytesOut,
          connected_since: c.connectedSince.toISOString(),
        }));
        const fresh = inst.clients.filter((c) => !before.has(`${c.cn}@${c.connected_since}`)).map((c) => inst.addresses.get(c.cn));
        if (inst.sup.spec.dev.startsWith('ms-')) void this.prime(id, fresh.filter((a): a is string => a !== undefined));
      } catch {
        // keep the last list; the supervisor's health check reports a hung openvpn
      }
    }
    await this.updateStatusLine();
  }

  /** One ping per new session's address from the server's tap (see the module comment). Best effort. */
  private async prime(network: string, addresses: readonly string[]): Promise<void> {
    const net = this.store.read((tx) => tx.getNetwork(network));
    if (!net || net.devType !== 'tap') return;
    const exec = this.opts.exec ?? execCommand;
    for (const a of addresses) {
      if (this.stopped) return;
      const dev = this.bridged.has(network) ? bridgeDev(network) : serverDev(network);
      await exec('ping', ['-n', '-q', '-c', '1', '-W', '1', '-I', dev, a], { timeoutMs: 3_000 }).catch(() => undefined);
    }
  }

  /** The status snapshot `network show` reads. */
  snapshot(): StatusSnapshot {
    const networks: Record<string, InstanceSnapshot> = {};
    for (const [id, inst] of this.instances) {
      networks[id] = { ...supervisedView(inst.sup), clients: inst.clients };
    }
    const links: Record<string, LinkSnapshot> = {};
    for (const [id, l] of this.links) {
      links[id] = {
        ...supervisedView(l.sup),
        bridge: bridgeDev(id),
        sync: l.lastSync ? { ok: l.lastSync.ok, at: new Date(l.lastSync.at).toISOString(), ...(l.lastSync.error ? { error: l.lastSync.error } : {}) } : null,
        ...(l.relay ? { relay: l.relay.stats() } : l.relayError ? { relay: { error: l.relayError } } : {}),
      };
    }
    return {
      pid: process.pid,
      started_at: new Date(this.startedAt).toISOString(),
      updated_at: new Date(this.clock.now()).toISOString(),
      listen: this.listenAddress(),
      networks,
      links,
    };
  }

  private writeSnapshot(): Promise<void> {
    if (this.stopped || !this.claimed) return this.statusWrite;
    this.statusWrite = this.statusWrite.then(() => writeStatus(this.ctx.config.runtime_dir, this.snapshot()).catch(() => undefined));
    return this.statusWrite;
  }

  private statusLine(): string {
    const all = [...this.instances.values()].map((i) => i.sup.status());
    const running = all.filter((s) => s.state === 'connected' || s.state === 'degraded').length;
    const clients = [...this.instances.values()].reduce((a, i) => a + i.clients.length, 0);
    return `${running}/${all.length} networks up, ${clients} clients`;
  }

  private async updateStatusLine(): Promise<void> {
    await this.opts.notifier?.status(this.statusLine()).catch(() => undefined);
  }

  private async announceReady(): Promise<void> {
    const deadline = this.clock.now() + (this.opts.readyTimeoutMs ?? 60_000);
    while (!this.stopped && this.clock.now() < deadline) {
      if ([...this.instances.values()].every((i) => SETTLED.has(i.sup.status().state))) break;
      await new Promise<void>((r) => this.clock.setTimeout(r, 200));
    }
    if (this.stopped) return;
    const line = this.statusLine();
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
    await this.reconciling?.catch(() => undefined);
    await Promise.all([...this.links.values()].map(async (l) => {
      await l.relay?.stop();
      await l.sup.stop();
    }));
    await Promise.all([...this.instances.values()].map((i) => i.sup.stop()));
    this.instances.clear();
    this.links.clear();
    // The daemon made the bridges and taps; it removes them.
    for (const id of [...this.bridged]) await removeBridge(this.exec(), id).catch(() => undefined);
    this.bridged.clear();
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
      await rm(join(this.ctx.config.runtime_dir, PID_FILE), { force: true });
    }
    this.store.close();
    this.logger.emit({ kind: 'server.stopped' });
  }
}

/** What the status snapshot shows of one supervised openvpn. */
function supervisedView(sup: Supervisor): SupervisedSnapshot {
  const s = sup.status();
  return { state: s.state, since: new Date(s.since).toISOString(), pid: s.pid, restarts: s.restarts, last_error: s.lastError };
}

async function fileStamp(path: string): Promise<string> {
  const st = await stat(path);
  return `${st.ino}:${st.mtimeMs}:${st.size}`;
}
