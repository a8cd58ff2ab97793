/**
 * The trust core's rules, table by table: anchors and signatures, envelopes,
 * strict JSON, schemas (with the failing field named), membership rules
 * (rollback, equivocation, expiry at the boundary), strict gunzip, the
 * deterministic builder and bundle verification's happy paths. Hostile
 * inputs have their own corpus (adversarial.test.ts).
 */
import { generateKeyPairSync } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import { describe, expect, test } from 'vitest';
import { buildBundle, buildMembership } from '../../src/bundle/build.ts';
import { openEnvelope, sealEnvelope } from '../../src/bundle/envelope.ts';
import { gunzipStrict } from '../../src/bundle/gzip.ts';
import { parseMembershipDoc, sha256Hex, verifyMembership } from '../../src/bundle/membership.ts';
import { ManifestSchema, MembershipDocSchema, NetworkSpecSchema, isRemoteHost, parseWithSchema } from '../../src/bundle/schema.ts';
import {
  anchorToString,
  generateSigningKey,
  parseAnchor,
  signDetached,
  signingKeyFromPem,
  signingKeyToPem,
  verifyDetached,
} from '../../src/bundle/sign.ts';
import { parseJsonStrict } from '../../src/bundle/strict-json.ts';
import { verifyBundle } from '../../src/bundle/verify.ts';
import { MvpnError } from '../../src/errors.ts';
import { DAY, HOUR, bundleInput, makeBundle, makeBundleFixture, makeMembership, makeSpec, membershipDoc } from '../helpers/bundle-fixtures.ts';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof MvpnError ? err.code : `not an MvpnError: ${String(err)}`;
  }
  return undefined;
}

async function codeOfAsync(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (err) {
    return err instanceof MvpnError ? err.code : `not an MvpnError: ${String(err)}`;
  }
  return undefined;
}

const f = await makeBundleFixture();

describe('signing keys and anchors', () => {
  const key = generateSigningKey();

  test('anchor text round-trips and names the same key', () => {
    const text = anchorToString(key);
    expect(text).toMatch(/^ed25519:[A-Za-z0-9+/]{43}=$/);
    const anchor = parseAnchor(`  ${text}\n`);
    expect(anchor.keyId).toBe(key.keyId);
    expect(anchor.keyId).toMatch(/^[0-9a-f]{16}$/);
  });

  test('the signing key survives PEM', () => {
    const again = signingKeyFromPem(signingKeyToPem(key));
    expect(again.keyId).toBe(key.keyId);
    const sig = signDetached('membership', Buffer.from('x'), again);
    expect(verifyDetached('membership', Buffer.from('x'), sig, parseAnchor(anchorToString(key)))).toBe(true);
  });

  test('a PEM key of another type is refused', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(codeOf(() => signingKeyFromPem(ec))).toBe('MVPN_KEY_INVALID');
    expect(codeOf(() => signingKeyFromPem('not a key'))).toBe('MVPN_KEY_INVALID');
  });

  test.each([
    ['empty', ''],
    ['no prefix', anchorToString(generateSigningKey()).slice('ed25519:'.length)],
    ['other algorithm', anchorToString(generateSigningKey()).replace('ed25519', 'ed448')],
    ['short', 'ed25519:AAAA'],
    ['non-canonical padding bits', `ed25519:${'A'.repeat(42)}B=`],
    ['two lines', `${anchorToString(generateSigningKey())}\n${anchorToString(generateSigningKey())}`],
    ['trailing junk', `${anchorToString(generateSigningKey())} extra`],
  ])('anchor refused: %s', (_n, text) => {
    expect(codeOf(() => parseAnchor(text))).toBe('MVPN_ANCHOR_INVALID');
  });

  test('a signature binds the document type and the exact bytes', () => {
    const anchor = parseAnchor(anchorToString(key));
    const payload = Buffer.from('{"a":1}');
    const sig = signDetached('manifest', payload, key);
    expect(verifyDetached('manifest', payload, sig, anchor)).toBe(true);
    expect(verifyDetached('membership', payload, sig, anchor)).toBe(false);
    expect(verifyDetached('manifest', Buffer.from('{"a":2}'), sig, anchor)).toBe(false);
    expect(verifyDetached('manifest', payload, sig.subarray(0, 63), anchor)).toBe(false);
    expect(verifyDetached('manifest', payload, sig, parseAnchor(anchorToString(generateSigningKey())))).toBe(false);
  });
});

