/**
 * One L3 network across three servers, on real openvpn and real BIRD 2 in
 * namespaces (src/server/routing). Each server namespace runs an openvpn
 * tun server rendered `routed` (the address the hub allocated on a
 * persistent tun with `noprefixroute`, `ifconfig-noexec`) and its own
 * L3Routing (its own BIRD, config, control socket and pid file); the three
 * share a backbone segment (a bridge in a fourth namespace, standing in for
 * the backbone link network). Two real openvpn nodes sit behind each
 * server, every node with two remotes: its own server, then the next one.
 * What the daemon will do on a timer — one `learnClients` pass per server
 * over its management interface (`status 3`), handed to L3Routing — is
 * done here by the test's `learn` loop, so this test isolates the routing
 * layer (the daemons do it in server-l3-federation.test.ts).
 *
 * Proves: every ordered pair of the six nodes pings; routes only in the
 * network's own kernel table, forwarding only on the network's interfaces;
 * `ip route show table main` and `ip rule` of every server are as before
 * (plus one subnet rule, gone at stop); a node whose first server becomes
 * unreachable reconnects to its second one with the same address and every
 * pair answers again (time measured from its CONNECTED); the first server
 * ends the stale session and withdraws it; BIRD killed with SIGKILL is
 * restarted, its routes come back, and a client that left meanwhile has no
 * route anywhere; a node thrown out as revocation does it (ccd gone at
 * every server, session ended) loses its route everywhere and stays out.
 * Time bounds are hang guards only.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderClientConfig } from '../../src/openvpn/client-config.ts';
import { ManagementClient } from '../../src/openvpn/management.ts';
import { renderCcd, renderServerConfig } from '../../src/openvpn/server-config.ts';
import { CIPHERS } from '../../src/server/documents.ts';
import { routeTableId, type L3Client, type L3RoutingSpec } from '../../src/server/routing/bird-config.ts';
import { learnClients, sameClients } from '../../src/server/routing/client-routes.ts';
import { L3Routing } from '../../src/server/routing/l3-routing.ts';
import { Lab, waitFor, type Netns } from '../helpers/netns.ts';
import { makeTestPki, writeTestPki } from '../helpers/pki-fixtures.ts';
import { failingPairs, roamConvergence, startOpenvpnClient, type VpnClient } from '../helpers/server-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

const NET = 'l3';
const SUBNET = '198.18.0.0/24';
const MASK = '255.255.255.0';
const TUN = 'ms-l3';
const BB = 'mk-l3';
const TABLE = String(routeTableId(NET));
const PORT = 1194;
const KEEPALIVE = { interval: 2, timeout: 10 };

interface Server {
  readonly name: string;
  readonly ns: Netns;
  readonly underlay: string;
  readonly address: string;
  readonly routing: L3Routing;
  readonly mgmtSocket: string;
  readonly ccdDir: string;
  /** The learn loop's management connection (while it has one). */
  mgmt?: ManagementClient | undefined;
  clients: L3Client[];
  learning: boolean;
  /** Sessions ended because another server announced a newer one. */
  readonly killed: string[];
}

interface Node {
  readonly name: string;
  readonly ns: Netns;
  readonly address: string;
  readonly mgmtSocket: string;
  vpn?: VpnClient;
}

