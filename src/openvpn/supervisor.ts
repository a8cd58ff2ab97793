/**
 * One openvpn process (a client of one network on a node, or the server of
 * one network) as a state machine.
 *
 *   stopped ─start→ starting ─mgmt ready→ connecting ─CONNECTED→ connected ⇄ degraded
 *                      │  ▲                    │                     │
 *        exit / hung / │  └──── backoff ◄──────┴─────────────────────┘
 *        unhealthy     └────────►  (delay with jitter, then starting again)
 *   any running state ─stop→ stopping → stopped;  permanent spawn failure → failed
 *   connecting / connected / degraded ─reload→ reloading → connecting (same process, new credentials)
 *
 * Design notes:
 * - `nextState(state, event)` is pure and returns the next state plus the
 *   actions to perform; `Supervisor.enter` is the one place that changes
 *   state, performs actions and logs `old -> new` (Tailscale's
 *   nextStateLocked / enterStateLocked).
 * - Every process is a `Run` with its own generation. Events from a run that
 *   is no longer the current one (it was told to terminate, or it already
 *   exited) are dropped before they reach `nextState` — zx's ProcessStage:
 *   once a process has settled, late events about it change nothing.
 * - Processes are stopped by pid only: SIGTERM (+SIGCONT, so a stopped
 *   process can act on it), SIGKILL after a grace period. A new process for
 *   the same instance starts only after the previous one has exited, and
 *   never while another openvpn (a leftover of a crashed previous run, or a
 *   second Supervisor in this process) holds the same pid file or
 *   management socket: the network never runs twice.
 * - After a spawn the management socket is tried at once, then after 5, 10,
 *   20, 40, 80 ms and every 100 ms (mgmtPollDelay) until
 *   mgmtConnectTimeoutMs: openvpn opens it ~20–40 ms after it starts, and
 *   every start (boot, crash, restart) waits on it.
 * - Restarts back off exponentially with jitter per instance; the attempt
 *   counter resets after the instance stayed connected for `stableMs`.
 * - Health (health.ts) runs every `health.intervalMs` while the process is
 *   up, or at each round of a HealthRound the daemon shares among its
 *   supervisors (health-round.ts: one timer and one interface read for all);
 *   a `failed` verdict (hung, or connected without its address) restarts it
 *   through backoff.
 */
import { EventEmitter } from 'node:events';
import { OpenvpnError, toMvpnError, type MvpnError } from '../errors.ts';
import { backoffDelay } from '../util/backoff.ts';
import type { Cancel } from '../util/clock.ts';
import { assessHealth, freshHealthMemory, probeFullFrames, readDevice, type HealthMemory, type HealthVerdict } from './health.ts';
import type { ManagementClient, ManagementOptions, StateInfo } from './management.ts';
import { parsePushLogLine } from './push-policy.ts';
import { dropArgs } from './unpriv.ts';
import { onLines } from '../util/lines.ts';
import { defaultSupervisorDeps, type SpawnedProcess, type SupervisorDeps } from './supervisor-deps.ts';
import { describeEvent, errorInfo, mgmtPollDelay, nextState, type ErrorInfo, type FrameVerdict, type InstanceSpec, type InstanceState, type InstanceStatus, type SupervisorAction, type SupervisorEvent, type Transition } from './supervisor-state.ts';

/** One openvpn process of this instance. */
interface Run {
  readonly gen: number;
  readonly child: SpawnedProcess;
  readonly pid: number;
  exited: boolean;
  /** Resolves when the process has exited. */
  readonly exit: Promise<void>;
  /** Resolves when terminate() is done (exited, or given up after SIGKILL). */
  terminated?: Promise<void>;
  mgmt: ManagementClient | undefined;
  readonly output: string[];
  fatal: string | undefined;
  /** Lines of the latest push reply that openvpn's pull-filter removed (push-policy.ts). */
  refusedPushes: string[];
  /** `>STATE:` notifications received so far (see pollState). */
  stateEvents: number;
  /** The state named by the latest `>STATE:` notification. */
  lastNotified: string | undefined;
  /** The fresh-handshake sequence after the server's RESTART, while one runs (retryAfterServerRestart). */
  restartRetry: object | undefined;
}

