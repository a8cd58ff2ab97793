/**
 * `server plan --apply --servers FILE` on real state directories: the plan
 * carried out on every server it names through their admin commands (here
 * `node src/main.ts server --state-dir DIR`, the same argv shape as `ssh ops
 * mvpn-client server`), with link bundles travelling on stdout/stdin.
 *
 * Proves: what each server holds afterwards is what the plan says (hub,
 * subnet, addresses, each node's remote; the peer's link and port); a rerun
 * changes nothing (no bundle version moves); a peer whose port is taken gets
 * another and the nodes behind it get that port; missing or malformed
 * servers files and a failing server are refused with messages naming them.
 * The daemons are not started: applying is state, running is tested in
 * server-federation.test.ts and the demo.
 */
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cli, makeServer, type TestServer } from '../helpers/server-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const admin = (s: TestServer) => ({ command: [process.execPath, join(ROOT, 'src/main.ts'), 'server', '--state-dir', s.stateDir] });
/** The test servers' APIs listen on 127.0.0.1:0, so a hub's file entry says where peers reach it. */
const HUB_API = 'https://198.18.0.1:8443';

const B = { public: '198.18.0.1', internal: '198.18.1.1' };
const C = { public: '198.18.0.2', internal: '198.18.2.1' };

/** Topology 2: testbeds b and c both private; b has more of the LAN's nodes and hosts it. */
const federated = {
  testbeds: [
    { name: 'b', nodes: 'private', ops: B },
    { name: 'c', nodes: 'private', ops: C },
  ],
  nodes: [
    { name: 'b1', testbed: 'b' },
    { name: 'b2', testbed: 'b' },
    { name: 'b3', testbed: 'b' },
    { name: 'c1', testbed: 'c' },
    { name: 'c2', testbed: 'c' },
  ],
  lans: [{ name: 'lan', subnet: '198.19.4.0/24', members: ['b1', 'b2', 'b3', 'c1', { node: 'c2', address: '198.19.4.77' }] }],
};

/** Topology 1: public testbed a, private b with the server. */
const publicPrivate = {
  testbeds: [
    { name: 'a', nodes: 'public' },
    { name: 'b', nodes: 'private', ops: B },
  ],
  nodes: [
    { name: 'a1', testbed: 'a' },
    { name: 'b1', testbed: 'b' },
  ],
  lans: [{ name: 'lan', members: ['a1', 'b1'] }],
};

interface Member {
  node: string;
  address: string;
  bundle_version: number;
  remotes: { host: string; port: number }[] | null;
}
interface PlanOut {
  plan: { lans: { hub: string; members: { node: string; server: string; remote: string; address: string | null; api_via: string | null }[] }[] };
  steps: { server: string; action: string; node?: string; detail: string }[];
}

