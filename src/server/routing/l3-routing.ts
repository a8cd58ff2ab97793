/**
 * The server daemon's routing for its L3 networks (ARCHITECTURE.md "L3
 * networks across servers"): its own BIRD 2 (config under the state dir,
 * control socket and pid file under the runtime dir, never the host's
 * BIRD), the policy rule that sends the network's subnet to the network's
 * own kernel table, and forwarding on the network's interfaces only.
 *
 * - `apply(routerId, specs)` makes it so: rules and per-interface
 *   forwarding first, then the config file (rewritten only when it
 *   changes), then BIRD: started if it is not running, told to `configure`
 *   over its control socket if the config changed since it last read it (a
 *   configure that failed is tried again at the next call). The daemon
 *   calls it at every pass over its clients (a new /32, or one withdrawn)
 *   and at every reconcile; an unchanged call costs one file read.
 * - BIRD is supervised like openvpn: started by pid (`bird -f`), and when
 *   it dies it is started again after a backoff (1 s doubling to 10 s,
 *   reset once it ran 30 s). A restarted BIRD reads the current config;
 *   its kernel protocol removes the routes of the dead instance it does not
 *   export again (`proto bird` routes in its table), so no route to a
 *   client that left while it was down survives the restart.
 * - A BIRD left by a crashed daemon (its pid file names a live process
 *   whose command line has our config file) is stopped by pid first.
 * - Forwarding: the kernel forwards a packet only if forwarding is on for
 *   the interface it *arrived* on (`net.ipv4.conf.<if>.forwarding`, read in
 *   the input route lookup); the global `ip_forward` only sets every
 *   interface at once. So the tun and the backbone get it, nothing else.
 */
import { spawn as nodeSpawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RoutingError, toMvpnError } from '../../errors.ts';
import type { ExecFn } from '../../util/exec.ts';
import { ensureDir } from '../../util/fs-atomic.ts';
import { readCmdline, terminatePid } from '../../openvpn/process.ts';
import type { SpawnFn, SpawnedProcess } from '../../openvpn/supervisor-deps.ts';
import { writeIfChanged } from '../network-files.ts';
import { birdBgpPrefs, birdConfigure, birdProtocols, birdRoutes } from './bird-control.ts';
import { renderBirdConfig, routeTableId, rulePriority, sessionPref, type L3RoutingSpec } from './bird-config.ts';

export interface L3RoutingDeps {
  /** `<state>/routing`: bird.conf. */
  readonly configDir: string;
  /** The daemon's runtime dir: bird.ctl, bird.pid. */
  readonly runtimeDir: string;
  readonly birdPath?: string;
  /** Runs `ip` and `sysctl` (tests: inside the server's namespace). */
  readonly exec: ExecFn;
  /** Starts BIRD (tests: inside the server's namespace; `ip netns exec` execs, so the pid is BIRD's). */
  readonly spawn?: SpawnFn;
  /** Something `snapshot()` shows changed, or BIRD failed (message). */
  readonly onEvent?: (e: { kind: 'bird-start' | 'bird-exit' | 'bird-failed'; pid?: number; message?: string }) => void;
}

export interface RoutingPeerView {
  readonly name: string;
  readonly address: string;
  /** BGP session state (BIRD's info column: Established, Active, Connect …). */
  readonly state: string;
  /** Prefixes learned from this peer. */
  readonly routes: readonly string[];
}

export interface RoutingView {
  readonly bird: { readonly pid: number | null; readonly restarts: number; readonly error?: string };
  readonly networks: Readonly<Record<string, { readonly table: number; readonly clients: readonly string[]; readonly peers: readonly RoutingPeerView[] }>>;
}

const RESTART_MIN_MS = 1_000;
const RESTART_MAX_MS = 10_000;
const STABLE_MS = 30_000;

export class L3Routing {
  private readonly deps: L3RoutingDeps;
  private child: SpawnedProcess | undefined;
  private pid: number | undefined;
  private startedAt = 0;
  private restarts = 0;
  private attempt = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private starting: Promise<void> | undefined;
  private lastError: string | undefined;
  private stopped = false;
  private specs: readonly L3RoutingSpec[] = [];
  /** The config file changed since the running BIRD last read it. */
  private unconfigured = false;
  /** Rules we added: network → `to SUBNET lookup T priority P`. */
  private readonly rules = new Map<string, { subnet: string; table: number; priority: number }>();