const OUTPUT_KEEP = 20;
/** openvpn's RECONNECTING reason when its server sent RESTART (explicit-exit-notify on the server). */
const SERVER_RESTARTED = 'server-pushed-connection-reset';
/** openvpn states before any answer from a server (see retryAfterServerRestart). */
const NO_ANSWER_YET: ReadonlySet<string> = new Set(['RECONNECTING', 'RESOLVE', 'WAIT', 'CONNECTING', 'TCP_CONNECT']);
/** Refused push lines remembered per push reply (the status reason shows the first few). */
const REFUSED_PUSHES_KEEP = 32;
const OUTPUT_LINE_MAX = 4_096;

/** Management sockets claimed by supervisors in this process: a second Supervisor for the same files refuses to start. */
const claims = new Map<string, Supervisor>();

export interface SupervisorEvents {
  /** After every state change, and when the tunnel address or remote changes. */
  change: [InstanceStatus];
}

/**
 * Health checks between two frame probes while frames pass (60 × 5 s: five
 * minutes). Each probe is a `ping` process, forked from the agent: at one a
 * minute per network they were most of an idle agent's reaped-children CPU
 * (0.05–0.067% of a core with 16 networks, plus the forks; issue 14). A path
 * that stops passing frames is still seen within five minutes, and a failing
 * one is probed at every check.
 */
const PROBE_EVERY = 60;

export class Supervisor extends EventEmitter<SupervisorEvents> {
  readonly spec: InstanceSpec;
  private readonly deps: SupervisorDeps;
  private state: InstanceState = 'stopped';
  private since: number;
  private gen = 0;
  private run: Run | undefined;
  private readonly retiring = new Set<Run>();
  private spawnToken: object | undefined;
  private restarts = 0;
  private attempt = 0;
  private connectedSince: number | undefined;
  private tunnelAddress: string | undefined;
  private remote: string | undefined;
  private bytesIn = 0;
  private bytesOut = 0;
  private clients: number | undefined;
  private lastError: ErrorInfo | undefined;
  private cancelBackoff: Cancel | undefined;
  private cancelHealth: Cancel | undefined;
  /** With a shared HealthRound: leaves it (set while this process's checks are in the round). */
  private leaveRound: (() => void) | undefined;
  private healthActive = false;
  private healthMemory: HealthMemory = freshHealthMemory;
  private lastVerdict: HealthVerdict | undefined;
  /** The last frame probe of this process and the health checks since it ran. */
  private frames: FrameVerdict | undefined;
  private checksSinceProbe = 0;
  private dispatching = false;
  private readonly queue: { event: SupervisorEvent; from: Run | undefined }[] = [];
  private stopWaiters: (() => void)[] = [];

  constructor(spec: InstanceSpec, deps: Partial<SupervisorDeps> = {}) {
    super();
    if (spec.mgmtSocket === spec.pidFile) throw new OpenvpnError('MVPN_CONFIG_INVALID', `instance ${spec.id}: management socket and pid file must differ`);
    this.spec = spec;
    const { readDevice: readDeviceHere, probeFrames: probeHere, ...defaults } = defaultSupervisorDeps(deps.commandPrefix ?? [], deps.healthRound);
    // An injected exec (tests) also answers the health check's device read and frame probe.
    const here = deps.exec === undefined ? { ...(readDeviceHere === undefined ? {} : { readDevice: readDeviceHere }), ...(probeHere === undefined ? {} : { probeFrames: probeHere }) } : {};
    this.deps = { ...defaults, ...here, ...deps };
    this.since = this.deps.clock.now();
  }

  start(): void {
    this.dispatch({ type: 'start' });
  }

  /** Restart now (no backoff delay): terminate the current process, start a new one. */
  restart(): void {
    this.dispatch({ type: 'restart' });
  }

  /**
   * Take new certificate and key files without a new process: SIGUSR1
   * through the management socket, so openvpn reconnects with the files read
   * again while its tap device (address, neighbours) stays up. A process
   * still starting, or one the signal cannot reach, is restarted instead;
   * in backoff or stopped nothing happens (the next start reads the files).
   */
  reload(): void {
    this.dispatch({ type: 'reload' });
  }

  /**
   * Stops the process (SIGTERM, SIGKILL after the grace period), removes its
   * pid file and socket, and resolves once the state is `stopped`.
   */
  stop(opts: { readonly quick?: boolean } = {}): Promise<void> {
    if (this.state === 'stopped') return Promise.resolve();
    const done = new Promise<void>((resolve) => this.stopWaiters.push(resolve));
    this.dispatch({ type: 'stop', ...(opts.quick === true ? { quick: true } : {}) });
    return done;
  }

