/**
 * `mvpn-client demo [--federated]`: the whole system on one machine
 * (topology.ts, world.ts): the planner's plan for the testbeds, applied on
 * every server it names, then proof that it works: every node's `status`,
 * that each node joins through the server and address the plan gave it, an
 * all-pairs ping matrix over the VPN, the neighbour tables of one L2
 * segment, timings. Topology 1 (default): public testbed a, private b with
 * a server on its ops host. `--federated` (topology 2): private testbeds b
 * and c, a server on each ops host, joined by a link. `--rspec REQUEST.xml
 * --testbeds FILE`: the testbeds and the one VPN LAN a GENI request gives
 * (request.ts), nodes named by their client_ids. `--l3`: public a and
 * private b and c, a server on each ops host, one routed (L3) LAN across
 * them; then a public node's first server is cut off and it moves to
 * another (its second remote), and the matrix runs until every pair answers.
 * Progress goes to stderr, results to stdout. Exit 0 only when all pairs
 * ping, every node is connected, and each through its planned server.
 *
 * Teardown (always, unless --keep; also on SIGINT/SIGTERM): agents and the
 * server by pid, the namespaces, the demo directory, the state file.
 */
import { randomBytes } from 'node:crypto';
import { access, mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { assertLabAddress, Lab, waitFor } from '../netns/lab.ts';
import { MvpnError, UsageError } from '../errors.ts';
import { formatPlan } from '../server/federation/plan.ts';
import type { ServerStep } from '../server/federation/apply-servers.ts';
import type { DemoRequest } from './request.ts';
import { pgBinDir } from './postgres.ts';
import { federated, highAvailability, INTERNET_SUBNET, publicPrivate, standbyOf, threeServers, type TestbedSpec } from './topology.ts';
import { mapLimit } from '../util/concurrency.ts';
import { DEFAULT_BASE_DIR, NS_PREFIX, stateFile, writeState, type DemoState } from './state.ts';
import { tail, World, type NeighbourProof, type PairResult } from './world.ts';

export interface DemoOptions {
  readonly bin: readonly string[];
  readonly baseDir: string;
  readonly keep: boolean;
  /** Topology 2: two private testbeds joined by a server-to-server link. */
  readonly federated?: boolean;
  /** `demo --ha`: four public nodes, the LAN's server on two hosts sharing a PostgreSQL store; the owner is killed. */
  readonly ha?: boolean;
  /** `demo --l3`: three servers (public a, private b and c), one L3 LAN; a node moved from its server to another. */
  readonly l3?: boolean;
  /** `demo --rspec`: the testbeds and the description a request gives (request.ts), instead of topology 1 or 2. */
  readonly request?: DemoRequest;
  /** Nodes per testbed (default 3). */
  readonly perTestbed?: number;
  readonly out: (s: string) => void;
  readonly err: (s: string) => void;
  /** How long to wait for enrollment and for every node to connect. */
  readonly timeoutS?: number;
  /** How many nodes run a stock openvpn from an exported profile instead of the agent (default 0). */
  readonly agentless?: number;
}

/** `count` node ids, from the end of each testbed in turn (a public and a private one first when there are both). */
export function pickAgentless(testbeds: readonly TestbedSpec[], count: number): Set<string> {
  const total = testbeds.reduce((n, tb) => n + tb.count, 0);
  if (!Number.isInteger(count) || count < 0 || count > total) {
    throw new UsageError(`--agentless takes a number of nodes from 0 to ${total}, not ${count}`);
  }
  const picked = new Set<string>();
  for (let round = 0; picked.size < count; round++) {
    for (const tb of testbeds) if (picked.size < count && round < tb.count) picked.add(`${tb.name}${tb.count - round}`);
  }
  return picked;
}

/** Refuse clearly when the demo cannot run here. */
export function checkRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new MvpnError('MVPN_NOT_ROOT', 'permission denied: the demo builds network namespaces and needs root (try sudo)');
  }
}

export async function checkDemoHost(openvpnCandidates: readonly string[] = ['/usr/sbin/openvpn', '/usr/bin/openvpn']): Promise<void> {
  checkRoot();
  for (const p of openvpnCandidates) {
    try {
      await access(p);
      return;
    } catch {
      // next
    }
  }
  throw new MvpnError('MVPN_DEPENDENCY_MISSING', `openvpn is not installed (looked at ${openvpnCandidates.join(', ')})`, {
    hint: 'install it: apt-get install openvpn (./build.sh does it too)',
  });
}