  constructor(deps: L3RoutingDeps) {
    this.deps = deps;
  }

  get configPath(): string {
    return join(this.deps.configDir, 'bird.conf');
  }

  get socketPath(): string {
    return join(this.deps.runtimeDir, 'bird.ctl');
  }

  get pidPath(): string {
    return join(this.deps.runtimeDir, 'bird.pid');
  }

  birdPid(): number | undefined {
    return this.pid;
  }

  /** Makes the kernel and BIRD match `specs` (every L3 network of this server). */
  async apply(routerId: string, specs: readonly L3RoutingSpec[]): Promise<void> {
    if (this.stopped) return;
    this.specs = specs;
    for (const s of specs) await this.ensurePolicy(s);
    for (const id of [...this.rules.keys()]) if (!specs.some((s) => s.network === id)) await this.removePolicy(id);
    if (specs.length === 0) {
      await this.stopBird();
      return;
    }
    await ensureDir(this.deps.configDir, 0o700);
    if (await writeIfChanged(this.configPath, renderBirdConfig(routerId, specs), 0o600)) this.unconfigured = true;
    if (this.pid === undefined) {
      // A BIRD (re)started now reads the file as it is.
      this.unconfigured = false;
      if (!this.restartTimer) await this.startBird();
      return;
    }
    // A configure that failed (BIRD still opening its socket, or busy) is tried again at the next apply.
    if (this.unconfigured) {
      await birdConfigure(this.socketPath);
      this.unconfigured = false;
    }
  }