  status(): InstanceStatus {
    return {
      id: this.spec.id,
      role: this.spec.role,
      state: this.state,
      since: this.since,
      ...(this.run === undefined ? {} : { pid: this.run.pid }),
      ...(this.connectedSince === undefined ? {} : { connectedSince: this.connectedSince }),
      ...(this.tunnelAddress === undefined ? {} : { tunnelAddress: this.tunnelAddress }),
      ...(this.remote === undefined ? {} : { remote: this.remote }),
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      restarts: this.restarts,
      ...(this.clients === undefined ? {} : { clients: this.clients }),
      ...(this.frames === undefined ? {} : { frames: this.frames }),
      ...(this.lastError === undefined ? {} : { lastError: this.lastError }),
    };
  }

  /** The live management connection of the current process (server mode: status3(), kill(cn)). */
  management(): ManagementClient | undefined {
    const m = this.run?.mgmt;
    return m === undefined || m.isClosed ? undefined : m;
  }

  // ------------------------------------------------------------ transitions

  private dispatch(event: SupervisorEvent, from?: Run): void {
    this.queue.push({ event, from });
    if (this.dispatching) return;
    this.dispatching = true;
    try {
      for (let item = this.queue.shift(); item; item = this.queue.shift()) {
        // Events about a process that is no longer current are stale.
        if (item.from !== undefined && item.from !== this.run) continue;
        const t = nextState(this.state, item.event);
        if (!t.ignored) this.enter(t, item.event);
      }
    } finally {
      this.dispatching = false;
    }
  }

  /** The only place that changes state and performs side effects. */
  private enter(t: Transition, event: SupervisorEvent): void {
    const old = this.state;
    const now = this.deps.clock.now();
    const err = 'error' in event ? event.error : undefined;
    if (err !== undefined) this.lastError = err;
    const wasUp = old === 'connected' || old === 'degraded';
    const isUp = t.next === 'connected' || t.next === 'degraded';
    if (wasUp && !isUp) {
      if (this.connectedSince !== undefined && now - this.connectedSince >= this.deps.stableMs) this.attempt = 0;
      this.connectedSince = undefined;
    }
    if (!wasUp && isUp) this.connectedSince = now;
    if (t.next !== old) {
      this.state = t.next;
      this.since = now;
      this.deps.logger.emit({ kind: 'openvpn.transition', id: this.spec.id, from: old, to: t.next, cause: describeEvent(event) });
    }
    if (t.next === 'stopped' || t.next === 'failed') {
      if (claims.get(this.spec.mgmtSocket) === this) claims.delete(this.spec.mgmtSocket);
      this.attempt = 0;
    }
    for (const action of t.actions) this.perform(action, event);
    if (t.next !== old) this.emit('change', this.status());
    if (t.next === 'stopped') for (const w of this.stopWaiters.splice(0)) w();
  }

  private perform(action: SupervisorAction, event: SupervisorEvent): void {
    switch (action) {
      case 'spawn':
        if (event.type !== 'start') this.restarts++;
        // A new process: its counters start at zero and it has no tunnel yet.
        this.bytesIn = 0;
        this.bytesOut = 0;
        this.tunnelAddress = undefined;
        this.remote = undefined;
        this.clients = undefined;
        this.frames = undefined;
        void this.spawnProcess();
        return;
      case 'connect-mgmt':
        if (this.run) void this.setupManagement(this.run);
        return;
      case 'start-health':
        this.healthActive = true;
        this.healthMemory = freshHealthMemory;
        this.lastVerdict = undefined;
        this.leaveRound?.();
        this.leaveRound = undefined;
        this.scheduleHealth();
        return;
      case 'stop-health':
        this.healthActive = false;
        this.cancelHealth?.();
        this.cancelHealth = undefined;
        this.leaveRound?.();
        this.leaveRound = undefined;
        return;
      case 'close-mgmt': {
        const run = this.run;
        run?.mgmt?.close();
        if (run?.exited) this.run = undefined;
        return;
      }
      case 'terminate': {
        const run = this.run;
        if (!run) return;
        this.run = undefined;
        const quick = event.type === 'restart' || (event.type === 'stop' && event.quick === true);
        this.terminate(run, describeEvent(event), quick && this.spec.role === 'server');
        return;
      }
      case 'signal-reload':
        if (this.run) void this.signalReload(this.run);
        return;
      case 'schedule-backoff': {
        const delayMs = backoffDelay(this.attempt, this.deps.backoff, this.deps.random);
        this.attempt++;
        this.deps.logger.emit({ kind: 'openvpn.backoff', id: this.spec.id, attempt: this.attempt, delayMs });
        this.cancelBackoff?.();
        this.cancelBackoff = this.deps.clock.setTimeout(() => {
          this.cancelBackoff = undefined;
          this.dispatch({ type: 'backoff-elapsed' });
        }, delayMs);
        return;
      }
      case 'cancel-backoff':
        this.cancelBackoff?.();
        this.cancelBackoff = undefined;
        return;
      case 'finish-stop':
        this.spawnToken = undefined;
        void this.finishStop();
        return;
    }
  }

