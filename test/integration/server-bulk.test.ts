/**
 * Bulk `node add` and `export` (a testbed swapping in many nodes): one
 * transaction per call, all or nothing, and the same results as adding and
 * exporting the nodes one at a time. Real state directories (SQLite), real
 * bundles checked with the agent's own verifyBundle / verifyMembership.
 */
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyMembership } from '../../src/bundle/membership.ts';
import { parseAnchor, signingKeyFromPem, type Anchor } from '../../src/bundle/sign.ts';
import { verifyBundle } from '../../src/bundle/verify.ts';
import { isMvpnError } from '../../src/errors.ts';
import { checkCrl } from '../../src/pki/crl.ts';
import { certMatchesKey } from '../../src/pki/verify.ts';
import { ipToInt, parseCidr } from '../../src/server/alloc.ts';
import { exportNode, exportNodes } from '../../src/server/ops/export.ts';
import { addNode, addNodes, removeNode } from '../../src/server/ops/nodes.ts';
import { cli, makeServer, openContext, withContext, type TestServer } from '../helpers/server-fixtures.ts';

interface MemberView {
  node: string;
  network: string;
  address: string;
  state: string;
  cert_serial: string | null;
  bundle_version: number;
}

interface ExportView {
  node: string;
  network: string;
  bundle: string;
  membership: string;
  version: number;
  serial: number;
  sha256: string;
  size: number;
  cert_serial: string;
  key_origin: string;
}

const norm = (serial: string) => serial.toLowerCase().replace(/^0+/, '');

/** Host offset of an address inside its network's subnet, so two networks can be compared. */
function offset(address: string, subnet: string): number {
  return ipToInt(address) - parseCidr(subnet).base;
}

async function errorOf(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    if (isMvpnError(err)) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected a failure');
}

