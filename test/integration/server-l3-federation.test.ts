/**
 * An L3 network across three servers driven only by the CLI and the
 * daemons (issue 16): hub A and peers B and C, each `server run` in its own
 * namespace with real openvpn and its own real BIRD; `network create --dev
 * tun` at the hub, `link export` / `link add` for B and C, two nodes behind
 * each server registered at the hub (their bundles exported there, run by
 * openvpn with the agent's renderer). The daemons make the devices, the
 * hub's backbone server, the peers' link clients to it, BIRD with iBGP over
 * the backbone, and learn their clients from their openvpn servers.
 *
 * Proves: every ordered pair of the six nodes pings; routes only in the
 * network's own table, `ip route show table main` unchanged and one new
 * `ip rule` per server, global forwarding off; `network show` carries
 * BIRD's state and the routes learned per peer; a node whose first server's
 * underlay is cut reconnects to its second with the same address and every
 * pair answers again (time from its CONNECTED printed); a node revoked at
 * the hub loses its /32 at every server. Time bounds are hang guards only.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { routeTableId } from '../../src/server/routing/bird-config.ts';
import { Lab, waitFor, type Netns } from '../helpers/netns.ts';
import {
  failingPairs,
  makeServer,
  readSnapshot,
  roamConvergence,
  startServerDaemon,
  startVpnClient,
  type PingMember,
  type ServerDaemonRun,
  type TestServer,
  type VpnClient,
} from '../helpers/server-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

const NET = 'l3';
const TABLE = String(routeTableId(NET));

interface Srv {
  readonly name: 'a' | 'b' | 'c';
  readonly underlay: string;
  readonly ns: Netns;
  readonly s: TestServer;
  daemon?: ServerDaemonRun;
  port: number;
}

interface Node extends PingMember {
  readonly server: Srv;
  vpn?: VpnClient;
  workDir?: string;
}

interface RoutingShown {
  routing?: { bird: { pid: number | null }; table: number; clients: string[]; peers: { name: string; address: string; state: string; routes: string[] }[] };
}

describe('L3 network across three server daemons: tun links, backbone, BIRD, roaming', () => {
  const lab = new Lab();
  const servers: Srv[] = [];
  const nodes: Node[] = [];
  const dirs: { remove: () => Promise<void> }[] = [];
  const before = new Map<string, { main: string; rules: string }>();

  const kernel = async (ns: Netns) => ({ main: (await ns.exec('ip', ['route', 'show', 'table', 'main'])).stdout, rules: (await ns.exec('ip', ['rule', 'show'])).stdout });
  const table = async (ns: Netns) => (await ns.exec('ip', ['route', 'show', 'table', TABLE], { allowFail: true })).stdout;
  const logs = () => servers.map((s) => `=== ${s.name}\n${s.daemon?.log().slice(-5000) ?? ''}`).join('\n');
  const node = (name: string) => nodes.find((n) => n.name === name)!;

  beforeAll(async () => {
    const sw = await lab.ns('sw');
    const ports: string[] = [];
    for (const [name, underlay] of [['a', '198.18.0.1'], ['b', '198.18.0.2'], ['c', '198.18.0.3']] as const) {
      const ns = await lab.ns(`srv-${name}`);
      ports.push((await lab.link(ns, sw, { aName: 'eth0', aAddr: `${underlay}/24` }))[1]);
      const s = await makeServer({ label: `l3-${name}`, address: underlay, listen: `${underlay}:8443`, extra: ['--vpn-listen', underlay] });
      servers.push({ name, underlay, ns, s, port: 0 });
    }
    const [a, b, c] = servers as [Srv, Srv, Srv];
    for (const [i, srv] of servers.entries()) {
      for (const j of [1, 2]) {
        const name = `${srv.name}${j}`;
        const ns = await lab.ns(name);
        ports.push((await lab.link(ns, sw, { aName: 'eth0', aAddr: `198.18.0.${(i + 1) * 10 + j}/24` }))[1]);
        nodes.push({ name, ns, server: srv, address: '' });
      }
    }
    await lab.bridge(sw, 'br0', ports);
    for (const s of servers) before.set(s.name, await kernel(s.ns));

    await a.s.run(['network', 'create', NET, '--dev', 'tun', '--remote', a.underlay]);
    await a.s.run(['network', 'up', NET]);
    a.port = (await a.s.json<{ port: number }>(['network', 'show', NET])).port;
    for (const p of [b, c]) {
      const file = join(a.s.dir, `link-${p.name}.json`);
      await a.s.json(['link', 'export', NET, '--peer', p.name, '--out', file, '--api-url', `https://${a.underlay}:8443`]);
      p.port = (await p.s.json<{ port: number }>(['link', 'add', file, '--hub-anchor', `@${join(a.s.stateDir, 'trust-anchor')}`])).port;
    }
    // Every node dials its own server first, then the next one (a → b → c → a): the second is where it roams.
    const next = (s: Srv) => servers[(servers.indexOf(s) + 1) % 3]!;
    for (const n of nodes) {
      const remotes = [n.server, next(n.server)].flatMap((s) => ['--remote', `${s.underlay}:${s.port}`]);
      const added = await a.s.json<{ address: string }>(['node', 'add', n.name, '--network', NET, ...remotes]);
      Object.assign(n, { address: added.address });
      await a.s.run(['export', n.name, '--network', NET, '--out', join(a.s.dir, `${n.name}.tar.gz`)]);
    }
    for (const s of servers) s.daemon = startServerDaemon(s.ns, s.s);
    // The peers' nodes connect once their server copied the hub's members (the bare clients give up after one AUTH_FAILED).
    const synced = await waitFor(async () => {
      for (const p of [b, c]) {
        const shown = await p.s.json<{ members: { node: string }[] }>(['network', 'show', NET]);
        if (shown.members.length < nodes.length) return false;
      }
      return true;
    }, 60_000, 500);
    if (!synced) throw new Error(`the peers never copied the hub's members:\n${logs()}`);
    for (const n of nodes) {
      const work = await tmpDir(`l3fed-${n.name}`);
      dirs.push(work);
      n.workDir = work.path;
      n.vpn = await startVpnClient(n.ns, { bundlePath: join(a.s.dir, `${n.name}.tar.gz`), anchorPath: join(a.s.stateDir, 'trust-anchor'), node: n.name, workDir: work.path });
    }
  }, 180_000);

  afterAll(async () => {
    for (const n of nodes) await n.vpn?.stop().catch(() => undefined);
    for (const s of servers) await s.daemon?.stop().catch(() => undefined);
    await lab.destroy();
    for (const d of dirs) await d.remove();
    for (const s of servers) await s.s.remove();
  });

  it('every ordered pair of the six nodes pings across the three servers', { timeout: 240_000 }, async () => {
    let failed: string[] = [];
    const ok = await waitFor(async () => (failed = await failingPairs(nodes)).length === 0, 150_000, 1_000);
    if (!ok) {
      const diag: string[] = [];
      for (const s of servers) {
        const ctl = join(s.s.stateDir, 'run', 'bird.ctl');
        const r = await s.ns.exec('sh', ['-c', `ip route show table ${TABLE}; birdc -s ${ctl} show protocols all; birdc -s ${ctl} show route table t_l3 all; birdc -s ${ctl} show interfaces; birdc -s ${ctl} show neighbors`], { allowFail: true });
        diag.push(`--- ${s.name}\n${r.stdout}${r.stderr}\n${s.daemon?.log().split('\n').filter((l) => !/INFO (l3|link-l3|backbone-l3)\[/.test(l)).join('\n')}`);
      }
      const n = await node('a1').ns.exec('sh', ['-c', 'ip -br addr; ip route'], { allowFail: true });
      expect(ok, `${failed.join(' ')}\n${diag.join('\n')}\n--- a1\n${n.stdout}`).toBe(true);
    }
    // b1's route at the hub is BGP's, via B's address on the backbone, in the network's own table.
    const b1 = node('b1');
    const bAddr = (await servers[0]!.s.json<{ members: { node: string; address: string }[] }>(['network', 'show', NET])).members.find((m) => m.node === 'mvpn-peer-b')!.address;
    expect(await table(servers[0]!.ns)).toContain(`${b1.address} via ${bAddr} dev mk-${NET} proto bird`);
    expect(await table(servers[1]!.ns)).toContain(`${b1.address} dev ms-${NET} proto bird`);
  });

  it('network show: BIRD running, each peer Established with the routes learned from it', { timeout: 60_000 }, async () => {
    const [a, b] = servers as [Srv, Srv];
    const shown = async (s: Srv) => (await s.s.json<RoutingShown>(['network', 'show', NET])).routing;
    // The snapshot is rewritten when the view changes; give it a moment after the first test's convergence.
    expect(await waitFor(async () => (await shown(a))?.peers.every((p) => p.state === 'Established' && p.routes.length === 2) === true, 30_000, 500), JSON.stringify(await shown(a))).toBe(true);
    const ra = (await shown(a))!;
    expect(ra.bird.pid).toBeTypeOf('number');
    expect(ra.table).toBe(Number(TABLE));
    expect(ra.clients.sort()).toEqual([node('a1').address, node('a2').address].sort());
    expect(ra.peers.map((p) => [p.name, [...p.routes].sort()])).toEqual([
      ['mvpn-peer-b', [`${node('b1').address}/32`, `${node('b2').address}/32`].sort()],
      ['mvpn-peer-c', [`${node('c1').address}/32`, `${node('c2').address}/32`].sort()],
    ]);
    const rb = (await shown(b))!;
    expect(rb.peers.map((p) => p.name).sort()).toEqual(['mvpn-hub', 'mvpn-peer-c']);
    // B's link is its end of the backbone: no bridge, its address on the link's tap.
    const link = (await b.s.json<{ peer: { bridge: string | null; backbone?: string; address: string }[] }>(['link', 'show', NET])).peer[0]!;
    expect(link).toMatchObject({ bridge: null, backbone: `ml-${NET}` });
    expect((await b.ns.exec('ip', ['-4', '-br', 'addr', 'show', 'dev', `ml-${NET}`])).stdout).toContain(`${link.address}/24`);
    expect((await b.ns.exec('ip', ['-4', '-br', 'addr', 'show', 'dev', `ms-${NET}`])).stdout).toContain(`${link.address}/32`);
    const snap = await readSnapshot<{ routing?: { networks: Record<string, unknown> } }>(b.s);
    expect(Object.keys(snap?.routing?.networks ?? {})).toEqual([NET]);
  });

  it("touches neither the servers' main tables nor their global forwarding; one rule for the subnet each", { timeout: 30_000 }, async () => {
    for (const s of servers) {
      const now = await kernel(s.ns);
      const was = before.get(s.name)!;
      expect(now.main, s.name).toBe(was.main);
      const added = now.rules.split('\n').filter((l) => l.trim() && !was.rules.split('\n').includes(l));
      expect(added, s.name).toHaveLength(1);
      expect(added[0]).toContain(`lookup ${TABLE}`);
      expect((await s.ns.exec('sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim()).toBe('0');
      expect((await s.ns.exec('sysctl', ['-n', 'net.ipv4.conf.eth0.forwarding'])).stdout.trim()).toBe('0');
    }
  });

  it('a node whose first server becomes unreachable is reachable from all others through its second, with the same address', { timeout: 240_000 }, async () => {
    const b1 = node('b1');
    const [, b, c] = servers as [Srv, Srv, Srv];
    // Cut b1 off from B, both ways (as when B's host dies); the rest of B's traffic is untouched.
    await b1.ns.cutOff(b.underlay);
    const cutAt = Date.now();
    const r = await roamConvergence(join(b1.workDir!, `${NET}.sock`), c.underlay, nodes, 120_000);
    expect(r.convergedMs, `${r.failed.join(' ')}\n${logs()}`).toBeTypeOf('number');
    console.log(`L3 roaming through the daemons: b1 CONNECTED at C ${r.connectedAt - cutAt} ms after the cut; ${r.convergedMs} ms from then to all 30 pairs answering`);
    const cAddr = (await servers[0]!.s.json<{ members: { node: string; address: string }[] }>(['network', 'show', NET])).members.find((m) => m.node === 'mvpn-peer-c')!.address;
    expect(await table(servers[0]!.ns)).toContain(`${b1.address} via ${cAddr} dev mk-${NET}`);
    type Clients = { networks: Record<string, { clients: { cn: string; virtual_address: string }[] }> };
    expect(await waitFor(async () => (await readSnapshot<Clients>(c.s))?.networks[NET]?.clients.some((x) => x.cn === 'b1' && x.virtual_address === b1.address) === true, 20_000, 500)).toBe(true);
  });

  it("BIRD killed with SIGKILL at the hub is restarted by the daemon; the routes come back and every pair answers", { timeout: 120_000 }, async () => {
    const a = servers[0]!;
    type Routing = { routing?: { bird: { pid: number | null; restarts: number } } };
    const pid = (await readSnapshot<Routing>(a.s))?.routing?.bird.pid;
    expect(pid).toBeTypeOf('number');
    process.kill(pid!, 'SIGKILL');
    const back = await waitFor(async () => {
      const bird = (await readSnapshot<Routing>(a.s))?.routing?.bird;
      return typeof bird?.pid === 'number' && bird.pid !== pid && bird.restarts === 1;
    }, 30_000, 250);
    expect(back, logs()).toBe(true);
    expect(a.daemon!.log()).toContain('routing: bird-exit');
    let failed: string[] = [];
    expect(await waitFor(async () => (failed = await failingPairs(nodes)).length === 0, 60_000, 500), failed.join(' ')).toBe(true);
    expect(await table(a.ns)).toContain(`${node('b2').address} via`);
  });

  it('a node revoked at the hub loses its route at every server and cannot reach anyone', { timeout: 120_000 }, async () => {
    const c2 = node('c2');
    expect(await c2.ns.ping(node('a1').address, { timeoutS: 2 })).toBe(true);
    await servers[0]!.s.run(['node', 'revoke', 'c2', '--network', NET]);
    const gone = async () => {
      for (const s of servers) if ((await table(s.ns)).includes(`${c2.address} `)) return false;
      return true;
    };
    expect(await waitFor(gone, 60_000, 500), logs()).toBe(true);
    await new Promise((r) => setTimeout(r, 6_000));
    expect(await gone()).toBe(true);
    expect(await node('a1').ns.ping(c2.address, { timeoutS: 1 })).toBe(false);
    expect(await failingPairs(nodes.filter((n) => n !== c2))).toEqual([]);
  });
});
