/**
 * The agent daemon (`mvpn-client run`): wires config, reconcile, one
 * supervisor per network, the local control API and systemd notification,
 * and owns the lifecycle.
 *
 * Start-up order, and why:
 * 1. Resolve node id, anchor and CA: a config that cannot be used stops the
 *    start with an error naming the field (nothing has been touched yet).
 * 2. The mvpn-openvpn user (made when missing) every openvpn drops to; state
 *    dir root:mvpn-openvpn 0710 (openvpn re-reads crl.pem below it), runtime
 *    dir 0755 (status.sock must be reachable).
 * 3. Claim the runtime dir (control API sockets): a second agent on the same
 *    dir refuses to start before it could touch the first one's openvpns.
 * 4. cleanupLeftovers: openvpns a crashed previous run left are stopped by
 *    pid (after a /proc cmdline check) and their files removed, so no
 *    network ever runs twice. It scans every process once; after it (and
 *    with the runtime dir claimed) any openvpn of a network is our own
 *    child, so a supervisor's check before each spawn scans /proc only when
 *    the network's pid file or socket exists (findRunning
 *    `when-files-exist`), not once per network.
 * 5. The stored membership document (rollback protection, names) and the
 *    operator's `down` marks (they hold across restarts until `up`).
 * 6. Installed, unexpired bundles the stored membership still lists start
 *    at once (a slow or unreachable server does not delay boot); then the
 *    first reconcile changes only what differs. If no source answers,
 *    nothing is torn down.
 * 7. READY=1 once every network is connected or has definitely failed, or
 *    after ready_timeout — never before the first reconcile.
 * 8. Timer: the next reconcile after reconcile_interval ± jitter, or sooner
 *    with backoff after a failed discovery (a testbed swapping in at once
 *    must not poll in lockstep), or at the renewal's own time when that is
 *    sooner (a certificate's two-thirds point, a retry with backoff, or a
 *    check whether renewed networks are connected so it can confirm).
 *
 * Shutdown: STOPPING=1, stop the timer, abort a running reconcile, stop
 * every openvpn (by pid, via its supervisor), close the sockets.
 */
import { joinHostPort } from '../util/host-port.ts';
import { chmod } from 'node:fs/promises';
import { dirname } from 'node:path';
import { shareInstalled } from '../bundle/install.ts';
import type { Anchor } from '../bundle/sign.ts';
import { DaemonError, toMvpnError } from '../errors.ts';
import { nullLogger, type Logger } from '../log.ts';
import type { OpenvpnEvent } from '../openvpn/events.ts';
import { cleanupLeftovers, findRunning } from '../openvpn/process.ts';
import { Supervisor } from '../openvpn/supervisor.ts';
import { defaultHealthPolicy } from '../openvpn/health.ts';
import { HealthRound } from '../openvpn/health-round.ts';
import type { SupervisorDeps } from '../openvpn/supervisor-deps.ts';
import type { FrameVerdict, InstanceSpec, InstanceStatus } from '../openvpn/supervisor-state.ts';
import { LAN_MTU } from '../openvpn/mtu.ts';
import type { NetworkSpec } from '../bundle/schema.ts';
import { checkReachable, ensureOpenvpnUser, SHARED_DIR_MODE, shareWithOpenvpn, type OpenvpnUser } from '../openvpn/unpriv.ts';
import { backoffDelay } from '../util/backoff.ts';
import { systemClock, type Cancel, type Clock } from '../util/clock.ts';
import { ensureDir } from '../util/fs-atomic.ts';
import type { MetricsServer } from '../util/metrics-http.ts';
import { VERSION } from '../version.ts';
import { CertExpiryCache } from './cert-expiry.ts';
import type { AgentConfig } from './config.ts';
import { startControlApi, type ControlApi, type NetworkVerb } from './control-api.ts';
import type { AgentEvent } from './events.ts';
import { NetworkRunner, type SupervisorFactory } from './networks.ts';
import { identityPaths } from './identity.ts';
import { resolveNodeId } from './node-id.ts';
import type { NetError } from './plan.ts';
import { Reconciler, type ReconcileResult } from './reconcile.ts';
import type { SourceDeps } from './sources.ts';
import { loadAdminDown, loadMembership, saveAdminDown } from './state.ts';
import { summaryLine, type AgentStatus, type NetworkStatus } from './status.ts';
import { loadTrust } from './anchor-state.ts';
import { loadApiTrust } from './api-ca.ts';
import { loadAnchor, loadCaPem } from './trust.ts';