describe('server plan --apply --servers: one plan, every server', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0)) await c();
  });

  async function setUp(servers: readonly (readonly [string, typeof B])[], experiment: unknown) {
    const dir = await tmpDir('plan-apply');
    cleanup.push(dir.remove);
    const made = new Map<string, TestServer>();
    for (const [name, ops] of servers) {
      const s = await makeServer({ label: `srv-${name}`, address: ops.public, extra: ['--address', ops.internal] });
      cleanup.push(s.remove);
      made.set(name, s);
    }
    const expFile = join(dir.path, 'experiment.json');
    const serversFile = join(dir.path, 'servers.json');
    await writeFile(expFile, JSON.stringify(experiment));
    await writeFile(serversFile, JSON.stringify({ servers: Object.fromEntries([...made].map(([n, s]) => [n, { ...admin(s), api_url: HUB_API }])) }));
    return { dir: dir.path, made, expFile, serversFile };
  }

  const members = async (s: TestServer, network: string) =>
    new Map((await s.json<{ members: Member[] }>(['network', 'show', network])).members.map((m) => [m.node, m]));

  it('topology 2: the hub holds every node as planned, the peer holds the link, nodes behind it use its port; a rerun changes nothing', { timeout: 300_000 }, async () => {
    const { made, expFile, serversFile } = await setUp([['b', B], ['c', C]], federated);
    const hub = made.get('b')!;
    const peer = made.get('c')!;
    const r = await cli(['server', 'plan', expFile, '--apply', '--servers', serversFile, '--json']);
    expect(r.code, r.err).toBe(0);
    const out = r.json<PlanOut>();
    const lan = out.plan.lans[0]!;
    expect(lan.hub).toBe('b');
    expect(out.steps.map((s) => `${s.server} ${s.action}`)).toEqual(
      expect.arrayContaining(['b network-created', 'b network-up', 'b link-exported', 'c link-added', 'b node-remotes-set']),
    );

    const net = await hub.json<{ state: string; subnet: string; port: number }>(['network', 'show', 'lan']);
    expect(net.state).toBe('up');
    expect(net.subnet).toBe('198.19.4.0/24');
    const peerNet = await peer.json<{ port: number; subnet: string }>(['network', 'show', 'lan']);
    expect(peerNet.subnet).toBe('198.19.4.0/24');
    const atHub = await members(hub, 'lan');
    for (const m of lan.members) {
      const have = atHub.get(m.node)!;
      expect(have, m.node).toBeDefined();
      if (m.address) expect(have.address).toBe(m.address);
      // nodes of the hub's own testbed use the network's port (no port of their own); those behind the peer, the peer's
      const want = m.server === 'b' ? { host: B.internal } : { host: C.internal, port: peerNet.port };
      expect(have.remotes, m.node).toEqual([want]);
    }
    expect(atHub.get('c2')!.address).toBe('198.19.4.77');
    expect(atHub.has('mvpn-peer-c')).toBe(true);
    const links = await peer.json<{ peer: { network: string; hub: { anchor: string }; relay: unknown }[] }>(['link', 'show']);
    expect(links.peer.map((l) => l.network)).toEqual(['lan']);
    // the peer relays the hub's API on its internal address for the nodes behind it (the plan's api_via)
    expect(links.peer[0]!.relay).toEqual({ listen: `${C.internal}:8444`, to: '198.18.0.1:8443' });
    for (const m of lan.members) expect(m.api_via, m.node).toBe(m.server === 'c' ? C.internal : null);
    expect(links.peer[0]!.hub).toMatchObject({ anchor: (await hub.run(['anchor'])).out.trim(), api_url: HUB_API });

    const versions = new Map([...atHub].map(([n, m]) => [n, m.bundle_version]));
    const again = await cli(['server', 'plan', expFile, '--apply', '--servers', serversFile, '--json']);
    expect(again.code, again.err).toBe(0);
    const actions = again.json<PlanOut>().steps.map((s) => s.action);
    expect(actions).not.toContain('network-created');
    expect(actions).not.toContain('link-added');
    expect(actions).toContain('link-present');
    for (const s of again.json<PlanOut>().steps.filter((x) => x.action === 'node-remotes-set')) expect(s.detail).toContain('(unchanged)');
    const after = await members(hub, 'lan');
    for (const [n, v] of versions) expect(after.get(n)!.bundle_version, n).toBe(v);
  });

  it('topology 2 as Layer 3: the hub\'s network is tun, the peer mirrors it as tun through a link, nodes behind it use its port', { timeout: 300_000 }, async () => {
    const l3 = { ...federated, lans: federated.lans.map((l) => ({ ...l, layer: 3 })) };
    const { made, expFile, serversFile } = await setUp([['b', B], ['c', C]], l3);
    const hub = made.get('b')!;
    const peer = made.get('c')!;
    const r = await cli(['server', 'plan', expFile, '--apply', '--servers', serversFile, '--json']);
    expect(r.code, r.err).toBe(0);
    expect(r.json<PlanOut>().steps.map((s) => `${s.server} ${s.action}`)).toEqual(expect.arrayContaining(['b network-created', 'b link-exported', 'c link-added', 'b node-remotes-set']));
    expect(await hub.json<{ dev_type: string; state: string }>(['network', 'show', 'lan'])).toMatchObject({ dev_type: 'tun', state: 'up' });
    const peerNet = await peer.json<{ dev_type: string; port: number; kind?: string }>(['network', 'show', 'lan']);
    expect(peerNet.dev_type).toBe('tun');
    const atHub = await members(hub, 'lan');
    expect(atHub.get('c1')!.remotes).toEqual([{ host: C.internal, port: peerNet.port }]);
    expect(atHub.has('mvpn-peer-c')).toBe(true);
  });

  it('Layer 3 with a public testbed that runs a server: it joins as a peer without an API relay (its nodes reach the hub directly)', { timeout: 300_000 }, async () => {
    const A = { public: '198.18.0.3', internal: '198.18.3.1' };
    const experiment = {
      testbeds: [
        { name: 'a', nodes: 'public', ops: A },
        { name: 'b', nodes: 'private', ops: B },
      ],
      nodes: [
        { name: 'a1', testbed: 'a' },
        { name: 'b1', testbed: 'b' },
        { name: 'b2', testbed: 'b' },
      ],
      lans: [{ name: 'lan', layer: 3, members: ['a1', 'b1', 'b2'] }],
    };
    const { made, expFile, serversFile } = await setUp([['a', A], ['b', B]], experiment);
    const r = await cli(['server', 'plan', expFile, '--apply', '--servers', serversFile, '--json']);
    expect(r.code, r.err).toBe(0);
    const out = r.json<PlanOut>();
    expect(out.plan.lans[0]!.hub).toBe('b');
    // the plan sends a1 to the hub's API directly, so a relay at a would serve no node
    expect(out.plan.lans[0]!.members.find((m) => m.node === 'a1')).toMatchObject({ server: 'a', api_via: null });
    const added = out.steps.find((s) => s.action === 'link-added');
    expect(added, JSON.stringify(out.steps)).toMatchObject({ server: 'a' });
    expect(added!.detail).toContain('no API relay');
    const links = await made.get('a')!.json<{ peer: { network: string; relay: unknown }[] }>(['link', 'show']);
    expect(links.peer).toEqual([expect.objectContaining({ network: 'lan', relay: null })]);
  });

  it("topology 2 with the peer's port taken: the link's server gets another port and the nodes behind the peer get it", { timeout: 120_000 }, async () => {
    const { made, expFile, serversFile } = await setUp([['b', B], ['c', C]], federated);
    const hub = made.get('b')!;
    const peer = made.get('c')!;
    // c already runs a network of its own on the first port of the range, which the hub's network also gets
    await peer.run(['network', 'create', 'own', '--subnet', '198.19.9.0/24']);
    const r = await cli(['server', 'plan', expFile, '--apply', '--servers', serversFile, '--json']);
    expect(r.code, r.err).toBe(0);
    const hubPort = (await hub.json<{ port: number }>(['network', 'show', 'lan'])).port;
    const peerPort = (await peer.json<{ port: number }>(['network', 'show', 'lan'])).port;
    expect(peerPort).not.toBe(hubPort);
    const atHub = await members(hub, 'lan');
    for (const n of ['c1', 'c2']) expect(atHub.get(n)!.remotes).toEqual([{ host: C.internal, port: peerPort }]);
    for (const n of ['b1', 'b2', 'b3']) expect(atHub.get(n)!.remotes).toEqual([{ host: B.internal }]);
  });

  it('topology 1: one server; public nodes use its public address, private ones its internal address', { timeout: 60_000 }, async () => {
    const { made, expFile, serversFile } = await setUp([['b', B]], publicPrivate);
    const r = await cli(['server', 'plan', expFile, '--apply', '--servers', serversFile]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('applied:');
    const atHub = await members(made.get('b')!, 'lan');
    expect(atHub.get('a1')!.remotes).toEqual([{ host: B.public }]);
    expect(atHub.get('b1')!.remotes).toEqual([{ host: B.internal }]);
    expect(r.out).not.toMatch(/link-(exported|added)/);
  });

  it('refuses a servers file that misses a server of the plan, or is malformed, naming what is wrong; changes nothing', { timeout: 60_000 }, async () => {
    const { dir, made, expFile } = await setUp([['b', B]], federated);
    const onlyB = join(dir, 'only-b.json');
    await writeFile(onlyB, JSON.stringify({ servers: { b: admin(made.get('b')!) } }));
    const r = await cli(['server', 'plan', expFile, '--apply', '--servers', onlyB, '--json']);
    expect(r.code).toBe(2);
    expect(r.json<{ error: { code: string; message: string } }>().error).toMatchObject({ code: 'MVPN_USAGE', message: expect.stringContaining('no admin command for c') });
    expect((await made.get('b')!.json<unknown[]>(['network', 'list'])).length).toBe(0);

    for (const [content, says] of [
      [{ servers: { b: { command: [] } } }, 'servers.b.command'],
      [{ servers: { b: { command: ['x'], extra: 1 } } }, 'servers.b'],
      [{ servers: { B: { command: ['x'] } } }, 'testbed names'],
      [{ hosts: {} }, 'servers'],
    ] as const) {
      const f = join(dir, 'bad.json');
      await writeFile(f, JSON.stringify(content));
      const bad = await cli(['server', 'plan', expFile, '--apply', '--servers', f]);
      expect(bad.code, JSON.stringify(content)).toBe(2);
      expect(bad.err).toContain(says);
    }
    const both = await cli(['server', 'plan', expFile, '--apply', '--servers', onlyB, '--server', 'b']);
    expect(both.code).toBe(2);
    expect(both.err).toContain('not both');
  });

  it("reports a failing server by name and command, with that server's own error", { timeout: 60_000 }, async () => {
    const { dir, made, expFile } = await setUp([['b', B]], federated);
    const f = join(dir, 'servers.json');
    // c's admin command points at a state directory that was never initialised
    await writeFile(f, JSON.stringify({ servers: { b: admin(made.get('b')!), c: { command: [process.execPath, join(ROOT, 'src/main.ts'), 'server', '--state-dir', join(dir, 'nothing')] } } }));
    const r = await cli(['server', 'plan', expFile, '--apply', '--servers', f, '--json']);
    expect(r.code).not.toBe(0);
    const e = r.json<{ error: { code: string; message: string } }>().error;
    expect(e.code).toBe('MVPN_CONFIG_MISSING');
    expect(e.message).toMatch(/^server c: mvpn-client server link show lan failed: /);
  });
});

