/**
 * A routed underlay with path-MTU cases and one L2 network on it, run by
 * real openvpn with the configs mvpn renders (renderServerConfig for the
 * server, the standalone client profile for each node: the agent's template
 * without management). Shared by test/integration/lan-mtu.test.ts and
 * bench/dataplane.ts, so the benchmark measures the topology the tests prove.
 *
 *   node i (eth0, MTU nodeMtus[i]) ── r1 ══ middle (MTU middleMtu) ══ r2 ── server (eth0, MTU serverMtu)
 *
 * Underlay 198.18.<i+1>.1/24 per node, the server 198.18.0.1/24, the middle
 * link 198.18.255.0/30; the LAN 198.19.0.0/24 (server .1, node i .10+i).
 * `blackHole`: both routers send no ICMP ("fragmentation needed" included),
 * so a too-big DF packet vanishes at the router without a word, as behind
 * the many firewalls that filter ICMP.
 *
 * Case 4 (a server-to-server link) runs on the federation lab of
 * test/integration/server-federation.test.ts with `blackHoleRouter` between
 * hub and peer and `fullFrameFailures` as the check, both from here.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NetworkSpec } from '../../src/bundle/schema.ts';
import { renderStandaloneConfig } from '../../src/openvpn/client-config.ts';
import { renderCcd, renderServerConfig, type ServerNetwork } from '../../src/openvpn/server-config.ts';
import { LAN_MTU } from '../../src/openvpn/mtu.ts';
import { newDataPlane } from '../../src/server/documents.ts';
import { serverCn } from '../../src/server/pki-service.ts';
import type { Lab } from '../../src/netns/lab.ts';
import { waitFor, type Netns } from './netns.ts';
import { makeTestPki, writeTestPki } from './pki-fixtures.ts';

export interface PathCase {
  readonly name: string;
  /** One node per entry: the MTU of its underlay link. */
  readonly nodeMtus: readonly number[];
  readonly serverMtu: number;
  /** The link between the two routers. */
  readonly middleMtu: number;
  readonly blackHole: boolean;
  /** Members reassemble no IP fragments (Netns.refuseFragments): only datagrams that fit the path arrive. */
  readonly refuseFragments?: boolean;
}

/**
 * The path-MTU cases of issue 13 (1-3). The routers of cases 1 and 2 send no
 * ICMP either: with it, the kernel's own path-MTU discovery repairs those
 * paths for openvpn's DF datagrams, and without it (the common case behind
 * firewalls, and a bridge whose ports disagree on the MTU, as in the demo)
 * they lose every large frame.
 */
export const PATH_CASES: readonly PathCase[] = [
  { name: 'node underlays 1280, 1400 and 1500', nodeMtus: [1280, 1400, 1500], serverMtu: 1500, middleMtu: 1500, blackHole: true },
  { name: 'server underlay 1280, nodes 1500', nodeMtus: [1500, 1500], serverMtu: 1280, middleMtu: 1500, blackHole: true },
  { name: 'a PMTU black hole of 1280 between nodes and server', nodeMtus: [1500, 1400], serverMtu: 1500, middleMtu: 1280, blackHole: true },
];

export const LAN_NETWORK = 'lan';

/**
 * A router that forwards between a near leg to `near` (MTU 1500; `near`'s end
 * is returned, e.g. to enslave it to a switch's bridge) and a far leg to
 * `far` with `farMtu` on both ends, and sends no ICMP ("fragmentation
 * needed" included): a PMTU black hole for whatever crosses it towards
 * `far`. `far` gets `farAddr` on `farName` and its default route through the
 * router; `nearRoutes` are routes the router needs beyond its two subnets.
 */
export async function blackHoleRouter(
  lab: Lab,
  o: {
    readonly name: string;
    readonly near: Netns;
    readonly routerNearAddr: string;
    readonly far: Netns;
    readonly farName: string;
    readonly farAddr: string;
    readonly routerFarAddr: string;
    readonly farMtu: number;
  },
): Promise<{ readonly router: Netns; readonly nearDev: string }> {
  const router = await lab.ns(o.name);
  await router.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  const [, nearDev] = await lab.link(router, o.near, { aAddr: o.routerNearAddr });
  await lab.link(o.far, router, { aName: o.farName, aAddr: o.farAddr, bAddr: o.routerFarAddr, mtu: o.farMtu });
  await o.far.route('default', o.routerFarAddr.replace(/\/\d+$/, ''));
  await router.sendNoIcmp();
  return { router, nearDev };
}
const SERVER_UNDERLAY = '198.18.0.1';
const PORT = 1194;
const CONNECTED = 'Initialization Sequence Completed';