/** The part of src/systemd/notify.ts Notifier the daemon uses. */
export interface ReadinessNotifier {
  ready(status?: string): Promise<void>;
  status(text: string): Promise<void>;
  reloading(): Promise<void>;
  stopping(): Promise<void>;
}

export interface DaemonDeps {
  readonly clock: Clock;
  readonly random: () => number;
  readonly logger: Logger<AgentEvent>;
  readonly openvpnLogger: Logger<OpenvpnEvent>;
  readonly notifier: ReadinessNotifier | undefined;
  /** Default: a real Supervisor with the openvpn logger. */
  readonly supervisorFactory: SupervisorFactory | undefined;
  readonly supervisorDeps: Partial<SupervisorDeps>;
  readonly sourceDeps: Partial<SourceDeps> | undefined;
}

const defaultDeps: DaemonDeps = {
  clock: systemClock,
  random: Math.random,
  logger: nullLogger(),
  openvpnLogger: nullLogger(),
  notifier: undefined,
  supervisorFactory: undefined,
  supervisorDeps: {},
  sourceDeps: undefined,
};

/**
 * When to reconcile next. After a success: the interval ± jitter, so a
 * testbed whose nodes booted together does not poll in lockstep. After
 * `failures` failed discoveries in a row: sooner, with exponential backoff
 * and full jitter from 5 s, never later than the interval. Pure.
 */
export function nextReconcileDelay(failures: number, intervalMs: number, jitter: number, random: () => number): number {
  if (failures > 0) return backoffDelay(failures - 1, { initialMs: 5_000, maxMs: intervalMs, factor: 2, jitter: 1, minMs: 1_000 }, random);
  return Math.round(intervalMs * (1 + jitter * (2 * random() - 1)));
}

/** openvpn reports the bare address; show it with the prefix length from the bundle when they agree. */
function tunnelAddress(reported: string | undefined, expected: string | undefined): string | null {
  if (reported === undefined) return null;
  if (expected !== undefined && expected.split('/')[0] === reported) return expected;
  return reported;
}

function isoOrNull(ms: number | undefined): string | null {
  return ms === undefined ? null : new Date(ms).toISOString();
}

/** Before READY=1, STATUS changes go out at most this often (AgentDaemon.statusBeforeReady). */
const EARLY_STATUS_MS = 1_000;

/** States from which a network will not become connected without something changing. */
const DEFINITE_FAILURE: ReadonlySet<string> = new Set(['failed', 'backoff']);
/** The least time between two fetches made because frames stopped passing (followDataPlane). */
const FRAMES_FETCH_GAP_MS = 30_000;

export class AgentDaemon {
  readonly config: AgentConfig;
  readonly nodeId: string;
  private readonly deps: DaemonDeps;
  private readonly runner: NetworkRunner;
  private readonly reconciler: Reconciler;
  private readonly anchor: Anchor;
  private api: ControlApi | undefined;
  private readonly startedAt: number;
  private ready = false;
  private stopping = false;
  private cancelTimer: Cancel | undefined;
  private lastSummary = '';
  /** Each network's last frame-probe verdict, and when a failing one last made the agent fetch (followDataPlane). */
  private readonly frames = new Map<string, FrameVerdict | undefined>();
  private framesFetchAt = -Infinity;
  private cancelFramesFetch: Cancel | undefined;
  /** The user every openvpn drops to (set at start; undefined when the agent is not root). */
  private runAs: OpenvpnUser | undefined;
  private readonly certExpiry = new CertExpiryCache();
  private metricsServer: MetricsServer | undefined;