describe('server anchor, link export --out=- and link add -', () => {
  it('carry the anchor and the link bundle through stdout and stdin', { timeout: 60_000 }, async () => {
    const hub = await makeServer({ label: 'anchor-hub', address: B.public });
    const peer = await makeServer({ label: 'anchor-peer', address: C.public });
    try {
      const anchor = (await hub.run(['anchor'])).out.trim();
      expect(anchor).toMatch(/^ed25519:[A-Za-z0-9+/]{43}=$/);
      expect((await hub.json<{ trust_anchor: string }>(['anchor'])).trust_anchor).toBe(anchor);
      await hub.run(['network', 'create', 'lan', '--subnet', '198.19.5.0/24']);
      const bundle = (await hub.run(['link', 'export', 'lan', '--peer', 'c', '--out=-', '--api-url', 'https://198.18.0.1:8443'])).out;
      expect(JSON.parse(bundle)).toBeTypeOf('object');
      const { main } = await import('../../src/cli/main.ts');
      const { bufferIo } = await import('../../src/cli/io.ts');
      const io = bufferIo({}, Buffer.from(bundle));
      expect(await main(['server', 'link', 'add', '-', '--hub-anchor', anchor, '--json', '--state-dir', peer.stateDir], io), io.err()).toBe(0);
      expect(JSON.parse(io.out())).toMatchObject({ network: 'lan', peer: 'c', subnet: '198.19.5.0/24' });
      // a wrong anchor on stdin's bundle is refused
      const other = await makeServer({ label: 'anchor-other', address: C.public });
      try {
        const io2 = bufferIo({}, Buffer.from(bundle));
        const wrong = (await other.run(['anchor'])).out.trim();
        expect(await main(['server', 'link', 'add', '-', '--hub-anchor', wrong, '--state-dir', other.stateDir], io2)).not.toBe(0);
        expect(io2.err()).toContain('MVPN_SIGNATURE_INVALID');
        const io3 = bufferIo({}, Buffer.alloc(0));
        expect(await main(['server', 'link', 'add', '-', '--hub-anchor', anchor, '--state-dir', other.stateDir], io3)).toBe(2);
        expect(io3.err()).toContain('standard input is empty');
      } finally {
        await other.remove();
      }
    } finally {
      await hub.remove();
      await peer.remove();
    }
  });
});