  // ------------------------------------------------------------ process

  private async spawnProcess(): Promise<void> {
    const token = {};
    this.spawnToken = token;
    const superseded = (): boolean => this.spawnToken !== token || this.state !== 'starting';
    // The previous process of this instance must be gone first.
    await Promise.all([...this.retiring].map((r) => r.terminated));
    if (superseded()) return;

    let holder = claims.get(this.spec.mgmtSocket);
    if (holder !== undefined && holder !== this && holder.state === 'stopping') {
      // A supervisor being replaced: wait for it to finish instead of refusing.
      await holder.stop();
      if (superseded()) return;
      holder = claims.get(this.spec.mgmtSocket);
    }
    if (holder !== undefined && holder !== this) {
      this.refuse(undefined, 'another supervisor in this process runs the same instance');
      return;
    }
    const files = { pidFile: this.spec.pidFile, mgmtSocket: this.spec.mgmtSocket };
    let running: number | undefined;
    try {
      running = await this.deps.findRunning(files);
    } catch {
      running = undefined;
    }
    if (superseded()) return;
    if (running !== undefined) {
      this.refuse(running, `pid file ${this.spec.pidFile} / socket ${this.spec.mgmtSocket}`);
      return;
    }
    claims.set(this.spec.mgmtSocket, this);
    // Stale files of a process that is gone; openvpn would refuse to bind over the socket.
    await Promise.all([this.deps.removeFile(this.spec.mgmtSocket).catch(() => undefined), this.deps.removeFile(this.spec.pidFile).catch(() => undefined)]);
    if (superseded()) return;

    const cmd = this.spec.openvpnPath ?? 'openvpn';
    const args = [
      '--config',
      this.spec.configPath,
      '--management',
      this.spec.mgmtSocket,
      'unix',
      '--management-hold',
      ...(this.deps.managementUser === undefined ? [] : ['--management-client-user', this.deps.managementUser]),
      '--writepid',
      this.spec.pidFile,
      ...dropArgs(this.deps.runAs),
    ];
    let child: SpawnedProcess;
    try {
      child = this.deps.spawn(cmd, args, this.spec.cwd === undefined ? {} : { cwd: this.spec.cwd });
    } catch (e) {
      this.spawnFailed(e);
      return;
    }
    const pid = child.pid;
    if (pid === undefined) {
      // node reports ENOENT/EACCES through 'error' with no pid.
      child.once('error', (e) => this.spawnFailed(e));
      return;
    }
    let onExit: () => void = () => undefined;
    const exit = new Promise<void>((resolve) => (onExit = resolve));
    const run: Run = { gen: ++this.gen, child, pid, exited: false, exit, mgmt: undefined, output: [], fatal: undefined, refusedPushes: [], stateEvents: 0, lastNotified: undefined, restartRetry: undefined };
    this.run = run;
    this.captureOutput(run, child.stdout);
    this.captureOutput(run, child.stderr);
    child.once('error', () => undefined);
    child.once('exit', (code, signal) => {
      run.exited = true;
      onExit();
      run.mgmt?.close();
      const expected = this.run !== run;
      this.deps.logger.emit({ kind: 'openvpn.exited', id: this.spec.id, pid, exitCode: code, signal, expected });
      const last = run.fatal ?? run.output[run.output.length - 1];
      const how = signal === null ? `with code ${String(code)}` : `on signal ${signal}`;
      const error = { code: 'MVPN_OPENVPN_EXITED', message: `openvpn exited ${how}${last === undefined ? '' : `: ${last}`}` };
      this.dispatch({ type: 'exited', code, signal, error }, run);
    });
    this.deps.logger.emit({ kind: 'openvpn.spawned', id: this.spec.id, pid, argv: [cmd, ...args] });
    this.dispatch({ type: 'spawned', pid }, run);
  }

