/**
 * Federation commands on real state directories, without daemons: the
 * signed link bundle (verified with the hub's anchor, refused with another),
 * the peer's mirror (hub subnet and port, nothing issuable there), the
 * reserved peer node ids, `link show`/`remove` on both sides, the peer
 * following the hub's anchor chain (followHubAnchor), and `server plan`
 * with and without `--apply`.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serializeChain } from '../../src/bundle/anchor-chain.ts';
import { MvpnError } from '../../src/errors.ts';
import { readChain } from '../../src/server/anchor-rotation.ts';
import { followHubAnchor } from '../../src/server/federation/links.ts';
import { cli, makeServer, withContext, type TestServer } from '../helpers/server-fixtures.ts';

const FIXTURES = resolve(import.meta.dirname, '../fixtures');

describe('server link and plan commands', () => {
  let hub: TestServer;
  let peer: TestServer;
  let other: TestServer;
  beforeAll(async () => {
    hub = await makeServer({ label: 'lhub', address: '198.18.0.1', listen: '198.18.0.1:8443' });
    peer = await makeServer({ label: 'lpeer', address: '198.18.1.1' });
    other = await makeServer({ label: 'lother' });
    await hub.run(['network', 'create', 'lab', '--remote', '198.18.0.1']);
  });
  afterAll(async () => {
    await hub.remove();
    await peer.remove();
    await other.remove();
  });

  it('exports a signed link bundle that only the hub anchor opens, and the peer mirrors the hub network', async () => {
    const file = join(hub.dir, 'link.json');
    const ex = await hub.json<{ cn: string; address: string; api_url: string }>(['link', 'export', 'lab', '--peer', 'c', '--out', file]);
    expect(ex).toMatchObject({ cn: 'mvpn-peer-c', api_url: 'https://198.18.0.1:8443' });
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const again = await cli(['server', 'link', 'export', 'lab', '--peer', 'c', '--out', join(hub.dir, 'l2.json'), '--state-dir', hub.stateDir, '--json']);
    expect(again.json<{ error: { code: string } }>().error.code).toBe('MVPN_ALREADY_EXISTS');

    const wrong = await cli(['server', 'link', 'add', file, '--hub-anchor', `@${join(other.stateDir, 'trust-anchor')}`, '--state-dir', peer.stateDir, '--json']);
    expect(wrong.json<{ error: { code: string } }>().error.code).toBe('MVPN_SIGNATURE_INVALID');
    const tampered = JSON.parse(await readFile(file, 'utf8')) as { payload: string };
    const inner = JSON.parse(Buffer.from(tampered.payload, 'base64').toString('utf8')) as { peer: { address: string } };
    inner.peer.address = '198.19.0.99';
    tampered.payload = Buffer.from(JSON.stringify(inner)).toString('base64');
    await writeFile(join(hub.dir, 'tampered.json'), JSON.stringify(tampered));
    const bad = await cli(['server', 'link', 'add', join(hub.dir, 'tampered.json'), '--hub-anchor', `@${join(hub.stateDir, 'trust-anchor')}`, '--state-dir', peer.stateDir, '--json']);
    expect(bad.json<{ error: { code: string } }>().error.code).toBe('MVPN_SIGNATURE_INVALID');
    expect((await peer.json<unknown[]>(['network', 'list'])).length).toBe(0);

    const hubNet = await hub.json<{ subnet: string; port: number }>(['network', 'show', 'lab']);
    const added = await peer.json<{ network: string; subnet: string; port: number; address: string }>(['link', 'add', file, '--hub-anchor', `@${join(hub.stateDir, 'trust-anchor')}`]);
    expect(added).toMatchObject({ network: 'lab', subnet: hubNet.subnet, port: hubNet.port, address: ex.address });

    // Nothing can be issued or changed at the mirror: the hub is the authority.
    for (const args of [
      ['node', 'add', 'x1', '--network', 'lab'],
      ['export', 'x1', '--network', 'lab', '--out', join(peer.dir, 'x.tar.gz')],
    ]) {
      const r = await cli(['server', ...args, '--state-dir', peer.stateDir, '--json']);
      expect(r.json<{ error: { code: string; message: string } }>().error.message, args.join(' ')).toMatch(/mirror|not in network/);
    }
    // Peer ids are reserved for links.
    const reserved = await cli(['server', 'node', 'add', 'mvpn-peer-z', '--network', 'lab', '--state-dir', hub.stateDir, '--json']);
    expect(reserved.json<{ error: { code: string } }>().error.code).toBe('MVPN_USAGE');

    const shownPeer = await peer.json<{ peer: { network: string; peer: string; runtime: unknown }[]; hub: unknown[] }>(['link', 'show']);
    expect(shownPeer.peer.map((l) => [l.network, l.peer, l.runtime])).toEqual([['lab', 'c', null]]);
    const shownHub = await hub.json<{ peer: unknown[]; hub: { network: string; peer: string; state: string }[] }>(['link', 'show']);
    expect(shownHub.hub.map((l) => [l.network, l.peer, l.state])).toEqual([['lab', 'c', 'active']]);

    // Removing: the peer drops its mirror; the hub revokes the peer's certificate and frees its address.
    await peer.run(['link', 'remove', 'lab']);
    expect((await peer.json<unknown[]>(['network', 'list'])).length).toBe(0);
    const crlBefore = (await hub.json<{ crl: { number: number } }>(['network', 'show', 'lab'])).crl.number;
    await hub.run(['link', 'remove', 'lab', '--peer', 'c']);
    expect((await hub.json<{ crl: { number: number } }>(['network', 'show', 'lab'])).crl.number).toBe(crlBefore + 1);
    expect((await hub.json<{ hub: unknown[] }>(['link', 'show'])).hub).toEqual([]);
  });

  it('prints a plan as a table and JSON, refuses a bad description, and applies the local part idempotently', async () => {
    const file = join(FIXTURES, 'experiment-two-private.json');
    const text = await cli(['server', 'plan', file]);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/lan0\s+c\s+b\s+203\.0\.113\.2/);
    const j = (await cli(['server', 'plan', file, '--json'])).json<{ links: { peer: string }[] }>();
    expect(j.links.map((l) => l.peer)).toEqual(['c']);

    const broken = join(hub.dir, 'broken.json');
    await writeFile(broken, JSON.stringify({ testbeds: [{ name: 'b', nodes: 'private' }], nodes: [{ name: 'b1', testbed: 'b' }], lans: [{ name: 'l', members: ['b1'] }] }));
    const r = await cli(['server', 'plan', broken, '--json']);
    expect(r.code).not.toBe(0);
    expect(r.json<{ error: { code: string; message: string } }>().error.message).toMatch(/node b1 is private, but its testbed b has no server/);

    const applied = await other.json<{ steps: { action: string; node?: string; detail: string }[]; left: string[] }>([
      'plan', file, '--apply', '--server', 'b', '--links-dir', other.dir, '--api-url', 'https://203.0.113.2:8443',
    ]);
    expect(applied.steps.map((s) => s.action)).toEqual(['network-created', 'network-up', ...Array(6).fill('node-added'), 'link-exported']);
    const nodes = await other.json<{ node: string; memberships: { address: string; remotes: { host: string }[] | null }[] }[]>(['node', 'list', '--network', 'lan0']);
    expect(Object.fromEntries(nodes.map((n) => [n.node, (n.memberships[0]!.remotes ?? []).map((x) => x.host).join()]))).toMatchObject({
      b1: '198.18.2.1',
      c1: '198.18.3.1',
      'mvpn-peer-c': '',
    });
    await stat(join(other.dir, 'link-lan0-c.json'));
    const again = await other.json<{ steps: { action: string }[] }>(['plan', file, '--apply', '--server', 'b']);
    expect(again.steps.map((s) => s.action)).toEqual(['network-exists', ...Array(6).fill('node-remotes-set')]);
  });

  it("a link follows the hub's anchor chain by its signatures: a forged statement is refused and the anchor stays", async () => {
    const file = join(hub.dir, 'link-d.json');
    await hub.run(['link', 'export', 'lab', '--peer', 'd', '--out', file]);
    const first = (await readFile(join(hub.stateDir, 'trust-anchor'), 'utf8')).trim();
    await peer.run(['link', 'add', file, '--hub-anchor', first]);
    const linkAnchor = async () => (await peer.json<{ peer: { hub: { anchor: string } }[] }>(['link', 'show', 'lab'])).peer[0]!.hub.anchor;
    const hubChain = async () => withContext(hub.stateDir, async (ctx) => readChain(ctx.paths));
    const follow = (chain: readonly Uint8Array[]) => withContext(peer.stateDir, async (ctx) => followHubAnchor(ctx, 'lab', serializeChain(chain)));

    // No rotation yet: nothing moves.
    expect(await follow(await hubChain())).toBeUndefined();
    const r1 = await hub.json<{ trust_anchor: string }>(['anchor', 'rotate']);
    const r2 = await hub.json<{ trust_anchor: string }>(['anchor', 'rotate']);
    const chain = await hubChain();
    expect(chain).toHaveLength(2);

    // The second statement with its payload changed (a forged successor of r1): refused once the link holds r1.
    const env = JSON.parse(chain[1]!.toString('utf8')) as { payload: string };
    const payload = JSON.parse(Buffer.from(env.payload, 'base64').toString('utf8')) as { serial_floor: number };
    const forged = Buffer.from(JSON.stringify({ ...env, payload: Buffer.from(JSON.stringify({ ...payload, serial_floor: payload.serial_floor + 1 })).toString('base64') }));
    expect(await follow([chain[0]!])).toEqual({ from: first, to: r1.trust_anchor, version: 2 });
    expect(await linkAnchor()).toBe(r1.trust_anchor);
    const err = (await follow([chain[0]!, forged]).catch((e: unknown) => e)) as MvpnError;
    expect(err).toBeInstanceOf(MvpnError);
    expect(err.code).toBe('MVPN_ANCHOR_STATEMENT_INVALID');
    expect(await linkAnchor()).toBe(r1.trust_anchor);
    // Another server's chain does not concern this link at all.
    await other.run(['anchor', 'rotate']);
    const otherChain = await withContext(other.stateDir, async (ctx) => readChain(ctx.paths));
    expect(otherChain).toHaveLength(1);
    expect(await follow(otherChain)).toBeUndefined();
    // The real chain: on to r2, from the anchor the link holds now.
    expect(await follow(chain)).toEqual({ from: r1.trust_anchor, to: r2.trust_anchor, version: 3 });
    expect(await linkAnchor()).toBe(r2.trust_anchor);
    await peer.run(['link', 'remove', 'lab']);
  });
});