export interface Member {
  readonly name: string;
  readonly ns: Netns;
  readonly tunnelIp: string;
  readonly underlayIp: string;
  /** The LAN interface (tap) in `ns`. */
  readonly dev: string;
  /** Its openvpn's pid, where the lab started it (bench/dataplane.ts reads its CPU time). */
  readonly pid?: number | undefined;
  log(): string;
  connected(): boolean;
}

export interface LanLab {
  readonly server: Member;
  readonly nodes: readonly Member[];
  readonly members: readonly Member[];
}

export interface LanOptions {
  /** Overrides of the network spec every node renders from (e.g. `mtu`, `fragment`, `ciphers`). */
  readonly spec?: Partial<NetworkSpec>;
  /** Overrides of the server network (the same settings from the server's side). */
  readonly server?: Partial<ServerNetwork>;
  /** Raw lines appended to every config (the benchmark's hand-tuned variants; never mvpn's own configs). */
  readonly extraLines?: readonly string[];
  /** Raw lines for the server's config only, after extraLines (a variant whose ends differ). */
  readonly serverLines?: readonly string[];
  /** Raw lines appended to every node's client-config-dir file on the server. */
  readonly ccdLines?: readonly string[];
  /** Runs a node's openvpn (default: `openvpn --config`); `connected` says when it is up. */
  readonly startNode?: (node: { readonly name: string; readonly ns: Netns; readonly configPath: string }) => { log(): string; connected(): boolean; pid?: number | undefined };
}

function spawnLogged(ns: Netns, args: readonly string[]): { child: ChildProcess; log: () => string } {
  // `ip netns exec` execs openvpn: the child's pid is openvpn's.
  const child = ns.spawn('openvpn', args);
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  return { child, log: () => out };
}

function plainNode(ns: Netns, configPath: string): { log(): string; connected(): boolean; pid: number | undefined } {
  const run = spawnLogged(ns, ['--config', configPath]);
  return { log: run.log, connected: () => run.log().includes(CONNECTED), pid: run.child.pid };
}

