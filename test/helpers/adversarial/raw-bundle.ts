/**
 * A bundle builder with every safety removed, for the adversarial corpus and
 * the fuzz test: each layer (file contents, manifest listing, manifest
 * bytes, signature, tar entries, tar bytes, gzip bytes) can be replaced or
 * edited, and nothing is validated. With no options it produces a bundle the
 * verifier accepts (a test checks that), so each case differs from a good
 * bundle only in what it names.
 */
import { createHash } from 'node:crypto';
import { gzipDeterministic } from '../../../src/bundle/build.ts';
import { signDetached, generateSigningKey, type SigningKey } from '../../../src/bundle/sign.ts';
import type { TestPki } from '../pki-fixtures.ts';
import { DAY, HOUR, makeSpec, type BundleFixture } from '../bundle-fixtures.ts';
import { rawTar, type RawEntry } from './tar-raw.ts';

export type SignMode = 'real' | 'other-key' | 'none' | 'empty' | 'membership-type' | 'garbage' | 'flipped';

export interface RawBundleOptions {
  readonly node?: string;
  readonly network?: string;
  readonly version?: number;
  readonly central?: boolean;
  readonly pki?: TestPki;
  /** network.json as an object (serialised with JSON.stringify). */
  readonly spec?: Record<string, unknown>;
  /** File contents to replace or add (listed with their own hashes); `undefined` drops the file from the tar (it stays listed). */
  readonly content?: Readonly<Record<string, Buffer | undefined>>;
  /** Edits the manifest object before it is serialised and signed. */
  readonly manifest?: (m: Record<string, unknown>) => Record<string, unknown>;
  /** Replaces the manifest bytes after serialisation (signed unless `signOriginal`). */
  readonly manifestBytes?: (b: Buffer) => Buffer;
  /** Sign the manifest before `manifestBytes` edits it (a tampered manifest with the old signature). */
  readonly signOriginal?: boolean;
  readonly sign?: SignMode;
  /** Replace the list of tar entries (given the regular entries in sorted order). */
  readonly entries?: (base: RawEntry[]) => RawEntry[];
  readonly tar?: (tar: Buffer) => Buffer;
  readonly gzip?: (gz: Buffer) => Buffer;
}

const otherKey: SigningKey = generateSigningKey();

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** The file contents of a good bundle for the fixture's node (or `o.node`). */
export function goodContent(f: BundleFixture, o: RawBundleOptions = {}): Map<string, Buffer> {
  const pki = o.pki ?? f.pki;
  const node = o.node ?? f.nodeId;
  const client = pki.clients[node]!;
  const spec = o.spec ?? makeSpec(o.network ?? f.network);
  const m = new Map<string, Buffer>([
    ['network.json', Buffer.from(JSON.stringify(spec, null, 2) + '\n')],
    ['ca.crt', Buffer.from(pki.ca.certPem)],
    ['node.crt', Buffer.from(client.certPem)],
    ['tls-crypt-v2.key', Buffer.from(client.tlsCryptV2Key)],
    ['crl.pem', Buffer.from(pki.crlPem)],
  ]);
  if (o.central) m.set('node.key', Buffer.from(client.keyPem));
  return m;
}

function signature(mode: SignMode, manifest: Buffer, f: BundleFixture): Buffer | undefined {
  switch (mode) {
    case 'none':
      return undefined;
    case 'empty':
      return Buffer.alloc(0);
    case 'garbage':
      return Buffer.from('this is not a signature');
    case 'other-key':
      return Buffer.from(signDetached('manifest', manifest, otherKey).toString('base64'));
    case 'membership-type':
      return Buffer.from(signDetached('membership', manifest, f.signingKey).toString('base64'));
    case 'flipped': {
      const s = signDetached('manifest', manifest, f.signingKey);
      s[10] = s[10]! ^ 0x01;
      return Buffer.from(s.toString('base64'));
    }
    case 'real':
      return Buffer.from(signDetached('manifest', manifest, f.signingKey).toString('base64'));
  }
}

/** The layers of a raw bundle, for tests that mutate one of them. */
export interface RawBundleLayers {
  readonly files: Map<string, Buffer>;
  readonly entries: RawEntry[];
  readonly tar: Buffer;
  readonly bytes: Buffer;
}

export function rawBundleLayers(f: BundleFixture, o: RawBundleOptions = {}): RawBundleLayers {
  const content = goodContent(f, o);
  // Replaced contents are listed (and signed) with their own hashes; dropped files stay listed.
  for (const [name, data] of Object.entries(o.content ?? {})) if (data !== undefined) content.set(name, data);
  const listed: Record<string, string> = {};
  for (const name of [...content.keys()].sort()) listed[name] = sha256(content.get(name)!);
  let manifestObj: Record<string, unknown> = {
    schema: 1,
    node: o.node ?? f.nodeId,
    network: o.network ?? f.network,
    version: o.version ?? 1,
    created: new Date(f.now.getTime() - HOUR).toISOString(),
    expires: new Date(f.now.getTime() + 7 * DAY).toISOString(),
    key_origin: o.central ? 'central' : 'node',
    files: listed,
  };
  for (const [name, data] of Object.entries(o.content ?? {})) if (data === undefined) content.delete(name);
  if (o.manifest) manifestObj = o.manifest(manifestObj);
  const original = Buffer.from(JSON.stringify(manifestObj, null, 2) + '\n');
  const manifest = o.manifestBytes ? o.manifestBytes(original) : original;
  const sig = signature(o.sign ?? 'real', o.signOriginal ? original : manifest, f);

  const files = new Map(content);
  files.set('manifest.json', manifest);
  if (sig) files.set('manifest.sig', sig);
  const base: RawEntry[] = [...files.keys()].sort().map((name) => ({
    name,
    data: files.get(name)!,
    mode: name.endsWith('.key') ? 0o600 : 0o644,
  }));
  const entries = o.entries ? o.entries(base) : base;
  let tar = rawTar(entries);
  if (o.tar) tar = o.tar(tar);
  let bytes = gzipDeterministic(tar);
  if (o.gzip) bytes = o.gzip(bytes);
  return { files, entries, tar, bytes };
}

export function rawBundle(f: BundleFixture, o: RawBundleOptions = {}): Buffer {
  return rawBundleLayers(f, o).bytes;
}