  private constructor(config: AgentConfig, nodeId: string, anchor: Anchor, serverCaPem: string | undefined, deps: DaemonDeps) {
    this.config = config;
    this.nodeId = nodeId;
    this.anchor = anchor;
    this.deps = deps;
    this.startedAt = deps.clock.now();
    // One timer and one interface read per interval for the health checks of every network (issue 14: idle CPU).
    const healthRound = new HealthRound(deps.clock, (deps.supervisorDeps.health ?? defaultHealthPolicy).intervalMs);
    const factory: SupervisorFactory =
      deps.supervisorFactory ??
      ((spec: InstanceSpec) =>
        new Supervisor(spec, {
          logger: deps.openvpnLogger,
          clock: deps.clock,
          healthRound,
          // Supervisors are only made after start() ran cleanupLeftovers (see the start-up order above).
          findRunning: (files) => findRunning(files, { scan: 'when-files-exist' }),
          runAs: this.runAs,
          ...deps.supervisorDeps,
        }));
    this.runner = new NetworkRunner({
      runtimeDir: config.runtimeDir,
      openvpnPath: config.openvpnPath,
      factory,
      onChange: (id, s) => this.onNetworkChange(id, s),
      persistDown: (down) => saveAdminDown(config.stateDir, down),
    });
    this.reconciler = new Reconciler(
      { config, nodeId, anchor, runner: this.runner, ...(serverCaPem === undefined ? {} : { serverCaPem }) },
      { clock: deps.clock, logger: deps.logger, ...(deps.sourceDeps ? { sourceDeps: deps.sourceDeps } : {}) },
    );
  }

  /** Resolve everything the config names; throws ConfigError naming the field. Touches nothing on disk. */
  static async create(config: AgentConfig, deps: Partial<DaemonDeps> = {}): Promise<AgentDaemon> {
    const d = { ...defaultDeps, ...deps };
    const nodeId = await resolveNodeId(config.node);
    const anchor = await loadAnchor(config.anchor);
    const serverCaPem = config.serverCa === undefined ? undefined : await loadCaPem(config.serverCa, 'server_ca');
    for (const [i, s] of config.sources.entries()) if (s.type === 'https' && s.ca !== undefined) await loadCaPem(s.ca, `sources[${i}].ca`);
    return new AgentDaemon(config, nodeId, anchor, serverCaPem, d);
  }

  async start(): Promise<void> {
    const { config } = this;
    const { logger } = this.deps;
    // openvpn drops to this user and must reach crl.pem below the state dir (src/openvpn/unpriv.ts).
    this.runAs = await ensureOpenvpnUser();
    await ensureDir(dirname(config.stateDir), 0o755);
    await ensureDir(config.stateDir, SHARED_DIR_MODE);
    await shareWithOpenvpn(config.stateDir, this.runAs, SHARED_DIR_MODE);
    await checkReachable(config.stateDir, this.runAs);
    this.reconciler.openvpnUser = this.runAs;
    await ensureDir(config.runtimeDir, 0o755);
    await chmod(config.runtimeDir, 0o755);

    this.api = await startControlApi(config.runtimeDir, {
      status: () => this.status(),
      network: (id, verb) => this.networkVerb(id, verb),
      reload: () => this.reload('control API'),
    });
    logger.emit({ kind: 'agent.started', node: this.nodeId, version: VERSION, config: config.path });
    if (config.metricsListen !== undefined) await this.startMetrics(config.metricsListen);

    const left = await cleanupLeftovers(config.runtimeDir, { logger: this.deps.openvpnLogger });
    if (left.stopped.length > 0 || left.removed.length > 0) logger.emit({ kind: 'agent.leftovers', stopped: left.stopped, removed: left.removed.length });

    // A pinned chain that cannot be walked stops the agent: the config's anchor alone would be a rollback.
    this.reconciler.trust = await loadTrust(config.stateDir, this.anchor);
    // Likewise an API CA pin that cannot be read: server_ca alone may name a CA that a roll retired (api-ca.ts).
    await loadApiTrust(config.stateDir, undefined);
    try {
      this.reconciler.membership = await loadMembership(config.stateDir, this.reconciler.trust.anchor);
    } catch (err) {
      logger.emit({ kind: 'agent.membership-state-ignored', message: toMvpnError(err).message });
    }
    try {
      this.runner.restoreAdminDown(await loadAdminDown(config.stateDir));
    } catch (err) {
      logger.emit({ kind: 'agent.admin-state-ignored', message: toMvpnError(err).message });
    }
    await this.reconciler.refreshInstalled();
    await Promise.all([...this.reconciler.installed.values()].map((b) => shareInstalled(config.stateDir, b, this.runAs)));
    await this.reconciler.startFromCache();

    await this.reconciler.reconcile('start');
    this.scheduleNext();
    await this.waitSettled(config.readyTimeoutMs);
  }