  private refuse(pid: number | undefined, reason: string): void {
    this.deps.logger.emit({ kind: 'openvpn.refused', id: this.spec.id, pid: pid ?? 0, reason });
    const message =
      pid === undefined ? `instance ${this.spec.id} is already run by another supervisor` : `openvpn pid ${pid} still runs instance ${this.spec.id} (${reason})`;
    this.dispatch({
      type: 'spawn-failed',
      permanent: true,
      error: { code: 'MVPN_OPENVPN_ALREADY_RUNNING', message },
    });
  }

  private spawnFailed(e: unknown): void {
    const errno = (e as NodeJS.ErrnoException).code;
    const permanent = errno === 'ENOENT' || errno === 'EACCES';
    const err = new OpenvpnError('MVPN_OPENVPN_SPAWN_FAILED', `cannot start ${this.spec.openvpnPath ?? 'openvpn'}: ${(e as Error).message}`, { cause: e });
    this.deps.logger.emit({ kind: 'openvpn.spawn-failed', id: this.spec.id, code: err.code, message: err.message });
    this.dispatch({ type: 'spawn-failed', permanent, error: errorInfo(err) });
  }

  private captureOutput(run: Run, stream: NodeJS.ReadableStream | null): void {
    if (!stream) return;
    onLines(stream, OUTPUT_LINE_MAX, (line) => {
      run.output.push(line);
      if (run.output.length > OUTPUT_KEEP) run.output.shift();
      this.deps.logger.emit({ kind: 'openvpn.output', id: this.spec.id, pid: run.pid, line });
      const push = this.spec.pushFiltered === true ? parsePushLogLine(line) : undefined;
      if (push?.kind === 'reply') run.refusedPushes = [];
      else if (push?.kind === 'refused' && run.refusedPushes.length < REFUSED_PUSHES_KEEP) {
        run.refusedPushes.push(push.option);
        this.deps.logger.emit({ kind: 'openvpn.push-refused', id: this.spec.id, pid: run.pid, option: push.option });
      }
    });
  }

  /**
   * SIGTERM + SIGCONT, SIGKILL after the grace period; by the pid of our own
   * child, which cannot be reused before we saw it exit. `restartServer`: a
   * second SIGTERM after notifyGraceMs ends openvpn's 2 s exit-notify wait
   * (its clients were told to reconnect; the new server should take them).
   */
  private terminate(run: Run, reason: string, restartServer = false): void {
    run.mgmt?.close();
    if (run.exited || run.terminated) return;
    const { clock, kill, logger } = this.deps;
    const signal = (sig: NodeJS.Signals): void => {
      if (run.exited) return;
      logger.emit({ kind: 'openvpn.signal', id: this.spec.id, pid: run.pid, signal: sig, reason });
      try {
        kill(run.pid, sig);
      } catch {
        // exited meanwhile
      }
    };
    const within = (ms: number): Promise<boolean> =>
      new Promise((resolve) => {
        const cancel = clock.setTimeout(() => resolve(false), ms);
        void run.exit.then(() => {
          cancel();
          resolve(true);
        });
      });
    this.retiring.add(run);
    run.terminated = (async () => {
      signal('SIGTERM');
      signal('SIGCONT');
      if (restartServer && !(await within(this.deps.notifyGraceMs))) signal('SIGTERM');
      if (!(await within(this.deps.graceMs))) {
        signal('SIGKILL');
        if (!(await within(this.deps.killWaitMs))) logger.emit({ kind: 'openvpn.kill-stuck', id: this.spec.id, pid: run.pid });
      }
      this.retiring.delete(run);
    })();
  }

  private async finishStop(): Promise<void> {
    await Promise.all([...this.retiring].map((r) => r.terminated));
    // Only remove the files when no process holds them any more.
    let running: number | undefined;
    try {
      running = await this.deps.findRunning({ pidFile: this.spec.pidFile, mgmtSocket: this.spec.mgmtSocket });
    } catch {
      running = undefined;
    }
    if (running === undefined) {
      await Promise.all([this.deps.removeFile(this.spec.mgmtSocket).catch(() => undefined), this.deps.removeFile(this.spec.pidFile).catch(() => undefined)]);
    }
    this.dispatch({ type: 'stopped' });
  }

  // ------------------------------------------------------------ management

