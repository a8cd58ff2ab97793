/**
 * The HTTPS API v1 of a real daemon (in this process, real TLS on a real
 * port), driven the way an agent drives it and the way an attacker might:
 * enrollment, membership, bundles, ETags, authorisation, malformed and
 * oversized requests. No network is up, so no openvpn runs here; the
 * openvpn side is in server-openvpn.test.ts.
 */
import { connect } from 'node:tls';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyMembership } from '../../src/bundle/membership.ts';
import { parseAnchor, type Anchor } from '../../src/bundle/sign.ts';
import { verifyBundle } from '../../src/bundle/verify.ts';
import { createCa } from '../../src/pki/ca.ts';
import { issueCert } from '../../src/pki/cert.ts';
import { createCsr } from '../../src/pki/csr.ts';
import { generateKeyPairPem } from '../../src/pki/keys.ts';
import { certMatchesKey } from '../../src/pki/verify.ts';
import { memoryLogger } from '../../src/log.ts';
import { ServerDaemon } from '../../src/server/daemon.ts';
import type { ServerEvent } from '../../src/server/events.ts';
import { createToken } from '../../src/server/ops/nodes.ts';
import { enroll, https, makeServer, openContext, type Enrolled, type TestServer } from '../helpers/server-fixtures.ts';
import { waitFor } from '../helpers/netns.ts';

interface Doc {
  node: string;
  serial: number;
  expires_at: string;
  networks: { id: string; bundle: { version: number; sha256: string; size: number; url: string } }[];
}