  /**
   * The optional TCP metrics listener (config metrics_listen). prom-client
   * and the listener load only here, so an agent without it never loads
   * them. A port that cannot be bound is reported, not fatal: the networks
   * matter more than their metrics (the server does the same).
   */
  private async startMetrics(listen: { host: string; port: number }): Promise<void> {
    const [{ startMetricsServer }, { renderAgentMetrics, METRICS_CONTENT_TYPE }] = await Promise.all([import('../util/metrics-http.ts'), import('./metrics.ts')]);
    const where = joinHostPort(listen.host, listen.port);
    try {
      this.metricsServer = await startMetricsServer({ metrics: () => renderAgentMetrics(this.status()), contentType: METRICS_CONTENT_TYPE }, listen.host, listen.port);
      this.deps.logger.emit({ kind: 'agent.metrics-start', listen: this.metricsServer.address });
    } catch (err) {
      this.deps.logger.emit({ kind: 'agent.metrics-failed', listen: where, code: 'MVPN_METRICS_LISTEN_FAILED', message: (err as Error).message });
    }
  }

  /** SIGHUP / `mvpn-client reload`: RELOADING=1, reconcile now, READY=1. */
  async reload(reason: string): Promise<{ ok: boolean; error?: NetError }> {
    if (this.stopping) return { ok: false, error: { code: 'MVPN_DAEMON_UNREACHABLE', message: 'the agent is stopping' } };
    await this.notify((n) => n.reloading());
    let r: ReconcileResult;
    try {
      r = await this.reconciler.reconcile(reason);
    } finally {
      await this.notify((n) => n.ready(this.summary()));
    }
    this.scheduleNext();
    return r.error ? { ok: r.ok, error: r.error } : { ok: r.ok };
  }

  async stop(reason: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.deps.logger.emit({ kind: 'agent.stopping', reason });
    await this.notify((n) => n.stopping());
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    this.cancelFramesFetch?.();
    this.cancelEarlyStatus?.();
    this.cancelEarlyStatus = undefined;
    await this.reconciler.shutdown();
    await this.runner.stopAll();
    await this.api?.close();
    await this.metricsServer?.close();
    this.deps.logger.emit({ kind: 'agent.stopped' });
  }

  // ------------------------------------------------------------ status

  status(): AgentStatus {
    const now = this.deps.clock.now();
    const r = this.reconciler;
    const doc = r.membership?.doc;
    const names = new Map<string, string>();
    for (const b of r.installed.values()) names.set(b.network, b.spec.name);
    // Membership networks are listed even when nothing could be installed for them.
    for (const n of doc?.networks ?? []) names.set(n.id, n.name);
    // ... and so are networks of a refused newer document (their bundle failed, so it is not last-good yet).
    const ids = new Set([...names.keys(), ...this.runner.ids(), ...r.errors.keys()]);
    const networks: NetworkStatus[] = [...ids].sort().map((id) => {
      const s = this.runner.status(id);
      const up = s !== undefined && (s.state === 'connected' || s.state === 'degraded');
      const reconcileError = r.errors.get(id);
      const downSince = this.runner.adminDownSince(id);
      const supError = s?.lastError !== undefined && s.state !== 'connected' ? s.lastError : undefined;
      const lastError = reconcileError ?? supError;
      const state = s?.state ?? (reconcileError ? 'failed' : 'stopped');
      const installed = r.installed.get(id);
      return {
        id,
        name: names.get(id) ?? id,
        state,
        admin_down: this.runner.isAdminDown(id),
        admin_down_since: downSince === undefined ? null : new Date(downSince).toISOString(),
        pid: s?.pid ?? null,
        tunnel_address: up ? tunnelAddress(s.tunnelAddress, installed?.spec.address.ipv4) : null,
        server: up ? (s.remote ?? null) : null,
        server_tunnel_ip: r.installed.get(id)?.spec.server_tunnel_ip ?? null,
        uptime_s: up && s.connectedSince !== undefined ? Math.max(0, Math.floor((now - s.connectedSince) / 1000)) : null,
        connected_since: up && s.connectedSince !== undefined ? new Date(s.connectedSince).toISOString() : null,
        bytes_in: s?.bytesIn ?? 0,
        bytes_out: s?.bytesOut ?? 0,
        restarts: s?.restarts ?? 0,
        last_error: lastError ? { code: lastError.code, message: lastError.message } : null,
        bundle_version: installed?.version ?? null,
        bundle_expires_at: installed?.manifest.expires ?? null,
        cert_expires_at: isoOrNull(installed && this.certExpiry.notAfter(installed.paths.cert, installed.versionDir)),
        ...lanMtu(installed?.spec, s?.frames),
      };
    });
    return {
      version: VERSION,
      node: this.nodeId,
      started_at: new Date(this.startedAt).toISOString(),
      ready: this.ready,
      membership: r.membership
        ? {
            serial: r.membership.doc.serial,
            source: r.membership.source,
            fetched_at: new Date(r.membership.fetchedAt).toISOString(),
            expires_at: r.membership.doc.expires_at,
          }
        : null,
      trust_anchor: { key_id: r.trust.anchor.keyId, chain_version: r.trust.version ?? null, serial_floor: r.trust.serialFloor },
      reconcile: { last_at: isoOrNull(r.lastAt), last_ok_at: isoOrNull(r.lastOkAt), last_error: r.lastError ?? null },
      identity_expires_at: isoOrNull(this.certExpiry.notAfter(identityPaths(this.config.stateDir).cert, r.lastAt)),
      networks,
      renewal: r.renewal,
      api_ca: r.apiCa,
    };
  }