describe('envelopes', () => {
  test('seal then open gives the payload back', () => {
    const payload = Buffer.from('{"hello":"world"}');
    const env = sealEnvelope('membership', payload, f.signingKey);
    expect(openEnvelope(env, 'membership', f.anchor).equals(payload)).toBe(true);
    const parsed = JSON.parse(env.toString()) as Record<string, string>;
    expect(Object.keys(parsed)).toEqual(['format', 'type', 'key_id', 'payload', 'signature']);
    expect(parsed['key_id']).toBe(f.signingKey.keyId);
  });

  test.each([
    ['opened as the other type', (env: Buffer) => openEnvelope(env, 'manifest', f.anchor), 'MVPN_SIGNATURE_INVALID'],
    ['opened with another anchor', (env: Buffer) => openEnvelope(env, 'membership', parseAnchor(anchorToString(generateSigningKey()))), 'MVPN_SIGNATURE_INVALID'],
    ['with an unknown field', (env: Buffer) => openEnvelope(Buffer.from(env.toString().replace('{', '{"x":1,')), 'membership', f.anchor), 'MVPN_SCHEMA_INVALID'],
  ])('refused when %s', (_n, open, code) => {
    const env = sealEnvelope('membership', Buffer.from('{}'), f.signingKey);
    expect(codeOf(() => open(env))).toBe(code);
  });
});

describe('strict JSON', () => {
  test.each([
    ['duplicate key', '{"a":1,"a":2}', 'MVPN_JSON_INVALID'],
    ['duplicate key via escape', '{"a":1,"\\u0061":2}', 'MVPN_JSON_INVALID'],
    ['duplicate key in a nested object', '{"x":[{"b":1,"c":{"d":1,"d":1}}]}', 'MVPN_JSON_INVALID'],
    ['too deep', '[[[[[[[[[[1]]]]]]]]]]', 'MVPN_JSON_TOO_LARGE'],
    ['too large', `"${'x'.repeat(2000)}"`, 'MVPN_JSON_TOO_LARGE'],
    ['not JSON', '{a:1}', 'MVPN_JSON_INVALID'],
  ])('%s is refused', (_n, text, code) => {
    expect(codeOf(() => parseJsonStrict(Buffer.from(text), 1024, 8, 'doc'))).toBe(code);
  });

  test('same key in sibling objects, and keys that only look alike, are fine', () => {
    expect(parseJsonStrict(Buffer.from('{"a":{"k":1},"b":{"k":2},"c":"{\\"a\\":1,\\"a\\":2}","k ":1,"k":2}'), 1024, 8, 'doc')).toBeTruthy();
  });

  test('invalid UTF-8 is refused, not replaced', () => {
    expect(codeOf(() => parseJsonStrict(Buffer.from([0x22, 0xff, 0x22]), 1024, 8, 'doc'))).toBe('MVPN_JSON_INVALID');
  });
});

