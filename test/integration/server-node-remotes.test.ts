/**
 * Per-node remotes: a node's own ordered remotes replace the network's in
 * that node's bundle only, are validated like network remotes, show up in
 * `node list` and `network show`, and a change gives the node's bundle a new
 * version (and only a real change does).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAnchor } from '../../src/bundle/sign.ts';
import { verifyBundle } from '../../src/bundle/verify.ts';
import { cli, makeServer, type TestServer } from '../helpers/server-fixtures.ts';

interface MemberView {
  node: string;
  bundle_version: number;
  remotes: { host: string; port?: number }[] | null;
  changed?: boolean;
}

describe('server per-node remotes', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await makeServer({ label: 'remotes' });
    await s.run(['network', 'create', 'lab', '--remote', '203.0.113.10', '--port', '1200']);
  });
  afterAll(async () => s.remove());

  async function bundleRemotes(node: string, file: string): Promise<{ host: string; port: number }[]> {
    const out = join(s.dir, file);
    await s.run(['export', node, '--network', 'lab', '--out', out]);
    const anchor = parseAnchor((await readFile(join(s.stateDir, 'trust-anchor'), 'utf8')).trim());
    const b = await verifyBundle(await readFile(out), { anchor, nodeId: node, now: new Date() });
    return b.spec.remotes;
  }

  it("puts a node's own remotes in its bundle; other nodes keep the network's", async () => {
    const a = await s.json<MemberView>(['node', 'add', 'inside', '--network', 'lab', '--remote', '198.18.0.1', '--remote', '198.18.0.2:1300']);
    expect(a.remotes).toEqual([{ host: '198.18.0.1' }, { host: '198.18.0.2', port: 1300 }]);
    await s.run(['node', 'add', 'outside', '--network', 'lab']);
    expect(await bundleRemotes('inside', 'inside-1.tar.gz')).toEqual([
      { host: '198.18.0.1', port: 1200 },
      { host: '198.18.0.2', port: 1300 },
    ]);
    expect(await bundleRemotes('outside', 'outside-1.tar.gz')).toEqual([{ host: '203.0.113.10', port: 1200 }]);

    const list = await s.json<{ node: string; memberships: MemberView[] }[]>(['node', 'list', '--network', 'lab']);
    expect(Object.fromEntries(list.map((n) => [n.node, n.memberships[0]!.remotes]))).toEqual({
      inside: [{ host: '198.18.0.1' }, { host: '198.18.0.2', port: 1300 }],
      outside: null,
    });
    const show = await s.json<{ members: MemberView[] }>(['network', 'show', 'lab']);
    expect(show.members.find((m) => m.node === 'inside')!.remotes).toHaveLength(2);
    expect((await s.run(['network', 'show', 'lab'])).out).toMatch(/inside\s+\S+\s+\S+\s+\S+\s+198\.18\.0\.1:1200,198\.18\.0\.2:1300/);
  });

  it('set-remotes bumps the bundle version only on a change, and --clear goes back to the network remotes', async () => {
    const before = (await s.json<{ node: string; memberships: MemberView[] }[]>(['node', 'list', '--network', 'lab'])).find((n) => n.node === 'outside')!
      .memberships[0]!;
    const set = await s.json<MemberView>(['node', 'set-remotes', 'outside', '--network', 'lab', '--remote', '198.51.100.7:1201']);
    expect(set.changed).toBe(true);
    expect(set.bundle_version).toBeGreaterThan(before.bundle_version);
    const again = await s.json<MemberView>(['node', 'set-remotes', 'outside', '--network', 'lab', '--remote', '198.51.100.7:1201']);
    expect(again.changed).toBe(false);
    expect(again.bundle_version).toBe(set.bundle_version);
    expect(await bundleRemotes('outside', 'outside-2.tar.gz')).toEqual([{ host: '198.51.100.7', port: 1201 }]);

    const cleared = await s.json<MemberView>(['node', 'set-remotes', 'inside', '--network', 'lab', '--clear']);
    expect(cleared.changed).toBe(true);
    expect(cleared.remotes).toBeNull();
    expect(await bundleRemotes('inside', 'inside-2.tar.gz')).toEqual([{ host: '203.0.113.10', port: 1200 }]);
  });

  it.each([
    [['node', 'add', 'bad1', '--network', 'lab', '--remote', 'not a host'], 'MVPN_USAGE'],
    [['node', 'add', 'bad2', '--network', 'lab', '--remote', '198.18.0.1:99999'], 'MVPN_USAGE'],
    [['node', 'add', 'bad3', '--network', 'lab', ...Array.from({ length: 9 }, (_, i) => ['--remote', `198.18.0.${i + 1}`]).flat()], 'MVPN_USAGE'],
    [['node', 'set-remotes', 'outside', '--network', 'lab'], 'MVPN_USAGE'],
    [['node', 'set-remotes', 'outside', '--network', 'lab', '--clear', '--remote', '198.18.0.1'], 'MVPN_USAGE'],
    [['node', 'set-remotes', 'ghost', '--network', 'lab', '--remote', '198.18.0.1'], 'MVPN_NOT_FOUND'],
  ])('refuses %j with %s and changes nothing', async (args, code) => {
    const r = await cli(['server', ...args, '--state-dir', s.stateDir, '--json']);
    expect(r.code).not.toBe(0);
    expect(r.json<{ error: { code: string } }>().error.code).toBe(code);
    const list = await s.json<{ node: string }[]>(['node', 'list', '--network', 'lab']);
    expect(list.map((n) => n.node).sort()).toEqual(['inside', 'outside']);
  });
});
