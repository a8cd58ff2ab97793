/**
 * A running demo world: the testbeds of topology.ts, one server per ops
 * host the plan names, and one agent per node, all driven through the
 * mvpn-client executable as operators would: `server init` on each ops host,
 * then the planner's `server plan --apply --servers` carries out the plan
 * on every server (networks, members, remotes, links), then `server run`,
 * node delivery and `run`. `mvpn-client demo` (both topologies) and the e2e
 * suite use this, so one implementation is what the tests prove.
 *
 * Design notes:
 * - `bin` is the argv prefix of the executable: `[process.execPath]` inside
 *   the single executable, `[node, src/main.ts]` in development, the built
 *   `dist/mvpn-client` in the e2e suite.
 * - Every file lives under `dir` (servers' state, per-node config, state,
 *   runtime and logs), so one `rm -r` removes the demo and every process
 *   command line names `dir` (used to verify pids before signalling).
 * - Each server's admin channel is `ip netns exec <its ops host> mvpn-client
 *   server … --state-dir <its dir>`, the way `ssh ops mvpn-client server`
 *   would reach it on real testbeds.
 * - A node served by its LAN's hub gets a per-node `server tarball
 *   --config-only` (with its enrollment token) unpacked into its own
 *   directory, and enrolls. A node behind a peer server cannot reach the
 *   hub's API: it gets the hub's `server export` (bundle and signed
 *   membership document, a file source), as its testbed would deliver it.
 * - Agentless nodes (`agentless` option, `demo --agentless N`) get no
 *   tarball and no agent: the hub's `server export --format ovpn` profile,
 *   run by the stock `openvpn --config` in their namespace (dev tap: the OS
 *   names it tap0). Their state comes from that interface, not from
 *   `mvpn-client status`.
 * - Long-running processes are spawned detached (own session), so Ctrl-C in
 *   the terminal reaches only the demo, which then tears down in order, and
 *   `--keep` survives the demo's exit. They are stopped by pid only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { x as untar } from 'tar';
import type { AgentStatus } from '../agent/status.ts';
import { sh, waitFor, type Lab, type Netns, type ShResult } from '../netns/lab.ts';
import { DEFAULT_RELAY_PORT, type ServerStep } from '../server/federation/apply-servers.ts';
import { parseExperiment, planExperiment, type Experiment, type Plan, type PlanMember } from '../server/federation/plan.ts';
import { intToIp, parseCidr, size } from '../server/alloc.ts';
import { mapLimit } from '../util/concurrency.ts';
import { startPostgres, type PgCluster } from './postgres.ts';
import { buildTopology, experimentFor, standbyOf, VPN_SUBNET, type DemoNode, type OpsHost, type TestbedSpec, type Topology } from './topology.ts';

export { NETWORK_ID } from './topology.ts';
export const API_PORT = 8443;

export interface WorldOptions {
  readonly lab: Lab;
  /** argv prefix of the mvpn-client executable. */
  readonly bin: readonly string[];
  /** Everything the world writes goes here (created). */
  readonly dir: string;
  readonly testbeds: readonly TestbedSpec[];
  /** What the planner reads (`demo --rspec`: the request's description, one L2 LAN); default: one LAN of every node (experimentFor). */
  readonly experiment?: Experiment;
  /** Progress lines (stderr in the demo). */
  readonly progress?: (line: string) => void;
  /** Agent reconcile interval (seconds); short in the demo so changes show quickly. */
  readonly reconcileIntervalS?: number;
  /** Nodes that run a stock openvpn from an exported profile instead of the agent. */
  readonly agentless?: ReadonlySet<string>;
  /** Extra arguments for their `openvpn --config PROFILE` (tests: `--verb 4`). */
  readonly agentlessArgs?: readonly string[];
  /**
   * `demo --ha`: the hub's store in a PostgreSQL cluster of the world's own
   * (postgres.ts, unix socket in `dir/pg`), and a second server host on it
   * (the hub's standby ops host, `server init --join=-`), set up before the
   * plan so the LAN's bundles list both hosts.
   */
  readonly ha?: boolean;
  /**
   * `demo --l3`: the LAN is routed (`"layer": 3`, BIRD between the servers),
   * and the first public node behind a peer of its own testbed gets a second
   * remote, another peer's public address (`node set-remotes` at the hub):
   * where it goes when its own server is cut off (`roamer`, `cutOff`).
   */
  readonly l3?: boolean;
}