  private async ip(args: readonly string[], okIf?: RegExp): Promise<void> {
    const r = await this.deps.exec('ip', args, { timeoutMs: 10_000 });
    if (r.code !== 0 && !(okIf && okIf.test(r.stderr))) throw new RoutingError('MVPN_ROUTING_FAILED', `ip ${args.join(' ')} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
  }

  private async ensurePolicy(s: L3RoutingSpec): Promise<void> {
    const table = routeTableId(s.network);
    const priority = rulePriority(s.network);
    const cur = this.rules.get(s.network);
    if (!cur || cur.subnet !== s.subnet) {
      if (cur) await this.removePolicy(s.network);
      // Delete first: a rule left by a crashed daemon would otherwise be doubled.
      await this.ip(['rule', 'del', 'to', s.subnet, 'lookup', String(table), 'priority', String(priority)], /No such file|not found/i);
      await this.ip(['rule', 'add', 'to', s.subnet, 'lookup', String(table), 'priority', String(priority)]);
      this.rules.set(s.network, { subnet: s.subnet, table, priority });
    }
    for (const dev of [s.tunDev, s.backboneDev]) {
      const r = await this.deps.exec('sysctl', ['-qw', `net.ipv4.conf.${dev}.forwarding=1`], { timeoutMs: 10_000 });
      if (r.code !== 0) throw new RoutingError('MVPN_ROUTING_FAILED', `forwarding on ${dev}: ${r.stderr.trim() || `exit ${r.code}`}`);
    }
  }

  private async removePolicy(id: string): Promise<void> {
    const r = this.rules.get(id);
    if (!r) return;
    this.rules.delete(id);
    await this.ip(['rule', 'del', 'to', r.subnet, 'lookup', String(r.table), 'priority', String(r.priority)], /No such file|not found/i);
    await this.ip(['route', 'flush', 'table', String(r.table)], /No such file|not found|FIB table does not exist/i);
  }

  /**
   * One start at a time: the restart timer and an `apply` (the daemon calls
   * it every second) could both find no BIRD during the awaits below and
   * start two, on one control socket and pid file; the loser exits and
   * counts as a crash.
   */
  private startBird(): Promise<void> {
    this.starting ??= this.spawnBird().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async spawnBird(): Promise<void> {
    if (this.stopped || this.child) return;
    await ensureDir(this.deps.runtimeDir, 0o700);
    await this.stopLeftover();
    const args = ['-f', '-c', this.configPath, '-s', this.socketPath, '-P', this.pidPath];
    const spawn = this.deps.spawn ?? ((cmd, a, o) => nodeSpawn(cmd, [...a], { cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'] }));
    let child: SpawnedProcess;
    try {
      child = spawn(this.deps.birdPath ?? 'bird', args, {});
    } catch (err) {
      return this.failed(`cannot start bird: ${(err as Error).message}`);
    }
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    child.stdout?.on('data', () => undefined);
    child.once('error', (err) => this.failed(`bird: ${err.message}`));
    this.child = child;
    this.pid = child.pid;
    this.startedAt = Date.now();
    child.once('exit', (code, signal) => {
      if (this.child !== child) return;
      this.unconfigured = false;
      this.child = undefined;
      this.pid = undefined;
      if (this.stopped) return;
      this.lastError = `bird exited (${signal ?? `code ${code}`})${stderr.trim() ? `: ${stderr.trim().split('\n').pop()}` : ''}`;
      this.deps.onEvent?.({ kind: 'bird-exit', message: this.lastError });
      this.scheduleRestart();
    });
    this.deps.onEvent?.({ kind: 'bird-start', ...(child.pid === undefined ? {} : { pid: child.pid }) });
  }

  private failed(message: string): void {
    this.lastError = message;
    this.deps.onEvent?.({ kind: 'bird-failed', message });
  }

  private scheduleRestart(): void {
    if (Date.now() - this.startedAt > STABLE_MS) this.attempt = 0;
    const delay = Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** this.attempt++);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      this.restarts++;
      void this.startBird().catch((err: unknown) => this.failed(toMvpnError(err).message));
    }, delay);
  }

  /** A BIRD of a crashed earlier daemon on our files: stopped by pid, after checking its command line. */
  private async stopLeftover(): Promise<void> {
    const pid = Number((await readFile(this.pidPath, 'utf8').catch(() => '')).trim());
    if (!Number.isInteger(pid) || pid <= 1) return;
    const ours = async () => (await readCmdline(pid))?.includes(this.configPath) === true;
    await terminatePid(pid, { stillOurs: ours });
  }

  private async stopBird(): Promise<void> {
    clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    const child = this.child;
    const pid = this.pid;
    this.child = undefined;
    this.pid = undefined;
    if (!child || pid === undefined) return;
    await terminatePid(pid);
  }

  /** What `network show` and `status --json` show: BIRD's pid and, per network, each peer's session and the prefixes learned from it. */
  async view(): Promise<RoutingView> {
    const networks: Record<string, { table: number; clients: readonly string[]; peers: RoutingPeerView[] }> = {};
    let protos: Awaited<ReturnType<typeof birdProtocols>> = [];
    let error = this.lastError;
    if (this.pid !== undefined) protos = await birdProtocols(this.socketPath).catch((err: unknown) => ((error = toMvpnError(err).message), []));
    for (const s of this.specs) {
      const id = s.network.replace(/[^a-zA-Z0-9]/g, '_');
      const peers: RoutingPeerView[] = [];
      for (const p of s.peers) {
        const name = `b_${id}_${p.name.replace(/[^a-zA-Z0-9]/g, '_')}`;
        const proto = protos.find((x) => x.name === name);
        const routes = proto ? await birdRoutes(this.socketPath, `t_${id}`, name).catch(() => []) : [];
        peers.push({ name: p.name, address: p.address, state: proto ? proto.info || proto.state : 'down', routes });
      }
      networks[s.network] = { table: routeTableId(s.network), clients: s.clients.map((c) => c.address).sort(), peers };
    }
    return { bird: { pid: this.pid ?? null, restarts: this.restarts, ...(error ? { error } : {}) }, networks };
  }

  /**
   * Clients of `network` connected here whose address another server
   * announces with a newer session (a higher local_pref): the node moved and
   * this session is stale. The caller ends those sessions (openvpn would
   * otherwise keep delivering to them until its keepalive times out) and
   * withdraws their routes.
   */
  async superseded(network: string): Promise<string[]> {
    const s = this.specs.find((x) => x.network === network);
    if (!s || this.pid === undefined || s.clients.length === 0) return [];
    const prefs = await birdBgpPrefs(this.socketPath, `t_${network.replace(/[^a-zA-Z0-9]/g, '_')}`);
    return s.clients.filter((c) => (prefs.get(`${c.address}/32`) ?? []).some((p) => p > sessionPref(c.since))).map((c) => c.address);
  }

  /** Stops BIRD (its kernel protocols withdraw their routes) and removes the rules. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.stopBird();
    for (const id of [...this.rules.keys()]) await this.removePolicy(id).catch(() => undefined);
  }
}