describe('schemas', () => {
  const spec = makeSpec('lab1');
  test.each<[string, Record<string, unknown>, string]>([
    ['unknown field', { ...spec, script: 'x' }, 'script: unknown field'],
    ['network id with upper case', { ...spec, id: 'Lab1' }, 'id:'],
    ['network id too long for an interface name', { ...spec, id: 'abcdefghijklm' }, 'id:'],
    ['no remotes', { ...spec, remotes: [] }, 'remotes:'],
    ['remote host with a space', { ...spec, remotes: [{ host: 'a b', port: 1 }] }, 'remotes[0].host:'],
    ['remote port 0', { ...spec, remotes: [{ host: 'a.example', port: 0 }] }, 'remotes[0].port:'],
    ['remote with an extra field', { ...spec, remotes: [{ host: 'a.example', port: 1, proto: 'tcp' }] }, 'remotes[0].proto: unknown field'],
    ['address without prefix', { ...spec, address: { ipv4: '192.0.2.1' } }, 'address.ipv4:'],
    ['duplicate cipher', { ...spec, ciphers: ['AES-256-GCM', 'AES-256-GCM'] }, 'ciphers:'],
    ['keepalive timeout not above interval', { ...spec, keepalive: { interval: 10, timeout: 10 } }, 'keepalive.timeout:'],
    ['mtu as a float', { ...spec, mtu: 1400.5 }, 'mtu:'],
    ['name with a control character', { ...spec, name: 'a\u0007b' }, 'name:'],
    ['name with a bidi override', { ...spec, name: 'a\u202eb' }, 'name:'],
    ['extra option too long', { ...spec, extra_options: [['mssfix', 'x'.repeat(300)]] }, 'extra_options[0][1]:'],
  ])('network spec: %s is refused naming the field', (_n, value, field) => {
    try {
      parseWithSchema(NetworkSpecSchema, value, 'network.json');
      expect.unreachable();
    } catch (err) {
      expect((err as MvpnError).code).toBe('MVPN_SCHEMA_INVALID');
      expect((err as MvpnError).message).toContain(`network.json: ${field}`);
    }
  });

  test('a valid spec parses in schema key order (so serialising is deterministic)', () => {
    const shuffled = Object.fromEntries(Object.entries(spec).reverse());
    expect(JSON.stringify(parseWithSchema(NetworkSpecSchema, shuffled, 'x'))).toBe(JSON.stringify(parseWithSchema(NetworkSpecSchema, spec, 'x')));
  });

  test.each([
    ['198.18.0.1', true],
    ['2001:db8::1', true],
    ['vpn.example.org', true],
    ['a-b.c', true],
    ['fe80::1%eth0', false],
    ['1.2.3', false],
    ['300.1.1.1', false],
    ['-a.example', false],
    ['a..example', false],
    ['a_b.example', false],
    ['a"b', false],
    ['', false],
  ])('remote host %j valid: %s', (host, ok) => {
    expect(isRemoteHost(host)).toBe(ok);
  });

  test('manifest and membership: integers beyond 2^53 and fractional versions are refused', () => {
    const m = { schema: 1, node: 'n', network: 'lab1', version: 2 ** 53, created: '2026-01-01T00:00:00Z', expires: '2026-02-01T00:00:00Z', key_origin: 'node', files: {} };
    expect(codeOf(() => parseWithSchema(ManifestSchema, m, 'manifest'))).toBe('MVPN_SCHEMA_INVALID');
    expect(codeOf(() => parseWithSchema(ManifestSchema, { ...m, version: Number.MAX_SAFE_INTEGER }, 'manifest'))).toBeUndefined();
    const doc = membershipDoc(f, []);
    expect(codeOf(() => parseWithSchema(MembershipDocSchema, { ...doc, serial: 0.5 }, 'membership'))).toBe('MVPN_SCHEMA_INVALID');
  });
});

describe('membership rules', () => {
  const now = f.now;
  const verify = (env: Buffer, last?: { serial: number; payloadSha256: string }, at = now) =>
    verifyMembership(env, { anchor: f.anchor, nodeId: f.nodeId, now: at, ...(last ? { last } : {}) });

  test('an accepted document reports its payload hash for the next comparison', () => {
    const env = makeMembership(f, [], { serial: 7 });
    const m = verify(env);
    expect(m.doc.serial).toBe(7);
    expect(m.payloadSha256).toBe(sha256Hex(m.payload));
    expect(m.envelope.equals(env)).toBe(true);
  });

  test('serial: higher accepted, equal with the same bytes accepted, equal with other bytes is equivocation, lower is rollback', () => {
    const a = verify(makeMembership(f, [], { serial: 5 }));
    const last = { serial: 5, payloadSha256: a.payloadSha256 };
    expect(verify(makeMembership(f, [], { serial: 6 }), last).doc.serial).toBe(6);
    expect(verify(a.envelope, last).doc.serial).toBe(5);
    const b = buildMembership({ ...membershipDoc(f, [], { serial: 5 }), expires_at: new Date(now.getTime() + 2 * DAY).toISOString() }, f.signingKey);
    expect(codeOf(() => verify(b, last))).toBe('MVPN_MEMBERSHIP_EQUIVOCATION');
    expect(codeOf(() => verify(makeMembership(f, [], { serial: 4 }), last))).toBe('MVPN_MEMBERSHIP_ROLLBACK');
  });

  test('expiry is judged against the injected now, and expires_at == now is expired', () => {
    const env = makeMembership(f, []);
    const expires = Date.parse(verify(env).doc.expires_at);
    expect(verify(env, undefined, new Date(expires - 1)).doc).toBeDefined();
    expect(codeOf(() => verify(env, undefined, new Date(expires)))).toBe('MVPN_MEMBERSHIP_EXPIRED');
  });

  test('wrong node', () => {
    expect(codeOf(() => verifyMembership(makeMembership(f, []), { anchor: f.anchor, nodeId: 'pc102', now }))).toBe('MVPN_MEMBERSHIP_WRONG_NODE');
  });

  test('the builder applies the same rules: duplicate networks and expires before issued are refused', async () => {
    const b = await makeBundle(f);
    const doc = membershipDoc(f, [{ bundle: b }, { bundle: b }]);
    expect(codeOf(() => buildMembership(doc, f.signingKey))).toBe('MVPN_SCHEMA_INVALID');
    const backwards = { ...membershipDoc(f, []), expires_at: new Date(now.getTime() - 2 * HOUR).toISOString() };
    expect(codeOf(() => buildMembership(backwards, f.signingKey))).toBe('MVPN_SCHEMA_INVALID');
    expect(codeOf(() => parseMembershipDoc(Buffer.from(JSON.stringify(backwards))))).toBe('MVPN_SCHEMA_INVALID');
  });
});