  private summary(): string {
    return summaryLine(this.status());
  }

  // ------------------------------------------------------------ control

  private async networkVerb(id: string, verb: NetworkVerb): Promise<void> {
    const known = this.reconciler.installed.has(id) || this.runner.ids().includes(id) || (this.reconciler.membership?.doc.networks.some((n) => n.id === id) ?? false);
    if (!known) {
      throw new DaemonError('MVPN_NETWORK_UNKNOWN', `this node is not in network ${id}`, { hint: 'see `mvpn-client status` for the networks of this node' });
    }
    this.deps.logger.emit({ kind: 'network.admin', network: id, verb });
    switch (verb) {
      case 'down':
        await this.runner.adminDown(id, this.deps.clock.now());
        return;
      case 'up':
      case 'restart': {
        const b = await this.reconciler.installedBundle(id);
        if (b === undefined) {
          throw new DaemonError('MVPN_NOT_FOUND', `network ${id} has no installed bundle to run`, {
            hint: 'see last_error in `mvpn-client status`; `mvpn-client reload` fetches again',
          });
        }
        if (verb === 'up' || this.runner.isAdminDown(id)) await this.runner.adminUp(b, id);
        else await this.runner.restart(b);
        return;
      }
    }
  }

  // ------------------------------------------------------------ readiness, timer

  private onNetworkChange(id: string, s: InstanceStatus): void {
    this.followDataPlane(id, s.frames);
    const line = this.summary();
    if (line !== this.lastSummary) {
      this.lastSummary = line;
      if (this.ready) void this.notify((n) => n.status(line));
      else this.statusBeforeReady();
    }
    this.settleCheck?.();
  }

  /**
   * Frames that stop passing (a probe that newly fails, also the first one
   * of a connection) can mean the server's data plane changed (`server
   * network update --fragment/--mtu`): the server restarted with the new
   * values, and a node on the old ones exchanges no frames (the fragment
   * header is on every packet, ARCHITECTURE.md "Full-size frames"). So the
   * agent fetches at once instead of at its next reconcile, up to
   * reconcile_interval_s later; at most once per FRAMES_FETCH_GAP_MS (a
   * failure within it fetches when it ends), whatever the cause (a path that
   * got smaller fetches the same, unchanged, bundle).
   */
  private followDataPlane(id: string, frames: FrameVerdict | undefined): void {
    const before = this.frames.get(id);
    this.frames.set(id, frames);
    if (frames === undefined || frames === 'ok' || frames === before || this.stopping) return;
    if (this.cancelFramesFetch !== undefined) return;
    const fetch = (): void => {
      this.cancelFramesFetch = undefined;
      this.framesFetchAt = this.deps.clock.now();
      void this.reconciler
        .reconcile(`frames stopped passing on ${id}`)
        .catch((err: unknown) => this.deps.logger.emit({ kind: 'discovery.failed', code: toMvpnError(err).code, message: toMvpnError(err).message }));
    };
    const wait = this.framesFetchAt + FRAMES_FETCH_GAP_MS - this.deps.clock.now();
    if (wait <= 0) fetch();
    else this.cancelFramesFetch = this.deps.clock.setTimeout(fetch, wait);
  }

