/**
 * The whole system end to end, on the BUILT executable (dist/mvpn-client) in
 * every role: the demo's two-testbed topology (src/demo/world.ts, the same
 * code `mvpn-client demo` runs) with 2 public and 2 private nodes, server
 * mode on B-ops, one agent per node. The steps run in order on one world:
 * enrollment, join, bundle rotation, server restart, a partition and its
 * healing, an agent restart under load, revocation. Changes are made with
 * the server CLI, as an operator would; nothing internal is called.
 * Timeouts are generous bounds against hangs, never assertions on speed.
 */
import { spawn } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentStatus, NetworkStatus } from '../../src/agent/status.ts';
import { NETWORK_ID, World } from '../../src/demo/world.ts';
import { OPS_PRIVATE, OPS_PUBLIC, publicPrivate, segmentOf } from '../../src/demo/topology.ts';
import { namespacesWithPrefix } from '../../src/netns/lab.ts';
import { Lab, waitFor } from '../helpers/netns.ts';
import { tmpDir } from '../helpers/tmp.ts';
import { builtBinary } from './binary.ts';

const IDS = ['a1', 'a2', 'b1', 'b2'];
let world: World;
let lab: Lab;
let dir: { path: string; remove: () => Promise<void> };

const net = (s: AgentStatus | undefined): NetworkStatus | undefined => s?.networks.find((n) => n.id === NETWORK_ID);

async function statusOf(id: string): Promise<AgentStatus> {
  const s = await world.status(id);
  if (!s) throw new Error(`${id}: the agent does not answer`);
  return s;
}

/** Every ordered pair among `ids` pings (a retry per pair: the first may go to ARP). */
async function allPairsPing(ids: readonly string[], timeoutMs = 60_000): Promise<string[]> {
  let failed: string[] = [];
  await waitFor(async () => {
    const m = await world.pingMatrix(ids, await world.vpnAddresses(ids));
    failed = m.filter((p) => !p.ok).map((p) => `${p.from}->${p.to}`);
    return failed.length === 0;
  }, timeoutMs, 1_000);
  return failed;
}

async function reload(id: string): Promise<void> {
  const r = await world.cli(['reload', '--runtime-dir', world.runtimeDir(id)], world.node(id).ns);
  expect(r.code, `${id} reload: ${r.stderr}`).toBe(0);
}