/** The interface a stock openvpn makes from the profile's `dev tap` in a fresh namespace. */
export const AGENTLESS_DEV = 'tap0';

export interface RunningProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly log: string;
  readonly exited: Promise<number | null>;
}

export interface PairResult {
  readonly from: string;
  readonly to: string;
  readonly ok: boolean;
}

export interface NeighbourProof {
  readonly node: string;
  readonly mac: string;
  /** The other nodes whose VPN address sits in this node's neighbour table with that node's own MAC. */
  readonly seen: readonly string[];
  readonly missing: readonly string[];
}

export class World {
  readonly lab: Lab;
  readonly bin: readonly string[];
  readonly dir: string;
  topology!: Topology;
  experiment!: Experiment;
  plan!: Plan;
  /** What `server plan --apply --servers` did, step by step. */
  applied: readonly ServerStep[] = [];
  /** `server run` per testbed. */
  readonly servers = new Map<string, RunningProcess>();
  /** The agent per node, or the stock openvpn of an agentless node. */
  readonly agents = new Map<string, RunningProcess>();
  /** `l3`: the node that has a second server, its own and that one. */
  roamer: { readonly node: string; readonly from: string; readonly to: string } | undefined;
  /** `ha`: the PostgreSQL cluster both server hosts keep their state in. */
  store: PgCluster | undefined;
  private readonly opts: WorldOptions;
  private stopping = false;

  constructor(opts: WorldOptions) {
    this.opts = opts;
    this.lab = opts.lab;
    this.bin = opts.bin;
    this.dir = opts.dir;
  }

  get nodes(): readonly DemoNode[] {
    return this.topology.nodes;
  }