  private cancelEarlyStatus: Cancel | undefined;

  /**
   * Before READY=1 (which carries the STATUS line), a changed line goes out
   * at most once per EARLY_STATUS_MS, the latest one: a join that settles
   * sooner sends no STATUS of its own. Each send is a systemd-notify process
   * forked from the agent, and READY=1 waited behind the one a first
   * network's connect started (issue 14: join time). A slow start still
   * shows its progress in `systemctl status`.
   */
  private statusBeforeReady(): void {
    if (this.cancelEarlyStatus !== undefined || this.deps.notifier === undefined) return;
    this.cancelEarlyStatus = this.deps.clock.setTimeout(() => {
      this.cancelEarlyStatus = undefined;
      if (this.ready || this.stopping) return;
      const line = this.lastSummary;
      void this.notify((n) => n.status(line));
    }, EARLY_STATUS_MS);
  }

  private settleCheck: (() => void) | undefined;

  /** True when no network can still become connected on its own: each is connected or definitely failed. */
  private settled(): boolean {
    return this.status().networks.every((n) => n.state === 'connected' || n.admin_down || DEFINITE_FAILURE.has(n.state) || (n.state === 'stopped' && n.last_error !== null));
  }

  private async waitSettled(timeoutMs: number): Promise<void> {
    let timedOut = false;
    if (!this.settled()) {
      await new Promise<void>((resolve) => {
        const cancel = this.deps.clock.setTimeout(() => {
          timedOut = true;
          done();
        }, timeoutMs);
        const done = (): void => {
          cancel();
          this.settleCheck = undefined;
          resolve();
        };
        this.settleCheck = () => {
          if (this.stopping || this.settled()) done();
        };
      });
    }
    if (this.stopping) return;
    this.ready = true;
    const line = this.summary();
    this.lastSummary = line;
    this.deps.logger.emit({ kind: 'agent.ready', summary: line, timedOut });
    await this.notify((n) => n.ready(line));
  }

  private scheduleNext(): void {
    if (this.stopping) return;
    this.cancelTimer?.();
    const { config } = this;
    const { random } = this.deps;
    const regular = nextReconcileDelay(this.reconciler.failures, config.reconcileIntervalMs, config.reconcileJitter, random);
    // The renewal's own time (a certificate's two-thirds point, a retry, a confirmation check) when it comes first.
    const wake = this.reconciler.renewalWakeAt;
    const renewIn = wake === undefined ? undefined : Math.max(200, wake - this.deps.clock.now());
    const delayMs = renewIn !== undefined && renewIn < regular ? renewIn : regular;
    const reason = delayMs === regular ? 'timer' : 'renewal';
    this.deps.logger.emit({ kind: 'reconcile.next', delayMs });
    this.cancelTimer = this.deps.clock.setTimeout(() => {
      this.cancelTimer = undefined;
      void this.reconciler
        .reconcile(reason)
        .catch((err: unknown) => this.deps.logger.emit({ kind: 'discovery.failed', code: toMvpnError(err).code, message: toMvpnError(err).message }))
        .finally(() => this.scheduleNext());
    }, delayMs);
  }

  private async notify(fn: (n: ReadinessNotifier) => Promise<void>): Promise<void> {
    const n = this.deps.notifier;
    if (n === undefined) return;
    try {
      await fn(n);
    } catch (err) {
      // Best effort: the daemon works without systemd hearing from it, but says so.
      this.deps.logger.emit({ kind: 'agent.notify-failed', message: toMvpnError(err).message });
    }
  }
}

/** The MTU fields of a network's status: from its installed spec, and the supervisor's last frame probe. */
function lanMtu(spec: NetworkSpec | undefined, frames: FrameVerdict | undefined): Pick<NetworkStatus, 'mtu' | 'fragment' | 'full_frames'> {
  return { mtu: spec ? (spec.mtu ?? LAN_MTU) : null, fragment: spec?.fragment ?? null, full_frames: frames ?? null };
}
