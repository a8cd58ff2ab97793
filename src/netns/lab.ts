/**
 * Network labs from real Linux parts: namespaces, veth pairs and bridges.
 * Used by `mvpn-client demo` to build testbed topologies on one machine, and
 * by the test suite (test/helpers/netns.ts) with a per-run name prefix.
 *
 * Every namespace a lab makes carries the lab's prefix, so whatever a lab
 * left (a crash, `demo --keep`) can be found and removed by prefix alone.
 * Processes are stopped by the pid we started; anything still running inside
 * one of *our* namespaces is stopped by pid before the namespace goes.
 * Interfaces are created directly inside their namespaces, never in the host.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export interface ShResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface ShOptions {
  allowFail?: boolean;
  timeoutMs?: number;
  /** Written to the command's stdin (closed after). */
  input?: string;
}

export async function sh(cmd: string, args: readonly string[], opts: ShOptions = {}): Promise<ShResult> {
  try {
    const running = execFileP(cmd, [...args], { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20 });
    if (opts.input !== undefined) running.child.stdin?.end(opts.input);
    const { stdout, stderr } = await running;
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: number | string };
    const res = { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : 1 };
    if (opts.allowFail) return res;
    throw new Error(`${cmd} ${args.join(' ')} failed (${String(e.code)}): ${res.stderr.trim() || res.stdout.trim()}`, { cause: err });
  }
}

export interface LabOptions {
  /** Prefix of every namespace name; unique per run or per demo. */
  readonly prefix: string;
  /** Called with every address before it is configured; throws to refuse it. */
  readonly checkAddress?: (cidrOrIp: string) => void;
}

export class Netns {
  readonly name: string;
  readonly lab: Lab;
  constructor(lab: Lab, name: string) {
    this.lab = lab;
    this.name = name;
  }

  /** Run a command inside the namespace and wait for it. */
  exec(cmd: string, args: readonly string[] = [], opts: ShOptions = {}): Promise<ShResult> {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args], opts);
  }

  /** Start a long-running process inside the namespace; the lab stops it by pid on destroy. */
  spawn(cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    this.lab.track(child);
    return child;
  }

  async addr(ifname: string, cidr: string): Promise<void> {
    this.lab.checkAddress(cidr);
    await this.exec('ip', ['addr', 'add', cidr, 'dev', ifname]);
  }

  async up(ifname: string): Promise<void> {
    await this.exec('ip', ['link', 'set', ifname, 'up']);
  }

  async route(dest: string, via: string): Promise<void> {
    if (dest !== 'default') this.lab.checkAddress(dest);
    this.lab.checkAddress(via);
    await this.exec('ip', ['route', 'add', dest, 'via', via]);
  }

  /** Set an interface's MTU (both ends of a link should agree, as on a real segment). */
  async mtu(ifname: string, mtu: number): Promise<void> {
    await this.exec('ip', ['link', 'set', ifname, 'mtu', String(mtu)]);
  }

  /**
   * Make this namespace (a router) a PMTU black hole: the ICMP it would send
   * itself, "fragmentation needed" included, is routed into a blackhole
   * (a policy rule for locally sent ICMP, `iif lo`), as behind a firewall
   * that filters ICMP. A sender whose DF packets are too big for the next hop
   * never learns why they vanish. Forwarded ICMP still passes.
   */
  async sendNoIcmp(): Promise<void> {
    await this.exec('ip', ['route', 'add', 'blackhole', 'default', 'table', '100']);
    await this.exec('ip', ['rule', 'add', 'iif', 'lo', 'ipproto', 'icmp', 'lookup', '100']);
  }

  /**
   * Cut this namespace off from `ip` in both directions, as when that host
   * dies or loses its link: a blackhole route for what goes to it and a
   * blackhole rule for what comes from it. A route alone is a one-way cut:
   * the far end (an openvpn server) keeps sending its keepalive pings for
   * its own session timeout, and every one it delivers resets this side's
   * ping-restart (BENCHMARKS.md, "Node failover when its server dies").
   * The rule must come before the `local` table's (priority 0), which would
   * otherwise deliver the packet first: that lookup moves to priority 2.
   */
  async cutOff(ip: string): Promise<void> {
    this.lab.checkAddress(ip);
    await this.exec('ip', ['route', 'add', 'blackhole', `${ip}/32`]);
    await this.exec('ip', ['rule', 'add', 'pref', '1', 'from', `${ip}/32`, 'blackhole']);
    if ((await this.exec('ip', ['rule', 'show', 'pref', '0'])).stdout.includes('lookup local')) {
      await this.exec('ip', ['rule', 'add', 'pref', '2', 'lookup', 'local']);
      await this.exec('ip', ['rule', 'del', 'pref', '0', 'lookup', 'local']);
    }
  }

  /** Reassemble no IP fragments (no memory for them), as behind the firewalls and NATs that drop fragments. */
  async refuseFragments(): Promise<void> {
    await this.exec('sysctl', ['-qw', 'net.ipv4.ipfrag_low_thresh=0', 'net.ipv4.ipfrag_high_thresh=0']);
  }

  /** `count` pings; true when a reply came back. */
  async ping(ip: string, opts: { count?: number; timeoutS?: number } = {}): Promise<boolean> {
    this.lab.checkAddress(ip);
    const r = await this.exec('ping', ['-n', '-q', '-c', String(opts.count ?? 1), '-W', String(opts.timeoutS ?? 2), ip], { allowFail: true });
    return r.code === 0;
  }

  /** Pids of every process inside this namespace. */
  async pids(): Promise<number[]> {
    return namespacePids(this.name);
  }
}