  node(id: string): DemoNode {
    const n = this.topology.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** The demo's one LAN: its network id on the servers, the node's device, its broadcast address. */
  get network(): string {
    return this.plan.lans[0]!.name;
  }
  get dev(): string {
    return `mv-${this.network}`;
  }
  get subnet(): string {
    return this.plan.lans[0]!.subnet ?? VPN_SUBNET;
  }
  get broadcast(): string {
    const c = parseCidr(this.subnet);
    return intToIp(c.base + size(c) - 1);
  }

  /** The testbed whose server hosts the demo's LAN (allocation authority, signer of every bundle). */
  get hub(): string {
    return this.plan.lans[0]!.hub;
  }

  /** What the plan says of a node: which server it joins through, at which address. */
  member(id: string): PlanMember {
    const m = this.plan.lans[0]!.members.find((x) => x.node === id);
    if (!m) throw new Error(`the plan has no node ${id}`);
    return m;
  }

  opsHost(testbed: string = this.hub): OpsHost {
    const o = this.topology.ops.get(testbed);
    if (!o) throw new Error(`testbed ${testbed} has no ops host`);
    return o;
  }

  /** The running `server run` of the hub (the demo's main server). */
  get server(): RunningProcess | undefined {
    return this.servers.get(this.hub);
  }

  serverState(testbed: string = this.hub): string {
    return join(this.dir, 'servers', testbed);
  }
  serverLog(testbed: string = this.hub): string {
    return join(this.dir, `server-${testbed}.log`);
  }
  nodeDir(id: string): string {
    return join(this.dir, 'nodes', id);
  }
  isAgentless(id: string): boolean {
    return this.opts.agentless?.has(id) === true;
  }
  /** An agentless node's standalone profile. */
  profilePath(id: string): string {
    return join(this.nodeDir(id), `${id}.ovpn`);
  }
  /** The node's VPN interface. */
  devOf(id: string): string {
    return this.isAgentless(id) ? AGENTLESS_DEV : this.dev;
  }
  configPath(id: string): string {
    return join(this.nodeDir(id), 'etc', 'mvpn-client', 'config.json');
  }
  runtimeDir(id: string): string {
    return join(this.nodeDir(id), 'run');
  }
  stateDir(id: string): string {
    return join(this.nodeDir(id), 'state');
  }

  private say(line: string): void {
    this.opts.progress?.(line);
  }

  /** Namespaces, and the plan for them (the planner is pure: this is what `server plan` prints). */
  async buildTopology(): Promise<void> {
    // 0711 (enter, not list) here and below: each openvpn drops to mvpn-openvpn and must reach its CRL and ccd files by path.
    await mkdir(this.dir, { recursive: true, mode: 0o711 });
    this.topology = await buildTopology(this.lab, this.opts.testbeds);
    // nodes answer a broadcast ping (Linux ignores them by default), for the broadcast proof
    for (const n of this.topology.nodes) await n.ns.exec('sysctl', ['-q', '-w', 'net.ipv4.icmp_echo_ignore_broadcasts=0']);
    this.experiment = parseExperiment(this.opts.experiment ?? experimentFor(this.topology, this.opts.l3 ? 3 : 2));
    this.plan = planExperiment(this.experiment);
  }

  /** The executable, inside `ns` when given, `input` on its stdin. Never throws on a non-zero exit. */
  cli(args: readonly string[], ns?: Netns, timeoutMs = 120_000, input?: string): Promise<ShResult> {
    const argv = [...this.bin, ...args];
    const opts = { allowFail: true, timeoutMs, ...(input === undefined ? {} : { input }) };
    return ns ? ns.exec(argv[0]!, argv.slice(1), opts) : sh(argv[0]!, argv.slice(1), opts);
  }

  /** `ha`: the hub's second server host (its key in servers and topology.ops). */
  get standby(): string {
    return standbyOf(this.hub);
  }

  /** A server CLI command on a testbed's server (default: the hub); throws with its output when it fails. */
  async server$(args: readonly string[], testbed: string = this.hub): Promise<string> {
    const r = await this.cli(['server', ...args, '--state-dir', this.serverState(testbed)], this.opsHost(testbed).ns);
    if (r.code !== 0) throw new Error(`mvpn-client server ${args.join(' ')} on ${testbed} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  }

  /**
   * `server init` on every ops host the plan names, the plan applied on all
   * of them at once (`server plan --apply --servers`, run from outside the
   * testbeds like an operator's workstation), and every node's delivery.
   */
  async setUpServers(): Promise<void> {
    await mkdir(join(this.dir, 'servers'), { recursive: true, mode: 0o711 });
    const storeArgs: string[] = [];
    if (this.opts.ha) {
      this.store = await startPostgres(join(this.dir, 'pg'), { detached: true });
      storeArgs.push('--store-url', await this.store.createDatabase('mvpn'));
      this.say(`PostgreSQL ${this.store.pid()} on the unix socket in ${this.store.socketDir} (no TCP)\n`);
    }
    for (const s of this.plan.servers) {
      await this.server$(['init', '--address', s.public, '--address', s.internal, '--listen', `0.0.0.0:${API_PORT}`, ...(s.testbed === this.hub ? storeArgs : [])], s.testbed);
    }
    if (this.opts.ha) {
      // what `ssh ops mvpn-client server join-material | ssh ops2 mvpn-client server init --join=-` does
      const st = this.opsHost(this.standby);
      const material = await this.server$(['join-material']);
      const r = await this.cli(['server', 'init', '--join=-', '--host-id', this.standby, '--address', st.public, '--address', st.internal, '--listen', `0.0.0.0:${API_PORT}`, '--state-dir', this.serverState(this.standby)], st.ns, 120_000, material);
      if (r.code !== 0) throw new Error(`mvpn-client server init --join=- on ${this.standby} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
    }
    const experimentFile = join(this.dir, 'experiment.json');
    const serversFile = join(this.dir, 'servers.json');
    await writeFile(experimentFile, JSON.stringify(this.experiment, null, 2) + '\n', { mode: 0o644 });
    const servers = Object.fromEntries(
      this.plan.servers.map((s) => [s.testbed, { command: ['ip', 'netns', 'exec', this.opsHost(s.testbed).ns.name, ...this.bin, 'server', '--state-dir', this.serverState(s.testbed)] }]),
    );
    await writeFile(serversFile, JSON.stringify({ servers }, null, 2) + '\n', { mode: 0o644 });
    const r = await this.cli(['server', 'plan', experimentFile, '--apply', '--servers', serversFile, '--json'], undefined, 300_000);
    if (r.code !== 0) throw new Error(`mvpn-client server plan --apply failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
    this.applied = (JSON.parse(r.stdout) as { steps: ServerStep[] }).steps;
    if (this.opts.ha) this.applied = [...this.applied, ...(await this.bothRemotes())];
    if (this.opts.l3) this.applied = [...this.applied, await this.secondServer()];
    for (const n of this.nodes) await this.deliver(n);
  }

  /** `l3`: a public node behind a peer dials its own server first, then another peer's public address (same network, its own port). */
  private async secondServer(): Promise<ServerStep> {
    const lan = this.plan.lans[0]!;
    const m = lan.members.find((x) => this.node(x.node).public && x.server !== this.hub);
    const to = lan.peers.find((p) => p !== m?.server);
    if (!m || to === undefined) throw new Error('demo --l3 needs a public node behind a peer and a second peer');
    const port = async (tb: string): Promise<number> => (JSON.parse(await this.server$(['network', 'show', this.network, '--json'], tb)) as { port: number }).port;
    const first = `${m.remote}:${await port(m.server)}`;
    const second = `${this.opsHost(to).public}:${await port(to)}`;
    await this.server$(['node', 'set-remotes', m.node, '--network', this.network, '--remote', first, '--remote', second]);
    this.roamer = { node: m.node, from: m.server, to };
    return { server: this.hub, action: 'node-remotes-set', lan: this.network, node: m.node, detail: `remotes ${first}, then ${second} (${to}'s server)` };
  }

  /** `l3`: the node cut off from its first server, both ways, as when that host dies (Netns.cutOff in the node's namespace). */
  async cutOff(id: string): Promise<void> {
    await this.node(id).ns.cutOff(this.member(id).remote);
  }

  /**
   * `ha`: the planner pins each member to the hub's address; the bundle
   * would add every host's addresses after it (documents.ts nodeRemotes),
   * but a node should dial the standby's address on its own side first, so
   * its remotes list both hosts (hub first, the planner's choice), the port
   * being the network's on either.
   */
  private async bothRemotes(): Promise<ServerStep[]> {
    const steps: ServerStep[] = [];
    const standby = this.opsHost(this.standby);
    for (const m of this.plan.lans[0]!.members) {
      const second = m.remote === this.opsHost().internal ? standby.internal : standby.public;
      await this.server$(['node', 'set-remotes', m.node, '--network', this.network, '--remote', m.remote, '--remote', second]);
      steps.push({ server: this.hub, action: 'node-remotes-set', lan: this.network, node: m.node, detail: `remotes ${m.remote}, then ${second} (${this.standby}, same store)` });
    }
    return steps;
  }

  /**
   * What a testbed does with a per-node startup tarball (made by the LAN's
   * hub, with the node's token), into the node's own directory instead of
   * `/`. The API address is the plan's; a node behind a peer dials the
   * relay on its own ops host (`--via`), TLS still with the hub.
   */
  async deliver(n: DemoNode, m: PlanMember = this.member(n.id)): Promise<void> {
    const nodeDir = this.nodeDir(n.id);
    await mkdir(nodeDir, { recursive: true, mode: 0o711 });
    if (this.isAgentless(n.id)) {
      // What an operator hands a node whose image cannot run the agent.
      await this.server$(['export', n.id, '--network', this.network, '--format', 'ovpn', '--out', this.profilePath(n.id)]);
      return;
    }
    const tarball = join(nodeDir, 'startup.tar.gz');
    const via = m.api_via === null ? [] : ['--via', `${m.api_via}:${DEFAULT_RELAY_PORT}`];
    await this.server$(['tarball', '--node', n.id, '--config-only', '--server-url', `https://${m.api}:${API_PORT}/`, ...via, '--token-ttl', '1h', '--out', tarball]);
    await untar({ file: tarball, cwd: nodeDir });
    const cfgPath = this.configPath(n.id);
    const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as Record<string, unknown> & { enroll?: Record<string, unknown> };
    // The tarball's config names /etc/mvpn-client/...: here that directory is the node's own.
    cfg['server_ca'] = 'server-ca.pem';
    if (cfg.enroll) cfg.enroll['token_file'] = 'enroll.token';
    await this.writeConfig(n.id, cfg);
  }

  private async writeConfig(id: string, cfg: Record<string, unknown>): Promise<void> {
    cfg['state_dir'] = this.stateDir(id);
    cfg['runtime_dir'] = this.runtimeDir(id);
    cfg['reconcile_interval_s'] = this.opts.reconcileIntervalS ?? 30;
    await writeFile(this.configPath(id), JSON.stringify(cfg, null, 2) + '\n', { mode: 0o644 });
  }

  private launch(ns: Netns, argv: readonly string[], log: string): RunningProcess {
    const fd = openSync(log, 'a', 0o600);
    let child: ChildProcess;
    try {
      // `ip netns exec` execs the program, so the child's pid is the program's.
      child = spawn('ip', ['netns', 'exec', ns.name, ...argv], { stdio: ['ignore', fd, fd], detached: true });
    } finally {
      closeSync(fd);
    }
    child.unref();
    if (child.pid === undefined) throw new Error(`could not start ${argv.join(' ')}`);
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : null)));
      child.once('error', () => resolve(null));
    });
    return { child, pid: child.pid, log, exited };
  }

  /** `server run` on every server of the plan; resolves once each has its part up. */
  async startServers(timeoutMs = 60_000): Promise<void> {
    for (const s of this.plan.servers) this.launchServer(s.testbed);
    await Promise.all(this.plan.servers.map((s) => this.awaitServer(s.testbed, timeoutMs)));
    if (!this.opts.ha) return;
    // after the hub, so the hub holds the LAN's lease; the standby waits for it to expire
    this.launchServer(this.standby);
    const proc = this.servers.get(this.standby)!;
    const ready = await waitFor(async () => proc.child.exitCode !== null || /server: ready/.test(await tail(proc.log, 200)), timeoutMs, 250);
    if (!ready || proc.child.exitCode !== null) throw new Error(`the server on ${this.standby} did not come up: ${await tail(proc.log)}`);
  }

  /**
   * `demo --ha`: the host dies. SIGKILL to its `server run` and every openvpn
   * in its namespace (its network's servers), then its links cut, so
   * nothing of it answers and its lease is left to expire.
   */
  async killHost(testbed: string): Promise<void> {
    const host = this.opsHost(testbed);
    const victims = [this.servers.get(testbed)?.pid];
    for (const pid of await host.ns.pids()) {
      const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
      if (comm.trim() === 'openvpn') victims.push(pid);
    }
    for (const pid of victims) if (pid !== undefined) signal(pid, 'SIGKILL');
    for (const dev of ['eth0', 'eth1']) await host.ns.exec('ip', ['link', 'set', dev, 'down'], { allowFail: true });
  }

  /** Which host holds the LAN's lease and in which epoch, as `server network show` on `testbed`'s host reads it from the store. */
  async lease(testbed: string): Promise<{ owner: string; epoch: number } | null> {
    const r = await this.cli(['server', 'network', 'show', this.network, '--json', '--state-dir', this.serverState(testbed)], this.opsHost(testbed).ns);
    return r.code === 0 ? ((JSON.parse(r.stdout) as { lease: { owner: string; epoch: number } | null }).lease ?? null) : null;
  }

  /** `server run` on one testbed's server (default: the hub), until its part is up. */
  async startServer(testbed: string = this.hub, timeoutMs = 60_000): Promise<void> {
    this.launchServer(testbed);
    await this.awaitServer(testbed, timeoutMs);
  }

  private launchServer(testbed: string): void {
    if (this.stopping) throw new Error('the demo is stopping');
    this.servers.set(testbed, this.launch(this.opsHost(testbed).ns, [...this.bin, 'server', 'run', '--state-dir', this.serverState(testbed)], this.serverLog(testbed)));
  }

  /** The hub's openvpn server runs; at a peer, its link to the hub is up too. */
  private async awaitServer(testbed: string, timeoutMs: number): Promise<void> {
    const proc = this.servers.get(testbed)!;
    const isHub = this.plan.lans.some((l) => l.hub === testbed);
    const up = await waitFor(async () => {
      if (proc.child.exitCode !== null) return true;
      const r = await this.cli(['server', isHub ? 'network' : 'link', 'show', this.network, '--json', '--state-dir', this.serverState(testbed)], this.opsHost(testbed).ns);
      if (r.code !== 0) return false;
      if (isHub) return (JSON.parse(r.stdout) as { runtime?: { state?: string } | null }).runtime?.state === 'connected';
      return (JSON.parse(r.stdout) as { peer: { runtime?: { state?: string } | null }[] }).peer[0]?.runtime?.state === 'connected';
    }, timeoutMs, 250);
    if (proc.child.exitCode !== null) throw new Error(`server run on ${testbed} exited (${proc.child.exitCode}): ${await tail(proc.log)}`);
    if (!up) throw new Error(`the server on ${testbed} did not come up within ${timeoutMs / 1000} s: ${await tail(proc.log)}`);
  }

  async stopServer(testbed: string = this.hub): Promise<void> {
    const s = this.servers.get(testbed);
    this.servers.delete(testbed);
    if (s) await stopProcess(s, this.dir);
  }

  /** The agent, or for an agentless node the stock `openvpn --config` of its profile (log in the same place). */
  startAgent(id: string): RunningProcess {
    if (this.stopping) throw new Error('the demo is stopping');
    const n = this.node(id);
    const log = join(this.nodeDir(id), 'agent.log');
    const p = this.isAgentless(id)
      ? this.launch(n.ns, ['openvpn', '--config', this.profilePath(id), ...(this.opts.agentlessArgs ?? [])], log)
      : this.launch(n.ns, [...this.bin, 'run', '--config', this.configPath(id)], log);
    this.agents.set(id, p);
    return p;
  }

  async stopAgent(id: string): Promise<number | null> {
    const p = this.agents.get(id);
    this.agents.delete(id);
    return p ? stopProcess(p, this.dir) : null;
  }

  /** The agent's status object, or undefined while its daemon does not answer. */
  async status(id: string): Promise<AgentStatus | undefined> {
    const r = await this.cli(['status', '--json', '--runtime-dir', this.runtimeDir(id)], this.node(id).ns, 30_000);
    if (r.code !== 0 && r.code !== 1) return undefined;
    try {
      return JSON.parse(r.stdout) as AgentStatus;
    } catch {
      return undefined;
    }
  }

  /** `mvpn-client status` as a person would run it on the node (table, exit code). */
  statusTable(id: string): Promise<ShResult> {
    return this.cli(['status', '--runtime-dir', this.runtimeDir(id)], this.node(id).ns, 30_000);
  }

  /** Enrolled = the identity certificate is in the node's state directory (an agentless node has its profile instead). */
  async enrolled(id: string): Promise<boolean> {
    if (this.isAgentless(id)) return true;
    return stat(join(this.stateDir(id), 'identity', 'identity.crt')).then(
      () => true,
      () => false,
    );
  }

  async connected(id: string): Promise<boolean> {
    if (this.isAgentless(id)) return (await this.vpnAddress(id)) !== undefined;
    const s = await this.status(id);
    return s !== undefined && s.networks.length > 0 && s.networks.every((n) => n.state === 'connected' && n.tunnel_address !== null);
  }

  /** Wait until `cond` holds for every node in `ids`; resolves to those for which it never did. */
  async waitAll(ids: readonly string[], cond: (id: string) => Promise<boolean>, timeoutMs: number): Promise<string[]> {
    const pending = new Set(ids);
    await waitFor(async () => {
      if (this.stopping) return true;
      for (const id of [...pending]) if (await cond(id)) pending.delete(id);
      return pending.size === 0;
    }, timeoutMs, 500);
    return [...pending];
  }

  /** The node's VPN address (without prefix length) from its status, or the server's allocation. */
  async vpnAddress(id: string): Promise<string | undefined> {
    if (this.isAgentless(id)) {
      // the address the server pushed onto the stock openvpn's tap
      const r = await this.node(id).ns.exec('ip', ['-j', '-4', 'addr', 'show', 'dev', AGENTLESS_DEV], { allowFail: true });
      if (r.code !== 0) return undefined;
      const info = JSON.parse(r.stdout || '[]') as { addr_info?: { local?: string }[] }[];
      return info[0]?.addr_info?.[0]?.local;
    }
    const s = await this.status(id);
    return s?.networks.find((n) => n.id === this.network)?.tunnel_address?.split('/')[0] ?? undefined;
  }

  /** Every node's VPN address (without length), asked in parallel; nodes without one are left out. */
  async vpnAddresses(ids: readonly string[]): Promise<Map<string, string>> {
    const found = await mapLimit(ids, 6, async (id) => [id, await this.vpnAddress(id)] as const);
    return new Map(found.filter((e): e is readonly [string, string] => e[1] !== undefined));
  }

  /** One ping per ordered pair, `parallel` at a time. */
  async pingMatrix(ids: readonly string[], addr: ReadonlyMap<string, string>, parallel = 6, timeoutS = 3): Promise<PairResult[]> {
    const pairs = ids.flatMap((from) => ids.filter((to) => to !== from).map((to) => ({ from, to })));
    return mapLimit(pairs, parallel, async ({ from, to }) => {
      const target = addr.get(to);
      const ok = target !== undefined && addr.has(from) && (await this.node(from).ns.ping(target, { count: 1, timeoutS }));
      return { from, to, ok };
    });
  }

  /** Each node's MAC on the tap and which of the others sit in its neighbour table with their own MAC. */
  async neighbourProof(ids: readonly string[], addrs: ReadonlyMap<string, string>): Promise<NeighbourProof[]> {
    const info = new Map<string, { addr: string; mac: string }>();
    for (const id of ids) {
      const addr = addrs.get(id);
      const link = await this.node(id).ns.exec('ip', ['-j', 'link', 'show', this.devOf(id)], { allowFail: true });
      const mac = link.code === 0 ? ((JSON.parse(link.stdout) as { address?: string }[])[0]?.address ?? '') : '';
      if (addr) info.set(id, { addr, mac });
    }
    const out: NeighbourProof[] = [];
    for (const id of ids) {
      const r = await this.node(id).ns.exec('ip', ['-j', 'neigh', 'show', 'dev', this.devOf(id)], { allowFail: true });
      const neigh = r.code === 0 ? (JSON.parse(r.stdout || '[]') as { dst: string; lladdr?: string }[]) : [];
      const seen: string[] = [];
      const missing: string[] = [];
      for (const other of ids) {
        if (other === id) continue;
        const o = info.get(other);
        const entry = o && neigh.find((e) => e.dst === o.addr);
        if (o && entry?.lladdr && entry.lladdr.toLowerCase() === o.mac.toLowerCase()) seen.push(other);
        else missing.push(other);
      }
      out.push({ node: id, mac: info.get(id)?.mac ?? '?', seen, missing });
    }
    return out;
  }

  /** A broadcast ping on the VPN from `from`: which of the others answered (retried a few times for ARP and late joiners). */
  async broadcastProof(from: string, ids: readonly string[], addrs: ReadonlyMap<string, string>, timeoutMs = 20_000): Promise<{ answered: string[]; missing: string[] }> {
    const others = ids.filter((id) => id !== from);
    const heard = new Set<string>();
    await waitFor(async () => {
      const r = await this.node(from).ns.exec('ping', ['-n', '-b', '-c', '3', '-i', '0.3', '-W', '2', this.broadcast], { allowFail: true });
      for (const id of others) if (r.stdout.includes(`from ${addrs.get(id)}:`)) heard.add(id);
      return heard.size === others.length;
    }, timeoutMs, 500);
    return { answered: others.filter((id) => heard.has(id)), missing: others.filter((id) => !heard.has(id)) };
  }

  /** Stop agents and servers by pid, remove the namespaces (and whatever runs in them). The directory stays. */
  async stopAll(): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.agents.keys()].map((id) => this.stopAgent(id)));
    await Promise.all([...this.servers.keys()].map((tb) => this.stopServer(tb)));
    await this.store?.down();
    await this.lab.destroy();
  }

  /** Pids of the world's long-running processes (for the demo's state file). */
  pids(): number[] {
    const store = this.store?.pid() ?? 0;
    return [...[...this.servers.values()].map((p) => p.pid), ...[...this.agents.values()].map((p) => p.pid), ...(store > 0 ? [store] : [])];
  }
}