export async function runDemo(o: DemoOptions): Promise<number> {
  await checkDemoHost();
  if (o.ha) pgBinDir();
  const id = randomBytes(3).toString('hex');
  const prefix = `${NS_PREFIX}${id}-`;
  const dir = join(o.baseDir, id);
  await mkdir(o.baseDir, { recursive: true, mode: 0o755 });
  const lab = new Lab({ prefix, checkAddress: assertLabAddress });
  // --l3: two nodes per testbed, so six nodes behind three servers
  const count = o.perTestbed ?? (o.l3 ? 2 : 3);
  const testbeds = o.request ? o.request.testbeds : o.ha ? highAvailability(4) : o.l3 ? threeServers(count) : o.federated ? federated(count, count) : publicPrivate(count, count);
  const agentless = pickAgentless(testbeds, o.agentless ?? 0);
  const world = new World({ lab, bin: o.bin, dir, testbeds, ...(o.request ? { experiment: o.request.experiment } : {}), progress: o.err, reconcileIntervalS: 30, agentless, ...(o.ha ? { ha: true } : {}), ...(o.l3 ? { l3: true } : {}) });
  const t0 = performance.now();
  const timings: [string, number][] = [];
  const mark = (what: string): void => {
    timings.push([what, (performance.now() - t0) / 1000]);
    o.err(`demo: ${what} (${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
  };
  const state = (kept: boolean): DemoState => ({ schema: 1, id, prefix, dir, owner: process.pid, kept, pids: world.pids(), started_at: new Date().toISOString() });

  let tornDown: Promise<void> | undefined;
  const teardown = (): Promise<void> =>
    (tornDown ??= (async () => {
      o.err('demo: tearing down\n');
      try {
        await world.stopAll();
      } finally {
        await rm(dir, { recursive: true, force: true });
        await rm(stateFile(o.baseDir, id), { force: true });
      }
    })());
  let signalled = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    signalled = true;
    o.err(`demo: ${sig}, stopping\n`);
    void teardown().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let ok: boolean;
  try {
    o.err(`demo ${id}: namespaces ${prefix}*, files in ${dir}\n`);
    await writeState(o.baseDir, state(false));
    await world.buildTopology();
    mark('topology built');
    if (o.request) o.out(`== request\n${o.request.notes}\n`);
    o.out(`== plan (mvpn-client server plan ${join(dir, 'experiment.json')})\n${formatPlan(world.plan)}`);
    await world.setUpServers();
    printApplied(world.applied, o.out);
    mark('plan applied');
    await world.startServers();
    await writeState(o.baseDir, state(false));
    mark('servers up');
    for (const n of world.nodes) world.startAgent(n.id);
    await writeState(o.baseDir, state(false));
    const ids = world.nodes.map((n) => n.id);
    const timeoutMs = (o.timeoutS ?? 240) * 1000;
    const notEnrolled = await world.waitAll(ids, (n) => world.enrolled(n), timeoutMs);
    if (notEnrolled.length === 0) mark('all enrolled');
    const notConnected = notEnrolled.length > 0 ? ids : await world.waitAll(ids, (n) => world.connected(n), timeoutMs);
    if (notConnected.length === 0) mark('all connected');

    const statuses = await printStatuses(world, ids, o.out);
    const offPlan = await printPlanUse(world, ids, o.out);
    const addrs = await world.vpnAddresses(ids);
    // L3: a server announces a new client within a second or two and BGP carries it to the others; the matrix waits (bounded) for that
    const matrix = o.l3 ? (await matrixUntilAll(world, ids, addrs, 60_000)).last : await world.pingMatrix(ids, addrs);
    mark('ping matrix');
    // a second ping for pairs that lost their first one to ARP resolution
    const retried = await retryFailed(world, matrix, addrs);
    printMatrix(ids, retried, o.out);
    // neighbour tables, broadcast and Ethernet frames are proofs of one L2 segment; an L3 LAN is routed
    let bcast: { answered: string[]; missing: string[] } = { answered: [], missing: [] };
    if (!o.l3) {
      printProof(await world.neighbourProof(ids, addrs), world.dev, o.out);
      bcast = await world.broadcastProof(ids[0]!, ids, addrs);
      o.out(`\n== broadcast: ${ids[0]} pings ${world.broadcast} on the VPN; answered by ${bcast.answered.length}/${ids.length - 1}: ${bcast.answered.join(' ')}${bcast.missing.length ? `  MISSING: ${bcast.missing.join(' ')}` : ''}\n`);
    }
    const frames = o.l3 ? undefined : await fullFrameProof(world, ids, addrs);
    const failover = o.ha ? await killOwner(world, ids, addrs, mark, o.out) : o.l3 ? await moveNode(world, ids, addrs, mark, o.out) : undefined;
    if (frames) o.out(`\n== full-size frames: ${frames.from} (testbed ${world.node(frames.from).testbed}) -> ${frames.to} (testbed ${world.node(frames.to).testbed}): 1472-byte DF ping (a 1500-byte frame) ${frames.ok ? 'answered' : 'LOST'}\n`);
    printTimings(timings, o.out);

    const pairsOk = retried.filter((p) => p.ok).length;
    const problems: string[] = [];
    if (notEnrolled.length > 0) problems.push(`not enrolled: ${notEnrolled.join(', ')}`);
    const down = ids.filter((n) => statuses.get(n) !== true);
    if (down.length > 0) problems.push(`not connected: ${down.join(', ')}`);
    if (offPlan.length > 0) problems.push(`not joined as planned: ${offPlan.join(', ')}`);
    if (frames && !frames.ok) problems.push(`a 1500-byte frame from ${frames.from} to ${frames.to} was lost`);
    if (bcast.missing.length > 0) problems.push(`broadcast from ${ids[0]} not answered by ${bcast.missing.join(', ')}`);
    if (failover !== undefined && !failover.ok) problems.push(failover.problem);
    if (pairsOk !== retried.length) problems.push(`${retried.length - pairsOk} of ${retried.length} pairs do not ping: ${retried.filter((p) => !p.ok).map((p) => `${p.from}->${p.to}`).join(' ')}`);
    ok = problems.length === 0;
    if (ok) {
      const again = failover?.ok ? `, and again ${failover.seconds.toFixed(1)} s after ${o.l3 ? `${world.roamer!.node}'s first server was cut off` : 'the owning host was killed'}` : '';
      const net = o.l3 ? `one L3 network routed across ${world.plan.servers.length} servers` : 'one L2 network';
      o.out(`\nRESULT: OK: ${ids.length}/${ids.length} nodes connected as planned, ${pairsOk}/${retried.length} ordered pairs ping over ${net}${again}${o.l3 ? '' : ', a broadcast reaches all'}\n`);
    } else {
      o.out(`\nRESULT: FAILED: ${problems.join('; ')}\n`);
      for (const n of down.length > 0 ? down : notEnrolled) o.err(`--- ${n} agent log (last lines)\n${await tail(join(world.nodeDir(n), 'agent.log'))}\n`);
      for (const s of world.plan.servers) o.err(`--- server ${s.testbed} log (last lines)\n${await tail(world.serverLog(s.testbed))}\n`);
    }
    if (o.keep) {
      await writeState(o.baseDir, state(true));
      printKeep(world, o.bin, o.out, o.baseDir === DEFAULT_BASE_DIR ? '' : ` --dir ${o.baseDir}`);
    }
  } catch (err) {
    // after a signal the steps fail because teardown took the world away; nothing to report
    if (signalled) return new Promise<number>(() => undefined);
    o.err(`demo: failed: ${err instanceof Error ? err.message : String(err)}\n`);
    for (const tb of world.servers.keys()) o.err(`--- server ${tb} log (last lines)\n${await tail(world.serverLog(tb))}\n`);
    if (o.keep) o.err('demo: not keeping a demo that failed to start\n');
    await teardown();
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (!o.keep) await teardown();
  return ok ? 0 : 1;
}

/**
 * `demo --ha`: the owner of the LAN (lease holder) before, the kill (its
 * daemon and openvpns SIGKILLed, its links cut), the matrix until every
 * pair answers again (or `timeoutMs`), the owner after.
 */
async function killOwner(
  world: World,
  ids: readonly string[],
  addrs: ReadonlyMap<string, string>,
  mark: (what: string) => void,
  out: (s: string) => void,
  timeoutMs = 120_000,
): Promise<{ ok: true; seconds: number } | { ok: false; problem: string }> {
  const hosts = [world.hub, world.standby];
  const owner = async (): Promise<{ owner: string; epoch: number } | null> => {
    for (const h of hosts) {
      const l = await world.lease(h).catch(() => null);
      if (l) return l;
    }
    return null;
  };
  const before = await owner();
  // the hub's host was set up first: its host id is the default "primary"
  const hostOf = (l: { owner: string } | null): string | undefined => (l === null ? undefined : l.owner === 'primary' ? world.hub : l.owner);
  const name = (l: { owner: string; epoch: number } | null): string => {
    const h = hostOf(l);
    return h === undefined || l === null ? 'none' : `host ${h} (${world.opsHost(h).public}), epoch ${l.epoch}`;
  };
  out(`\n== high availability: the LAN's server on ${hosts.map((h) => `${h} (${world.opsHost(h).public})`).join(' and ')}, one PostgreSQL store\n`);
  out(`owner before: ${name(before)}\n`);
  const killed = hostOf(before) ?? world.hub;
  out(`killing ${killed}: SIGKILL to its server run and its openvpns, its links cut\n`);
  const t0 = performance.now();
  await world.killHost(killed);
  mark(`${killed} killed`);
  const { back, last } = await matrixUntilAll(world, ids, addrs, timeoutMs);
  const seconds = (performance.now() - t0) / 1000;
  if (back) mark('all pairs again');
  printMatrix(ids, last, out);
  const survivor = killed === world.hub ? world.standby : world.hub;
  const after = await world.lease(survivor);
  out(`owner after: ${name(after)}\n`);
  if (!back) return { ok: false, problem: `not every pair answered within ${timeoutMs / 1000} s after ${killed} was killed` };
  out(`every pair answered again ${seconds.toFixed(1)} s after the kill\n`);
  return { ok: true, seconds };
}

/**
 * `demo --l3`: the roaming node cut off from its first server; openvpn's own
 * failover takes it to its second remote (ping-restart, then one
 * server-poll-timeout on the dead remote), that server announces its /32 by BGP,
 * and the matrix runs until every pair answers (or `timeoutMs`).
 */
async function moveNode(
  world: World,
  ids: readonly string[],
  addrs: ReadonlyMap<string, string>,
  mark: (what: string) => void,
  out: (s: string) => void,
  timeoutMs = 180_000,
): Promise<{ ok: true; seconds: number } | { ok: false; problem: string }> {
  const r = world.roamer!;
  const inUse = async (): Promise<string> => {
    const n = (await world.status(r.node))?.networks.find((x) => x.id === world.network);
    return n?.state === 'connected' ? (n.server ?? '-') : '-';
  };
  out(`\n== a node moves between servers: ${r.node} (address ${addrs.get(r.node)}) on ${r.from}'s server, in use ${await inUse()}; its second remote is ${r.to}'s server\n`);
  out(`cutting ${r.node}'s path to ${r.from}'s server (${world.member(r.node).remote}); openvpn fails over by itself: expect ~13 s (ping-restart after 10 s of silence, then 3 s of server-poll-timeout on the dead remote), then BGP moves the route\n`);
  const t0 = performance.now();
  await world.cutOff(r.node);
  mark(`${r.node} cut off`);
  const second = world.opsHost(r.to).public;
  let connectedS: number | undefined;
  const { back, last } = await matrixUntilAll(world, ids, addrs, timeoutMs, async () => {
    if (connectedS === undefined && (await inUse()).replace(/:\d+$/, '') === second) {
      connectedS = (performance.now() - t0) / 1000;
      mark(`${r.node} at ${r.to}`);
    }
  });
  const seconds = (performance.now() - t0) / 1000;
  if (back) mark('all pairs again');
  printMatrix(ids, last, out);
  if (connectedS !== undefined) out(`${r.node} connected at ${r.to}'s server ${connectedS.toFixed(1)} s after the cut (openvpn's failover)\n`);
  const now = await inUse();
  const moved = now.replace(/:\d+$/, '') === second;
  out(`${r.node} now in use ${now}: ${moved ? `${r.to}'s server, same address ${(await world.vpnAddress(r.node)) ?? '-'}` : 'NOT MOVED'}\n`);
  if (!back) return { ok: false, problem: `not every pair answered within ${timeoutMs / 1000} s after ${r.node} was cut off from ${r.from}` };
  if (!moved) return { ok: false, problem: `${r.node} is not on ${r.to}'s server after the cut (in use: ${now})` };
  out(`every pair answered again ${seconds.toFixed(1)} s after the cut\n`);
  return { ok: true, seconds };
}

/** The matrix (one ping each, 1 s) round after round until every pair answers or `timeoutMs`, `each` before every round; whether it did, and the last round. */
async function matrixUntilAll(
  world: World,
  ids: readonly string[],
  addrs: ReadonlyMap<string, string>,
  timeoutMs: number,
  each?: () => Promise<void>,
): Promise<{ back: boolean; last: PairResult[] }> {
  let last: PairResult[] = [];
  const back = await waitFor(async () => {
    await each?.();
    last = await world.pingMatrix(ids, addrs, 6, 1);
    return last.every((p) => p.ok);
  }, timeoutMs, 250);
  return { back, last };
}

async function printStatuses(world: World, ids: readonly string[], out: (s: string) => void): Promise<Map<string, boolean>> {
  const connected = new Map<string, boolean>();
  out(`\n== status of every node (mvpn-client status, run inside each node's namespace)\n`);
  const tables = await mapLimit(ids, 6, async (id) => ({ r: await world.statusTable(id), ok: await world.connected(id) }));
  for (const [i, id] of ids.entries()) {
    const n = world.node(id);
    const { r, ok } = tables[i]!;
    const m = world.member(id);
    if (world.isAgentless(id)) {
      // no agent, so no status: what the stock openvpn made of the profile
      connected.set(id, ok);
      const dev = await n.ns.exec('ip', ['-br', '-4', 'addr', 'show', 'dev', world.devOf(id)], { allowFail: true });
      out(`\n-- ${id}: testbed ${n.testbed}, ${n.public ? 'public' : 'private'} ${n.underlay}, AGENTLESS: stock openvpn --config ${world.profilePath(id)}, joins through ${m.server}'s server at ${m.remote}\n`);
      out(`${(dev.stdout.trim() || `no ${world.devOf(id)} yet`)}\n`);
      continue;
    }
    connected.set(id, r.code === 0 && ok);
    out(`\n-- ${id}: testbed ${n.testbed}, ${n.public ? 'public' : 'private'} ${n.underlay}, joins through ${m.server}'s server at ${m.remote}\n`);
    out((r.stdout.trim() || r.stderr.trim()) + '\n');
  }
  return connected;
}

/** A 1472-byte DF ping (a full 1500-byte frame) from the first node to the first node of another testbed; undefined with one testbed. */
async function fullFrameProof(world: World, ids: readonly string[], addrs: ReadonlyMap<string, string>): Promise<{ from: string; to: string; ok: boolean } | undefined> {
  const from = ids[0];
  const to = ids.find((id) => from !== undefined && world.node(id).testbed !== world.node(from).testbed);
  const addr = to === undefined ? undefined : addrs.get(to);
  if (from === undefined || to === undefined || addr === undefined) return undefined;
  const r = await world.node(from).ns.exec('ping', ['-n', '-q', '-M', 'do', '-s', '1472', '-c', '3', '-i', '0.3', '-W', '2', addr], { allowFail: true });
  return { from, to, ok: /\b[1-9]\d* received/.test(r.stdout) };
}

async function retryFailed(world: World, matrix: readonly PairResult[], addrs: ReadonlyMap<string, string>): Promise<PairResult[]> {
  const out: PairResult[] = [];
  for (const p of matrix) {
    if (p.ok) out.push(p);
    else {
      const to = addrs.get(p.to);
      out.push({ ...p, ok: to !== undefined && (await world.node(p.from).ns.ping(to, { count: 1, timeoutS: 3 })) });
    }
  }
  return out;
}

function printMatrix(ids: readonly string[], m: readonly PairResult[], out: (s: string) => void): void {
  out(`\n== ping matrix over the VPN (row pings column, one ping each)\n`);
  // columns as wide as the longest id (a request's client_ids), at least the 4 of "FAIL"
  const w = Math.max(4, ...ids.map((i) => i.length + 1));
  const label = Math.max(6, ...ids.map((i) => i.length + 2));
  out(' '.repeat(label) + ids.map((i) => i.padStart(w)).join('') + '\n');
  for (const from of ids) {
    const cells = ids.map((to) => (to === from ? '-' : m.find((p) => p.from === from && p.to === to)?.ok ? 'ok' : 'FAIL').padStart(w));
    out(from.padEnd(label) + cells.join('') + '\n');
  }
  out(`${m.filter((p) => p.ok).length}/${m.length} ordered pairs answered\n`);
}

function printProof(proof: readonly NeighbourProof[], dev: string, out: (s: string) => void): void {
  out(`\n== one L2 segment: each node's neighbour table on ${dev} holds the others' VPN addresses with their own MACs\n`);
  for (const p of proof) {
    out(`${p.node.padEnd(4)} ${p.mac}  sees ${p.seen.length}/${p.seen.length + p.missing.length}: ${p.seen.join(' ')}${p.missing.length ? `  MISSING: ${p.missing.join(' ')}` : ''}\n`);
  }
}

function printTimings(t: readonly [string, number][], out: (s: string) => void): void {
  out(`\n== timings (seconds since start)\n`);
  for (const [what, s] of t) out(`${what.padEnd(16)} ${s.toFixed(1).padStart(6)}\n`);
}

function printKeep(world: World, bin: readonly string[], out: (s: string) => void, dirArg: string): void {
  const exe = bin.join(' ');
  const a = world.nodes[0]!;
  const b = world.nodes[world.nodes.length - 1]!;
  out(`\n== the demo keeps running (--keep). Look around:\n`);
  for (const n of world.nodes) {
    out(
      world.isAgentless(n.id)
        ? `  ip netns exec ${n.ns.name} ip -br addr show dev ${world.devOf(n.id)}    (agentless: stock openvpn, log ${join(world.nodeDir(n.id), 'agent.log')})\n`
        : `  ip netns exec ${n.ns.name} ${exe} status --runtime-dir ${world.runtimeDir(n.id)}\n`,
    );
  }
  out(`  ip netns exec ${a.ns.name} ping -c 3 <VPN address of ${b.id}, see its status>\n`);
  out(`  ip netns exec ${a.ns.name} ip -br addr\n`);
  out(`  ip netns exec ${a.ns.name} ip neigh show dev ${world.dev}\n`);
  if (world.store) out(`  ip netns exec ${world.opsHost(world.standby).ns.name} ${exe} server network show ${world.network} --state-dir ${world.serverState(world.standby)}    (the other host: lease owner and epoch)\n`);
  for (const s of world.plan.servers) {
    const what = s.hosts.length > 0 ? `network show ${world.network}` : `link show ${world.network}`;
    out(`  ip netns exec ${world.opsHost(s.testbed).ns.name} ${exe} server ${what} --state-dir ${world.serverState(s.testbed)}\n`);
  }
  out(`  logs: ${world.dir}/server-<testbed>.log, ${world.dir}/nodes/<node>/agent.log; plan input: ${world.dir}/experiment.json\n`);
  const lans = [...world.topology.lans.keys()].map((tb) => `${tb} LAN (${[...world.topology.ops.values()].filter((o) => o.testbed === tb || o.testbed === standbyOf(tb)).map((o) => `${o.testbed}-ops ${o.internal}`).join(', ')})`).join(', ');
  out(`  segments: internet ${INTERNET_SUBNET} (ops hosts ${[...world.topology.ops.values()].map((o) => o.public).join(', ')}), ${lans}, VPN ${world.subnet}\n`);
  out(`Remove it with: ${exe} demo down${dirArg}\n`);
}

function printApplied(steps: readonly ServerStep[], out: (s: string) => void): void {
  out(`\n== applied on the servers (mvpn-client server plan --apply --servers)\n`);
  for (const s of steps) out(`${s.server.padEnd(4)} ${s.action.padEnd(17)} ${(s.node ?? s.peer ?? '-').padEnd(5)} ${s.detail}\n`);
}

/** Each node's server in use (from its status) against the plan's remote; returns the nodes that differ. */
async function printPlanUse(world: World, ids: readonly string[], out: (s: string) => void): Promise<string[]> {
  out(`\n== the plan as the nodes use it (planned remote vs the server in their status)\n`);
  const off: string[] = [];
  for (const id of ids) {
    const m = world.member(id);
    // an agentless node has no status: the first remote of its profile is where it dials
    const inUse = world.isAgentless(id)
      ? (/^remote (\S+ \d+)$/m.exec(await readFile(world.profilePath(id), 'utf8'))?.[1]?.replace(' ', ':') ?? null)
      : ((await world.status(id))?.networks.find((n) => n.id === world.network)?.server ?? null);
    const ok = inUse !== null && inUse.replace(/:\d+$/, '') === m.remote;
    if (!ok) off.push(id);
    out(`${id.padEnd(4)} planned ${m.server} at ${m.remote.padEnd(12)} in use ${(inUse ?? '-').padEnd(18)} ${ok ? 'as planned' : 'NOT AS PLANNED'}\n`);
  }
  return off;
}