describe('strict gunzip', () => {
  const data = Buffer.from('hello '.repeat(1000));
  const gz = gzipSync(data);

  test('a plain gzip member is read back', () => {
    expect(gunzipStrict(gz, 1 << 20).equals(data)).toBe(true);
  });

  test('optional header fields (name, comment, extra, header CRC) are parsed, not guessed', () => {
    // Hand-built header: FLG = FEXTRA|FNAME|FCOMMENT, then the deflate body and trailer of `gz`.
    const header = Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 4 | 8 | 16, 0, 0, 0, 0, 0, 3]), Buffer.from([2, 0, 0xaa, 0xbb]), Buffer.from('name\0comment\0')]);
    expect(gunzipStrict(Buffer.concat([header, gz.subarray(10)]), 1 << 20).equals(data)).toBe(true);
  });

  test.each([
    ['trailing zeros', Buffer.concat([gz, Buffer.alloc(4)]), 'MVPN_BUNDLE_GZIP_INVALID'],
    ['a second member', Buffer.concat([gz, gzipSync(Buffer.from('x'))]), 'MVPN_BUNDLE_GZIP_INVALID'],
    ['length field wrong', Buffer.concat([gz.subarray(0, gz.length - 4), Buffer.from([0, 0, 0, 0])]), 'MVPN_BUNDLE_GZIP_INVALID'],
    ['reserved flag bits', Buffer.concat([gz.subarray(0, 3), Buffer.from([0x20]), gz.subarray(4)]), 'MVPN_BUNDLE_GZIP_INVALID'],
    ['not deflate', Buffer.concat([gz.subarray(0, 2), Buffer.from([7]), gz.subarray(3)]), 'MVPN_BUNDLE_GZIP_INVALID'],
    ['output over the cap', gz, 'MVPN_BUNDLE_TOO_LARGE'],
  ])('%s is refused', (name, bytes, code) => {
    expect(codeOf(() => gunzipStrict(bytes, name === 'output over the cap' ? 100 : 1 << 20))).toBe(code);
  });
});

