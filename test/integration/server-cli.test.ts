/**
 * The admin CLI on a real state directory: init, networks (allocation,
 * lifecycle), nodes (addresses, tokens, revocation) and offline export,
 * checked with the agent's own verification code.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyMembership } from '../../src/bundle/membership.ts';
import { parseAnchor } from '../../src/bundle/sign.ts';
import { verifyBundle } from '../../src/bundle/verify.ts';
import { checkCrl } from '../../src/pki/crl.ts';
import { certMatchesKey } from '../../src/pki/verify.ts';
import { overlaps, parseCidr } from '../../src/server/alloc.ts';
import { cli, makeServer, openContext, storeBytes, type TestServer } from '../helpers/server-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

interface NetView {
  id: string;
  state: string;
  port: number;
  subnet: string;
  dev_type: string;
  server_address: string;
  remotes: { host: string; port: number }[];
  crl: { number: number };
}
interface MemberView {
  node: string;
  network: string;
  address: string;
  state: string;
  key_origin: string | null;
  cert_serial: string | null;
  bundle_version: number;
}

describe('server init', () => {
  it('creates a private state directory and prints the trust anchor and the API CA', async () => {
    const dir = await tmpDir('init');
    try {
      const stateDir = join(dir.path, 'state');
      const r = await cli(['server', 'init', '--state-dir', stateDir, '--hostname', 'vpn.example.org', '--address', '198.18.0.1', '--json']);
      expect(r.code, r.err).toBe(0);
      const j = r.json<{ trust_anchor: string; api_ca: string; pool: string; state_dir: string }>();
      expect(j.trust_anchor).toMatch(/^ed25519:[A-Za-z0-9+/]{43}=$/);
      expect((await readFile(join(stateDir, 'trust-anchor'), 'utf8')).trim()).toBe(j.trust_anchor);
      expect(j.api_ca).toBe(join(stateDir, 'api', 'ca.crt'));
      expect(await readFile(j.api_ca, 'utf8')).toContain('BEGIN CERTIFICATE');
      expect(j.pool).toBe('100.96.0.0/12');
      expect((await stat(stateDir)).mode & 0o777).toBe(0o700);
      for (const f of ['signing.key', 'store.db', 'config.json', 'api/ca.key', 'api/server.key']) {
        expect((await stat(join(stateDir, f))).mode & 0o077, f).toBe(0);
      }
      // The listener certificate carries the names given.
      const { X509Certificate } = await import('node:crypto');
      const cert = new X509Certificate(await readFile(join(stateDir, 'api', 'server.crt')));
      expect(cert.subjectAltName).toContain('DNS:vpn.example.org');
      expect(cert.subjectAltName).toContain('IP Address:198.18.0.1');

      const again = await cli(['server', 'init', '--state-dir', stateDir]);
      expect(again.code).toBe(5);
      expect(again.err).toContain('MVPN_ALREADY_EXISTS');
      expect(again.err).toContain('refusing to overwrite');
    } finally {
      await dir.remove();
    }
  });

  it.each([
    [['--pool', '198.19.0.1/16'], 'MVPN_ADDRESS_INVALID'],
    [['--port-range', '2000-1000'], 'MVPN_CONFIG_INVALID'],
    [['--listen', 'localhost'], 'MVPN_CONFIG_INVALID'],
    [['--address', 'not-an-ip'], 'MVPN_USAGE'],
  ])('refuses bad options %j and creates nothing', async (args, code) => {
    const dir = await tmpDir('init');
    try {
      const stateDir = join(dir.path, 'state');
      const r = await cli(['server', 'init', '--state-dir', stateDir, ...args]);
      expect(r.code).not.toBe(0);
      expect(r.err).toContain(code);
      await expect(stat(stateDir)).rejects.toThrow();
    } finally {
      await dir.remove();
    }
  });

  it.each([
    ['network', 'list'],
    ['network', 'show', 'x'],
    ['network', 'create', 'x'],
    ['node', 'list'],
    ['node', 'add', 'n1', '--network', 'x'],
    ['node', 'token', 'n1'],
    ['export', 'n1', '--network', 'x', '--out', '/tmp/never-written.tar.gz'],
    ['run'],
  ])('server %s %s … fails clearly on a state directory that is not initialised', async (...args) => {
    const dir = await tmpDir('noinit');
    try {
      const r = await cli(['server', ...args, '--state-dir', join(dir.path, 'nothing')]);
      expect(r.code).toBe(5);
      expect(r.err).toContain('not an initialised server state directory');
      expect(r.err).toContain('MVPN_CONFIG_MISSING');
      expect(r.err).toContain('server init');
    } finally {
      await dir.remove();
    }
  });
});

describe('server network', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await makeServer();
  });
  afterAll(async () => s.remove());

  it('gives every network its own port and a subnet that overlaps no other', async () => {
    const nets: NetView[] = [];
    for (const id of ['a1', 'a2', 'a3', 'a4']) nets.push(await s.json<NetView>(['network', 'create', id, '--remote', '198.18.0.1']));
    expect(new Set(nets.map((n) => n.port)).size).toBe(4);
    for (const n of nets) expect(n.port).toBeGreaterThanOrEqual(1194);
    for (let i = 0; i < nets.length; i++) {
      for (let j = i + 1; j < nets.length; j++) expect(overlaps(parseCidr(nets[i]!.subnet), parseCidr(nets[j]!.subnet))).toBe(false);
    }
    expect(nets[0]).toMatchObject({ state: 'down', dev_type: 'tap', subnet: '198.19.0.0/24', server_address: '198.19.0.1' });
    const list = await s.json<NetView[]>(['network', 'list']);
    expect(list.map((n) => n.id)).toEqual(['a1', 'a2', 'a3', 'a4']);
  });

  it('keeps remotes in the order given, with the network port as default', async () => {
    const n = await s.json<NetView>(['network', 'create', 'rem', '--remote', 'vpn.example.org', '--remote', '198.18.0.9:4000', '--remote', '[2001:db8::1]:5000']);
    expect(n.remotes).toEqual([
      { host: 'vpn.example.org', port: n.port },
      { host: '198.18.0.9', port: 4000 },
      { host: '2001:db8::1', port: 5000 },
    ]);
  });

  it('takes an explicit subnet, port, L3 mode and RSA CA', async () => {
    const n = await s.json<NetView & { key_alg: string }>([
      'network', 'create', 'l3', '--dev', 'tun', '--subnet', '198.19.200.0/28', '--port', '1290', '--key-alg', 'rsa-2048', '--remote', '198.18.0.1',
    ]);
    expect(n).toMatchObject({ dev_type: 'tun', subnet: '198.19.200.0/28', port: 1290, key_alg: 'rsa-2048' });
  });

  it('gives a network its LAN MTU (default 1500) and, over UDP, fragmentation at 1280; a TCP network does not fragment', async () => {
    expect(await s.json(['network', 'show', 'a1'])).toMatchObject({ mtu: 1500, fragment: 1280 });
    expect(await s.json(['network', 'create', 'jumbo', '--remote', '198.18.0.1', '--mtu', '9000'])).toMatchObject({ mtu: 9000, fragment: 1280 });
    expect(await s.json(['network', 'create', 'overtcp', '--proto', 'tcp', '--remote', '198.18.0.1'])).toMatchObject({ mtu: 1500, fragment: null });
  });

  it('stores the prefixes nodes accept pushed routes for, pushes them from the server and signs them into every bundle', async () => {
    const n = await s.json<NetView & { pushed_routes: string[] }>([
      'network', 'create', 'routed', '--remote', '198.18.0.1', '--pushed-route', '203.0.113.0/24', '--pushed-route', '198.51.100.0/25',
    ]);
    expect(n.pushed_routes).toEqual(['203.0.113.0/24', '198.51.100.0/25']);
    expect((await s.json<{ pushed_routes: string[] }>(['network', 'show', 'routed'])).pushed_routes).toEqual(['203.0.113.0/24', '198.51.100.0/25']);
    expect((await s.json<{ pushed_routes: string[] }>(['network', 'show', 'a1'])).pushed_routes).toEqual([]);
    await s.json(['node', 'add', 'pr1', '--network', 'routed']);
    await s.json(['node', 'add', 'pr1', '--network', 'a1']);
    const anchor = parseAnchor((await readFile(join(s.stateDir, 'trust-anchor'), 'utf8')).trim());
    const routed = await verifyBundle(await readFile((await s.json<{ bundle: string }>(['export', 'pr1', '--network', 'routed', '--out', join(s.dir, 'pr1-routed.tar.gz')])).bundle), { anchor, nodeId: 'pr1', now: new Date() });
    expect(routed.spec).toMatchObject({ allow_pushed_routes: true, pushed_routes: ['203.0.113.0/24', '198.51.100.0/25'] });
    const plain = await verifyBundle(await readFile((await s.json<{ bundle: string }>(['export', 'pr1', '--network', 'a1', '--out', join(s.dir, 'pr1-a1.tar.gz')])).bundle), { anchor, nodeId: 'pr1', now: new Date() });
    expect(plain.spec.allow_pushed_routes).toBe(false);
    expect(plain.spec).not.toHaveProperty('pushed_routes');
    // A store reopened by another process reads the same prefixes.
    const ctx = await openContext(s.stateDir);
    try {
      expect(ctx.store.read((tx) => tx.getNetwork('routed'))?.pushedRoutes).toEqual(['203.0.113.0/24', '198.51.100.0/25']);
      expect(ctx.store.read((tx) => tx.getNetwork('a1'))?.pushedRoutes).toBeUndefined();
    } finally {
      ctx.close();
    }
  });

  it.each([
    ['a /1 of the def1 pair', ['0.0.0.0/1'], /prefix length must be 8\.\.32/],
    ['a default route', ['0.0.0.0/0'], /never a default route/],
    ['host bits', ['203.0.113.1/24'], /no host bits/],
    ['the server address', ['198.18.0.0/16'], /overlaps the server address 198\.18\.0\.1/],
    ['a prefix twice', ['203.0.113.0/24', '203.0.113.0/24'], /given twice/],
  ])('refuses --pushed-route with %s (MVPN_USAGE, nothing stored)', async (_n, prefixes, why) => {
    const r = await cli(['server', 'network', 'create', 'badroute', '--remote', '198.18.0.1', ...prefixes.flatMap((p) => ['--pushed-route', p]), '--state-dir', s.stateDir, '--json']);
    expect(r.code).not.toBe(0);
    const e = r.json<{ error: { code: string; message: string } }>().error;
    expect(e.code).toBe('MVPN_USAGE');
    expect(e.message).toMatch(why);
    expect((await cli(['server', 'network', 'show', 'badroute', '--state-dir', s.stateDir])).err).toContain('MVPN_NOT_FOUND');
  });

  it.each([
    [['network', 'create', 'Bad_Id'], 'MVPN_USAGE'],
    [['network', 'create', 'toolongnetworkid'], 'MVPN_USAGE'],
    [['network', 'create', 'ov1', '--subnet', '198.19.0.128/25', '--remote', '198.18.0.1'], 'MVPN_ALREADY_EXISTS'],
    [['network', 'create', 'ov2', '--port', '1290', '--remote', '198.18.0.1'], 'MVPN_ALREADY_EXISTS'],
    [['network', 'create', 'a1', '--remote', '198.18.0.1'], 'MVPN_ALREADY_EXISTS'],
    [['network', 'create', 'bad', '--remote', 'has space'], 'MVPN_USAGE'],
    [['network', 'create', 'mtu1', '--remote', '198.18.0.1', '--mtu', '1000'], 'MVPN_USAGE'],
    [['network', 'create', 'mtu2', '--remote', '198.18.0.1', '--mtu', '1500.5'], 'MVPN_USAGE'],
    [['network', 'show', 'nope'], 'MVPN_NOT_FOUND'],
    [['network', 'up', 'nope'], 'MVPN_NOT_FOUND'],
  ])('refuses %j with %s (JSON error on stdout with --json)', async (args, code) => {
    const r = await cli(['server', ...args, '--state-dir', s.stateDir, '--json']);
    expect(r.code).not.toBe(0);
    expect(r.json<{ error: { code: string } }>().error.code).toBe(code);
  });

  it('goes up and down, deletes only when down, and purge removes it for good', async () => {
    await s.json(['network', 'create', 'life', '--remote', '198.18.0.1']);
    expect((await s.json<NetView>(['network', 'up', 'life'])).state).toBe('up');
    const del = await cli(['server', 'network', 'delete', 'life', '--state-dir', s.stateDir]);
    expect(del.code).toBe(5);
    expect(del.err).toContain('bring it down');
    expect((await s.json<NetView>(['network', 'down', 'life'])).state).toBe('down');
    const deleted = await s.json<NetView>(['network', 'delete', 'life']);
    expect(deleted.state).toBe('deleted');
    // The port and subnet are free again, the id is not (history) until purged.
    const reuse = await s.json<NetView>(['network', 'create', 'life2', '--port', String(deleted.port), '--subnet', deleted.subnet, '--remote', '198.18.0.1']);
    expect(reuse.port).toBe(deleted.port);
    const same = await cli(['server', 'network', 'create', 'life', '--state-dir', s.stateDir, '--remote', '198.18.0.1']);
    expect(same.err).toContain('purge');
    await s.run(['network', 'purge', 'life']);
    expect((await s.json<NetView[]>(['network', 'list'])).some((n) => n.id === 'life')).toBe(false);
    await s.json(['network', 'create', 'life', '--remote', '198.18.0.1']);
  });
});

describe('server node and export', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await makeServer();
    await s.run(['network', 'create', 'lab', '--remote', '198.18.0.1']);
    await s.run(['network', 'create', 'lab2', '--remote', '198.18.0.1', '--subnet', '198.19.50.0/29']);
  });
  afterAll(async () => s.remove());

  it('allocates the lowest free address, validates given ones and keeps them stable', async () => {
    const a = await s.json<MemberView>(['node', 'add', 'pc1', '--network', 'lab']);
    const b = await s.json<MemberView>(['node', 'add', 'pc2', '--network', 'lab', '--address', '198.19.0.50']);
    const c = await s.json<MemberView>(['node', 'add', 'pc3', '--network', 'lab']);
    expect([a.address, b.address, c.address]).toEqual(['198.19.0.2', '198.19.0.50', '198.19.0.3']);
    expect(a.state).toBe('pending');
    for (const [addr, code] of [
      ['198.19.0.50', 'MVPN_ALREADY_EXISTS'],
      ['198.19.0.1', 'MVPN_ADDRESS_INVALID'],
      ['198.19.0.255', 'MVPN_ADDRESS_INVALID'],
      ['198.19.1.5', 'MVPN_ADDRESS_INVALID'],
      ['300.1.1.1', 'MVPN_ADDRESS_INVALID'],
    ] as const) {
      const r = await cli(['server', 'node', 'add', 'pc9', '--network', 'lab', '--address', addr, '--state-dir', s.stateDir, '--json']);
      expect(r.json<{ error: { code: string } }>().error.code, addr).toBe(code);
    }
    // Removed and added again: same address; a newcomer meanwhile gets a never-used one.
    await s.run(['node', 'remove', 'pc1', '--network', 'lab']);
    const d = await s.json<MemberView>(['node', 'add', 'pc4', '--network', 'lab']);
    expect(d.address).toBe('198.19.0.4');
    const again = await s.json<MemberView>(['node', 'add', 'pc1', '--network', 'lab']);
    expect(again.address).toBe('198.19.0.2');
    const list = await s.json<{ node: string; memberships: MemberView[] }[]>(['node', 'list', '--network', 'lab']);
    expect(list.map((n) => [n.node, n.memberships[0]!.address])).toEqual([
      ['pc1', '198.19.0.2'],
      ['pc2', '198.19.0.50'],
      ['pc3', '198.19.0.3'],
      ['pc4', '198.19.0.4'],
    ]);
  });

  it('runs out of addresses with a clear error', async () => {
    // /29: .1 server, .2-.6 nodes
    for (let i = 0; i < 5; i++) await s.run(['node', 'add', `full${i}`, '--network', 'lab2']);
    const r = await cli(['server', 'node', 'add', 'full9', '--network', 'lab2', '--state-dir', s.stateDir]);
    expect(r.err).toContain('MVPN_POOL_EXHAUSTED');
  });

  it('prints a one-time token once and stores only its hash', async () => {
    const r = await s.json<{ token: string; expires_at: string }>(['node', 'token', 'pc2', '--ttl', '2h']);
    expect(r.token).toMatch(/^mvpn1_[A-Za-z0-9_-]{43}$/);
    const exp = Date.parse(r.expires_at) - Date.now();
    expect(exp).toBeGreaterThan(1.9 * 3600_000);
    expect(exp).toBeLessThan(2.1 * 3600_000);
    for (const stored of await storeBytes(s.stateDir)) expect(stored.includes(r.token)).toBe(false);
    expect((await cli(['server', 'node', 'token', 'ghost', '--state-dir', s.stateDir])).err).toContain('MVPN_NOT_FOUND');
    expect((await cli(['server', 'node', 'token', 'pc2', '--ttl', '90d', '--state-dir', s.stateDir])).err).toContain('MVPN_USAGE');
  });

  it('exports a complete offline bundle with a central key that the agent code accepts, plus its membership document', async () => {
    const out = join(s.dir, 'pc3-lab.tar.gz');
    const r = await s.json<{ bundle: string; membership: string; version: number; sha256: string; key_origin: string; cert_serial: string }>([
      'export', 'pc3', '--network', 'lab', '--out', out,
    ]);
    expect(r.key_origin).toBe('central');
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    const anchor = parseAnchor((await readFile(join(s.stateDir, 'trust-anchor'), 'utf8')).trim());
    const bytes = await readFile(out);
    const b = await verifyBundle(bytes, { anchor, nodeId: 'pc3', now: new Date() });
    expect(b.manifest).toMatchObject({ node: 'pc3', network: 'lab', key_origin: 'central', version: r.version });
    expect(b.spec).toMatchObject({ id: 'lab', dev_type: 'tap', address: { ipv4: '198.19.0.3/24' }, server_tunnel_ip: '198.19.0.1', server_cn: 'mvpn-server-lab' });
    expect(await certMatchesKey(b.files.get('node.crt')!.toString(), b.files.get('node.key')!.toString())).toBe(true);

    const m = verifyMembership(await readFile(r.membership), { anchor, nodeId: 'pc3', now: new Date() });
    expect(m.doc.networks).toEqual([{ id: 'lab', name: 'lab', bundle: { version: r.version, sha256: b.sha256, size: bytes.length, url: 'pc3-lab.tar.gz' } }]);

    // A second export makes a new key; the first certificate is superseded and on the CRL.
    const r2 = await s.json<{ cert_serial: string; version: number; bundle: string }>(['export', 'pc3', '--network', 'lab', '--out', join(s.dir, 'pc3-b.tar.gz')]);
    expect(r2.cert_serial).not.toBe(r.cert_serial);
    expect(r2.version).toBeGreaterThan(r.version);
    const b2 = await verifyBundle(await readFile(r2.bundle), { anchor, nodeId: 'pc3', now: new Date() });
    const crl = await checkCrl({ crlPem: b2.files.get('crl.pem')!.toString(), caCertPem: b2.files.get('ca.crt')!.toString(), now: new Date() });
    expect(crl.revokedSerials.map((x) => x.toLowerCase().replace(/^0+/, ''))).toContain(r.cert_serial.replace(/^0+/, ''));
  });

  it('revokes: the certificate goes on a new CRL and the membership is marked; remove is needed before adding again', async () => {
    const ctx = await openContext(s.stateDir);
    try {
      await s.run(['export', 'pc4', '--network', 'lab', '--out', join(s.dir, 'pc4.tar.gz')]);
      const before = ctx.store.read((tx) => ({ net: tx.getNetwork('lab')!, m: tx.getMembership('lab', 'pc4')! }));
      const r = await s.json<{ revoked: MemberView[] }>(['node', 'revoke', 'pc4', '--network', 'lab']);
      expect(r.revoked.map((m) => m.state)).toEqual(['revoked']);
      const after = ctx.store.read((tx) => tx.getNetwork('lab')!);
      expect(after.crlNumber).toBe(before.net.crlNumber + 1);
      const crl = await checkCrl({ crlPem: after.crlPem, caCertPem: after.caCertPem, now: new Date() });
      expect(crl.revokedSerials.map((x) => x.toLowerCase().replace(/^0+/, ''))).toContain(before.m.certSerial!.replace(/^0+/, ''));
      const re = await cli(['server', 'node', 'add', 'pc4', '--network', 'lab', '--state-dir', s.stateDir]);
      expect(re.err).toContain('remove it first');
      const exp = await cli(['server', 'export', 'pc4', '--network', 'lab', '--out', join(s.dir, 'never.tar.gz'), '--state-dir', s.stateDir]);
      expect(exp.err).toContain('revoked');
      await expect(stat(join(s.dir, 'never.tar.gz'))).rejects.toThrow();
      await s.run(['node', 'remove', 'pc4', '--network', 'lab']);
      expect((await s.json<MemberView>(['node', 'add', 'pc4', '--network', 'lab'])).address).toBe(before.m.address);
    } finally {
      ctx.close();
    }
  });

  it('shows a network with its members (no daemon: runtime is null)', async () => {
    const v = await s.json<{ id: string; members: MemberView[]; runtime: unknown }>(['network', 'show', 'lab']);
    expect(v.id).toBe('lab');
    expect(v.runtime).toBeNull();
    expect(v.members.find((m) => m.node === 'pc3')).toMatchObject({ key_origin: 'central', state: 'active' });
    const human = await s.run(['network', 'show', 'lab']);
    expect(human.out).toContain('no daemon running');
    expect(human.out).toMatch(/pc3\s+198\.19\.0\.3\s+active\s+central/);
  });
});
