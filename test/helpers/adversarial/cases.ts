/**
 * The adversarial corpus (issue 3): bad membership documents and bundles,
 * each paired with the one error code the agent must refuse it with.
 *
 * Every case is the input an agent would see on one reconcile: the
 * membership envelope it fetched and, for bundle cases, the bytes served for
 * the network. Bundle cases that attack the inside of the bundle come with a
 * membership document (signed with the real key) that names the hostile
 * bundle's real sha256 and size, so the hash binding does not hide the
 * deeper defences; the binding itself has its own cases. Paths that try to
 * escape point into `escapeDir`, which the test watches.
 */
import { generateKeyPairPem } from '../../../src/pki/keys.ts';
import { issueCert } from '../../../src/pki/cert.ts';
import { createCrl } from '../../../src/pki/crl.ts';
import { gzipSync } from 'node:zlib';
import type { ErrorCode } from '../../../src/errors.ts';
import type { LastAccepted } from '../../../src/bundle/membership.ts';
import type { MembershipDoc } from '../../../src/bundle/schema.ts';
import { generateSigningKey, signDetached, type SigningKey } from '../../../src/bundle/sign.ts';
import { DAY, HOUR, makeSpec, membershipDoc, type BundleFixture } from '../bundle-fixtures.ts';
import { rawBundle, sha256, type RawBundleOptions } from './raw-bundle.ts';
import { gnuLongEntry, paxEntry, rawTar, type RawEntry } from './tar-raw.ts';

export interface AdversarialCase {
  readonly name: string;
  readonly code: ErrorCode;
  /** The membership envelope as fetched. */
  readonly membership: Buffer;
  /** What the agent accepted last (default: the good document, serial 1). */
  readonly last?: LastAccepted;
  /** The bytes served for the network's bundle (default: the good bundle). */
  readonly bundle?: Buffer;
  /** The node's own key, when the case is about it. */
  readonly nodeKeyPem?: string;
}

export interface CorpusContext {
  readonly f: BundleFixture;
  /** The good bundle and the good membership document (serial 1) listing it. */
  readonly good: { readonly bytes: Buffer; readonly sha256: string; readonly size: number };
  readonly goodMembership: Buffer;
  /** An absolute directory outside the state directory that escape attempts aim at. */
  readonly escapeDir: string;
}

const otherKey: SigningKey = generateSigningKey();

interface Envelope {
  format?: unknown;
  type?: unknown;
  key_id?: unknown;
  payload?: unknown;
  signature?: unknown;
  [k: string]: unknown;
}

function envelopeOf(bytes: Buffer): Envelope {
  return JSON.parse(bytes.toString('utf8')) as Envelope;
}

function envelopeBytes(e: Envelope): Buffer {
  return Buffer.from(JSON.stringify(e));
}

/** An envelope over `payload` signed with `key` (default: the real one), as the server would make it. */
function signPayload(ctx: CorpusContext, payload: Buffer | string, key: SigningKey = ctx.f.signingKey, type: 'membership' | 'manifest' = 'membership'): Buffer {
  const p = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  return envelopeBytes({
    format: 'mvpn-signed-v1',
    type: 'membership',
    key_id: key.keyId,
    payload: p.toString('base64'),
    signature: signDetached(type, p, key).toString('base64'),
  });
}

/** A membership document (signed with the real key, serial 2) naming these bundle bytes for the network. */
function listing(ctx: CorpusContext, bytes: Buffer, o: { version?: number; network?: string } = {}): Buffer {
  const doc = membershipDoc(ctx.f, [{ bundle: { bytes, sha256: sha256(bytes), size: bytes.length }, version: o.version ?? 1, network: o.network ?? ctx.f.network }], { serial: 2 });
  // The schema caps bundle sizes; a case about an over-large bundle gets a document saying so, built by hand.
  return buildMembershipUnchecked(ctx, doc);
}

function buildMembershipUnchecked(ctx: CorpusContext, doc: MembershipDoc): Buffer {
  return signPayload(ctx, JSON.stringify(doc));
}

function goodDoc(ctx: CorpusContext, serial = 2): Record<string, unknown> {
  return membershipDoc(ctx.f, [{ bundle: ctx.good }], { serial }) as unknown as Record<string, unknown>;
}

function withDoc(ctx: CorpusContext, edit: (d: Record<string, unknown>) => void, serial = 2): Buffer {
  const d = goodDoc(ctx, serial);
  edit(d);
  return signPayload(ctx, JSON.stringify(d));
}

function firstNetwork(d: Record<string, unknown>): Record<string, unknown> {
  return (d['networks'] as Record<string, unknown>[])[0]!;
}

/** A bundle case: the hostile bytes and a membership document that names them. */
function bundleCase(ctx: CorpusContext, name: string, code: ErrorCode, o: RawBundleOptions, extra: Partial<AdversarialCase> = {}): AdversarialCase {
  const bytes = rawBundle(ctx.f, o);
  return { name, code, membership: listing(ctx, bytes, { version: o.version ?? 1 }), bundle: bytes, ...extra };
}