describe('building bundles', () => {
  test('the same input gives the same bytes; a different version gives different bytes', async () => {
    const a = await makeBundle(f);
    const b = await buildBundle({ ...bundleInput(f), spec: Object.fromEntries(Object.entries(makeSpec(f.network)).reverse()) as never });
    expect(b.bytes.equals(a.bytes)).toBe(true);
    expect(b.sha256).toBe(a.sha256);
    expect((await makeBundle(f, { version: 2 })).sha256).not.toBe(a.sha256);
  });

  test('entries are sorted flat regular files, uid/gid 0, fixed mtime, keys 0600', async () => {
    const b = await makeBundle(f, { central: true });
    const entries: { path: string; type: string; mode: number; uid: number; gid: number; mtime: number }[] = [];
    const p = new Parser({
      onReadEntry: (e: ReadEntry) => {
        entries.push({ path: e.path, type: e.type, mode: e.mode!, uid: e.uid!, gid: e.gid!, mtime: e.mtime!.getTime() });
        e.resume();
      },
    });
    p.end(gunzipSync(b.bytes));
    expect(entries.map((e) => e.path)).toEqual(['ca.crt', 'crl.pem', 'manifest.json', 'manifest.sig', 'network.json', 'node.crt', 'node.key', 'tls-crypt-v2.key']);
    for (const e of entries) {
      expect(e).toMatchObject({ type: 'File', uid: 0, gid: 0, mode: e.path.endsWith('.key') ? 0o600 : 0o644 });
      expect(e.mtime).toBe(entries[0]!.mtime);
    }
  });

  test.each<[string, Parameters<typeof bundleInput>[1] & { tweak?: (i: ReturnType<typeof bundleInput>) => ReturnType<typeof bundleInput> }, string]>([
    ['a forbidden extra option', { spec: { ...makeSpec('lab1'), extra_options: [['up', '/bin/sh']] } }, 'MVPN_OPTION_FORBIDDEN'],
    ['a spec for another network', { spec: makeSpec('lab2') }, 'MVPN_BUNDLE_WRONG_NETWORK'],
    ['an invalid spec', { spec: { ...makeSpec('lab1'), remotes: [] } }, 'MVPN_SCHEMA_INVALID'],
    ['key_origin central without a key', { tweak: (i) => ({ ...i, manifest: { ...i.manifest, key_origin: 'central' } }) }, 'MVPN_BUNDLE_MANIFEST_INVALID'],
    ['expires before created', { tweak: (i) => ({ ...i, manifest: { ...i.manifest, expires: i.manifest.created } }) }, 'MVPN_BUNDLE_MANIFEST_INVALID'],
  ])('the builder refuses %s', async (_n, o, code) => {
    const input = bundleInput(f, o);
    expect(await codeOfAsync(buildBundle(o.tweak ? o.tweak(input) : input))).toBe(code);
  });
});

describe('verifying bundles', () => {
  test('a node-key bundle verifies and reports what it holds', async () => {
    const b = await makeBundle(f);
    const v = await verifyBundle(b.bytes, {
      anchor: f.anchor,
      nodeId: f.nodeId,
      now: f.now,
      expect: { network: f.network, version: 1, sha256: b.sha256, size: b.size },
      nodeKeyPem: f.pki.clients[f.nodeId]!.keyPem,
    });
    expect(v.manifest).toMatchObject({ node: f.nodeId, network: f.network, version: 1, key_origin: 'node' });
    expect(v.spec.id).toBe(f.network);
    expect(v.sha256).toBe(b.sha256);
    expect(v.cert.cn).toBe(f.nodeId);
    expect(v.crl.nextUpdate.getTime()).toBeGreaterThan(f.now.getTime());
    expect([...v.files.keys()].sort()).toEqual(['ca.crt', 'crl.pem', 'manifest.json', 'manifest.sig', 'network.json', 'node.crt', 'tls-crypt-v2.key']);
  });

  test('a central-key bundle verifies (node.key matches node.crt)', async () => {
    const b = await makeBundle(f, { central: true });
    const v = await verifyBundle(b.bytes, { anchor: f.anchor, nodeId: f.nodeId, now: f.now });
    expect(v.files.has('node.key')).toBe(true);
  });

  test('expiry follows the injected now: valid a second before expires, expired at it', async () => {
    const b = await makeBundle(f);
    const expires = Date.parse(bundleInput(f).manifest.expires);
    const at = (t: number) => verifyBundle(b.bytes, { anchor: f.anchor, nodeId: f.nodeId, now: new Date(t) });
    await expect(at(expires - 1000)).resolves.toBeDefined();
    expect(await codeOfAsync(at(expires))).toBe('MVPN_BUNDLE_EXPIRED');
  });

  test('a bundle is for one node only', async () => {
    const b = await makeBundle(f);
    expect(await codeOfAsync(verifyBundle(b.bytes, { anchor: f.anchor, nodeId: 'pc102', now: f.now }))).toBe('MVPN_BUNDLE_WRONG_NODE');
  });
});