describe('mvpn-client end to end (built binary, two testbeds)', () => {
  beforeAll(async () => {
    const bin = builtBinary();
    dir = await tmpDir('e2e');
    lab = new Lab();
    world = new World({ lab, bin: [bin], dir: join(dir.path, 'world'), testbeds: publicPrivate(2, 2), reconcileIntervalS: 300 });
    await world.buildTopology();
    await world.setUpServers();
    await world.startServers();
  }, 300_000);

  afterAll(async () => {
    await world?.stopAll();
    expect(await namespacesWithPrefix(lab.prefix)).toEqual([]);
    await dir?.remove();
  }, 120_000);

  it('enrollment: every node enrolls with the one-time token from its startup tarball; the token is consumed', async () => {
    for (const id of IDS) world.startAgent(id);
    expect(await world.waitAll(IDS, (id) => world.enrolled(id), 240_000)).toEqual([]);
    for (const id of IDS) {
      const key = await stat(join(world.stateDir(id), 'identity', 'node.key'));
      expect(key.mode & 0o777).toBe(0o600);
      // the agent removes the token after enrolling
      await expect(stat(join(world.nodeDir(id), 'etc', 'mvpn-client', 'enroll.token'))).rejects.toMatchObject({ code: 'ENOENT' });
    }
    // the server lists them as enrolled
    const list = await world.server$(['node', 'list', '--json']);
    for (const id of IDS) expect(list).toContain(`"${id}"`);
  }, 300_000);

  it('join: all nodes connected (A via the public address, B via the private one), every pair pings, one L2 segment', async () => {
    expect(await world.waitAll(IDS, (id) => world.connected(id), 240_000)).toEqual([]);
    for (const id of IDS) {
      const n = net(await statusOf(id))!;
      expect(n.state).toBe('connected');
      expect(n.server).toMatch(new RegExp(`^${(id.startsWith('a') ? OPS_PUBLIC : OPS_PRIVATE).replaceAll('.', '\\.')}:`));
      const table = await world.statusTable(id);
      expect(table.code, table.stderr).toBe(0);
    }
    // B's nodes have no way to the internet segment: only through their ops host's private address
    expect(await world.node('b1').ns.ping(OPS_PUBLIC, { timeoutS: 1 })).toBe(false);
    expect(await allPairsPing(IDS)).toEqual([]);
    const proof = await world.neighbourProof(IDS, await world.vpnAddresses(IDS));
    for (const p of proof) expect(p.missing, `${p.node}'s neighbour table`).toEqual([]);
  }, 300_000);

  it('bundle rotation: new remotes for one node bump its bundle version; its agent installs it and stays connected', async () => {
    const before = net(await statusOf('a1'))!;
    const others = new Map(await Promise.all(['a2', 'b1'].map(async (id) => [id, net(await statusOf(id))!] as const)));
    await world.server$(['node', 'set-remotes', 'a1', '--network', NETWORK_ID, '--remote', OPS_PUBLIC, '--remote', OPS_PRIVATE]);
    await reload('a1');
    let after: NetworkStatus | undefined;
    expect(
      await waitFor(async () => {
        after = net(await statusOf('a1'));
        return after?.state === 'connected' && (after.bundle_version ?? 0) > (before.bundle_version ?? 0);
      }, 120_000, 1_000),
      `a1 bundle ${JSON.stringify(after)}`,
    ).toBe(true);
    const spec = JSON.parse(await readFile(join(world.stateDir('a1'), 'networks', NETWORK_ID, 'network.json'), 'utf8')) as { remotes: { host: string }[] };
    expect(spec.remotes.map((r) => r.host)).toEqual([OPS_PUBLIC, OPS_PRIVATE]);
    // the others were not touched
    for (const [id, was] of others) expect(net(await statusOf(id))!.pid).toBe(was.pid);
    expect(await allPairsPing(IDS)).toEqual([]);
  }, 300_000);

  it('server daemon restart: every node comes back by itself with the same address', async () => {
    const addrs = await world.vpnAddresses(IDS);
    expect(addrs.size).toBe(IDS.length);
    await world.stopServer();
    await world.startServer();
    expect(await world.waitAll(IDS, (id) => world.connected(id), 240_000)).toEqual([]);
    expect(await allPairsPing(IDS, 180_000)).toEqual([]);
    expect(await world.vpnAddresses(IDS)).toEqual(addrs);
  }, 420_000);

  it("partition: one node's link goes down, the others carry on; when it comes back the node reconnects by itself", async () => {
    const b2 = world.node('b2');
    const segment = segmentOf(world.topology, b2);
    const before = net(await statusOf('b2'))!;
    await segment.exec('ip', ['link', 'set', b2.bridgePort, 'down']);
    try {
      // the tunnel is dead: openvpn notices by its keepalive and leaves `connected`
      expect(
        await waitFor(async () => net(await world.status('b2'))?.state !== 'connected', 180_000, 1_000),
        'b2 never noticed the partition',
      ).toBe(true);
      expect(await allPairsPing(['a1', 'a2', 'b1'])).toEqual([]);
    } finally {
      await segment.exec('ip', ['link', 'set', b2.bridgePort, 'up']);
    }
    expect(await world.waitAll(['b2'], (id) => world.connected(id), 240_000)).toEqual([]);
    expect(await allPairsPing(IDS, 120_000)).toEqual([]);
    const after = net(await statusOf('b2'))!;
    expect(after.tunnel_address).toBe(before.tunnel_address);
    expect(after.connected_since).not.toBe(before.connected_since);
  }, 600_000);

  it('agent restart under load: a steady ping between two other nodes loses nothing while one agent restarts', async () => {
    const a1 = world.node('a1');
    const b1Addr = (await world.vpnAddresses(['b1'])).get('b1')!;
    const a2Before = net(await statusOf('a2'))!;
    // ping exits only on SIGINT here; `ip netns exec` execs it, so the pid is ping's
    const ping = spawn('ip', ['netns', 'exec', a1.ns.name, 'ping', '-n', '-i', '0.05', '-W', '1', b1Addr], { stdio: ['ignore', 'pipe', 'pipe'] });
    lab.track(ping);
    let out = '';
    ping.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const done = new Promise<void>((r) => ping.once('exit', () => r()));
    try {
      expect(await waitFor(() => out.includes('bytes from'), 30_000)).toBe(true);
      const code = await world.stopAgent('a2');
      expect(code).toBe(0);
      world.startAgent('a2');
      expect(await world.waitAll(['a2'], (id) => world.connected(id), 240_000)).toEqual([]);
      await new Promise((r) => setTimeout(r, 2_000));
    } finally {
      ping.kill('SIGINT');
      await done;
    }
    const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
    expect(m, out.slice(-500)).not.toBeNull();
    const [sent, received] = [Number(m![1]), Number(m![2])];
    expect(sent).toBeGreaterThan(20);
    expect(received, `a1->b1 lost ${sent - received} of ${sent} during a2's restart`).toBe(sent);
    expect(net(await statusOf('a2'))!.tunnel_address).toBe(a2Before.tunnel_address);
    expect(await allPairsPing(IDS)).toEqual([]);
  }, 400_000);

  it('revocation: the revoked node drops and stays out (also after its agent restarts); the others are unaffected', async () => {
    const b2Addr = (await world.vpnAddresses(['b2'])).get('b2')!;
    const others = ['a1', 'a2', 'b1'];
    const before = new Map(await Promise.all(others.map(async (id) => [id, net(await statusOf(id))!] as const)));
    await world.server$(['node', 'revoke', 'b2', '--network', NETWORK_ID]);
    // the server drops its session at once; its agent learns on its next reconcile
    expect(await waitFor(async () => !(await world.node('a1').ns.ping(b2Addr, { timeoutS: 1 })), 60_000, 1_000)).toBe(true);
    await reload('b2');
    expect(await waitFor(async () => net(await world.status('b2'))?.state !== 'connected', 120_000, 1_000)).toBe(true);
    // the others pick up the new CRL without a restart of their openvpn
    for (const id of others) await reload(id);
    for (const id of others) {
      const n = net(await statusOf(id))!;
      expect(n.state).toBe('connected');
      expect(n.pid).toBe(before.get(id)!.pid);
      expect(n.bundle_version!).toBeGreaterThan(before.get(id)!.bundle_version!);
    }
    // stays out: a fresh agent on b2 does not get back in
    await world.stopAgent('b2');
    world.startAgent('b2');
    expect(await waitFor(async () => (await world.status('b2'))?.reconcile.last_at != null, 120_000, 1_000)).toBe(true);
    for (let i = 0; i < 5; i++) {
      expect(net(await world.status('b2'))?.state).not.toBe('connected');
      expect(await world.node('a1').ns.ping(b2Addr, { timeoutS: 2 })).toBe(false);
    }
    expect(await allPairsPing(others)).toEqual([]);
  }, 400_000);
});