describe('bulk node add and export', () => {
  let s: TestServer;
  let anchor: Anchor;

  beforeAll(async () => {
    s = await makeServer({ label: 'bulk' });
    anchor = parseAnchor((await readFile(join(s.stateDir, 'trust-anchor'), 'utf8')).trim());
    for (const [id, subnet] of [
      ['one', '198.19.10.0/24'],
      ['many', '198.19.11.0/24'],
      ['cli', '198.19.12.0/24'],
      ['tiny', '198.19.13.0/29'],
      ['race', '198.19.14.0/24'],
    ] as const) {
      await s.run(['network', 'create', id, '--remote', '198.18.0.1', '--subnet', subnet]);
    }
  });
  afterAll(async () => s.remove());

  it('a batch gets the same addresses, states and versions rules as the same adds one by one', async () => {
    await withContext(s.stateDir, async (ctx) => {
    // Same history in both networks: x2 held an address and left (returning nodes get it back).
    for (const net of ['one', 'many']) {
      for (const node of ['x1', 'x2', 'x3']) await addNode(ctx, { node, network: net });
      await removeNode(ctx, 'x2', net);
    }
    const inputs = (net: string) => [
      { node: 'y1', network: net },
      { node: 'x2', network: net },
      { node: 'y2', network: net, address: net === 'one' ? '198.19.10.77' : '198.19.11.77' },
      { node: 'y3', network: net, remotes: ['192.0.2.7:1300'] },
    ];
    const single = [];
    for (const i of inputs('one')) single.push(await addNode(ctx, i));
    const batch = await addNodes(ctx, inputs('many'));

    expect(batch.map((m) => m.node)).toEqual(['y1', 'x2', 'y2', 'y3']);
    expect(batch.map((m) => offset(m.address, '198.19.11.0/24'))).toEqual(single.map((m) => offset(m.address, '198.19.10.0/24')));
    expect(batch.map((m) => offset(m.address, '198.19.11.0/24'))).toEqual([5, 3, 77, 6]);
    expect(batch.map((m) => [m.certPem, m.keyOrigin, m.revoked, m.remotes ?? null])).toEqual(
      single.map((m) => [m.certPem, m.keyOrigin, m.revoked, m.remotes ?? null]),
    );
    // One transaction, one sequence number: every membership of the batch has the same, new, bundle version.
    expect(new Set(batch.map((m) => m.bundleVersion)).size).toBe(1);
    expect(batch[0]!.bundleVersion).toBeGreaterThan(Math.max(...single.map((m) => m.bundleVersion)));
    // Each one has its own tls-crypt-v2 client key.
    expect(new Set(batch.map((m) => m.tlsCryptV2ClientKey)).size).toBe(4);
    });
  });

  it('bulk export: every bundle and document verifies for its own node, like a single export', async () => {
    await withContext(s.stateDir, async (ctx) => {
    const key = signingKeyFromPem(await readFile(join(s.stateDir, 'signing.key'), 'utf8'));
    const dir = join(s.dir, 'bulk-api');
    await mkdir(dir);
    const one = await exportNode(ctx, key, 'y1', 'one', join(dir, 'single-y1.tar.gz'));
    const nodes = ['y1', 'x2', 'y2', 'y3'];
    const rs = await exportNodes(
      ctx,
      key,
      nodes.map((node) => ({ node, network: 'many', outFile: join(dir, `${node}.tar.gz`) })),
    );
    expect(rs.map((r) => r.node)).toEqual(nodes);
    // Each exported document has its own serial, like one export after the other.
    expect(new Set(rs.map((r) => r.serial)).size).toBe(nodes.length);
    const singleBundle = await verifyBundle(await readFile(one.bundlePath), { anchor, nodeId: 'y1', now: new Date() });
    for (const r of rs) {
      const bytes = await readFile(r.bundlePath);
      const b = await verifyBundle(bytes, { anchor, nodeId: r.node, now: new Date() });
      const m = ctx.store.read((tx) => tx.getMembership('many', r.node)!);
      expect(b.manifest).toMatchObject({ node: r.node, network: 'many', key_origin: 'central', version: r.version });
      expect([...b.files.keys()].sort()).toEqual([...singleBundle.files.keys()].sort());
      expect(b.spec.address.ipv4).toBe(`${m.address}/24`);
      expect(b.spec.remotes).toEqual(r.node === 'y3' ? [{ host: '192.0.2.7', port: 1300 }] : [{ host: '198.18.0.1', port: b.spec.remotes[0]!.port }]);
      expect(norm(m.certSerial!)).toBe(norm(r.certSerial));
      expect(await certMatchesKey(b.files.get('node.crt')!.toString(), b.files.get('node.key')!.toString())).toBe(true);
      expect((await stat(r.bundlePath)).mode & 0o777).toBe(0o600);
      const doc = verifyMembership(await readFile(r.membershipPath!), { anchor, nodeId: r.node, now: new Date() });
      expect(doc.doc.serial).toBe(r.serial);
      expect(doc.doc.networks).toEqual([{ id: 'many', name: 'many', bundle: { version: r.version, sha256: b.sha256, size: bytes.length, url: `${r.node}.tar.gz` } }]);
    }
    // No temporaries left behind.
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    });
  });

  it('re-exporting a batch puts every superseded certificate on ONE new CRL', async () => {
    await withContext(s.stateDir, async (ctx) => {
    const key = signingKeyFromPem(await readFile(join(s.stateDir, 'signing.key'), 'utf8'));
    const before = ctx.store.read((tx) => ({ net: tx.getNetwork('many')!, ms: tx.listMemberships({ network: 'many' }) }));
    const dir = join(s.dir, 'bulk-again');
    await mkdir(dir);
    const rs = await exportNodes(
      ctx,
      key,
      before.ms.map((m) => ({ node: m.node, network: 'many', outFile: join(dir, `${m.node}.tar.gz`) })),
    );
    const after = ctx.store.read((tx) => tx.getNetwork('many')!);
    expect(after.crlNumber).toBe(before.net.crlNumber + 1);
    const crl = await checkCrl({ crlPem: after.crlPem, caCertPem: after.caCertPem, now: new Date() });
    const revoked = new Set(crl.revokedSerials.map(norm));
    for (const m of before.ms) if (m.certSerial) expect(revoked.has(norm(m.certSerial)), m.node).toBe(true);
    for (const r of rs) {
      expect(revoked.has(norm(r.certSerial))).toBe(false);
      const b = await verifyBundle(await readFile(r.bundlePath), { anchor, nodeId: r.node, now: new Date() });
      expect(b.files.get('crl.pem')!.toString()).toBe(after.crlPem);
      expect(r.version).toBeGreaterThan(before.ms.find((m) => m.node === r.node)!.bundleVersion);
    }
    });
  });

  it('CLI: node add with several ids and export --all --out-dir print JSON arrays', async () => {
    const added = await s.json<MemberView[]>(['node', 'add', 'c1', 'c2', 'c3', '--network', 'cli']);
    expect(added.map((m) => [m.node, m.address, m.state])).toEqual([
      ['c1', '198.19.12.2', 'pending'],
      ['c2', '198.19.12.3', 'pending'],
      ['c3', '198.19.12.4', 'pending'],
    ]);
    // One id keeps the single-object output.
    const single = await s.json<MemberView>(['node', 'add', 'c4', '--network', 'cli']);
    expect(single).toMatchObject({ node: 'c4', address: '198.19.12.5' });
    const human = await s.run(['node', 'add', 'c5', 'c6', '--network', 'cli']);
    expect(human.out).toMatch(/c5\s+198\.19\.12\.6\s+pending/);
    expect(human.out).toContain('added 2 nodes to cli');

    const dir = join(s.dir, 'cli-out');
    const rs = await s.json<ExportView[]>(['export', '--all', '--network', 'cli', '--out-dir', dir]);
    expect(rs.map((r) => r.node)).toEqual(['c1', 'c2', 'c3', 'c4', 'c5', 'c6']);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    for (const r of rs) {
      expect(r).toMatchObject({ network: 'cli', key_origin: 'central', bundle: join(dir, `${r.node}.tar.gz`), membership: join(dir, `${r.node}.membership.json`) });
      const b = await verifyBundle(await readFile(r.bundle), { anchor, nodeId: r.node, now: new Date(), expect: { network: 'cli', version: r.version, sha256: r.sha256, size: r.size } });
      expect(b.manifest.node).toBe(r.node);
    }
    const some = await s.json<ExportView[]>(['export', 'c2', 'c5', '--network', 'cli', '--out-dir', dir]);
    expect(some.map((r) => r.node)).toEqual(['c2', 'c5']);
    expect(some[0]!.cert_serial).not.toBe(rs[1]!.cert_serial);
    const list = await s.json<{ node: string; memberships: MemberView[] }[]>(['node', 'list', '--network', 'cli']);
    expect(list.every((n) => n.memberships[0]!.state === 'active')).toBe(true);
  });

  it('CLI: refuses mixed or missing forms with usage errors', async () => {
    const dir = join(s.dir, 'never');
    for (const [args, text] of [
      [['node', 'add', 'u1', 'u2', '--network', 'cli', '--address', '198.19.12.90'], '--address'],
      [['export', 'c1', 'c2', '--network', 'cli', '--out', join(dir, 'x.tar.gz')], '--out-dir'],
      [['export', 'c1', '--all', '--network', 'cli', '--out-dir', dir], 'not both'],
      [['export', '--network', 'cli', '--out-dir', dir], 'node id'],
      [['export', 'c1', '--network', 'cli'], '--out'],
      [['export', 'c1', 'c1', '--network', 'cli', '--out-dir', dir], 'twice'],
    ] as const) {
      const r = await cli(['server', ...args, '--state-dir', s.stateDir, '--json']);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.json<{ error: { code: string; message: string } }>().error, args.join(' ')).toMatchObject({ code: 'MVPN_USAGE' });
      expect(r.err).toContain(text);
    }
    await expect(stat(dir)).rejects.toThrow();
    expect((await s.json<{ node: string }[]>(['node', 'list', '--network', 'cli'])).map((n) => n.node)).not.toContain('u1');
  });

  it('a batch with one invalid node id adds nothing and names it', async () => {
    const r = await cli(['server', 'node', 'add', 'ok1', 'ok2', 'bad/id', '--network', 'cli', '--state-dir', s.stateDir, '--json']);
    expect(r.code).toBe(2);
    expect(r.json<{ error: { code: string; message: string } }>().error).toMatchObject({ code: 'MVPN_USAGE' });
    expect(r.err).toContain('"bad/id"');
    const nodes = (await s.json<{ node: string }[]>(['node', 'list'])).map((n) => n.node);
    expect(nodes).not.toContain('ok1');
    expect(nodes).not.toContain('ok2');
  });

  it('a batch with one node already a member, or one address too many, adds nothing and names that node', async () => {
    const exists = await cli(['server', 'node', 'add', 'new1', 'c3', 'new2', '--network', 'cli', '--state-dir', s.stateDir, '--json']);
    expect(exists.json<{ error: { code: string } }>().error.code).toBe('MVPN_ALREADY_EXISTS');
    expect(exists.err).toContain('node c3 is already in network cli');
    // /29: .1 is the server, .2-.6 for nodes; six nodes at once fail on the sixth, and none is added.
    const full = await cli(['server', 'node', 'add', 't1', 't2', 't3', 't4', 't5', 't6', '--network', 'tiny', '--state-dir', s.stateDir, '--json']);
    expect(full.json<{ error: { code: string } }>().error.code).toBe('MVPN_POOL_EXHAUSTED');
    expect(full.err).toContain('node t6 in tiny');
    const nodes = (await s.json<{ node: string }[]>(['node', 'list'])).map((n) => n.node);
    for (const n of ['new1', 'new2', 't1', 't5']) expect(nodes, n).not.toContain(n);
    expect(await s.json<unknown[]>(['node', 'list', '--network', 'tiny'])).toEqual([]);
    // The same five fit.
    expect((await s.json<MemberView[]>(['node', 'add', 't1', 't2', 't3', 't4', 't5', '--network', 'tiny'])).map((m) => m.address)).toEqual([
      '198.19.13.2',
      '198.19.13.3',
      '198.19.13.4',
      '198.19.13.5',
      '198.19.13.6',
    ]);
  });

  it('an export batch with one revoked or unknown node records nothing and writes no file', async () => {
    await withContext(s.stateDir, async (ctx) => {
    await s.run(['node', 'revoke', 't3', '--network', 'tiny']);
    const before = ctx.store.read((tx) => ({ net: tx.getNetwork('tiny')!, ms: tx.listMemberships({ network: 'tiny' }) }));
    const dir = join(s.dir, 'tiny-out');
    for (const [nodes, code, text] of [
      [['t1', 't2', 't3', 't4'], 'MVPN_STORE_CONFLICT', 'node t3 is revoked in network tiny'],
      [['t1', 'ghost', 't2'], 'MVPN_NOT_FOUND', 'node ghost is not in network tiny'],
    ] as const) {
      const r = await cli(['server', 'export', ...nodes, '--network', 'tiny', '--out-dir', dir, '--state-dir', s.stateDir, '--json']);
      expect(r.json<{ error: { code: string } }>().error.code).toBe(code);
      expect(r.err).toContain(text);
    }
    // --all leaves the revoked node out and exports the rest.
    const all = await s.json<ExportView[]>(['export', '--all', '--network', 'tiny', '--out-dir', join(s.dir, 'tiny-all')]);
    expect(all.map((r) => r.node)).toEqual(['t1', 't2', 't4', 't5']);
    const after = ctx.store.read((tx) => tx.getNetwork('tiny')!);
    // Nothing recorded by the failed calls: the --all export was the first to touch these memberships' certificates.
    expect(before.ms.every((m) => m.certSerial === null)).toBe(true);
    expect(after.crlNumber).toBe(before.net.crlNumber);
    expect((await readdir(dir).catch(() => [])).length).toBe(0);
    });
  });

  it('a directory in place of one output file fails the batch before anything is recorded', async () => {
    await withContext(s.stateDir, async (ctx) => {
    const key = signingKeyFromPem(await readFile(join(s.stateDir, 'signing.key'), 'utf8'));
    const dir = join(s.dir, 'blocked');
    await mkdir(join(dir, 'c2.tar.gz'), { recursive: true });
    const before = ctx.store.read((tx) => tx.listMemberships({ network: 'cli' }).map((m) => m.certSerial));
    const err = await errorOf(exportNodes(ctx, key, ['c1', 'c2'].map((node) => ({ node, network: 'cli', outFile: join(dir, `${node}.tar.gz`) }))));
    expect(err).toMatchObject({ code: 'MVPN_USAGE' });
    expect(err.message).toContain('c2.tar.gz is a directory');
    expect(ctx.store.read((tx) => tx.listMemberships({ network: 'cli' }).map((m) => m.certSerial))).toEqual(before);
    expect(await readdir(dir)).toEqual(['c2.tar.gz']);
    });
  });

  it('two overlapping batches at once on separate connections: one wins whole, the other adds nothing', async () => {
    const a = await openContext(s.stateDir);
    const b = await openContext(s.stateDir);
    try {
      const first = Array.from({ length: 10 }, (_, i) => ({ node: `r${i}`, network: 'race' }));
      const second = Array.from({ length: 10 }, (_, i) => ({ node: `r${i + 9}`, network: 'race' })); // r9 in both
      const disjoint = Array.from({ length: 10 }, (_, i) => ({ node: `q${i}`, network: 'race' }));
      const rs = await Promise.allSettled([addNodes(a, first), addNodes(b, second), addNodes(b, disjoint)]);
      const ok = rs.filter((r) => r.status === 'fulfilled');
      const failed = rs.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(ok).toHaveLength(2);
      expect(failed).toHaveLength(1);
      expect(failed[0]!.reason).toMatchObject({ code: 'MVPN_ALREADY_EXISTS' });
      expect((failed[0]!.reason as Error).message).toContain('node r9 is already in network race');
      const members = a.store.read((tx) => tx.listMemberships({ network: 'race' }));
      const winner = rs[0]!.status === 'fulfilled' ? first : second;
      expect(members.map((m) => m.node).sort()).toEqual([...winner, ...disjoint].map((i) => i.node).sort());
      expect(new Set(members.map((m) => m.address)).size).toBe(members.length);
    } finally {
      a.close();
      b.close();
    }
  });
});