  /** SIGUSR1 by management command: its SUCCESS says openvpn took the signal (a plain kill could not say). */
  private async signalReload(run: Run): Promise<void> {
    this.deps.logger.emit({ kind: 'openvpn.signal', id: this.spec.id, pid: run.pid, signal: 'SIGUSR1', reason: 'reload: reconnect with the certificate and key files read again' });
    try {
      const mgmt = run.mgmt;
      if (mgmt === undefined || mgmt.isClosed) throw new OpenvpnError('MVPN_MGMT_CONNECT_FAILED', 'no management connection to signal the reload through');
      await mgmt.signal('SIGUSR1');
    } catch (e) {
      const err = toMvpnError(e);
      const error = { code: err.code, message: `reload (SIGUSR1) failed, restarting instead: ${err.message}` };
      this.deps.logger.emit({ kind: 'openvpn.mgmt-failed', id: this.spec.id, code: error.code, message: error.message });
      this.dispatch({ type: 'reload-failed', error }, run);
    }
  }

  private mgmtOptions(): ManagementOptions {
    return { timeoutMs: this.deps.commandTimeoutMs, commandTimeoutMs: this.deps.commandTimeoutMs };
  }

  /**
   * Waits for the socket (retrying with mgmtPollDelay, bounded by
   * mgmtConnectTimeoutMs), then `state on`, `bytecount N`,
   * `hold off` (so openvpn's own restarts do not park in a hold again; see
   * ManagementClient.holdOff) and `hold release`.
   */
  private async setupManagement(run: Run): Promise<void> {
    const deadline = this.deps.clock.now() + this.deps.mgmtConnectTimeoutMs;
    let mgmt: ManagementClient | undefined;
    let lastErr: MvpnError | undefined;
    let failed = 0;
    while (mgmt === undefined) {
      if (this.run !== run || run.exited) return;
      try {
        mgmt = await this.deps.connectManagement(this.spec.mgmtSocket, this.mgmtOptions());
      } catch (e) {
        lastErr = toMvpnError(e);
        if (this.deps.clock.now() >= deadline) {
          const error = new OpenvpnError(
            'MVPN_MGMT_CONNECT_FAILED',
            `openvpn did not open its management socket ${this.spec.mgmtSocket} within ${this.deps.mgmtConnectTimeoutMs} ms: ${lastErr.message}`,
          );
          this.deps.logger.emit({ kind: 'openvpn.mgmt-failed', id: this.spec.id, code: error.code, message: error.message });
          this.dispatch({ type: 'mgmt-failed', error: errorInfo(error) }, run);
          return;
        }
        await new Promise<void>((r) => this.deps.clock.setTimeout(r, mgmtPollDelay(failed++, this.deps.mgmtFirstPollMs, this.deps.mgmtPollMs)));
      }
    }
    if (this.run !== run || run.exited) {
      mgmt.close();
      return;
    }
    this.attach(run, mgmt);
    try {
      await mgmt.stateOn();
      await mgmt.bytecount(this.deps.bytecountSeconds);
      await mgmt.holdOff();
      await mgmt.holdRelease();
    } catch (e) {
      const error = toMvpnError(e);
      this.deps.logger.emit({ kind: 'openvpn.mgmt-failed', id: this.spec.id, code: error.code, message: error.message });
      this.dispatch({ type: 'mgmt-failed', error: errorInfo(error) }, run);
      return;
    }
    this.dispatch({ type: 'mgmt-ready' }, run);
    // State changes before mgmt-ready were ignored in `starting`; ask once.
    try {
      this.onPolledState(run, await this.pollState(run, mgmt));
    } catch {
      // the health check will ask again
    }
  }

  private attach(run: Run, mgmt: ManagementClient): void {
    run.mgmt = mgmt;
    this.deps.logger.emit({ kind: 'openvpn.mgmt-connected', id: this.spec.id, socket: this.spec.mgmtSocket });
    mgmt.on('state', (st) => {
      run.stateEvents++;
      run.lastNotified = st.name;
      this.onOpenvpnState(run, st);
      if (!NO_ANSWER_YET.has(st.name)) run.restartRetry = undefined;
      else if (this.spec.retryServerRestart === true && st.name === 'RECONNECTING' && st.description === SERVER_RESTARTED) this.retryAfterServerRestart(run);
    });
    mgmt.on('bytecount', (b) => {
      if (this.run !== run) return;
      this.bytesIn = b.bytesIn;
      this.bytesOut = b.bytesOut;
    });
    mgmt.on('hold', () => {
      // Only the first hold is ours to wait on (setupManagement releases it);
      // a later one (hold flag set again by someone) must not park the tunnel.
      if (this.run === run && this.state !== 'starting') void mgmt.holdRelease().catch(() => undefined);
    });
    mgmt.on('fatal', ({ text }) => {
      run.fatal = text;
      this.deps.logger.emit({ kind: 'openvpn.fatal', id: this.spec.id, pid: run.pid, text });
    });
    mgmt.on('close', () => {
      if (run.mgmt === mgmt) run.mgmt = undefined;
    });
  }