/** Build the underlay of `c` in `lab`, start the server and every node, and wait until all are connected and the LAN answers. */
export async function startLan(lab: Lab, dir: string, c: PathCase, o: LanOptions = {}): Promise<LanLab> {
  const names = c.nodeMtus.map((_, i) => `n${i + 1}`);
  const pki = await makeTestPki({ clients: names, serverCn: serverCn(LAN_NETWORK), caCn: `mvpn-ca-${LAN_NETWORK}` });
  const paths = await writeTestPki(pki, join(dir, 'pki'));
  const ccd = join(dir, 'ccd');
  await mkdir(ccd, { recursive: true });

  const r1 = await lab.ns('r1');
  const r2 = await lab.ns('r2');
  const srv = await lab.ns('srv');
  for (const r of [r1, r2]) await r.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  if (c.refuseFragments) await srv.refuseFragments();
  await lab.link(r1, r2, { aAddr: '198.18.255.1/30', bAddr: '198.18.255.2/30', mtu: c.middleMtu });
  await lab.link(srv, r2, { aName: 'eth0', bAddr: '198.18.0.254/24', aAddr: `${SERVER_UNDERLAY}/24`, mtu: c.serverMtu });
  await srv.route('default', '198.18.0.254');
  await r1.route('default', '198.18.255.2');
  await r2.route('198.18.0.0/15', '198.18.255.1');
  if (c.blackHole) {
    await r1.sendNoIcmp();
    await r2.sendNoIcmp();
  }

  // What the server renders for a network made by `network create` (default MTU), on both ends.
  const dp = newDataPlane('udp', LAN_MTU);
  const net: ServerNetwork = {
    id: LAN_NETWORK,
    devType: 'tap',
    proto: 'udp',
    port: PORT,
    network: '198.19.0.0',
    netmask: '255.255.255.0',
    serverIp: '198.19.0.1',
    firstHost: '198.19.0.1',
    lastHost: '198.19.0.254',
    ciphers: ['AES-256-GCM'],
    keepalive: { interval: 2, timeout: 10 },
    dataPlane: dp,
    ...o.server,
  };
  const extra = o.extraLines ?? [];
  await writeFile(
    join(dir, 'server.conf'),
    renderServerConfig(net, { ca: paths.ca, cert: paths.serverCert, key: paths.serverKey, tlsCryptV2: paths.tlsCryptV2Server, crl: paths.crl, ccdDir: ccd, dev: 'ms-lan' }) + [...extra, ...(o.serverLines ?? [])].join('\n') + '\n',
  );
  const srvRun = spawnLogged(srv, ['--config', join(dir, 'server.conf')]);
  if (!(await waitFor(() => srvRun.log().includes(CONNECTED), 30_000))) throw new Error(`lan server did not start:\n${srvRun.log()}`);

  const nodes: Member[] = [];
  for (const [i, name] of names.entries()) {
    const ns = await lab.ns(name);
    await lab.link(ns, r1, { aName: 'eth0', aAddr: `198.18.${i + 1}.1/24`, bAddr: `198.18.${i + 1}.254/24`, mtu: c.nodeMtus[i]! });
    await ns.route('default', `198.18.${i + 1}.254`);
    if (c.refuseFragments) await ns.refuseFragments();
    const tunnelIp = `198.19.0.${10 + i}`;
    await writeFile(join(ccd, name), renderCcd(tunnelIp, '255.255.255.0') + (o.ccdLines ?? []).map((l) => `${l}\n`).join(''));
    const spec: NetworkSpec = {
      schema: 1,
      id: LAN_NETWORK,
      name: 'lan mtu lab',
      dev_type: 'tap',
      proto: 'udp',
      remotes: [{ host: SERVER_UNDERLAY, port: PORT }],
      server_cn: serverCn(LAN_NETWORK),
      address: { ipv4: `${tunnelIp}/24` },
      server_tunnel_ip: '198.19.0.1',
      ciphers: ['AES-256-GCM'],
      keepalive: { interval: 2, timeout: 10 },
      allow_pushed_routes: false,
      ...(dp.mtu === undefined ? {} : { mtu: dp.mtu }),
      ...(dp.fragment === undefined ? {} : { fragment: dp.fragment }),
      ...o.spec,
    };
    const cl = pki.clients[name]!;
    const profile = renderStandaloneConfig(spec, name, { ca: pki.ca.certPem, cert: cl.certPem, key: cl.keyPem, tlsCryptV2: cl.tlsCryptV2Key, crl: pki.crlPem });
    await writeFile(join(dir, `${name}.ovpn`), profile + extra.join('\n') + '\n', { mode: 0o600 });
    const configPath = join(dir, `${name}.ovpn`);
    const run = o.startNode?.({ name, ns, configPath }) ?? plainNode(ns, configPath);
    nodes.push({ name, ns, tunnelIp, underlayIp: `198.18.${i + 1}.1`, dev: 'tap0', ...run });
  }
  for (const n of nodes) {
    if (!(await waitFor(() => n.connected(), 60_000))) throw new Error(`${n.name} did not connect:\n${n.log()}\nSERVER\n${srvRun.log()}`);
  }
  const serverMember: Member = { name: 'server', ns: srv, tunnelIp: net.serverIp, underlayIp: SERVER_UNDERLAY, dev: 'ms-lan', pid: srvRun.child.pid, log: srvRun.log, connected: () => true };
  for (const n of nodes) {
    if (!(await waitFor(() => n.ns.ping(serverMember.tunnelIp), 30_000))) throw new Error(`${n.name} cannot ping the server over the LAN:\n${n.log()}`);
  }
  return { server: serverMember, nodes, members: [serverMember, ...nodes] };
}

