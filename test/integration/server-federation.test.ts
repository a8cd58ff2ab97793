/**
 * Federation on real parts (DESIGN.md §1, topology 2): two `server run`
 * daemons in their own namespaces — hub B (public 198.18.0.1) and peer C,
 * whose nodes sit on a private underlay (198.18.1.0/24) that only C's ops
 * host reaches. C joins B's network through a link bundle; the daemons make
 * the bridge, supervise the link's openvpn and copy B's members and CRL.
 *
 * Proves: a node behind B and a node behind C ping each other and see each
 * other's MAC (one L2 segment), with 1472-byte DF pings and UDP datagrams
 * and full-size TCP although the path between the servers is a 1280-byte
 * PMTU black hole (a router that sends no ICMP); a broadcast ping reaches all nodes; killing
 * the link's openvpn (peer side) or the hub's server brings the link back by
 * itself while C's nodes keep talking to each other; a node revoked at the
 * hub is thrown out at the peer within seconds and cannot connect again;
 * a rotated node's old certificate is thrown out at the peer and its new
 * bundle works there; a node removed at the hub is out at the peer; the
 * peer's link follows the hub's trust-anchor rotations (signed statements).
 * Time bounds are generous hang guards only.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor, type Netns } from '../helpers/netns.ts';
import { blackHoleRouter, fullFrameFailures, type Member } from '../helpers/lan-lab.ts';
import { makeServer, readSnapshot, startServerDaemon, startVpnClient, type ServerDaemonRun, type TestServer, type VpnClient } from '../helpers/server-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';


interface Snapshot {
  networks: Record<string, { state: string; pid?: number; restarts: number; clients: { cn: string }[] }>;
  links?: Record<string, { state: string; pid?: number; restarts: number; sync: { ok: boolean } | null }>;
}

describe('federation: a network across two servers joined by a link', () => {
  const lab = new Lab();
  let hub: TestServer;
  let peer: TestServer;
  let nsHub: Netns;
  let nsPeer: Netns;
  const nodeNs = new Map<string, Netns>();
  const clients = new Map<string, VpnClient>();
  const addr = new Map<string, string>();
  const daemons: ServerDaemonRun[] = [];
  const dirs: { remove: () => Promise<void> }[] = [];

  const snapshot = (s: TestServer) => readSnapshot<Snapshot>(s);
  const logs = () => daemons.map((d, i) => `=== daemon ${i}\n${d.log().slice(-4000)}`).join('\n');
  const startDaemon = (ns: Netns, s: TestServer) => daemons.push(startServerDaemon(ns, s));
  const mac = async (node: string) => (await nodeNs.get(node)!.exec('cat', ['/sys/class/net/mv-lab/address'])).stdout.trim();
  const pings = async (from: string, to: string) => nodeNs.get(from)!.ping(addr.get(to)!, { count: 1, timeoutS: 2 });

  beforeAll(async () => {
    const sw = await lab.ns('sw');
    const swc = await lab.ns('swc');
    nsHub = await lab.ns('hub');
    nsPeer = await lab.ns('peer');
    const pub: string[] = [];
    const priv: string[] = [];
    pub.push((await lab.link(nsHub, sw, { aName: 'eth0', aAddr: '198.18.0.1/24' }))[1]);
    // The peer reaches the hub through a router whose far side (towards the peer) has MTU 1280 and that sends
    // no ICMP "fragmentation needed": a PMTU black hole on the link's path (issue 13 case 4). The hub's
    // 1500-byte-frame datagrams vanish there unless openvpn itself fragments them.
    const rt = await blackHoleRouter(lab, { name: 'rt', near: sw, routerNearAddr: '198.18.0.254/24', far: nsPeer, farName: 'eth0', farAddr: '198.18.2.1/24', routerFarAddr: '198.18.2.254/24', farMtu: 1280 });
    pub.push(rt.nearDev);
    await nsHub.route('198.18.2.0/24', '198.18.0.254');
    priv.push((await lab.link(nsPeer, swc, { aName: 'eth1', aAddr: '198.18.1.1/24' }))[1]);
    for (const [node, ip, isPrivate] of [
      ['b1', '198.18.0.11/24', false],
      ['b2', '198.18.0.12/24', false],
      ['c1', '198.18.1.11/24', true],
      ['c2', '198.18.1.12/24', true],
    ] as const) {
      const ns = await lab.ns(node);
      nodeNs.set(node, ns);
      (isPrivate ? priv : pub).push((await lab.link(ns, isPrivate ? swc : sw, { aName: 'eth0', aAddr: ip }))[1]);
      await ns.exec('sysctl', ['-q', '-w', 'net.ipv4.icmp_echo_ignore_broadcasts=0']);
    }
    await lab.bridge(sw, 'br0', pub);
    await lab.bridge(swc, 'br0', priv);

    hub = await makeServer({ label: 'hubB', address: '198.18.0.1', listen: '198.18.0.1:8443', extra: ['--vpn-listen', '198.18.0.1'] });
    peer = await makeServer({ label: 'peerC', address: '198.18.1.1', listen: '127.0.0.1:8443' });
    await hub.run(['network', 'create', 'lab', '--remote', '198.18.0.1']);
    await hub.run(['network', 'up', 'lab']);
    for (const n of ['b1', 'b2']) addr.set(n, (await hub.json<{ address: string }>(['node', 'add', n, '--network', 'lab'])).address);
    const linkFile = join(hub.dir, 'link-c.json');
    const ex = await hub.json<{ address: string; cn: string }>(['link', 'export', 'lab', '--peer', 'c', '--out', linkFile, '--api-url', 'https://198.18.0.1:8443']);
    expect(ex.cn).toBe('mvpn-peer-c');
    const added = await peer.json<{ port: number; address: string; subnet: string; relay: unknown }>([
      'link', 'add', linkFile, '--hub-anchor', `@${join(hub.stateDir, 'trust-anchor')}`, '--relay-listen', '198.18.1.1:8444',
    ]);
    expect(added.relay).toEqual({ listen: '198.18.1.1:8444', to: '198.18.0.1:8443' });
    expect(added.address).toBe(ex.address);
    // C's nodes: registered at the hub (one allocation authority), connecting to C's ops host.
    for (const n of ['c1', 'c2']) {
      addr.set(n, (await hub.json<{ address: string }>(['node', 'add', n, '--network', 'lab', '--remote', `198.18.1.1:${added.port}`])).address);
    }
    for (const n of ['b1', 'b2', 'c1', 'c2']) await hub.run(['export', n, '--network', 'lab', '--out', join(hub.dir, `${n}.tar.gz`)]);
    startDaemon(nsHub, hub);
    startDaemon(nsPeer, peer);
    // C's nodes may connect only once the peer has copied the hub's members (their ccd files). The bare
    // openvpn clients used here give up after one AUTH_FAILED, unlike the agent, which retries.
    const ccd = (n: string) => readFile(join(peer.stateDir, 'networks', 'lab', 'ccd', n), 'utf8').then(() => true, () => false);
    const synced = await waitFor(async () => (await ccd('c1')) && (await ccd('c2')), 60_000, 250);
    if (!synced) throw new Error(`the peer never copied the hub's members:\n${logs()}`);
    for (const n of ['b1', 'b2', 'c1', 'c2']) {
      const work = await tmpDir(`fed-${n}`);
      dirs.push(work);
      clients.set(n, await startVpnClient(nodeNs.get(n)!, { bundlePath: join(hub.dir, `${n}.tar.gz`), anchorPath: join(hub.stateDir, 'trust-anchor'), node: n, workDir: work.path }));
    }
  }, 120_000);

  afterAll(async () => {
    for (const c of clients.values()) await c.stop().catch(() => undefined);
    for (const d of daemons) await d.stop();
    await lab.destroy();
    for (const d of dirs) await d.remove();
    await hub?.remove();
    await peer?.remove();
  });

  it('joins nodes behind B and behind C into one L2 segment; a broadcast reaches every node', { timeout: 180_000 }, async () => {
    const joined = await waitFor(async () => (await pings('c1', 'b1')) && (await pings('b2', 'c2')), 90_000, 1_000);
    if (!joined) {
      const diag = await nsPeer.exec('sh', ['-c', 'ip -d link show; bridge link; bridge fdb show br mb-lab; ip addr']);
      expect(joined, `${logs()}\nc1:\n${clients.get('c1')!.output().slice(-2000)}\npeer:\n${diag.stdout}`).toBe(true);
    }
    // The peer's daemon made the bridge with exactly its two taps, and carries the peer's address on it.
    const br = await nsPeer.exec('ip', ['-br', 'link', 'show', 'master', 'mb-lab']);
    expect(br.stdout.split('\n').filter(Boolean).map((l) => l.split(/\s+/)[0]!.replace(/@.*/, '')).sort()).toEqual(['ml-lab', 'ms-lab']);
    expect((await nsPeer.exec('ip', ['-4', '-br', 'addr', 'show', 'dev', 'mb-lab'])).stdout).toContain('/24');
    expect((await nsPeer.exec('sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim()).toBe('0');
    // One L2 segment: C's node knows B's node by its real MAC, and the other way round.
    const n1 = await nodeNs.get('c1')!.exec('ip', ['neigh', 'show', addr.get('b1')!, 'dev', 'mv-lab']);
    expect(n1.stdout).toContain(await mac('b1'));
    const n2 = await nodeNs.get('b2')!.exec('ip', ['neigh', 'show', addr.get('c2')!, 'dev', 'mv-lab']);
    expect(n2.stdout).toContain(await mac('c2'));
    // Broadcast from b1: every other node answers.
    const everyone = await waitFor(async () => {
      const r = await nodeNs.get('b1')!.exec('ping', ['-n', '-b', '-c', '3', '-i', '0.3', '-W', '2', '198.19.0.255']);
      return ['b2', 'c1', 'c2'].every((n) => r.stdout.includes(`from ${addr.get(n)}:`));
    }, 30_000, 1_000);
    expect(everyone).toBe(true);
    // Health in `network show` on the peer.
    const shown = await peer.json<{ link?: { runtime?: { state: string; sync: { ok: boolean } | null } } }>(['network', 'show', 'lab']);
    expect(shown.link?.runtime?.state).toBe('connected');
    expect(shown.link?.runtime?.sync?.ok).toBe(true);
  });

  it('carries full-size frames across the link through a 1280-byte PMTU black hole between the servers (issue 13, case 4)', { timeout: 300_000 }, async () => {
    expect(await waitFor(async () => (await pings('c1', 'b1')) && (await pings('b2', 'c2')), 60_000, 1_000)).toBe(true);
    const member = (n: string): Member => ({ name: n, ns: nodeNs.get(n)!, tunnelIp: addr.get(n)!, underlayIp: '', dev: 'mv-lab', log: () => clients.get(n)!.output(), connected: () => true });
    // Nodes on different servers, both directions: every frame crosses the link.
    const across = [['c1', 'b1'], ['b1', 'c1'], ['c2', 'b2'], ['b2', 'c2']].map(([a, b]) => [member(a!), member(b!)] as const);
    expect(await fullFrameFailures(across)).toEqual([]);
  });

  it("relays the hub's API to the nodes behind the peer: TLS end to end, the hub's certificate verified for the hub's address", { timeout: 60_000 }, async () => {
    // c1 cannot reach the hub at all, only its own ops host
    expect(await nodeNs.get('c1')!.ping('198.18.0.1', { timeoutS: 1 })).toBe(false);
    const script = [
      "const tls = require('node:tls'); const fs = require('node:fs');",
      "const s = tls.connect({ host: '198.18.1.1', port: 8444, ca: fs.readFileSync(process.argv[1]), checkServerIdentity: (h, c) => tls.checkServerIdentity('198.18.0.1', c) }, () =>",
      "  s.write('GET /v1/membership HTTP/1.1\\r\\nHost: 198.18.0.1\\r\\nConnection: close\\r\\n\\r\\n'));",
      "let d = ''; s.on('data', (c) => (d += c)); s.on('end', () => console.log(d.split('\\r\\n')[0]));",
      "s.on('error', (e) => { console.log('ERROR ' + (e.code || e.message)); process.exitCode = 1; });",
    ].join('\n');
    const r = await nodeNs.get('c1')!.exec(process.execPath, ['-e', script, join(hub.stateDir, 'api', 'ca.crt')], { allowFail: true });
    // the hub's API answered (no client certificate: refused by the API, not by TLS)
    expect(r.stdout.trim(), r.stderr).toMatch(/^HTTP\/1\.1 40[13] /);
    // `link show` on the peer reports the relay with its counters (the status snapshot is refreshed every few seconds)
    const relay = async () => ((await snapshot(peer))?.links?.['lab'] as { relay?: { accepted: number; listen: string } } | undefined)?.relay;
    expect(await waitFor(async () => ((await relay())?.accepted ?? 0) >= 1, 20_000, 500), JSON.stringify(await relay())).toBe(true);
    expect(await relay()).toMatchObject({ listen: '198.18.1.1:8444', target: '198.18.0.1:8443', refused: 0 });
  });

  it('keeps an idle link up: 30 s without a frame across it, no reconnect, and the first frame afterwards gets through', { timeout: 120_000 }, async () => {
    // An idle link hears only the hub server's own pings (every KEEPALIVE.interval s); a link client that gives
    // up after as long as that flaps, and a frame sent at that moment is lost.
    const reconnects = () => daemons[1]!.log().split('\n').filter((l) => l.includes('link-lab: connected -> connecting')).length;
    const pid = (await snapshot(peer))!.links!['lab']!.pid!;
    const before = reconnects();
    await new Promise((r) => setTimeout(r, 30_000));
    expect(reconnects(), logs()).toBe(before);
    expect((await snapshot(peer))!.links!['lab']).toMatchObject({ state: 'connected', pid });
    expect(await pings('c1', 'b1'), logs()).toBe(true);
  });

  it("brings the link's openvpn back after kill -9 on the peer side; C's nodes keep talking meanwhile", { timeout: 240_000 }, async () => {
    const pid = (await snapshot(peer))!.links!['lab']!.pid!;
    expect(pid).toBeGreaterThan(0);
    process.kill(pid, 'SIGKILL');
    // Same side undisturbed: c1 and c2 meet on C's own server, not through the link.
    expect(await pings('c1', 'c2')).toBe(true);
    const back = await waitFor(async () => {
      const l = (await snapshot(peer))?.links?.['lab'];
      return l?.state === 'connected' && l.pid !== undefined && l.pid !== pid;
    }, 60_000);
    expect(back, logs()).toBe(true);
    expect(await waitFor(async () => (await pings('c1', 'b1')) && (await pings('b2', 'c2')), 60_000, 1_000)).toBe(true);
  });

  it("reconnects the link after kill -9 of the hub's server; C's nodes are never disturbed", { timeout: 300_000 }, async () => {
    const pid = (await snapshot(hub))!.networks['lab']!.pid!;
    process.kill(pid, 'SIGKILL');
    expect(await pings('c2', 'c1')).toBe(true);
    const back = await waitFor(async () => {
      const n = (await snapshot(hub))?.networks['lab'];
      return n?.state === 'connected' && n.pid !== pid;
    }, 60_000);
    expect(back, logs()).toBe(true);
    expect(await pings('c2', 'c1')).toBe(true);
    // The link notices within its 25 s ping-restart; B's nodes within their 60 s one.
    expect(await waitFor(async () => (await pings('c1', 'b1')) && (await pings('c2', 'b2')), 180_000, 1_000), logs()).toBe(true);
  });

  it("follows the hub's trust-anchor rotation: the peer's link moves to the new anchor by the signed statement, and keeps syncing (next test)", { timeout: 60_000 }, async () => {
    const anchorOfLink = async () => (await peer.json<{ peer: { network: string; hub: { anchor: string } }[] }>(['link', 'show', 'lab'])).peer[0]?.hub.anchor;
    const before = (await readFile(join(hub.stateDir, 'trust-anchor'), 'utf8')).trim();
    expect(await anchorOfLink()).toBe(before);
    const rotated = await hub.json<{ trust_anchor: string; previous: string; version: number }>(['anchor', 'rotate']);
    expect(rotated.previous).toBe(before);
    const followed = await waitFor(async () => (await anchorOfLink()) === rotated.trust_anchor, 30_000, 250);
    expect(followed, logs()).toBe(true);
    expect(daemons[1]!.log()).toContain(`lab: the hub rotated its trust anchor (statement ${rotated.version}); this link now trusts ${rotated.trust_anchor}`);
    // And once more: the link walks on from the anchor it holds now.
    const again = await hub.json<{ trust_anchor: string }>(['anchor', 'rotate']);
    expect(await waitFor(async () => (await anchorOfLink()) === again.trust_anchor, 30_000, 250), logs()).toBe(true);
    expect((await snapshot(peer))?.links?.['lab']?.sync).toMatchObject({ ok: true });
  });

  it('refuses a node revoked at the hub at the peer too, within seconds (and at the hub)', { timeout: 180_000 }, async () => {
    expect(await pings('c2', 'c1')).toBe(true);
    await hub.run(['node', 'revoke', 'c2', '--network', 'lab']);
    // The peer copies the hub's state every ~2 s, removes c2's ccd file, takes the new CRL and kills the session.
    const out = await waitFor(async () => !(await pings('c2', 'c1')), 30_000, 500);
    expect(out, logs()).toBe(true);
    const ccd = await readFile(join(peer.stateDir, 'networks', 'lab', 'ccd', 'c2'), 'utf8').catch(() => 'gone');
    expect(ccd).toBe('gone');
    // It keeps retrying and stays out; c1 is untouched.
    await new Promise((r) => setTimeout(r, 8_000));
    expect(await pings('c2', 'c1')).toBe(false);
    expect((await snapshot(peer))?.networks['lab']?.clients.map((c) => c.cn)).not.toContain('c2');
    expect(await pings('c1', 'b1'), logs()).toBe(true);
    // And at the hub's own server.
    await hub.run(['node', 'revoke', 'b2', '--network', 'lab']);
    expect(await waitFor(async () => !(await pings('b2', 'b1')), 30_000, 500)).toBe(true);
    expect(await pings('b1', 'c1')).toBe(true);
  });

  it("rotation and removal at the hub reach the peer: c1's old certificate is thrown out, its new bundle works there; once removed it is out", { timeout: 240_000 }, async () => {
    expect(await pings('c1', 'b1')).toBe(true);
    // Rotation: a new export supersedes c1's certificate (the old serial goes on the hub's CRL, the peer copies it).
    const rotated = join(hub.dir, 'c1-rotated.tar.gz');
    await hub.run(['export', 'c1', '--network', 'lab', '--out', rotated]);
    expect(await waitFor(async () => !(await pings('c1', 'b1')), 30_000, 500), `old c1 session still up at the peer\n${logs()}`).toBe(true);
    await clients.get('c1')!.stop();
    const work = await tmpDir('fed-c1-rotated');
    dirs.push(work);
    clients.set('c1', await startVpnClient(nodeNs.get('c1')!, { bundlePath: rotated, anchorPath: join(hub.stateDir, 'trust-anchor'), node: 'c1', workDir: work.path }));
    expect(await waitFor(async () => pings('c1', 'b1'), 90_000, 1_000), `c1 with its rotated bundle never came back at the peer\n${clients.get('c1')!.output().slice(-2000)}`).toBe(true);
    // Removal: gone from the hub's network, so gone at the peer too (its ccd file, then its session).
    await hub.run(['node', 'remove', 'c1', '--network', 'lab']);
    expect(await waitFor(async () => !(await pings('c1', 'b1')), 30_000, 500), logs()).toBe(true);
    expect(await readFile(join(peer.stateDir, 'networks', 'lab', 'ccd', 'c1'), 'utf8').catch(() => 'gone')).toBe('gone');
    const gone = await waitFor(async () => !(await snapshot(peer))?.networks['lab']?.clients.some((c) => c.cn === 'c1'), 30_000, 500);
    expect(gone, `peer still lists c1: ${JSON.stringify((await snapshot(peer))?.networks['lab']?.clients)}\n${clients.get('c1')!.output().slice(-3000)}\n${logs()}`).toBe(true);
    await new Promise((r) => setTimeout(r, 5_000));
    expect(await pings('c1', 'b1')).toBe(false);
    // b1 is still on the segment
    expect((await snapshot(hub))?.networks['lab']?.clients.map((c) => c.cn)).toContain('b1');
  });
});