  /**
   * Ask openvpn for its state. A `>STATE:` notification can arrive while the
   * reply is in flight (even between its lines), and the reply then
   * describes an older state: remember how many notifications came before
   * asking, so the answer can be dropped when a newer one already arrived.
   */
  private async pollState(run: Run, mgmt: ManagementClient, timeoutMs?: number): Promise<{ st: StateInfo; seenBefore: number }> {
    const seenBefore = run.stateEvents;
    const st = await mgmt.state(timeoutMs === undefined ? undefined : { timeoutMs });
    return { st, seenBefore };
  }

  private onPolledState(run: Run, polled: { st: StateInfo; seenBefore: number }): void {
    if (run.stateEvents !== polled.seenBefore) return; // a real-time notification is newer than this reply
    this.onOpenvpnState(run, polled.st);
  }

  /**
   * The server told this client RESTART (it restarts for a new certificate,
   * CA or config). openvpn tries again at once, which the old server process
   * ignores while it exits, and its next try comes 1-2 s later (tls-timeout
   * on openvpn's whole-second timers). The new server process listens about
   * 0.3-0.5 s after the RESTART (`notifyGraceMs` and a spawn), so a fresh
   * handshake (SIGUSR1: a soft restart, `connect-retry 0`) at each of
   * `serverRestartRetryMs` finds it sooner. Only while openvpn has no answer
   * from a server yet (WAIT and before): once a server answered, the
   * sequence ends, and a new RESTART starts a new one. Only for a client
   * with one remote (`retryServerRestart`): a client that has not connected
   * since its restart, as here, takes the next remote at every SIGUSR1.
   */
  private retryAfterServerRestart(run: Run): void {
    const at = this.deps.serverRestartRetryMs;
    const token = {};
    run.restartRetry = token;
    const tryAgain = (i: number): void => {
      if (i >= at.length) return;
      this.deps.clock.setTimeout(() => {
        if (this.run !== run || run.exited || run.restartRetry !== token) return;
        const mgmt = run.mgmt;
        if (mgmt === undefined || mgmt.isClosed) return;
        this.deps.logger.emit({ kind: 'openvpn.signal', id: this.spec.id, pid: run.pid, signal: 'SIGUSR1', reason: 'the server restarted: a fresh handshake with its new process' });
        void mgmt.signal('SIGUSR1').catch(() => undefined);
        tryAgain(i + 1);
      }, at[i]! - (i === 0 ? 0 : at[i - 1]!));
    };
    tryAgain(0);
  }

  private onOpenvpnState(run: Run, st: StateInfo): void {
    if (this.run !== run) return;
    let changed = false;
    if (st.name === 'CONNECTED') {
      const remote = st.remoteIp === undefined ? undefined : `${st.remoteIp}${st.remotePort === undefined ? '' : `:${st.remotePort}`}`;
      if (remote !== undefined && remote !== this.remote) {
        this.remote = remote;
        changed = true;
      }
      if (this.tunnelAddress === undefined && st.localIp !== undefined) {
        this.tunnelAddress = st.localIp;
        changed = true;
      }
    }
    const before = this.state;
    this.dispatch({ type: 'openvpn-state', name: st.name }, run);
    if (changed && this.state === before) this.emit('change', this.status());
  }

  // ------------------------------------------------------------ health

  private scheduleHealth(): void {
    if (!this.healthActive) return;
    const run = this.run;
    const round = this.deps.healthRound;
    if (round !== undefined) {
      // The round runs the check at each of its ticks, for this process until stop-health.
      if (this.leaveRound === undefined && run !== undefined) this.leaveRound = round.join(() => this.healthCheck(run));
      return;
    }
    this.cancelHealth = this.deps.clock.setTimeout(() => {
      this.cancelHealth = undefined;
      if (run !== undefined) void this.healthCheck(run);
    }, this.deps.health.intervalMs);
  }