/** Replies to `count` DF pings of `size` payload bytes from `a` to `b` over the LAN. */
export async function dfPing(a: Pick<Member, 'ns'>, b: Pick<Member, 'tunnelIp'>, size = 1472, count = 3): Promise<number> {
  const r = await a.ns.exec('ping', ['-n', '-q', '-M', 'do', '-s', String(size), '-c', String(count), '-i', '0.2', '-W', '2', b.tunnelIp], { allowFail: true });
  return Number(/(\d+) received/.exec(r.stdout)?.[1] ?? 0);
}

export interface IperfResult {
  readonly ok: boolean;
  /** The parsed `--json` report, or the error text. */
  readonly report: unknown;
  readonly text: string;
}

/** One iperf3 run from `a` to `b` over the LAN, or to `to` (the underlay) — a one-off server in `b`'s namespace. */
export async function iperf(a: Member, b: Member, args: readonly string[], timeoutMs = 60_000, to = b.tunnelIp): Promise<IperfResult> {
  const port = String(5201 + Math.floor(Math.random() * 500));
  const srv = b.ns.spawn('iperf3', ['-s', '-1', '-B', to, '-p', port]);
  try {
    await waitFor(async () => (await b.ns.exec('ss', ['-Hltn', `sport = :${port}`], { allowFail: true })).stdout.includes(port), 10_000);
    const r = await a.ns.exec('iperf3', ['-c', to, '-p', port, '-J', ...args], { allowFail: true, timeoutMs });
    let report: unknown = r.stderr;
    try {
      report = JSON.parse(r.stdout) as unknown;
    } catch {
      // not JSON: keep the text
    }
    return { ok: r.code === 0, report, text: r.stdout + r.stderr };
  } finally {
    srv.kill('SIGTERM');
  }
}

const UDP_TRIES = 3;

interface UdpSum {
  end?: { sum?: { packets?: number; lost_packets?: number } };
}

/** Every ordered pair of distinct members (both directions). */
export function pairs(members: readonly Member[]): [Member, Member][] {
  return members.flatMap((a) => members.filter((b) => b !== a).map((b) => [a, b] as [Member, Member]));
}

/**
 * The full-size frame check of issue 13 over the LAN for each ordered pair:
 * three 1472-byte DF pings answered, 1472-byte UDP datagrams at 5 Mbit/s
 * (size, not speed: a higher rate on the loaded 2-core machine overflows
 * openvpn's socket buffer) with no loss, and a 2 MB TCP transfer; one line
 * per failure, none when the LAN carries full frames.
 * The UDP run is tried up to UDP_TRIES times and one run without any loss
 * passes: a path that cannot carry the size loses every datagram every time,
 * while a CPU stall on the loaded machine (two labs, other suites) drops a
 * burst of some tens once. Every run's figures are in the failure line.
 */
export async function fullFrameFailures(ordered: readonly (readonly [Member, Member])[]): Promise<string[]> {
  const failures: string[] = [];
  for (const [a, b] of ordered) {
    // A small ping first, so ARP is settled and a failure below is about size alone.
    await dfPing(a, b, 56, 1);
    const got = await dfPing(a, b);
    if (got !== 3) failures.push(`${a.name} -> ${b.name}: ${got}/3 replies to a 1472-byte DF ping`);
    const runs: string[] = [];
    for (let i = 0; i < UDP_TRIES && runs.length === i; i++) {
      const udp = await iperf(a, b, ['-u', '-l', '1472', '-b', '5M', '-t', '2']);
      const sum = (udp.report as UdpSum).end?.sum;
      if (!udp.ok || !sum?.packets || sum.lost_packets !== 0) runs.push(`lost ${sum?.lost_packets ?? '?'} of ${sum?.packets ?? '?'} (${udp.ok ? 'ran' : udp.text.slice(0, 200)})`);
    }
    if (runs.length === UDP_TRIES) failures.push(`${a.name} -> ${b.name}: 1472-byte UDP ${runs.join('; ')}`);
  }
  for (const [a, b] of ordered) {
    const tcp = await iperf(a, b, ['-n', '2M'], 30_000);
    if (!tcp.ok) failures.push(`${a.name} -> ${b.name}: TCP transfer of 2 MB did not complete: ${tcp.text.slice(0, 200)}`);
  }
  return failures;
}
