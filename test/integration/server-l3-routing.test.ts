/**
 * L3 routing across three servers with real BIRD 2 in namespaces
 * (src/server/routing): each "server" namespace runs its own L3Routing (its
 * own BIRD, config, control socket and pid file in a directory of its own),
 * the three share one backbone segment (a bridge in a fourth namespace, as
 * the backbone link network gives them), and two nodes sit behind each
 * server on the device the network's tun would be (a bridge here: this
 * test is about the routing layer; the openvpn data path is the L2/tun
 * tests').
 *
 * Proves: every ordered pair of the six nodes pings across servers, with
 * routes only in the network's own kernel table and forwarding enabled only
 * on the network's two interfaces (the global switch stays off); `ip route
 * show table main` and `ip rule` of every server are as before, apart from
 * the one subnet rule, which goes at stop; a client that leaves is withdrawn
 * everywhere; BIRD killed with SIGKILL is restarted by pid, its routes come
 * back, and a client that left while it was dead has no route anywhere.
 * Time bounds are hang guards only.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor, type Netns } from '../helpers/netns.ts';
import { tmpDir } from '../helpers/tmp.ts';
import { routeTableId, type L3RoutingSpec } from '../../src/server/routing/bird-config.ts';
import { L3Routing } from '../../src/server/routing/l3-routing.ts';

const NET = 'l3';
const SUBNET = '198.18.0.0/24';
const TUN = 'ms-l3';
const BB = 'mk-l3';
const TABLE = String(routeTableId(NET));

interface Server {
  readonly name: string;
  readonly ns: Netns;
  readonly address: string;
  readonly routing: L3Routing;
  clients: string[];
}

interface Node {
  readonly ns: Netns;
  readonly address: string;
}

describe('L3 routing: three servers, their own BIRDs, iBGP over a backbone segment', () => {
  const lab = new Lab();
  const servers: Server[] = [];
  const nodes: Node[] = [];
  const before = new Map<string, { main: string; rules: string }>();

  const spec = (s: Server): L3RoutingSpec => ({
    network: NET,
    subnet: SUBNET,
    local: s.address,
    tunDev: TUN,
    backboneDev: BB,
    peers: servers.filter((o) => o !== s).map((o) => ({ name: o.name, address: o.address })),
    clients: s.clients,
  });
  const apply = (s: Server) => s.routing.apply(s.address, [spec(s)]);
  const kernelState = async (ns: Netns) => ({
    main: (await ns.exec('ip', ['route', 'show', 'table', 'main'])).stdout,
    rules: (await ns.exec('ip', ['rule', 'show'])).stdout,
  });
  const table = async (ns: Netns) => (await ns.exec('ip', ['route', 'show', 'table', TABLE], { allowFail: true })).stdout;
  const allPairs = async (among: readonly Node[]): Promise<string[]> => {
    const failed: string[] = [];
    await Promise.all(
      among.map(async (a) => {
        for (const b of among) if (a !== b && !(await a.ns.ping(b.address, { timeoutS: 1 }))) failed.push(`${a.address}→${b.address}`);
      }),
    );
    return failed;
  };

  beforeAll(async () => {
    const dir = (await tmpDir('l3-routing')).path;
    const bb = await lab.ns('bb');
    await bb.exec('ip', ['link', 'add', 'name', 'bb0', 'type', 'bridge']);
    await bb.up('bb0');
    for (let i = 1; i <= 3; i++) {
      const ns = await lab.ns(`srv${i}`);
      const address = `198.18.0.${i}`;
      await lab.link(ns, bb, { aName: BB, bName: `bbp${i}` });
      await bb.exec('ip', ['link', 'set', `bbp${i}`, 'master', 'bb0']);
      await ns.exec('ip', ['link', 'add', 'name', TUN, 'type', 'bridge']);
      await ns.up(TUN);
      lab.checkAddress(address);
      // As the daemon puts the server's address: no prefix route in any table.
      for (const dev of [BB, TUN]) await ns.exec('ip', ['addr', 'add', `${address}/24`, 'dev', dev, 'noprefixroute']);
      before.set(ns.name, await kernelState(ns));
      const stateDir = join(dir, `srv${i}`);
      await mkdir(stateDir, { recursive: true });
      const routing = new L3Routing({
        configDir: join(stateDir, 'routing'),
        runtimeDir: join(stateDir, 'run'),
        exec: (cmd, args, o) => ns.exec(cmd, args, { allowFail: true, ...(o?.timeoutMs ? { timeoutMs: o.timeoutMs } : {}) }),
        spawn: (cmd, args) => ns.spawn(cmd, args),
      });
      const server: Server = { name: `srv${i}`, ns, address, routing, clients: [] };
      servers.push(server);
      for (let j = 1; j <= 2; j++) {
        const node = await lab.ns(`n${i}${j}`);
        const addr = `198.18.0.${i * 10 + j}`;
        await lab.link(node, ns, { aName: 'eth0', bName: `p${j}` });
        await ns.exec('ip', ['link', 'set', `p${j}`, 'master', TUN]);
        await node.addr('eth0', `${addr}/32`);
        await node.exec('ip', ['route', 'add', `${address}/32`, 'dev', 'eth0']);
        await node.exec('ip', ['route', 'add', SUBNET, 'via', address, 'dev', 'eth0']);
        nodes.push({ ns: node, address: addr });
        server.clients.push(addr);
      }
    }
    for (const s of servers) await apply(s);
  });

  afterAll(async () => {
    for (const s of servers) await s.routing.stop().catch(() => undefined);
    await lab.destroy();
  });

  it('every ordered pair of the six nodes pings across the three servers', async () => {
    let failed: string[] = [];
    const ok = await waitFor(async () => (failed = await allPairs(nodes)).length === 0, 60_000, 500);
    expect(failed).toEqual([]);
    expect(ok).toBe(true);
    // A remote client's route is BGP's (next hop: its server on the backbone) in the network's own table.
    expect(await table(servers[0]!.ns)).toMatch(/198\.18\.0\.21 via 198\.18\.0\.2 dev mk-l3 proto bird/);
    expect(await table(servers[0]!.ns)).toMatch(/198\.18\.0\.11 dev ms-l3 proto bird/);
  });

  it('touches neither the main table nor the global forwarding switch; one rule for the subnet', async () => {
    for (const s of servers) {
      const now = await kernelState(s.ns);
      const was = before.get(s.ns.name)!;
      expect(now.main).toBe(was.main);
      const added = now.rules.split('\n').filter((l) => !was.rules.split('\n').includes(l) && l.trim());
      expect(added).toHaveLength(1);
      expect(added[0]).toMatch(new RegExp(`to ${SUBNET.replace(/\./g, '\\.')} lookup ${TABLE}`));
      expect((await s.ns.exec('sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim()).toBe('0');
      expect((await s.ns.exec('sysctl', ['-n', `net.ipv4.conf.${BB}.forwarding`])).stdout.trim()).toBe('1');
      expect((await s.ns.exec('sysctl', ['-n', 'net.ipv4.conf.lo.forwarding'])).stdout.trim()).toBe('0');
    }
  });

  it('shows each peer session and the prefixes learned from it', async () => {
    const view = await servers[0]!.routing.view();
    expect(view.bird.pid).toBeTypeOf('number');
    const peers = view.networks[NET]!.peers;
    expect(peers.map((p) => [p.name, p.state, [...p.routes].sort()])).toEqual([
      ['srv2', 'Established', ['198.18.0.21/32', '198.18.0.22/32']],
      ['srv3', 'Established', ['198.18.0.31/32', '198.18.0.32/32']],
    ]);
  });

  it('a client that leaves its server is withdrawn everywhere', async () => {
    const s3 = servers[2]!;
    s3.clients = ['198.18.0.31'];
    await apply(s3);
    const gone = await waitFor(async () => {
      for (const s of servers) if ((await table(s.ns)).includes('198.18.0.32 ')) return false;
      return true;
    }, 30_000, 200);
    expect(gone).toBe(true);
    s3.clients = ['198.18.0.31', '198.18.0.32'];
    await apply(s3);
    expect(await waitFor(async () => (await table(servers[0]!.ns)).includes('198.18.0.32 via 198.18.0.3'), 30_000, 200)).toBe(true);
  });

  it('BIRD killed with SIGKILL is restarted; its routes come back, none to a client that left meanwhile', async () => {
    const s2 = servers[1]!;
    const pid = s2.routing.birdPid()!;
    expect(pid).toBeTypeOf('number');
    process.kill(pid, 'SIGKILL');
    await waitFor(() => s2.routing.birdPid() === undefined, 10_000, 20);
    // 198.18.0.22 disconnects while BIRD is down: the restarted BIRD reads the current config.
    s2.clients = ['198.18.0.21'];
    await apply(s2);
    expect(await waitFor(() => (s2.routing.birdPid() ?? pid) !== pid, 30_000, 100)).toBe(true);
    const settled = await waitFor(async () => {
      for (const s of servers) if ((await table(s.ns)).includes('198.18.0.22 ')) return false;
      return (await table(servers[0]!.ns)).includes('198.18.0.21 via 198.18.0.2');
    }, 60_000, 250);
    expect(settled).toBe(true);
    const rest = nodes.filter((n) => n.address !== '198.18.0.22');
    let failed: string[] = [];
    await waitFor(async () => (failed = await allPairs(rest)).length === 0, 60_000, 500);
    expect(failed).toEqual([]);
    expect((await s2.routing.view()).bird.restarts).toBe(1);
  });

  it('stopping leaves the kernel as it was: rules and the network table gone', async () => {
    for (const s of servers) {
      await s.routing.stop();
      expect(await kernelState(s.ns)).toEqual(before.get(s.ns.name));
      expect((await table(s.ns)).trim()).toBe('');
    }
  });
});