  private async healthCheck(run: Run): Promise<void> {
    if (this.run !== run || !this.healthActive) return;
    const policy = this.deps.health;
    let mgmtResult: 'ok' | 'timeout' | 'unavailable' = 'ok';
    let openvpnState: string | undefined;
    let seenBefore: number | undefined;
    let mgmt = run.mgmt;
    if (mgmt === undefined || mgmt.isClosed) {
      // Lost (e.g. closed after a timeout): reconnect and re-enable notifications.
      mgmt = undefined;
      try {
        const m = await this.deps.connectManagement(this.spec.mgmtSocket, { timeoutMs: policy.mgmtTimeoutMs, commandTimeoutMs: policy.mgmtTimeoutMs });
        if (this.run !== run) {
          m.close();
          return;
        }
        this.attach(run, m);
        await m.stateOn();
        await m.bytecount(this.deps.bytecountSeconds);
        mgmt = m;
      } catch (e) {
        mgmtResult = toMvpnError(e).code === 'MVPN_MGMT_TIMEOUT' ? 'timeout' : 'unavailable';
      }
    }
    if (mgmt !== undefined) {
      try {
        const polled = await this.pollState(run, mgmt, policy.mgmtTimeoutMs);
        openvpnState = polled.st.name;
        seenBefore = polled.seenBefore;
        this.onPolledState(run, polled);
      } catch (e) {
        mgmtResult = toMvpnError(e).code === 'MVPN_MGMT_TIMEOUT' ? 'timeout' : 'unavailable';
      }
      if (mgmtResult === 'ok' && this.spec.role === 'server' && this.run === run) {
        try {
          const s = await mgmt.status3({ timeoutMs: policy.mgmtTimeoutMs });
          this.clients = s.clients.length;
          this.bytesIn = s.clients.reduce((a, c) => a + c.bytesIn, 0);
          this.bytesOut = s.clients.reduce((a, c) => a + c.bytesOut, 0);
        } catch (e) {
          if (toMvpnError(e).code === 'MVPN_MGMT_TIMEOUT') mgmtResult = 'timeout';
        }
      }
    }
    if (this.run !== run || !this.healthActive) return;
    const device = await (this.deps.readDevice?.(this.spec.dev, policy.mgmtTimeoutMs) ?? readDevice(this.deps.exec, this.spec.dev, policy.mgmtTimeoutMs));
    if (this.run !== run || !this.healthActive) return;
    // A notification that came after the query (while the reply or `ip` was
    // awaited) is newer than the reply: judge by it, or a network that just
    // connected would be sent back to connecting until the next check.
    if (seenBefore !== undefined && run.stateEvents !== seenBefore && run.lastNotified !== undefined) openvpnState = run.lastNotified;

    // The frame probe: at once when connected, then every PROBE_EVERY checks while frames pass, at every check while they do not.
    const probe = this.spec.frameProbe;
    const framesBefore = this.frames;
    if (probe !== undefined && openvpnState === 'CONNECTED' && device.device === 'present') {
      if (this.frames !== 'ok' || ++this.checksSinceProbe >= PROBE_EVERY) {
        this.checksSinceProbe = 0;
        const target = { dev: this.spec.dev, peer: probe.peer, mtu: probe.mtu };
        this.frames = await (this.deps.probeFrames?.(target) ?? probeFullFrames(this.deps.exec, [target]).then(([v]) => v!));
        if (this.run !== run || !this.healthActive) return;
      }
    }
    const frames = probe !== undefined && this.frames !== undefined ? { frames: { verdict: this.frames, mtu: probe.mtu, peer: probe.peer } } : {};
    const result = assessHealth(
      { mgmt: mgmtResult, ...(openvpnState === undefined ? {} : { openvpnState }), device, bytesIn: this.bytesIn, bytesOut: this.bytesOut, ...(this.spec.pushFiltered === true ? { refusedPushes: run.refusedPushes } : {}), ...frames },
      this.healthMemory,
      { role: this.spec.role, dev: this.spec.dev, ...(this.spec.expectedAddress === undefined ? {} : { expectedAddress: this.spec.expectedAddress }) },
      policy,
    );
    this.healthMemory = result.memory;
    const addrChanged = result.tunnelAddress !== undefined && result.tunnelAddress !== this.tunnelAddress;
    if (addrChanged) this.tunnelAddress = result.tunnelAddress;
    if (result.verdict !== this.lastVerdict || result.verdict !== 'ok') {
      this.deps.logger.emit({ kind: 'openvpn.health', id: this.spec.id, verdict: result.verdict, reason: result.reason });
    }
    this.lastVerdict = result.verdict;
    const before = this.state;
    this.dispatch(
      {
        type: 'health',
        verdict: result.verdict,
        reason: result.reason,
        ...(result.code === undefined ? {} : { error: { code: result.code, message: result.reason } }),
      },
      run,
    );
    if ((addrChanged || this.frames !== framesBefore) && this.state === before) this.emit('change', this.status());
    if (this.run === run) this.scheduleHealth();
  }
}