/**
 * SIGTERM, then SIGKILL after `graceMs`; only if /proc/<pid>/cmdline still
 * names `marker` (the pid was not reused by something else).
 */
export async function stopPid(pid: number, marker: string, graceMs = 15_000): Promise<void> {
  if (!(await pidRuns(pid, marker))) return;
  signal(pid, 'SIGTERM');
  if (await waitFor(async () => !(await pidRuns(pid, marker)), graceMs, 100)) return;
  if (await pidRuns(pid, marker)) signal(pid, 'SIGKILL');
  await waitFor(async () => !(await pidRuns(pid, marker)), 5_000, 100);
}

async function stopProcess(p: RunningProcess, marker: string): Promise<number | null> {
  if (p.child.exitCode === null && p.child.signalCode === null) await stopPid(p.pid, marker);
  // The child is unref'd (a kept demo outlives its `demo` process), so waiting for its exit event alone
  // does not keep the event loop alive: the demo could end in the middle of its teardown, leaving its
  // namespaces and directory. A timer holds the loop until the exit is seen (bounded: the pid is gone).
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p.exited, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), 10_000)))]);
  } finally {
    clearTimeout(timer);
  }
}

export async function pidRuns(pid: number, marker: string): Promise<boolean> {
  try {
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // a zombie still has a cmdline of nothing; state Z means it is gone
    if (/^\d+ \(.*\) Z/.test(stat)) return false;
    return cmd.split('\0').join(' ').includes(marker);
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone
  }
}

/** The last lines of a log file, for error messages. */
export async function tail(path: string, lines = 15): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