describe('server HTTPS API', () => {
  let s: TestServer;
  let daemon: ServerDaemon;
  let port: number;
  let caPem: string;
  let anchor: Anchor;
  const logger = memoryLogger<ServerEvent>();
  const token = async (node: string, ttl = '1h') => (await s.json<{ token: string }>(['node', 'token', node, '--ttl', ttl])).token;
  const get = (path: string, who?: Enrolled, headers: Record<string, string> = {}) => https(port, path, who?.tls ?? { ca: caPem }, { headers });
  const docOf = (bytes: Buffer, node: string) => verifyMembership(bytes, { anchor, nodeId: node, now: new Date() }).doc as Doc;

  beforeAll(async () => {
    s = await makeServer({ label: 'api' });
    await s.run(['network', 'create', 'lab', '--remote', '198.18.0.1']);
    await s.run(['network', 'create', 'lab2', '--remote', '198.18.0.1']);
    for (const n of ['pc1', 'pc2', 'pc3', 'pc4', 'pc5']) await s.run(['node', 'add', n, '--network', 'lab']);
    daemon = await ServerDaemon.start({
      stateDir: s.stateDir,
      logger,
      pollMs: 100,
      periodicMs: 300,
      // Short enough for the slow-client test below.
      apiLimits: { headersTimeoutMs: 2_000, requestTimeoutMs: 4_000 },
    });
    port = daemon.port;
    caPem = await readFile(join(s.stateDir, 'api', 'ca.crt'), 'utf8');
    anchor = parseAnchor((await readFile(join(s.stateDir, 'trust-anchor'), 'utf8')).trim());
  });
  afterAll(async () => {
    await daemon?.stop();
    await s.remove();
  });

  it('enrolls a node with token + CSR and then serves its signed membership and its bundles', async () => {
    const { res, enrolled } = await enroll(port, caPem, 'pc1', await token('pc1'));
    expect(res.status, res.body.toString()).toBe(200);
    expect(res.json<{ node: string; api_ca: string }>()).toMatchObject({ node: 'pc1', api_ca: caPem });
    const a = enrolled!;
    // Regression: an enrollment is committed on the daemon's own connection, which its
    // data_version poll cannot see; the node's ccd file then waited for the periodic pass
    // (30 s in production) and every connection until then was refused.
    const reconciledForEnrollment = () => logger.events.some((e) => e.kind === 'server.reconcile' && e.cause === 'node pc1 enrolled');
    expect(await waitFor(reconciledForEnrollment, 10_000)).toBe(true);

    const m = await get('/v1/membership', a);
    expect(m.status).toBe(200);
    expect(m.headers['content-type']).toBe('application/json');
    const doc = docOf(m.body, 'pc1');
    expect(doc.networks.map((n) => n.id)).toEqual(['lab']);
    const entry = doc.networks[0]!.bundle;
    expect(entry.url).toBe(`bundles/lab/${entry.version}`);
    expect(new URL(entry.url, `https://127.0.0.1:${port}/v1/membership`).pathname).toBe(`/v1/bundles/lab/${entry.version}`);

    const b = await get(`/v1/bundles/lab/${entry.version}`, a);
    expect(b.status).toBe(200);
    expect(b.headers['content-type']).toBe('application/gzip');
    const v = await verifyBundle(b.body, { anchor, nodeId: 'pc1', now: new Date(), expect: { network: 'lab', version: entry.version, sha256: entry.sha256, size: entry.size } });
    expect(v.manifest.key_origin).toBe('node');
    expect(v.files.has('node.key')).toBe(false);
    // The network certificate is for the key made on the node.
    expect(await certMatchesKey(v.files.get('node.crt')!.toString(), a.keyPair.privateKeyPem)).toBe(true);
    expect(v.spec.address.ipv4).toBe('198.19.0.2/24');

    // ETag / 304 on both.
    const m304 = await get('/v1/membership', a, { 'if-none-match': String(m.headers['etag']) });
    expect(m304.status).toBe(304);
    expect(m304.body.length).toBe(0);
    const b304 = await get(`/v1/bundles/lab/${entry.version}`, a, { 'if-none-match': String(b.headers['etag']) });
    expect(b304.status).toBe(304);
    // Same bytes again (deterministic), so the ETag is stable.
    expect((await get('/v1/membership', a)).headers['etag']).toBe(m.headers['etag']);
  });

  it('refuses a second daemon on the same state directory and keeps serving', async () => {
    await expect(ServerDaemon.start({ stateDir: s.stateDir })).rejects.toMatchObject({ code: 'MVPN_DAEMON_RUNNING' });
    // The refused one left the running daemon's files alone.
    expect(JSON.parse(await readFile(join(s.stateDir, 'run', 'status.json'), 'utf8'))).toMatchObject({ pid: process.pid });
    expect((await readFile(join(s.stateDir, 'run', 'server.pid'), 'utf8')).trim()).toBe(String(process.pid));
    const { enrolled } = await enroll(port, caPem, 'pc1', await token('pc1'));
    expect((await get('/v1/membership', enrolled)).status).toBe(200);
  });

  it('applies CLI changes without a restart: a new membership, then a removal', async () => {
    const { enrolled } = await enroll(port, caPem, 'pc2', await token('pc2'));
    const a = enrolled!;
    const first = docOf((await get('/v1/membership', a)).body, 'pc2');
    await s.run(['node', 'add', 'pc2', '--network', 'lab2']);
    const second = docOf((await get('/v1/membership', a)).body, 'pc2');
    expect(second.serial).toBeGreaterThan(first.serial);
    expect(second.networks.map((n) => n.id)).toEqual(['lab', 'lab2']);
    const lab2 = second.networks[1]!.bundle;
    expect((await get(`/v1/bundles/lab2/${lab2.version}`, a)).status).toBe(200);

    await s.run(['node', 'remove', 'pc2', '--network', 'lab2']);
    const third = docOf((await get('/v1/membership', a)).body, 'pc2');
    expect(third.serial).toBeGreaterThan(second.serial);
    expect(third.networks.map((n) => n.id)).toEqual(['lab']);
    expect((await get(`/v1/bundles/lab2/${lab2.version}`, a)).status).toBe(404);
    // The removal put pc2's lab2 certificate on lab2's CRL, so lab's bundle for pc2 is unchanged...
    expect(third.networks[0]!.bundle.version).toBe(second.networks[0]!.bundle.version);
    // ...and an old bundle version is gone once a newer one exists.
    // pc5 gets a certificate (offline export), then its revocation changes lab's CRL: every lab member gets a new version.
    await s.run(['export', 'pc5', '--network', 'lab', '--out', join(s.dir, 'pc5.tar.gz')]);
    await s.run(['node', 'revoke', 'pc5', '--network', 'lab']);
    const fourth = docOf((await get('/v1/membership', a)).body, 'pc2');
    expect(fourth.networks[0]!.bundle.version).toBeGreaterThan(third.networks[0]!.bundle.version);
    expect((await get(`/v1/bundles/lab/${third.networks[0]!.bundle.version}`, a)).status).toBe(404);
  });

  it('refuses used, expired, foreign and malformed tokens', async () => {
    const t = await token('pc3');
    expect((await enroll(port, caPem, 'pc3', t)).res.status).toBe(200);
    const used = await enroll(port, caPem, 'pc3', t);
    expect([used.res.status, used.res.json<{ error: { code: string } }>().error.code]).toEqual([401, 'MVPN_TOKEN_USED']);

    const past = await openContext(s.stateDir, () => Date.now() - 2 * 3600_000);
    let expired: string;
    try {
      expired = createToken(past, 'pc4', 3600_000).token;
    } finally {
      past.close();
    }
    const e = await enroll(port, caPem, 'pc4', expired);
    expect([e.res.status, e.res.json<{ error: { code: string } }>().error.code]).toEqual([401, 'MVPN_TOKEN_EXPIRED']);

    const foreign = await enroll(port, caPem, 'pc4', await token('pc1'));
    expect(foreign.res.json<{ error: { code: string } }>().error.code).toBe('MVPN_TOKEN_INVALID');
    const garbage = await enroll(port, caPem, 'pc4', 'mvpn1_' + 'A'.repeat(43));
    expect(garbage.res.json<{ error: { code: string } }>().error.code).toBe('MVPN_TOKEN_INVALID');
    const unknownNode = await enroll(port, caPem, 'nobody', await token('pc4'));
    expect(unknownNode.res.json<{ error: { code: string } }>().error.code).toBe('MVPN_TOKEN_INVALID');
  });

  it('refuses a CSR with the wrong CN or key type, without using up the token', async () => {
    const t = await token('pc4');
    const wrongCn = await enroll(port, caPem, 'pc4', t, { cn: 'pc1' });
    expect([wrongCn.res.status, wrongCn.res.json<{ error: { code: string } }>().error.code]).toEqual([400, 'MVPN_CERT_WRONG_CN']);
    const rsa = await enroll(port, caPem, 'pc4', t, { alg: 'rsa-2048' });
    expect([rsa.res.status, rsa.res.json<{ error: { code: string } }>().error.code]).toEqual([400, 'MVPN_KEY_INVALID']);
    // A CSR whose signature does not match its key.
    const k1 = await generateKeyPairPem('ec-p256');
    const csr = await createCsr({ keyPair: k1, cn: 'pc4' });
    const tampered = csr.replace(/(.{60})(.)/s, (_m, a: string, c: string) => a + (c === 'A' ? 'B' : 'A'));
    const bad = await https(port, '/v1/enroll', { ca: caPem }, { method: 'POST', body: JSON.stringify({ node: 'pc4', token: t, csr: tampered }) });
    expect(bad.status).toBe(400);
    expect(bad.json<{ error: { code: string } }>().error.code).toBe('MVPN_CSR_INVALID');
    // The token still works.
    expect((await enroll(port, caPem, 'pc4', t)).res.status).toBe(200);
  });

  it("never lets one node read another's document or bundle", async () => {
    const a = (await enroll(port, caPem, 'pc1', await token('pc1'))).enrolled!;
    const b = (await enroll(port, caPem, 'pc4', await token('pc4'))).enrolled!;
    const bDoc = docOf((await get('/v1/membership', b)).body, 'pc4');
    const bVersion = bDoc.networks[0]!.bundle.version;
    const bBundle = await get(`/v1/bundles/lab/${bVersion}`, b);
    expect(bBundle.status).toBe(200);
    // The same path asked by A: bundle paths are per caller, so A gets its own bundle (if it has one at that
    // version: versions come from one sequence and a CRL change gives all members the same one) or 404, never B's.
    const asA = await get(`/v1/bundles/lab/${bVersion}`, a);
    expect(asA.body.equals(bBundle.body)).toBe(false);
    if (asA.status === 200) expect((await verifyBundle(asA.body, { anchor, nodeId: 'pc1', now: new Date() })).manifest.node).toBe('pc1');
    else expect(asA.status).toBe(404);
    // B's bundle does not verify as A's (its manifest names B), so even a relayed copy is useless to A.
    await expect(verifyBundle(bBundle.body, { anchor, nodeId: 'pc1', now: new Date() })).rejects.toThrow(/pc4|node/);
    // The membership route always answers with the caller's own document.
    expect(docOf((await get('/v1/membership', a)).body, 'pc1').node).toBe('pc1');

    // A certificate with CN=pc4 from another CA is refused.
    const now = Date.now();
    const evilCa = await createCa({ cn: 'evil', notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) });
    const k = await generateKeyPairPem('ec-p256');
    const evil = await issueCert({ ca: evilCa, publicKeyPem: k.publicKeyPem, cn: 'pc4', usage: 'client', notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) });
    const r = await https(port, '/v1/membership', { ca: caPem, cert: evil.certPem, key: k.privateKeyPem });
    expect([r.status, r.json<{ error: { code: string } }>().error.code]).toEqual([401, 'MVPN_API_UNAUTHORIZED']);

    // No certificate at all.
    expect((await get('/v1/membership')).status).toBe(401);
    expect((await get(`/v1/bundles/lab/${bVersion}`)).status).toBe(401);
  });

  it('refuses a superseded identity after re-enrollment, and every identity after node revoke', async () => {
    const old = (await enroll(port, caPem, 'pc3', await token('pc3'))).enrolled!;
    expect((await get('/v1/membership', old)).status).toBe(200);
    const fresh = (await enroll(port, caPem, 'pc3', await token('pc3'))).enrolled!;
    expect((await get('/v1/membership', fresh)).status).toBe(200);
    const r = await get('/v1/membership', old);
    expect([r.status, r.json<{ error: { code: string } }>().error.code]).toEqual([403, 'MVPN_API_FORBIDDEN']);

    await s.run(['node', 'revoke', 'pc3']);
    expect((await get('/v1/membership', fresh)).status).toBe(403);
  });

  it('renews a node: new key and certificates at once, the old ones kept until the new identity confirms, then revoked', async () => {
    await s.run(['node', 'add', 'pc6', '--network', 'lab']);
    const old = (await enroll(port, caPem, 'pc6', await token('pc6'))).enrolled!;
    const state = async () => {
      const ctx = await openContext(s.stateDir);
      try {
        return ctx.store.read((tx) => ({ m: tx.getMembership('lab', 'pc6')!, n: tx.getNode('pc6')!, crl: tx.listRevocations('lab').map((r) => r.serial) }));
      } finally {
        ctx.close();
      }
    };
    const renewWith = async (who: Enrolled, cn = 'pc6') => {
      const keyPair = await generateKeyPairPem('ec-p256');
      const res = await https(port, '/v1/renew', who.tls, { method: 'POST', body: JSON.stringify({ csr: await createCsr({ keyPair, cn }) }) });
      const cert = res.status === 200 ? res.json<{ identity_cert: string }>().identity_cert : '';
      return { res, next: { node: 'pc6', keyPair, identityCertPem: cert, tls: { ca: caPem, cert, key: keyPair.privateKeyPem } } satisfies Enrolled };
    };
    const confirm = (who: Enrolled) => https(port, '/v1/renew/confirm', who.tls, { method: 'POST', body: '{}' });
    const s0 = await state();

    // Not without a node certificate; not for another CN.
    expect((await https(port, '/v1/renew', { ca: caPem }, { method: 'POST', body: '{"csr":"x"}' })).status).toBe(401);
    const wrong = await renewWith(old, 'pc1');
    expect([wrong.res.status, wrong.res.json<{ error: { code: string } }>().error.code]).toEqual([400, 'MVPN_CERT_WRONG_CN']);

    const { res, next } = await renewWith(old);
    expect(res.status, res.body.toString()).toBe(200);
    expect(await certMatchesKey(next.identityCertPem, next.keyPair.privateKeyPem)).toBe(true);
    const s1 = await state();
    expect(s1.m.certSerial).not.toBe(s0.m.certSerial);
    expect(s1.m.prevCertSerial).toBe(s0.m.certSerial);
    expect(s1.m.bundleVersion).toBeGreaterThan(s0.m.bundleVersion);
    expect(s1.crl).not.toContain(s0.m.certSerial);
    // The new bundle carries a certificate for the new key; the old identity still works until confirmed.
    const doc = docOf((await get('/v1/membership', old)).body, 'pc6');
    const entry = doc.networks.find((n) => n.id === 'lab')!;
    const bundle = await get(entry.bundle.url.replace(/^/, '/v1/'), next);
    expect(bundle.status).toBe(200);
    const vb = await verifyBundle(new Uint8Array(bundle.body), { anchor, nodeId: 'pc6', now: new Date(), expect: { network: 'lab', ...entry.bundle }, nodeKeyPem: next.keyPair.privateKeyPem });
    expect(vb.cert.serialHex).toBe(s1.m.certSerial);
    // Only the new identity confirms.
    const early = await confirm(old);
    expect([early.status, early.json<{ error: { code: string } }>().error.code]).toEqual([409, 'MVPN_RENEW_NOT_CURRENT']);

    // A node that lost the unconfirmed renewal renews again with its old identity: the unconfirmed certificate was never used and is revoked at once.
    const again = await renewWith(old);
    expect(again.res.status).toBe(200);
    const s2 = await state();
    expect(s2.m.prevCertSerial).toBe(s0.m.certSerial);
    expect(s2.crl).toContain(s1.m.certSerial);
    expect(s2.crl).not.toContain(s0.m.certSerial);
    expect((await get('/v1/membership', next)).status).toBe(403);

    const done = await confirm(again.next);
    expect(done.status, done.body.toString()).toBe(200);
    expect(done.json()).toEqual({ node: 'pc6', revoked: { lab: s0.m.certSerial } });
    const s3 = await state();
    expect(s3.crl).toContain(s0.m.certSerial);
    expect(s3.crl).not.toContain(s3.m.certSerial);
    expect(s3.m.prevCertSerial).toBeNull();
    expect(s3.n.prevIdentitySerial).toBeNull();
    expect((await get('/v1/membership', old)).status).toBe(403);
    expect((await get('/v1/membership', again.next)).status).toBe(200);
    // Confirming twice changes nothing.
    expect((await confirm(again.next)).json()).toEqual({ node: 'pc6', revoked: {} });

    // A revoke during an unconfirmed renewal revokes both certificates and both identities.
    const third = await renewWith(again.next);
    expect(third.res.status).toBe(200);
    await s.run(['node', 'revoke', 'pc6']);
    const s4 = await state();
    expect(s4.crl).toEqual(expect.arrayContaining([s3.m.certSerial, s4.m.certSerial]));
    expect((await get('/v1/membership', again.next)).status).toBe(403);
    expect((await get('/v1/membership', third.next)).status).toBe(403);
  });

  it('re-signs a document with a new serial once less than half of its validity is left', async () => {
    const a = (await enroll(port, caPem, 'pc1', await token('pc1'))).enrolled!;
    const before = docOf((await get('/v1/membership', a)).body, 'pc1');
    const ctx = await openContext(s.stateDir);
    try {
      ctx.store.write((tx) => tx.updateNode('pc1', { docExpiresAt: Date.now() + 3600_000 }));
    } finally {
      ctx.close();
    }
    const after = docOf((await get('/v1/membership', a)).body, 'pc1');
    expect(after.serial).toBeGreaterThan(before.serial);
    expect(Date.parse(after.expires_at)).toBeGreaterThan(Date.now() + 6 * 86_400_000);
  });

  it('re-issues a CRL at half-life by itself, giving every member a new bundle version', async () => {
    const ctx = await openContext(s.stateDir);
    try {
      const before = ctx.store.read((tx) => ({ net: tx.getNetwork('lab')!, m: tx.getMembership('lab', 'pc1')! }));
      ctx.store.write((tx) => tx.updateNetwork('lab', { crlNextUpdate: Date.now() + 3600_000 }));
      const ok = await waitFor(() => ctx.store.read((tx) => tx.getNetwork('lab')!.crlNumber) > before.net.crlNumber, 20_000);
      expect(ok).toBe(true);
      const after = ctx.store.read((tx) => ({ net: tx.getNetwork('lab')!, m: tx.getMembership('lab', 'pc1')! }));
      expect(after.net.crlNextUpdate).toBeGreaterThan(Date.now() + 6 * 86_400_000);
      expect(after.m.bundleVersion).toBeGreaterThan(before.m.bundleVersion);
      expect(logger.events.some((e) => e.kind === 'server.crl-refreshed' && e.network === 'lab')).toBe(true);
    } finally {
      ctx.close();
    }
  });

  describe('malformed and hostile requests', () => {
    const errorCode = (r: { json<T>(): T }) => r.json<{ error: { code: string } }>().error.code;
    const post = (body: string | Buffer, headers: Record<string, string> = {}) => https(port, '/v1/enroll', { ca: caPem }, { method: 'POST', body, headers });

    it.each([
      ['not JSON', 'hello', 400],
      ['JSON array', '[1,2,3]', 400],
      ['missing fields', '{"node":"pc1"}', 400],
      ['unknown field', JSON.stringify({ node: 'pc1', token: 't', csr: 'c', admin: true }), 400],
      ['wrong types', '{"node":1,"token":[],"csr":{}}', 400],
      ['deep nesting', '['.repeat(5000) + ']'.repeat(5000), 400],
      ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), 400],
      ['bad node id', JSON.stringify({ node: '../../etc', token: 'mvpn1_x', csr: 'x' }), 400],
      ['empty body', '', 400],
    ])('enroll with %s', async (_name, body, status) => {
      const r = await post(body);
      expect(r.status).toBe(status);
      expect(r.headers['content-type']).toBe('application/json');
      expect(errorCode(r)).toMatch(/^MVPN_/);
    });

    it('refuses an oversized body with 413 before reading it all', async () => {
      const r = await post(Buffer.alloc(200 * 1024, 0x20));
      expect(r.status).toBe(413);
      expect(errorCode(r)).toBe('MVPN_API_TOO_LARGE');
      const declared = await new Promise<string>((resolve, reject) => {
        const sock = connect({ host: '127.0.0.1', port, ca: caPem, servername: 'localhost', checkServerIdentity: () => undefined }, () => {
          sock.write('POST /v1/enroll HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n{');
        });
        let out = '';
        sock.on('data', (d: Buffer) => (out += d.toString()));
        sock.on('end', () => resolve(out));
        sock.on('close', () => resolve(out));
        sock.on('error', reject);
      });
      expect(declared).toMatch(/^HTTP\/1\.1 413/);
    });

    it.each([
      ['GET', '/v1/enroll', 405],
      ['DELETE', '/v1/membership', 405],
      ['POST', '/v1/membership', 405],
      ['PUT', '/v1/bundles/lab/1', 405],
      ['GET', '/', 404],
      ['GET', '/v1/admin/networks', 404],
      ['GET', '/v2/membership', 404],
      ['GET', '/v1/bundles/../../etc/passwd', 404],
      ['GET', '/v1/bundles/lab/1/../../../etc', 404],
      ['GET', '/v1/bundles/..%2f..%2fetc/1', 404],
      ['GET', '/v1/bundles/lab/%2e%2e', 404],
      ['GET', '/v1/bundles/LAB/1', 404],
      ['GET', '/v1/bundles/lab/0', 404],
      ['GET', '/v1/bundles/lab/99999999999999999999', 404],
      ['GET', '/v1/bundles/lab/-1', 404],
    ])('%s %s → %i', async (method, path, status) => {
      const a = (await enroll(port, caPem, 'pc1', await token('pc1'))).enrolled!;
      const r = await https(port, path, a.tls, { method });
      expect(r.status).toBe(status);
      expect(errorCode(r)).toMatch(/^MVPN_/);
      if (status === 405) expect(r.headers['allow']).toBeDefined();
    });

    it('drops a client that sends its headers too slowly (slowloris)', async () => {
      const started = Date.now();
      const reply = await new Promise<string>((resolve) => {
        const sock = connect({ host: '127.0.0.1', port, ca: caPem, checkServerIdentity: () => undefined }, () => {
          sock.write('GET /v1/membership HTTP/1.1\r\nhost: x\r\n');
          const drip = setInterval(() => sock.writable && sock.write('x-slow: 1\r\n'), 500);
          sock.on('close', () => clearInterval(drip));
        });
        let out = '';
        sock.on('data', (d: Buffer) => (out += d.toString()));
        sock.on('close', () => resolve(out));
        sock.on('error', () => resolve(out));
        setTimeout(() => sock.destroy(), 30_000);
      });
      expect(Date.now() - started).toBeLessThan(20_000);
      expect(reply).toMatch(/^HTTP\/1\.1 408/);
    });

    it('answers garbage on the TLS socket and plain HTTP on the TLS port without falling over', async () => {
      const raw = (data: string | Buffer, tls: boolean) =>
        new Promise<string>((resolve) => {
          const done = (out: string) => resolve(out);
          if (tls) {
            const sock = connect({ host: '127.0.0.1', port, ca: caPem, checkServerIdentity: () => undefined }, () => sock.write(data));
            let out = '';
            sock.on('data', (d: Buffer) => (out += d.toString()));
            sock.on('close', () => done(out));
            sock.on('error', () => done(out));
            setTimeout(() => sock.destroy(), 5_000);
          } else {
            void import('node:net').then(({ connect: tcp }) => {
              const sock = tcp({ host: '127.0.0.1', port }, () => sock.write(data));
              sock.on('data', () => undefined);
              sock.on('close', () => done(''));
              sock.on('error', () => done(''));
              setTimeout(() => sock.destroy(), 5_000);
            });
          }
        });
      expect(await raw('GARBAGE\r\n\r\n', true)).toMatch(/^HTTP\/1\.1 400/);
      expect(await raw(`GET /v1/membership HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(64 * 1024)}\r\n\r\n`, true)).toMatch(/^HTTP\/1\.1 431/);
      await raw('GET /v1/membership HTTP/1.1\r\nhost: x\r\n\r\n', false);
      await raw(Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0]), false);
      // Still serving.
      const a = (await enroll(port, caPem, 'pc1', await token('pc1'))).enrolled!;
      expect((await get('/v1/membership', a)).status).toBe(200);
      expect(logger.events.some((e) => e.kind === 'api.error' && e.status >= 500)).toBe(false);
    });
  });
});