describe('L3 network across three servers: openvpn tun servers, their own BIRDs, iBGP over a backbone', () => {
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
  const kernelState = async (ns: Netns) => ({
    main: (await ns.exec('ip', ['route', 'show', 'table', 'main'])).stdout,
    rules: (await ns.exec('ip', ['rule', 'show'])).stdout,
  });
  const table = async (ns: Netns) => (await ns.exec('ip', ['route', 'show', 'table', TABLE], { allowFail: true })).stdout;
  const allPairs = failingPairs;

  /** Waits for the node's openvpn CONNECTED to `remote`, then for every pair to answer; the time between the two. */
  const convergence = async (mgmtSocket: string, remote: string, connectWithinMs: number): Promise<{ connectedAt: number; convergedMs: number }> => {
    const r = await roamConvergence(mgmtSocket, remote, nodes, connectWithinMs);
    expect(r.failed).toEqual([]);
    return { connectedAt: r.connectedAt, convergedMs: r.convergedMs! };
  };

  /** The daemon's part: each pass hands the clients connected now to L3Routing and ends sessions another server superseded. */
  const learn = async (s: Server): Promise<void> => {
    let mgmt: ManagementClient | undefined;
    while (s.learning) {
      try {
        mgmt ??= await ManagementClient.connect(s.mgmtSocket, { timeoutMs: 2_000 });
        s.mgmt = mgmt;
        const { clients, ended } = await learnClients(mgmt, await s.routing.superseded(NET).catch(() => []));
        s.killed.push(...ended);
        if (!sameClients(clients, s.clients)) s.clients = [...clients];
        await s.routing.apply(s.address, [spec(s)]);
      } catch {
        mgmt?.close();
        mgmt = s.mgmt = undefined;
      }
      await new Promise((r) => setTimeout(r, 300));
    }
    mgmt?.close();
  };

  beforeAll(async () => {
    const dir = (await tmpDir('l3-routing')).path;
    const names = [1, 2, 3].flatMap((i) => [1, 2].map((j) => `n${i}${j}`));
    const pki = await writeTestPki(await makeTestPki({ clients: names, serverCn: 'mvpn-server-l3' }), join(dir, 'pki'));
    const wan = await lab.ns('wan');
    await lab.bridge(wan, 'wan0', []);
    const bb = await lab.ns('bb');
    await lab.bridge(bb, 'bb0', []);
    let port = 0;
    const toWan = async (ns: Netns, addr: string): Promise<void> => {
      const p = `w${++port}`;
      await lab.link(ns, wan, { aName: 'wan', bName: p, aAddr: `${addr}/24` });
      await wan.exec('ip', ['link', 'set', p, 'master', 'wan0']);
    };
    for (let i = 1; i <= 3; i++) {
      const ns = await lab.ns(`srv${i}`);
      const address = `198.18.0.${i}`;
      const underlay = `198.19.0.${i}`;
      await toWan(ns, underlay);
      await lab.link(ns, bb, { aName: BB, bName: `bbp${i}` });
      await bb.exec('ip', ['link', 'set', `bbp${i}`, 'master', 'bb0']);
      before.set(ns.name, await kernelState(ns));
      // What the daemon does before openvpn starts: a persistent tun holding the hub's allocation, no prefix route anywhere.
      await ns.exec('ip', ['tuntap', 'add', 'dev', TUN, 'mode', 'tun']);
      lab.checkAddress(address);
      for (const dev of [TUN, BB]) await ns.exec('ip', ['addr', 'add', `${address}/24`, 'dev', dev, 'noprefixroute']);
      await ns.up(TUN);
      const sdir = join(dir, `srv${i}`);
      const ccd = join(sdir, 'ccd');
      await mkdir(ccd, { recursive: true });
      for (const n of names) await writeFile(join(ccd, n), renderCcd(`198.18.0.${Number(n.slice(1, 2)) * 10 + Number(n.slice(2))}`, MASK));
      const conf = join(sdir, 'server.conf');
      await writeFile(
        conf,
        renderServerConfig(
          { id: NET, devType: 'tun', proto: 'udp', port: PORT, local: underlay, network: '198.18.0.0', netmask: MASK, serverIp: address, firstHost: '198.18.0.1', lastHost: '198.18.0.254', ciphers: CIPHERS, keepalive: KEEPALIVE, routed: true },
          { ca: pki.ca, cert: pki.serverCert, key: pki.serverKey, tlsCryptV2: pki.tlsCryptV2Server, crl: pki.crl, ccdDir: ccd, dev: TUN },
        ),
      );
      const mgmtSocket = join(sdir, 'mgmt.sock');
      ns.spawn('openvpn', ['--config', conf, '--management', mgmtSocket, 'unix']);
      const routing = new L3Routing({
        configDir: join(sdir, 'routing'),
        runtimeDir: join(sdir, 'run'),
        exec: (cmd, args, o) => ns.exec(cmd, args, { allowFail: true, ...(o?.timeoutMs ? { timeoutMs: o.timeoutMs } : {}) }),
        spawn: (cmd, args) => ns.spawn(cmd, args),
      });
      servers.push({ name: `srv${i}`, ns, underlay, address, routing, mgmtSocket, ccdDir: ccd, clients: [], learning: true, killed: [] });
    }
    for (const s of servers) {
      await s.routing.apply(s.address, [spec(s)]);
      void learn(s);
    }
    for (let i = 1; i <= 3; i++) {
      for (let j = 1; j <= 2; j++) {
        const name = `n${i}${j}`;
        const ns = await lab.ns(name);
        await toWan(ns, `198.19.0.${i * 10 + j}`);
        const address = `198.18.0.${i * 10 + j}`;
        const ndir = join(dir, name);
        await mkdir(ndir, { recursive: true });
        const mgmtSocket = join(ndir, 'mgmt.sock');
        const c = pki.clients[name]!;
        const conf = join(ndir, 'client.conf');
        const remotes = [i, (i % 3) + 1].map((k) => ({ host: `198.19.0.${k}`, port: PORT }));
        const netSpec = { schema: 1 as const, id: NET, name: NET, dev_type: 'tun' as const, proto: 'udp' as const, remotes, server_cn: 'mvpn-server-l3', address: { ipv4: `${address}/24` }, ciphers: [...CIPHERS], keepalive: KEEPALIVE, allow_pushed_routes: false };
        await writeFile(conf, renderClientConfig(netSpec, { ca: pki.ca, cert: c.cert, key: c.key, tlsCryptV2: c.tlsCryptV2, crl: pki.crl, mgmtSocket, dev: 'mv-l3' }));
        const node: Node = { name, ns, address, mgmtSocket };
        node.vpn = await startOpenvpnClient(ns, conf, mgmtSocket, 'mv-l3');
        nodes.push(node);
      }
    }
  });

  afterAll(async () => {
    for (const s of servers) s.learning = false;
    for (const n of nodes) await n.vpn?.stop().catch(() => undefined);
    for (const s of servers) await s.routing.stop().catch(() => undefined);
    await lab.destroy();
  });

  it('every ordered pair of the six nodes pings across the three servers', async () => {
    let failed: string[] = [];
    await waitFor(async () => (failed = await allPairs(nodes)).length === 0, 90_000, 500);
    expect(failed).toEqual([]);
    // A remote client's route is BGP's (next hop: its server on the backbone), in the network's own table.
    expect(await table(servers[0]!.ns)).toMatch(/198\.18\.0\.21 via 198\.18\.0\.2 dev mk-l3 proto bird/);
    expect(await table(servers[0]!.ns)).toMatch(/198\.18\.0\.11 dev ms-l3 proto bird/);
  });

  it('touches neither the main table nor the global forwarding switch; one rule for the subnet', async () => {
    for (const s of servers) {
      const now = await kernelState(s.ns);
      const was = before.get(s.ns.name)!;
      expect(now.main).toBe(was.main);
      const added = now.rules.split('\n').filter((l) => l.trim() && !was.rules.split('\n').includes(l));
      expect(added).toHaveLength(1);
      expect(added[0]).toContain(`to ${SUBNET} lookup ${TABLE}`);
      expect((await s.ns.exec('sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim()).toBe('0');
      for (const dev of [TUN, BB]) expect((await s.ns.exec('sysctl', ['-n', `net.ipv4.conf.${dev}.forwarding`])).stdout.trim()).toBe('1');
      expect((await s.ns.exec('sysctl', ['-n', 'net.ipv4.conf.wan.forwarding'])).stdout.trim()).toBe('0');
    }
  });

  it('shows each peer session and the prefixes learned from it', async () => {
    const view = await servers[0]!.routing.view();
    expect(view.bird.pid).toBeTypeOf('number');
    expect(view.networks[NET]!.clients).toEqual(['198.18.0.11', '198.18.0.12']);
    expect(view.networks[NET]!.peers.map((p) => [p.name, p.state, [...p.routes].sort()])).toEqual([
      ['srv2', 'Established', ['198.18.0.21/32', '198.18.0.22/32']],
      ['srv3', 'Established', ['198.18.0.31/32', '198.18.0.32/32']],
    ]);
  });

  it('a node whose first server becomes unreachable is reachable from all others through its second', async () => {
    const n11 = nodes[0]!;
    // Cut n11 off from srv1, both ways (its other traffic and the other nodes are untouched).
    await n11.ns.cutOff('198.19.0.1');
    const cutAt = Date.now();
    const { connectedAt, convergedMs } = await convergence(n11.mgmtSocket, '198.19.0.2', 90_000);
    console.log(`L3 roaming: CONNECTED at the second server ${connectedAt - cutAt} ms after the cut; ${convergedMs} ms from then to all 30 pairs answering; srv1 ended stale sessions: [${servers[0]!.killed.join(', ')}]`);
    // Same address, now announced by srv2; srv1 ended the stale session and withdrew it.
    expect(await table(servers[2]!.ns)).toMatch(/198\.18\.0\.11 via 198\.18\.0\.2 dev mk-l3/);
    expect(await waitFor(async () => !servers[0]!.clients.some((c) => c.address === n11.address), 30_000, 200)).toBe(true);
    expect(await table(servers[0]!.ns)).toMatch(/198\.18\.0\.11 via 198\.18\.0\.2 dev mk-l3/);
  });

  it('a node that comes back at another server while its old session is still open: the old server ends it, every pair answers', async () => {
    const n32 = nodes.find((n) => n.name === 'n32')!;
    const s3 = servers[2]!;
    // SIGKILL: no exit notification, so srv3 keeps the session until its keepalive would time it out (20 s).
    process.kill(n32.vpn!.child.pid!, 'SIGKILL');
    const conf = join(dirname(n32.mgmtSocket), 'client-moved.conf');
    const text = await readFile(join(dirname(n32.mgmtSocket), 'client.conf'), 'utf8');
    const mgmtSocket = join(dirname(n32.mgmtSocket), 'mgmt-moved.sock');
    await writeFile(conf, text.replace(/^remote 198\.19\.0\.3 .*\n/m, '').replaceAll(n32.mgmtSocket, mgmtSocket));
    n32.vpn = await startOpenvpnClient(n32.ns, conf, mgmtSocket, 'mv-l3');
    const { convergedMs } = await convergence(mgmtSocket, '198.19.0.1', 60_000);
    console.log(`L3 move with the old session still open: ${convergedMs} ms from CONNECTED at srv1 to all 30 pairs answering; srv3 ended: [${s3.killed.join(', ')}]`);
    expect(s3.killed).toEqual([n32.name]);
    expect(await table(servers[1]!.ns)).toMatch(/198\.18\.0\.32 via 198\.18\.0\.1 dev mk-l3/);
  });

  it('BIRD killed with SIGKILL is restarted; its routes come back, none to a client that left meanwhile', async () => {
    const s2 = servers[1]!;
    const pid = s2.routing.birdPid()!;
    expect(pid).toBeTypeOf('number');
    process.kill(pid, 'SIGKILL');
    // n22 leaves while srv2's BIRD is dead (SIGTERM: openvpn tells the server at once).
    const n22 = nodes.find((n) => n.name === 'n22')!;
    await n22.vpn!.stop();
    expect(await waitFor(() => (s2.routing.birdPid() ?? pid) !== pid, 30_000, 100)).toBe(true);
    const settled = await waitFor(async () => {
      for (const s of servers) if ((await table(s.ns)).includes('198.18.0.22 ')) return false;
      return (await table(servers[0]!.ns)).includes('198.18.0.21 via 198.18.0.2');
    }, 60_000, 250);
    expect(settled).toBe(true);
    let failed: string[] = [];
    await waitFor(async () => (failed = await allPairs(nodes.filter((n) => n !== n22))).length === 0, 60_000, 500);
    expect(failed).toEqual([]);
    expect((await s2.routing.view()).bird.restarts).toBe(1);
  });

  it('a node thrown out (its ccd gone at every server, as revocation does, and its session ended) loses its route everywhere and stays out', async () => {
    const n31 = nodes.find((n) => n.name === 'n31')!;
    for (const s of servers) await rm(join(s.ccdDir, 'n31'));
    // Through the learn loop's connection: openvpn serves one management client at a time.
    expect(await waitFor(() => servers[2]!.mgmt !== undefined, 10_000)).toBe(true);
    await servers[2]!.mgmt!.kill('n31');
    const gone = async () => {
      for (const s of servers) if ((await table(s.ns)).includes('198.18.0.31 ') || s.clients.some((c) => c.address === n31.address)) return false;
      return true;
    };
    expect(await waitFor(gone, 30_000, 200)).toBe(true);
    // It keeps trying both of its servers (ccd-exclusive refuses it at each); no route comes back.
    await new Promise((r) => setTimeout(r, 8_000));
    expect(await gone()).toBe(true);
    expect(await nodes[0]!.ns.ping(n31.address, { timeoutS: 1 })).toBe(false);
  });

  it('stopping leaves the kernel as it was: the rule and the network table gone', async () => {
    for (const s of servers) {
      s.learning = false;
      await s.routing.stop();
      expect(await kernelState(s.ns)).toEqual(before.get(s.ns.name));
      expect((await table(s.ns)).trim()).toBe('');
    }
  });
});
