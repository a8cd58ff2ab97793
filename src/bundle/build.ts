/**
 * The building side (server mode and offline export): makes a bundle and a
 * membership document from state the server holds.
 *
 * Bundles are deterministic: entries sorted by name, fixed mtime (the
 * manifest's `created`), uid/gid 0, fixed modes, no pax headers, gzip with
 * no name and a zero timestamp, and JSON serialised in schema key order. The
 * same input gives the same bytes, so the sha256 in the membership document
 * and the HTTP ETag stay stable until something really changes.
 *
 * Everything is validated with the rules the agent applies (schemas, the
 * extra-options allow-list), so the server fails at build time with the same
 * error an agent would report, instead of shipping a bundle every node
 * refuses.
 */
import { gzipSync, constants as zc } from 'node:zlib';
import { Header } from 'tar';
import { BundleError } from '../errors.ts';
import { checkExtraOptions } from '../openvpn/options.ts';
import { sha256Hex } from './membership.ts';
import { MANIFEST_FILE, MANIFEST_SIG_FILE, ManifestSchema, NetworkSpecSchema, parseWithSchema, type BundleFileName, type Manifest, type NetworkSpec } from './schema.ts';
import { signDetached, type SigningKey } from './sign.ts';

export { buildMembership } from './membership.ts';

export interface BuildBundleInput {
  readonly signingKey: SigningKey;
  readonly manifest: Omit<Manifest, 'files' | 'schema'>;
  readonly spec: NetworkSpec;
  readonly caPem: string;
  readonly nodeCertPem: string;
  readonly tlsCryptV2ClientKey: string;
  readonly crlPem: string;
  /** Only for key_origin "central" (offline export for images that cannot enroll). */
  readonly nodeKeyPem?: string;
  /** After a CA roll: the cross-certificate and the old CA that signed it (verify.ts, CA pinning). */
  readonly caRollPem?: string;
}

export interface BuiltBundle {
  readonly bytes: Buffer;
  readonly sha256: string;
  readonly size: number;
}

/** Private keys are 0600 inside the tar too; the agent sets modes itself on install anyway. */
const SECRET_FILES: ReadonlySet<string> = new Set(['node.key', 'tls-crypt-v2.key']);

/** A deterministic ustar archive of flat regular files, sorted by name. */
export function tarFiles(files: ReadonlyMap<string, Buffer>, mtime: Date): Buffer {
  const blocks: Buffer[] = [];
  for (const name of [...files.keys()].sort()) {
    const data = files.get(name)!;
    const header = new Header({
      path: name,
      mode: SECRET_FILES.has(name) ? 0o600 : 0o644,
      uid: 0,
      gid: 0,
      uname: 'root',
      gname: 'root',
      size: data.length,
      mtime: new Date(Math.floor(mtime.getTime() / 1000) * 1000),
      type: 'File',
    });
    const block = Buffer.alloc(512);
    if (header.encode(block, 0)) throw new BundleError('MVPN_INTERNAL', `tar header for ${name} would need a pax extension`);
    blocks.push(block, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/**
 * gzip with a fixed header (no name, mtime 0), so the bytes depend only on
 * the content. Level 6, not 9: on a ~11 KiB bundle tar level 9 saves ~40
 * bytes (1.5%) and costs ~1 ms more per bundle, the largest single cost of
 * building one. The level is part of the bytes: changing it changes every
 * bundle's sha256 (and so the document a serial stands for) on upgrade.
 */
export function gzipDeterministic(data: Uint8Array): Buffer {
  const gz = gzipSync(data, { level: 6, strategy: zc.Z_DEFAULT_STRATEGY });
  gz.writeUInt32LE(0, 4);
  gz[9] = 3; // OS = Unix, whatever zlib was built with
  return gz;
}

export async function buildBundle(input: BuildBundleInput): Promise<BuiltBundle> {
  const spec = parseWithSchema(NetworkSpecSchema, input.spec, 'network spec');
  if (spec.id !== input.manifest.network) {
    throw new BundleError('MVPN_BUNDLE_WRONG_NETWORK', `network spec is for ${spec.id}, the manifest for ${input.manifest.network}`);
  }
  checkExtraOptions(spec.extra_options ?? [], { proto: spec.proto });
  const central = input.manifest.key_origin === 'central';
  if (central !== (input.nodeKeyPem !== undefined)) {
    throw new BundleError('MVPN_BUNDLE_MANIFEST_INVALID', central ? 'key_origin "central" needs nodeKeyPem' : 'key_origin "node" must not carry a node key');
  }

  const content = new Map<BundleFileName, Buffer>([
    ['network.json', Buffer.from(JSON.stringify(spec, null, 2) + '\n', 'utf8')],
    ['ca.crt', Buffer.from(input.caPem, 'utf8')],
    ['node.crt', Buffer.from(input.nodeCertPem, 'utf8')],
    ['tls-crypt-v2.key', Buffer.from(input.tlsCryptV2ClientKey, 'utf8')],
    ['crl.pem', Buffer.from(input.crlPem, 'utf8')],
  ]);
  if (input.nodeKeyPem !== undefined) content.set('node.key', Buffer.from(input.nodeKeyPem, 'utf8'));
  if (input.caRollPem !== undefined) content.set('ca-roll.crt', Buffer.from(input.caRollPem, 'utf8'));

  const files: Partial<Record<BundleFileName, string>> = {};
  for (const name of [...content.keys()].sort()) files[name] = sha256Hex(content.get(name)!);
  const manifest = parseWithSchema(ManifestSchema, { schema: 1, ...input.manifest, files }, 'manifest');
  if (Date.parse(manifest.expires) <= Date.parse(manifest.created)) {
    throw new BundleError('MVPN_BUNDLE_MANIFEST_INVALID', 'manifest: expires must be after created');
  }
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 2) + '\n', 'utf8');
  const sig = Buffer.from(signDetached('manifest', manifestBytes, input.signingKey).toString('base64'), 'ascii');

  const all = new Map<string, Buffer>([...content, [MANIFEST_FILE, manifestBytes], [MANIFEST_SIG_FILE, sig]]);
  const bytes = gzipDeterministic(tarFiles(all, new Date(manifest.created)));
  return { bytes, sha256: sha256Hex(bytes), size: bytes.length };
}