export async function namespacePids(name: string): Promise<number[]> {
  const r = await sh('ip', ['netns', 'pids', name], { allowFail: true });
  return r.stdout.split(/\s+/).filter(Boolean).map(Number);
}

export class Lab {
  readonly namespaces: Netns[] = [];
  readonly prefix: string;
  private readonly children = new Set<ChildProcess>();
  private readonly addressCheck: (cidrOrIp: string) => void;
  private counter = 0;
  private destroyed = false;

  constructor(options: LabOptions) {
    this.prefix = options.prefix;
    this.addressCheck = options.checkAddress ?? (() => undefined);
  }

  checkAddress(cidrOrIp: string): void {
    this.addressCheck(cidrOrIp);
  }

  /** Create a namespace with loopback up. `label` only makes names readable. */
  async ns(label = 'n'): Promise<Netns> {
    const name = `${this.prefix}${++this.counter}${label.replace(/[^a-z0-9]/gi, '').slice(0, 8)}`;
    await sh('ip', ['netns', 'add', name]);
    const ns = new Netns(this, name);
    this.namespaces.push(ns);
    await ns.exec('ip', ['link', 'set', 'lo', 'up']);
    return ns;
  }

  /** A veth pair between two namespaces, created directly inside them. Returns the interface names. */
  async link(a: Netns, b: Netns, opts: { aName?: string; bName?: string; aAddr?: string; bAddr?: string; mtu?: number } = {}): Promise<[string, string]> {
    const aName = opts.aName ?? `v${++this.counter}`;
    const bName = opts.bName ?? `v${++this.counter}`;
    await sh('ip', ['link', 'add', 'name', aName, 'netns', a.name, 'type', 'veth', 'peer', 'name', bName, 'netns', b.name]);
    if (opts.mtu !== undefined) {
      await a.mtu(aName, opts.mtu);
      await b.mtu(bName, opts.mtu);
    }
    if (opts.aAddr) await a.addr(aName, opts.aAddr);
    if (opts.bAddr) await b.addr(bName, opts.bAddr);
    await a.up(aName);
    await b.up(bName);
    return [aName, bName];
  }

  /** A Linux bridge inside `ns` with the given interfaces enslaved. */
  async bridge(ns: Netns, name: string, members: readonly string[], addr?: string): Promise<void> {
    await ns.exec('ip', ['link', 'add', 'name', name, 'type', 'bridge']);
    for (const m of members) await ns.exec('ip', ['link', 'set', m, 'master', name]);
    if (addr) await ns.addr(name, addr);
    await ns.up(name);
  }

  track(child: ChildProcess): void {
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
  }

  /** Stop what we started (by pid), then remove every namespace. Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const child of this.children) stopPid(child.pid, 'SIGTERM');
    await removeNamespaces(this.namespaces.map((n) => n.name));
  }
}

/**
 * Stop every process inside the named namespaces (SIGTERM, then SIGKILL after
 * a grace period) and delete the namespaces. Only for namespaces we made.
 */
export async function removeNamespaces(names: readonly string[], graceMs = 5_000): Promise<void> {
  for (const n of names) for (const pid of await namespacePids(n)) stopPid(pid, 'SIGTERM');
  await waitFor(async () => {
    for (const n of names) if ((await namespacePids(n)).length > 0) return false;
    return true;
  }, graceMs);
  for (const n of names) for (const pid of await namespacePids(n)) stopPid(pid, 'SIGKILL');
  for (const n of names) await sh('ip', ['netns', 'del', n], { allowFail: true });
}

/** Namespaces whose name starts with `prefix`. */
export async function namespacesWithPrefix(prefix: string): Promise<string[]> {
  const r = await sh('ip', ['netns', 'list'], { allowFail: true });
  return r.stdout
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(prefix));
}

function stopPid(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** Poll `cond` until it holds or `timeoutMs` passes; resolves to whether it held. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

const TEST_RANGES = [
  ['198.18.0.0', 15],
  ['192.0.2.0', 24],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
] as const;

function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`not an IPv4 address: ${ip}`);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}

/**
 * Throws unless `cidrOrIp` lies in the benchmark/documentation ranges
 * (198.18.0.0/15, 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24): the only
 * addresses the demo and the tests may use, so they can never reach a real
 * network by mistake.
 */
export function assertLabAddress(cidrOrIp: string): void {
  const ip = cidrOrIp.split('/')[0]!;
  const n = ipToInt(ip);
  const ok = TEST_RANGES.some(([base, bits]) => (n & (~0 << (32 - bits))) >>> 0 === ipToInt(base));
  if (!ok) throw new Error(`address ${cidrOrIp} is outside the test ranges (198.18.0.0/15, 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24)`);
}