/** Adds `extra` entries after the good ones (or before, with `first`). */
function plus(extra: RawEntry[], first = false): RawBundleOptions {
  return { entries: (base) => (first ? [...extra, ...base] : [...base, ...extra]) };
}

/** Replaces the entry named `name` by `repl` (one or more entries). */
function replacing(name: string, repl: (e: RawEntry) => RawEntry[]): RawBundleOptions {
  return { entries: (base) => base.flatMap((e) => (e.name === name ? repl(e) : [e])) };
}

function gzipBomb(bytes: number): Buffer {
  // A valid tar header announcing a huge ca.crt, then zeros: compresses ~1000:1.
  const header = rawTar([{ name: 'ca.crt', size: bytes, data: Buffer.alloc(0) }], { end: false });
  return gzipSync(Buffer.concat([header, Buffer.alloc(bytes)]), { level: 1 });
}

export const FORBIDDEN_DIRECTIVES = [
  'up', 'down', 'route-up', 'ipchange', 'tls-verify', 'learn-address', 'client-connect', 'auth-user-pass-verify', 'plugin', 'script-security',
  'iproute', 'config', 'cd', 'chroot', 'log', 'log-append', 'status', 'writepid', 'tmp-dir', 'setenv', 'setenv-safe', 'management',
  'ignore-unknown-option', 'tls-export-cert', 'tls-crypt-v2-verify',
  // load code, write files or devices, change trust or routing (issue 22)
  'engine', 'providers', 'provider-path', 'pkcs11-providers', 'pkcs11-id', 'pkcs11-id-management', 'genkey', 'peer-fingerprint', 'x509-track',
  'http-proxy', 'http-proxy-option', 'socks-proxy', 'management-external-key', 'management-client-user', 'dev-node', 'lladdr', 'mktun', 'rmtun',
  'memstats', 'dns', 'dns-updown', 'push-peer-info', 'allow-pull-fqdn', 'tls-cert-profile', 'keying-material-exporter', 'mark', 'bind-dev',
  'show-pkcs11-ids', 'cryptoapicert', 'pull', 'x509-username-field',
] as const;

/** Odd spellings of `up` that must still be recognised as `up`. */
export const ODD_SPELLINGS = ['UP', ' up', '\tup', 'up\t', '\t UP \t', "'up'", '"up"', '"\'Up\'"', '--up', '--Up', '-up', '\u3000up', 'ｕｐ', 'up /bin/sh', 'up\t/bin/sh', 'up\0', '\u200bup', 'Up\r'] as const;

export async function makeCorpus(ctx: CorpusContext): Promise<AdversarialCase[]> {
  const { f, escapeDir } = ctx;
  const good = f.pki.clients[f.nodeId]!;
  const other = f.pki.clients['pc102']!;
  const cases: AdversarialCase[] = [];
  const add = (c: AdversarialCase): void => {
    cases.push(c);
  };
  const goodEnv = envelopeOf(ctx.goodMembership);
  const bad = (name: string, code: ErrorCode, membership: Buffer, extra: Partial<AdversarialCase> = {}): void => add({ name, code, membership, ...extra });

  // ---- membership document: signature and envelope ----
  {
    const sig = Buffer.from(goodEnv.signature as string, 'base64');
    sig[7] = sig[7]! ^ 0x40;
    bad('membership: signature with one bit flipped', 'MVPN_SIGNATURE_INVALID', envelopeBytes({ ...goodEnv, signature: sig.toString('base64') }));
  }
  {
    const { signature: _s, ...rest } = goodEnv;
    bad('membership: signature field missing', 'MVPN_SIGNATURE_MISSING', envelopeBytes(rest));
  }
  bad('membership: signature empty', 'MVPN_SIGNATURE_MISSING', envelopeBytes({ ...goodEnv, signature: '' }));
  {
    const forged = signDetached('membership', Buffer.from('{}'), otherKey).toString('base64');
    const text = ctx.goodMembership.toString('utf8').replace('"signature":', `"signature":"${forged}","signature":`);
    bad('membership: signature field duplicated (a parser taking the first sees a forged one)', 'MVPN_JSON_INVALID', Buffer.from(text));
  }
  bad('membership: signed by another key (wrong anchor)', 'MVPN_SIGNATURE_INVALID', signPayload(ctx, JSON.stringify(goodDoc(ctx)), otherKey));
  {
    const e = envelopeOf(signPayload(ctx, JSON.stringify(goodDoc(ctx)), otherKey));
    bad("membership: signed by another key, key_id forged to the anchor's", 'MVPN_SIGNATURE_INVALID', envelopeBytes({ ...e, key_id: f.anchor.keyId }));
  }
  {
    const payload = Buffer.from(goodEnv.payload as string, 'base64').toString('utf8').replace('"serial":1', '"serial":9');
    bad('membership: payload edited after signing', 'MVPN_SIGNATURE_INVALID', envelopeBytes({ ...goodEnv, payload: Buffer.from(payload).toString('base64') }));
  }
  bad('membership: a signed manifest presented as a membership document', 'MVPN_SIGNATURE_INVALID', envelopeBytes({ ...envelopeOf(signPayload(ctx, JSON.stringify(goodDoc(ctx)))), type: 'manifest' }));
  bad('membership: signature made for type "manifest" (type confusion)', 'MVPN_SIGNATURE_INVALID', signPayload(ctx, JSON.stringify(goodDoc(ctx)), f.signingKey, 'manifest'));
  bad('membership: signature in non-canonical base64', 'MVPN_SCHEMA_INVALID', envelopeBytes({ ...goodEnv, signature: (goodEnv.signature as string).replace('==', '') }));
  bad('membership: unknown envelope format', 'MVPN_SCHEMA_INVALID', envelopeBytes({ ...goodEnv, format: 'mvpn-signed-v2' }));
  bad('membership: envelope is not JSON', 'MVPN_JSON_INVALID', Buffer.from('<html>502 Bad Gateway</html>'));
  bad('membership: envelope larger than the limit', 'MVPN_JSON_TOO_LARGE', Buffer.concat([ctx.goodMembership, Buffer.alloc(600 * 1024, 0x20)]));
  bad('membership: envelope nested 10,000 deep', 'MVPN_JSON_TOO_LARGE', Buffer.from('['.repeat(10_000) + ']'.repeat(10_000)));

  // ---- membership document: binding rules ----
  bad('membership: for another node', 'MVPN_MEMBERSHIP_WRONG_NODE', withDoc(ctx, (d) => (d['node'] = 'pc102')));
  bad(
    'membership: expired',
    'MVPN_MEMBERSHIP_EXPIRED',
    withDoc(ctx, (d) => {
      d['issued_at'] = new Date(f.now.getTime() - 3 * DAY).toISOString();
      d['expires_at'] = new Date(f.now.getTime() - DAY).toISOString();
    }),
  );
  bad('membership: rollback to an older serial', 'MVPN_MEMBERSHIP_ROLLBACK', withDoc(ctx, () => undefined, 3), { last: { serial: 5, payloadSha256: '0'.repeat(64) } });
  bad(
    'membership: equal serial with different bytes (equivocation)',
    'MVPN_MEMBERSHIP_EQUIVOCATION',
    withDoc(ctx, (d) => (firstNetwork(d)['name'] = 'renamed'), 1),
  );

  // ---- membership document: schema and JSON ----
  bad('membership: payload larger than the limit', 'MVPN_JSON_TOO_LARGE', signPayload(ctx, JSON.stringify(goodDoc(ctx)) + ' '.repeat(300 * 1024)));
  bad('membership: payload nested deeply', 'MVPN_JSON_TOO_LARGE', withDoc(ctx, (d) => (d['networks'] = JSON.parse('['.repeat(40) + ']'.repeat(40)) as unknown)));
  bad('membership: non-integer serial', 'MVPN_SCHEMA_INVALID', withDoc(ctx, (d) => (d['serial'] = 1.5)));
  bad('membership: serial beyond 2^53', 'MVPN_SCHEMA_INVALID', signPayload(ctx, JSON.stringify(goodDoc(ctx)).replace('"serial":2', '"serial":9007199254740993')));
  bad('membership: bundle version 1e300', 'MVPN_SCHEMA_INVALID', signPayload(ctx, JSON.stringify(goodDoc(ctx)).replace('"version":1', '"version":1e300')));
  bad('membership: serial as a string', 'MVPN_SCHEMA_INVALID', withDoc(ctx, (d) => (d['serial'] = '2')));
  bad('membership: negative bundle version', 'MVPN_SCHEMA_INVALID', withDoc(ctx, (d) => ((firstNetwork(d)['bundle'] as Record<string, unknown>)['version'] = -1)));
  bad('membership: unknown field', 'MVPN_SCHEMA_INVALID', withDoc(ctx, (d) => (d['run_this'] = '/bin/sh')));
  bad(
    'membership: the same network listed twice',
    'MVPN_SCHEMA_INVALID',
    withDoc(ctx, (d) => (d['networks'] = [firstNetwork(d), { ...firstNetwork(d), name: 'again' }])),
  );
  bad('membership: network id with path traversal', 'MVPN_SCHEMA_INVALID', withDoc(ctx, (d) => (firstNetwork(d)['id'] = '../etc')));
  bad('membership: key "node" twice (parser differential)', 'MVPN_JSON_INVALID', signPayload(ctx, JSON.stringify(goodDoc(ctx)).replace('{"node":"pc101"', '{"node":"pc101","node":"pc101"')));
  bad('membership: payload is not UTF-8', 'MVPN_JSON_INVALID', signPayload(ctx, Buffer.concat([Buffer.from('{"node":"pc1\xff'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')])));
  bad('membership: impossible date (February 30)', 'MVPN_SCHEMA_INVALID', withDoc(ctx, (d) => (d['expires_at'] = '2099-02-30T00:00:00Z')));
  bad('membership: bundle url with a newline', 'MVPN_SCHEMA_INVALID', withDoc(ctx, (d) => ((firstNetwork(d)['bundle'] as Record<string, unknown>)['url'] = '/v1/x\nHost: evil')));
  bad('membership: bundle larger than any bundle may be', 'MVPN_SCHEMA_INVALID', withDoc(ctx, (d) => ((firstNetwork(d)['bundle'] as Record<string, unknown>)['size'] = 3 * 1024 * 1024)));

  // ---- bundle: binding to the membership document (checked before gunzip) ----
  add({ name: 'bundle: one byte longer than the membership document says', code: 'MVPN_BUNDLE_SIZE_MISMATCH', membership: ctx.goodMembership, bundle: Buffer.concat([ctx.good.bytes, Buffer.from([0])]) });
  {
    const b = Buffer.from(ctx.good.bytes);
    b[b.length - 20] = b[b.length - 20]! ^ 0xff;
    add({ name: 'bundle: same size, one byte changed', code: 'MVPN_BUNDLE_HASH_MISMATCH', membership: ctx.goodMembership, bundle: b });
  }
  add({ name: 'bundle: empty response', code: 'MVPN_BUNDLE_SIZE_MISMATCH', membership: ctx.goodMembership, bundle: Buffer.alloc(0) });
  {
    const lab2 = rawBundle(f, { network: 'lab2' });
    add({ name: "bundle: another network's valid bundle served instead", code: lab2.length === ctx.good.size ? 'MVPN_BUNDLE_HASH_MISMATCH' : 'MVPN_BUNDLE_SIZE_MISMATCH', membership: ctx.goodMembership, bundle: lab2 });
  }
  {
    const v2 = rawBundle(f, { version: 2 });
    const v1 = ctx.good.bytes;
    const m = listing(ctx, v2, { version: 2 });
    add({ name: 'bundle: an older valid version replayed', code: v1.length === v2.length ? 'MVPN_BUNDLE_HASH_MISMATCH' : 'MVPN_BUNDLE_SIZE_MISMATCH', membership: m, bundle: v1 });
  }

  // ---- bundle: gzip layer ----
  add(bundleCase(ctx, 'gzip: truncated', 'MVPN_BUNDLE_GZIP_INVALID', { gzip: (g) => g.subarray(0, g.length - 30) }));
  add(bundleCase(ctx, 'gzip: not gzip at all (plain tar)', 'MVPN_BUNDLE_GZIP_INVALID', { gzip: () => rawTar([{ name: 'ca.crt', data: Buffer.from('x') }]) }));
  add(bundleCase(ctx, 'gzip: trailing garbage after the member', 'MVPN_BUNDLE_GZIP_INVALID', { gzip: (g) => Buffer.concat([g, Buffer.from('<script>')]) }));
  add(bundleCase(ctx, 'gzip: second gzip member appended', 'MVPN_BUNDLE_GZIP_INVALID', { gzip: (g) => Buffer.concat([g, gzipSync(rawTar([{ name: 'node.key', data: Buffer.from('k') }]))]) }));
  add(
    bundleCase(ctx, 'gzip: CRC32 wrong', 'MVPN_BUNDLE_GZIP_INVALID', {
      gzip: (g) => {
        const b = Buffer.from(g);
        b[b.length - 8] = b[b.length - 8]! ^ 1;
        return b;
      },
    }),
  );
  add(bundleCase(ctx, 'gzip bomb: 64 MiB of zeros in ~64 KiB', 'MVPN_BUNDLE_TOO_LARGE', { gzip: () => gzipBomb(64 << 20) }));
  add(bundleCase(ctx, 'gzip: compressed twice', 'MVPN_BUNDLE_TAR_INVALID', { tar: (t) => Buffer.concat([gzipSync(t), Buffer.alloc((512 - (gzipSync(t).length % 512)) % 512)]) }));
  add(
    bundleCase(ctx, 'tar bomb: 20,000 entries', 'MVPN_BUNDLE_TOO_LARGE', {
      entries: (base) => [...base, ...Array.from({ length: 20_000 }, (_, i) => ({ name: `f${i}`, data: Buffer.alloc(0) }))],
    }),
  );
  add(bundleCase(ctx, 'tar bomb: one 300 KiB file (over the per-file cap)', 'MVPN_BUNDLE_TOO_LARGE', { content: { 'ca.crt': Buffer.alloc(300 * 1024, 0x41) } }));

  // ---- bundle: tar entries that must never be admitted ----
  const e = escapeDir;
  const entryCase = (name: string, code: ErrorCode, o: RawBundleOptions): void => add(bundleCase(ctx, name, code, o));
  entryCase('tar: ca.crt is a symlink to /etc/passwd', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', () => [{ name: 'ca.crt', type: '2', linkname: '/etc/passwd' }]));
  entryCase('tar: symlink escaping with ../', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: 'node.key', type: '2', linkname: '../../../escaped' }]));
  entryCase('tar: symlink to an absolute path outside', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: 'node.key', type: '2', linkname: `${e}/escaped` }]));
  entryCase('tar: hard link to an absolute path outside', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: 'node.key', type: '1', linkname: `${e}/escaped` }]));
  entryCase(
    'tar: hard link chain (node.key -> crl.pem -> ca.crt)',
    'MVPN_BUNDLE_UNSAFE_ENTRY',
    plus([
      { name: 'node.key', type: '1', linkname: 'crl.pem' },
      { name: 'crl.pem', type: '1', linkname: 'ca.crt' },
    ], true),
  );
  entryCase('tar: symlink chain (link -> link -> outside)', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: 'a', type: '2', linkname: 'b' }, { name: 'b', type: '2', linkname: e }], true));
  entryCase(
    'tar: directory then symlink with the same name, then a file through it (node-tar CVE shape)',
    'MVPN_BUNDLE_UNSAFE_ENTRY',
    plus([{ name: 'd/', type: '5', mode: 0o755 }, { name: 'd', type: '2', linkname: e }, { name: 'd/escaped', data: Buffer.from('pwned') }], true),
  );
  entryCase(
    'tar: symlink then directory with the same name',
    'MVPN_BUNDLE_UNSAFE_ENTRY',
    plus([{ name: 'd', type: '2', linkname: e }, { name: 'd/', type: '5', mode: 0o755 }, { name: 'd/escaped', data: Buffer.from('pwned') }], true),
  );
  entryCase('tar: character device', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('crl.pem', () => [{ name: 'crl.pem', type: '3', devmajor: 1, devminor: 3 }]));
  entryCase('tar: block device', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('crl.pem', () => [{ name: 'crl.pem', type: '4', devmajor: 8, devminor: 0 }]));
  entryCase('tar: FIFO', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('crl.pem', () => [{ name: 'crl.pem', type: '6' }]));
  entryCase('tar: directory entry', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: 'networks/', type: '5', mode: 0o755 }], true));
  entryCase('tar: contiguous-file type', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', (x) => [{ ...x, type: '7' }]));
  entryCase('tar: sparse-file type (unsupported, would be skipped silently)', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: 'node.key', type: 'S', data: Buffer.alloc(0) }], true));
  entryCase('tar: setuid mode', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', (x) => [{ ...x, mode: 0o4755 }]));
  entryCase('tar: setgid mode', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', (x) => [{ ...x, mode: 0o2644 }]));
  entryCase('tar: sticky mode', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', (x) => [{ ...x, mode: 0o1644 }]));
  entryCase('tar: foreign uid', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', (x) => [{ ...x, uid: 1000 }]));
  entryCase('tar: foreign gid', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', (x) => [{ ...x, gid: 1000 }]));
  entryCase('tar: ../ path', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: '../escaped', data: Buffer.from('pwned') }], true));
  entryCase('tar: deep ../ path', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: '../../../../../../../../tmp/escaped', data: Buffer.from('pwned') }], true));
  entryCase('tar: absolute path', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: `${e}/abs`, data: Buffer.from('pwned') }], true));
  entryCase('tar: ////-prefixed path', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: `////${e.replace(/^\/+/, '')}/slashes`, data: Buffer.from('pwned') }], true));
  entryCase('tar: ./ca.crt', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', (x) => [{ ...x, name: './ca.crt' }]));
  entryCase('tar: backslash path', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: '..\\..\\escaped', data: Buffer.from('pwned') }], true));
  entryCase('tar: Unicode look-alike name (ONE DOT LEADER)', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', (x) => [{ ...x, name: 'ca\u2024crt' }]));
  entryCase('tar: Unicode look-alike name (fullwidth letters)', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', (x) => [{ ...x, name: '\uff43\uff41.crt' }]));
  entryCase('tar: ustar prefix field makes a directory path', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', (x) => [{ ...x, prefix: '..' }]));
  entryCase('tar: 10,000-level path in a pax header', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([paxEntry({ path: 'a/'.repeat(10_000) + 'x' }), { name: 'x', data: Buffer.from('x') }], true));
  entryCase('tar: 10,000-level path in a GNU long-name record', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([gnuLongEntry('a/'.repeat(10_000) + 'x'), { name: 'x', data: Buffer.from('x') }], true));
  entryCase('tar: pax header renaming an entry to ../escaped', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([paxEntry({ path: '../escaped' }), { name: 'harmless', data: Buffer.from('pwned') }], true));
  entryCase('tar: global pax header changing owners', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([paxEntry({ uid: '1000', gid: '1000' }, 'g')], true));
  entryCase('tar: pax header with a lying size', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', (x) => [paxEntry({ size: '5' }), x]));
  entryCase('tar: NUL inside a pax path', 'MVPN_BUNDLE_UNSAFE_ENTRY', replacing('ca.crt', (x) => [paxEntry({ path: 'ca.crt\0/../../escaped' }), x]));
  entryCase('tar: ca.crt twice with different content', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: 'ca.crt', data: Buffer.from('second') }]));
  entryCase('tar: manifest.sig twice (duplicated signature)', 'MVPN_BUNDLE_UNSAFE_ENTRY', plus([{ name: 'manifest.sig', data: Buffer.from('AAAA') }]));
  entryCase('tar: lying size, larger than the data left', 'MVPN_BUNDLE_TAR_INVALID', {
    tar: () => rawTar([{ name: 'ca.crt', size: 4096, data: Buffer.from(good.certPem) }], { end: false }),
  });
  entryCase('tar: lying size, smaller than the data', 'MVPN_BUNDLE_TAR_INVALID', replacing('ca.crt', (x) => [{ ...x, size: 10 }]));
  entryCase('tar: header checksum wrong', 'MVPN_BUNDLE_TAR_INVALID', replacing('ca.crt', (x) => [{ ...x, checksum: 1234 }]));
  entryCase('tar: stream not a multiple of 512 bytes', 'MVPN_BUNDLE_TAR_INVALID', { tar: (t) => t.subarray(0, t.length - 100) });
  entryCase('tar: empty archive', 'MVPN_BUNDLE_TAR_INVALID', { tar: () => Buffer.alloc(1024) });
  // GNU tar -i reads past the end-of-archive marker; node-tar stops there. Either way, data there is refused.
  entryCase('tar: an entry after the end-of-archive marker', 'MVPN_BUNDLE_TAR_INVALID', {
    tar: (t) => Buffer.concat([t, rawTar([{ name: 'node.key', data: Buffer.from('smuggled') }])]),
  });
  entryCase('tar: text after the end-of-archive marker', 'MVPN_BUNDLE_TAR_INVALID', {
    tar: (t) => Buffer.concat([t, Buffer.from('up /bin/sh\n'.padEnd(512, '\0'))]),
  });
  entryCase('tar: one non-zero byte in the end-of-archive marker', 'MVPN_BUNDLE_TAR_INVALID', {
    tar: (t) => {
      const b = Buffer.from(t);
      b[b.length - 1] = 1;
      return b;
    },
  });

  // ---- bundle: manifest and files ----
  entryCase('files: an unlisted extra file', 'MVPN_BUNDLE_FILE_UNLISTED', plus([{ name: 'extra.conf', data: Buffer.from('up /bin/sh') }]));
  entryCase('files: node.key carried but not listed (key_origin node)', 'MVPN_BUNDLE_FILE_UNLISTED', plus([{ name: 'node.key', data: Buffer.from(good.keyPem), mode: 0o600 }]));
  entryCase('files: node.key listed with key_origin node', 'MVPN_BUNDLE_MANIFEST_INVALID', { central: true, manifest: (m) => ({ ...m, key_origin: 'node' }) });
  entryCase('files: ca.crt listed but missing', 'MVPN_BUNDLE_FILE_MISSING', { content: { 'ca.crt': undefined } });
  entryCase('files: ca.crt neither listed nor present', 'MVPN_BUNDLE_FILE_MISSING', {
    content: { 'ca.crt': undefined },
    manifest: (m) => {
      const files = { ...(m['files'] as Record<string, string>) };
      delete files['ca.crt'];
      return { ...m, files };
    },
  });
  entryCase('files: key_origin central without node.key', 'MVPN_BUNDLE_FILE_MISSING', { manifest: (m) => ({ ...m, key_origin: 'central' }) });
  entryCase('files: ca.crt changed after signing', 'MVPN_BUNDLE_FILE_HASH_MISMATCH', {
    manifest: (m) => m,
    entries: (base) => base.map((x) => (x.name === 'ca.crt' ? { ...x, data: Buffer.from(f.otherPki.ca.certPem) } : x)),
  });
  entryCase("files: node.crt swapped in from another node's bundle", 'MVPN_BUNDLE_FILE_HASH_MISMATCH', {
    entries: (base) => base.map((x) => (x.name === 'node.crt' ? { ...x, data: Buffer.from(other.certPem) } : x)),
  });
  entryCase("files: tls-crypt-v2.key swapped in from another node's bundle", 'MVPN_BUNDLE_FILE_HASH_MISMATCH', {
    entries: (base) => base.map((x) => (x.name === 'tls-crypt-v2.key' ? { ...x, data: Buffer.from(other.tlsCryptV2Key) } : x)),
  });
  entryCase("files: another node's complete signed bundle", 'MVPN_BUNDLE_WRONG_NODE', { node: 'pc102' });
  entryCase('manifest: manifest.sig missing', 'MVPN_SIGNATURE_MISSING', { sign: 'none' });
  entryCase('manifest: manifest.sig empty', 'MVPN_SIGNATURE_MISSING', { sign: 'empty' });
  entryCase('manifest: manifest.sig is garbage', 'MVPN_SIGNATURE_INVALID', { sign: 'garbage' });
  entryCase('manifest: manifest.sig with one bit flipped', 'MVPN_SIGNATURE_INVALID', { sign: 'flipped' });
  entryCase('manifest: signed by another key', 'MVPN_SIGNATURE_INVALID', { sign: 'other-key' });
  entryCase('manifest: signature made for type "membership"', 'MVPN_SIGNATURE_INVALID', { sign: 'membership-type' });
  entryCase('manifest: edited after signing', 'MVPN_SIGNATURE_INVALID', { signOriginal: true, manifestBytes: (b) => Buffer.from(b.toString().replace('"version": 1', '"version": 7')) });
  {
    const bytes = rawBundle(f, { network: 'lab2' });
    add({ name: 'manifest: for another network than the membership entry', code: 'MVPN_BUNDLE_WRONG_NETWORK', membership: listing(ctx, bytes), bundle: bytes });
  }
  {
    const bytes = rawBundle(f, { version: 3 });
    add({ name: 'manifest: version differs from the membership entry', code: 'MVPN_BUNDLE_VERSION_MISMATCH', membership: listing(ctx, bytes, { version: 2 }), bundle: bytes });
  }
  entryCase('manifest: expired', 'MVPN_BUNDLE_EXPIRED', {
    manifest: (m) => ({ ...m, created: new Date(f.now.getTime() - 9 * DAY).toISOString(), expires: new Date(f.now.getTime() - DAY).toISOString() }),
  });
  entryCase('manifest: created in the future', 'MVPN_BUNDLE_MANIFEST_INVALID', { manifest: (m) => ({ ...m, created: new Date(f.now.getTime() + DAY).toISOString() }) });
  entryCase('manifest: unknown field', 'MVPN_SCHEMA_INVALID', { manifest: (m) => ({ ...m, post_install: 'rm -rf /' }) });
  entryCase('manifest: version beyond 2^53', 'MVPN_SCHEMA_INVALID', { manifestBytes: (b) => Buffer.from(b.toString().replace('"version": 1', '"version": 18014398509481984')) });
  entryCase('manifest: non-integer version', 'MVPN_SCHEMA_INVALID', { manifest: (m) => ({ ...m, version: 1.5 }) });
  entryCase('manifest: larger than the limit', 'MVPN_JSON_TOO_LARGE', { manifestBytes: (b) => Buffer.concat([b, Buffer.alloc(70 * 1024, 0x20)]) });
  entryCase('manifest: nested deeply', 'MVPN_JSON_TOO_LARGE', { manifest: (m) => ({ ...m, x: JSON.parse('['.repeat(30) + ']'.repeat(30)) as unknown }) });
  entryCase('manifest: key "node" twice', 'MVPN_JSON_INVALID', { manifestBytes: (b) => Buffer.from(b.toString().replace('"node": "pc101"', '"node": "pc102", "node": "pc101"')) });
  entryCase('manifest: lists a file name outside the format', 'MVPN_SCHEMA_INVALID', { manifest: (m) => ({ ...m, files: { ...(m['files'] as object), 'evil.sh': '0'.repeat(64) } }) });

  // ---- bundle: network.json ----
  const specCase = (name: string, code: ErrorCode, spec: Record<string, unknown>): void => entryCase(name, code, { spec });
  const spec = makeSpec(f.network) as unknown as Record<string, unknown>;
  specCase('network.json: describes another network', 'MVPN_BUNDLE_WRONG_NETWORK', { ...spec, id: 'lab2' });
  specCase('network.json: remote host smuggling a directive after a newline', 'MVPN_SCHEMA_INVALID', { ...spec, remotes: [{ host: '198.18.0.1\nup /bin/sh', port: 1194 }] });
  specCase('network.json: remote host with a quote', 'MVPN_SCHEMA_INVALID', { ...spec, remotes: [{ host: 'a"b.example', port: 1194 }] });
  specCase('network.json: server_cn with a space', 'MVPN_SCHEMA_INVALID', { ...spec, server_cn: 'vpn server' });
  specCase('network.json: unknown field "config"', 'MVPN_SCHEMA_INVALID', { ...spec, config: 'client\nup /bin/sh' });
  specCase('network.json: non-AEAD cipher', 'MVPN_SCHEMA_INVALID', { ...spec, ciphers: ['BF-CBC'] });
  specCase('network.json: nine remotes', 'MVPN_SCHEMA_INVALID', { ...spec, remotes: Array.from({ length: 9 }, (_, i) => ({ host: `198.18.0.${i + 1}`, port: 1194 })) });
  specCase('network.json: port 65536', 'MVPN_SCHEMA_INVALID', { ...spec, remotes: [{ host: '198.18.0.1', port: 65536 }] });

  // ---- bundle: certificates, CRL, keys ----
  const before = new Date(f.now.getTime() - 10 * DAY);
  const kp = await generateKeyPairPem('ec-p256');
  const expiredCert = await issueCert({ ca: f.pki.ca, publicKeyPem: kp.publicKeyPem, cn: f.nodeId, usage: 'client', notBefore: before, notAfter: new Date(f.now.getTime() - DAY) });
  const expiredCrl = await createCrl({ ca: f.pki.ca, revoked: [], thisUpdate: before, nextUpdate: new Date(f.now.getTime() - DAY), crlNumber: 2 });
  const revokingCrl = await createCrl({ ca: f.pki.ca, revoked: [{ serialHex: good.serialHex, revokedAt: new Date(f.now.getTime() - HOUR) }], thisUpdate: new Date(f.now.getTime() - HOUR), nextUpdate: new Date(f.now.getTime() + 7 * DAY), crlNumber: 3 });
  const b = (s: string): Buffer => Buffer.from(s);
  entryCase('pki: node certificate from another CA', 'MVPN_CERT_WRONG_ISSUER', { content: { 'node.crt': b(f.otherPki.clients[f.nodeId]!.certPem) } });
  entryCase('pki: node certificate of another node', 'MVPN_CERT_WRONG_CN', { content: { 'node.crt': b(other.certPem) } });
  entryCase('pki: the server certificate as node certificate', 'MVPN_CERT_WRONG_USAGE', { content: { 'node.crt': b(f.pki.server.certPem) } });
  entryCase('pki: node certificate expired', 'MVPN_CERT_EXPIRED', { content: { 'node.crt': b(expiredCert.certPem) } });
  entryCase('pki: node certificate as ca.crt', 'MVPN_CERT_WRONG_ISSUER', { content: { 'ca.crt': b(good.certPem) } });
  entryCase('pki: a second CA appended to ca.crt', 'MVPN_CERT_INVALID', { content: { 'ca.crt': b(f.pki.ca.certPem + f.otherPki.ca.certPem) } });
  entryCase('pki: CRL expired', 'MVPN_CRL_EXPIRED', { content: { 'crl.pem': b(expiredCrl) } });
  entryCase('pki: CRL missing', 'MVPN_CRL_MISSING', {
    content: { 'crl.pem': undefined },
    manifest: (m) => {
      const files = { ...(m['files'] as Record<string, string>) };
      delete files['crl.pem'];
      return { ...m, files };
    },
  });
  entryCase('pki: CRL signed by another CA', 'MVPN_CRL_INVALID', { content: { 'crl.pem': b(f.otherPki.crlPem) } });
  entryCase('pki: CRL empty', 'MVPN_CRL_INVALID', { content: { 'crl.pem': Buffer.alloc(0) } });
  entryCase('pki: node certificate revoked by the CRL', 'MVPN_CERT_REVOKED', { content: { 'crl.pem': b(revokingCrl) } });
  entryCase("pki: central node.key is not node.crt's key", 'MVPN_CERT_KEY_MISMATCH', { central: true, content: { 'node.key': b(other.keyPem) } });
  add({ ...bundleCase(ctx, "pki: node.crt is not for this node's own key", 'MVPN_CERT_KEY_MISMATCH', {}), nodeKeyPem: other.keyPem });
  entryCase('pki: tls-crypt-v2.key is not a tls-crypt-v2 client key', 'MVPN_KEY_INVALID', { content: { 'tls-crypt-v2.key': b('-----BEGIN OpenVPN Static key V1-----\nAAAA\n-----END OpenVPN Static key V1-----\n') } });

  // ---- bundle: extra_options (allow-list) in otherwise valid, signed bundles ----
  const withOptions = (name: string, code: ErrorCode, options: string[][]): void => specCase(name, code, { ...spec, extra_options: options });
  for (const d of FORBIDDEN_DIRECTIVES) {
    const args = d === 'management' ? ['0.0.0.0', '7505'] : ['/bin/sh'];
    withOptions(`options: forbidden directive "${d}"`, 'MVPN_OPTION_FORBIDDEN', [['sndbuf', '393216'], [d, ...args]]);
  }
  for (const s of ODD_SPELLINGS) withOptions(`options: "up" spelled ${JSON.stringify(s)}`, 'MVPN_OPTION_FORBIDDEN', [[s, '/bin/sh']]);
  withOptions('options: "Log-Append" in mixed case', 'MVPN_OPTION_FORBIDDEN', [['Log-Append', '/tmp/x']]);
  withOptions('options: "remote" adding a server', 'MVPN_OPTION_FORBIDDEN', [['remote', '203.0.113.66', '1194']]);
  withOptions('options: "tls-version-min" weakened', 'MVPN_OPTION_FORBIDDEN', [['tls-version-min', '1.0']]);
  withOptions('options: "fragment" beside the network\'s data plane', 'MVPN_OPTION_FORBIDDEN', [['fragment', '1400']]);
  withOptions('options: unknown directive', 'MVPN_OPTION_UNKNOWN', [['frobnicate', '1']]);
  withOptions('options: directive that is an inline block', 'MVPN_OPTION_UNKNOWN', [['<ca>']]);
  withOptions('options: argument with a newline and a directive', 'MVPN_OPTION_INVALID', [['sndbuf', '1400\nup /bin/sh']]);
  withOptions('options: argument with quotes', 'MVPN_OPTION_INVALID', [['sndbuf', '"1400"']]);
  withOptions('options: argument with NUL', 'MVPN_OPTION_INVALID', [['sndbuf', '1400\0']]);
  withOptions('options: argument out of range', 'MVPN_OPTION_INVALID', [['sndbuf', '99999999']]);
  return cases;
}
