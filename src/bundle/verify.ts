/**
 * Verifying a bundle (DESIGN.md §3-§4) before anything of it touches disk.
 *
 * Order matters: the cheapest check that binds the bytes to something the
 * anchor signed comes first, and nothing is parsed before it is
 * authenticated where that is possible.
 *  1. size and sha256 against the membership entry, before gunzip;
 *  2. safe extraction into memory (extract.ts);
 *  3. manifest.sig over manifest.json (type "manifest") with the anchor;
 *  4. manifest schema; node, network and version bound to the membership
 *     entry and this node; created/expires against `now`;
 *  5. every file listed with a matching sha256, no unlisted or missing file,
 *     node.key present exactly when key_origin is "central";
 *  6. network.json schema, bound to the manifest's network, and rendered
 *     once (the extra-options allow-list runs here);
 *  7. PEM files are exactly one block of the expected kind (openvpn would
 *     load every extra certificate in ca.crt as a trusted CA);
 *  8. node certificate issued by the bundle's CA, clientAuth, CN = node id,
 *     valid at `now`; CRL signed by that CA and current, not revoking the
 *     node's certificate; the private key (central node.key, or the node's
 *     own key) matches the certificate.
 */
import { BundleError, PkiError, type ErrorCode } from '../errors.ts';
import { renderClientConfig } from '../openvpn/client-config.ts';
import { checkCrl } from '../pki/crl.ts';
import { certMatchesKey, verifyCert } from '../pki/verify.ts';
import { extractBundle, type ExtractLimits } from './extract.ts';
import { limits } from './limits.ts';
import { sha256Hex } from './membership.ts';
import {
  BUNDLE_FILES,
  MANIFEST_FILE,
  MANIFEST_SIG_FILE,
  ManifestSchema,
  NetworkSpecSchema,
  parseWithSchema,
  type BundleFileName,
  type Manifest,
  type NetworkSpec,
} from './schema.ts';
import { decodeBase64Strict, retiredSigner, verifyDetached, type Anchor } from './sign.ts';
import { retiredError } from './envelope.ts';
import { parseJsonStrict } from './strict-json.ts';

export interface VerifiedBundle {
  readonly manifest: Manifest;
  readonly spec: NetworkSpec;
  /** Every file of the bundle by name, manifest.json and manifest.sig included. */
  readonly files: ReadonlyMap<string, Buffer>;
  /** sha256 (hex) of the bundle bytes as fetched. */
  readonly sha256: string;
  readonly size: number;
  readonly cert: { readonly cn: string; readonly serialHex: string; readonly notBefore: Date; readonly notAfter: Date };
  readonly crl: { readonly thisUpdate: Date; readonly nextUpdate: Date; readonly revokedSerials: readonly string[] };
}

export interface BundleExpectation {
  readonly network: string;
  readonly version: number;
  readonly sha256: string;
  readonly size: number;
}

export interface VerifyBundleOptions {
  readonly anchor: Anchor;
  readonly nodeId: string;
  readonly now: Date;
  /** The membership entry this bundle must match; omit only for offline inspection. */
  readonly expect?: BundleExpectation;
  /** The node's own private key (key_origin "node"): node.crt must be for it. */
  readonly nodeKeyPem?: string;
  readonly limits?: ExtractLimits;
}

/** Files a bundle may hold. */
export const ALLOWED_NAMES: ReadonlySet<string> = new Set<string>([MANIFEST_FILE, MANIFEST_SIG_FILE, ...BUNDLE_FILES]);
const REQUIRED: readonly BundleFileName[] = ['network.json', 'ca.crt', 'node.crt', 'tls-crypt-v2.key', 'crl.pem'];
/** A manifest's `created` may be this far ahead of the node's clock. */
const CLOCK_SKEW_MS = 10 * 60_000;

function bundleError(code: ErrorCode, message: string, context: Record<string, unknown> = {}): BundleError {
  return new BundleError(code, message, { context });
}

/**
 * Accepts `text` only if it is exactly one PEM block with one of `labels`
 * (optionally followed by one newline): no second certificate, no text
 * around it, ASCII only.
 */
export function checkSinglePem(text: string, labels: readonly string[], code: ErrorCode, what: string): void {
  const m = /^-----BEGIN ([A-Za-z0-9 -]{1,64})-----\r?\n([A-Za-z0-9+/=\r\n]{1,400000})-----END ([A-Za-z0-9 -]{1,64})-----\r?\n?$/.exec(text);
  if (!m || m[1] !== m[3] || !labels.includes(m[1]!)) {
    throw new PkiError(code, `${what} must be exactly one PEM "${labels[0]!}" block and nothing else`, { context: { file: what } });
  }
}

async function checkPki(files: ReadonlyMap<string, Buffer>, manifest: Manifest, opts: VerifyBundleOptions): Promise<Pick<VerifiedBundle, 'cert' | 'crl'>> {
  const text = (name: BundleFileName): string => files.get(name)!.toString('latin1');
  const caPem = text('ca.crt');
  const certPem = text('node.crt');
  const crlPem = text('crl.pem');
  checkSinglePem(caPem, ['CERTIFICATE'], 'MVPN_CERT_INVALID', 'ca.crt');
  checkSinglePem(certPem, ['CERTIFICATE'], 'MVPN_CERT_INVALID', 'node.crt');
  checkSinglePem(crlPem, ['X509 CRL'], 'MVPN_CRL_INVALID', 'crl.pem');
  checkSinglePem(text('tls-crypt-v2.key'), ['OpenVPN tls-crypt-v2 client key'], 'MVPN_KEY_INVALID', 'tls-crypt-v2.key');

  // The chain first (a CRL cannot be judged against something that is not a CA), then the CRL, then revocation.
  const cert = await verifyCert({ certPem, caCertPem: caPem, usage: 'client', now: opts.now, expectCn: opts.nodeId });
  const crl = await checkCrl({ crlPem, caCertPem: caPem, now: opts.now });
  if (crl.revokedSerials.includes(cert.serialHex)) {
    throw new PkiError('MVPN_CERT_REVOKED', `node.crt (serial ${cert.serialHex}) is revoked by the bundle's CRL`, { context: { serial: cert.serialHex } });
  }

  const keyChecks: [string, string][] = [];
  if (manifest.key_origin === 'central') {
    const keyPem = text('node.key');
    checkSinglePem(keyPem, ['PRIVATE KEY'], 'MVPN_KEY_INVALID', 'node.key');
    keyChecks.push(['node.key', keyPem]);
  } else if (opts.nodeKeyPem !== undefined) {
    keyChecks.push(["this node's key", opts.nodeKeyPem]);
  }
  for (const [what, keyPem] of keyChecks) {
    if (!(await certMatchesKey(certPem, keyPem))) {
      throw new PkiError('MVPN_CERT_KEY_MISMATCH', `node.crt is not the certificate of ${what}`, {
        hint: manifest.key_origin === 'node' ? 'the server issued this bundle for an older key of this node; re-enroll' : undefined,
      });
    }
  }
  return {
    cert: { cn: cert.cn, serialHex: cert.serialHex, notBefore: cert.notBefore, notAfter: cert.notAfter },
    crl: { thisUpdate: crl.thisUpdate, nextUpdate: crl.nextUpdate, revokedSerials: crl.revokedSerials },
  };
}

function checkManifestBinding(manifest: Manifest, opts: VerifyBundleOptions): void {
  if (manifest.node !== opts.nodeId) {
    throw bundleError('MVPN_BUNDLE_WRONG_NODE', `the bundle is for node ${JSON.stringify(manifest.node)}, this node is ${JSON.stringify(opts.nodeId)}`, {
      node: manifest.node,
      expected: opts.nodeId,
    });
  }
  if (opts.expect && manifest.network !== opts.expect.network) {
    throw bundleError('MVPN_BUNDLE_WRONG_NETWORK', `the bundle is for network ${manifest.network}, the membership entry is ${opts.expect.network}`, {
      network: manifest.network,
      expected: opts.expect.network,
    });
  }
  if (opts.expect && manifest.version !== opts.expect.version) {
    throw bundleError('MVPN_BUNDLE_VERSION_MISMATCH', `the bundle is version ${manifest.version}, the membership entry says ${opts.expect.version}`, {
      version: manifest.version,
      expected: opts.expect.version,
    });
  }
  const created = Date.parse(manifest.created);
  const expires = Date.parse(manifest.expires);
  if (expires <= created) throw bundleError('MVPN_BUNDLE_MANIFEST_INVALID', 'manifest: expires must be after created', { field: 'expires' });
  if (created > opts.now.getTime() + CLOCK_SKEW_MS) {
    throw bundleError('MVPN_BUNDLE_MANIFEST_INVALID', `manifest: created ${manifest.created} is in the future; check this node's clock`, { field: 'created' });
  }
  if (expires <= opts.now.getTime()) {
    throw bundleError('MVPN_BUNDLE_EXPIRED', `the bundle expired at ${manifest.expires}`, { expires: manifest.expires, now: opts.now.toISOString() });
  }
}

function checkFileList(files: ReadonlyMap<string, Buffer>, manifest: Manifest): void {
  const listed = manifest.files;
  for (const name of files.keys()) {
    if (name === MANIFEST_FILE || name === MANIFEST_SIG_FILE) continue;
    if (listed[name as BundleFileName] === undefined) {
      throw bundleError('MVPN_BUNDLE_FILE_UNLISTED', `the bundle holds ${name}, which its manifest does not list`, { file: name });
    }
  }
  if (!files.has('crl.pem')) {
    throw new PkiError('MVPN_CRL_MISSING', 'the bundle has no crl.pem; a missing CRL is never "allow all"', { hint: 'the server must include a current CRL' });
  }
  for (const name of REQUIRED) {
    if (listed[name] === undefined || !files.has(name)) {
      throw bundleError('MVPN_BUNDLE_FILE_MISSING', `the bundle lacks ${name}`, { file: name });
    }
  }
  for (const [name, want] of Object.entries(listed) as [BundleFileName, string][]) {
    const data = files.get(name);
    if (!data) throw bundleError('MVPN_BUNDLE_FILE_MISSING', `the manifest lists ${name}, which the bundle lacks`, { file: name });
    const got = sha256Hex(data);
    if (got !== want) throw bundleError('MVPN_BUNDLE_FILE_HASH_MISMATCH', `${name} does not match the sha256 in the manifest`, { file: name, sha256: got, expected: want });
  }
  if (manifest.key_origin === 'node' && listed['node.key'] !== undefined) {
    throw bundleError('MVPN_BUNDLE_MANIFEST_INVALID', 'manifest: key_origin is "node" but the bundle carries node.key; a node key never leaves the node', { field: 'key_origin' });
  }
  if (manifest.key_origin === 'central' && listed['node.key'] === undefined) {
    throw bundleError('MVPN_BUNDLE_FILE_MISSING', 'manifest: key_origin is "central" but the bundle has no node.key', { file: 'node.key' });
  }
}

/** The manifest, checked against the anchor, without any other rule: for inspection and for install-time re-reads. */
export function openManifest(files: ReadonlyMap<string, Buffer>, anchor: Anchor | undefined, opts: { installed?: boolean } = {}): Manifest {
  const manifestBytes = files.get(MANIFEST_FILE);
  if (!manifestBytes) throw bundleError('MVPN_BUNDLE_FILE_MISSING', 'the bundle has no manifest.json', { file: MANIFEST_FILE });
  if (anchor) {
    const sigFile = files.get(MANIFEST_SIG_FILE);
    if (!sigFile || sigFile.length === 0) throw new BundleError('MVPN_SIGNATURE_MISSING', 'the bundle has no manifest.sig');
    const sig = decodeBase64Strict(sigFile.toString('latin1'));
    if (!sig || !verifyDetached('manifest', manifestBytes, sig, anchor)) {
      const retired = sig ? retiredSigner('manifest', manifestBytes, sig, anchor) : undefined;
      // An installed bundle was verified when it was installed; after a rotation it stays readable until its re-signed copy arrives.
      if (retired !== undefined && !opts.installed) throw retiredError('bundle manifest', retired, anchor);
      if (retired === undefined) {
        throw new BundleError('MVPN_SIGNATURE_INVALID', `manifest.sig does not verify with the trust anchor (key ${anchor.keyId})`, { context: { keyId: anchor.keyId } });
      }
    }
  }
  return parseWithSchema(ManifestSchema, parseJsonStrict(manifestBytes, limits.manifestBytes, limits.jsonDepth, 'manifest.json'), 'manifest.json');
}

export function parseSpec(bytes: Uint8Array): NetworkSpec {
  return parseWithSchema(NetworkSpecSchema, parseJsonStrict(bytes, limits.specBytes, limits.jsonDepth, 'network.json'), 'network.json');
}

/** Paths that pass renderClientConfig's checks, for the dry run that proves a spec renders. */
const DRY_RUN_PATHS = { ca: '/x/ca.crt', cert: '/x/node.crt', key: '/x/node.key', tlsCryptV2: '/x/tc2.key', crl: '/x/crl.pem', mgmtSocket: '/x/mgmt.sock', dev: 'mv-x' };

export async function verifyBundle(bytes: Uint8Array, opts: VerifyBundleOptions): Promise<VerifiedBundle> {
  const sha256 = sha256Hex(bytes);
  if (opts.expect) {
    // What was fetched is not known to be a bundle yet (a hostile document may name any file): its own size
    // and hash are never echoed into errors, which reach the world-readable status socket.
    if (bytes.byteLength !== opts.expect.size) {
      throw bundleError('MVPN_BUNDLE_SIZE_MISMATCH', `the bundle's size is not the ${opts.expect.size} bytes the membership document says`, {
        expected: opts.expect.size,
      });
    }
    if (sha256 !== opts.expect.sha256) {
      throw bundleError('MVPN_BUNDLE_HASH_MISMATCH', `the bundle's sha256 is not the ${opts.expect.sha256} the membership document names`, {
        expected: opts.expect.sha256,
      });
    }
  }
  const files = extractBundle(bytes, ALLOWED_NAMES, opts.limits ?? limits);
  const manifest = openManifest(files, opts.anchor);
  checkManifestBinding(manifest, opts);
  checkFileList(files, manifest);

  const spec = parseSpec(files.get('network.json')!);
  if (spec.id !== manifest.network) {
    throw bundleError('MVPN_BUNDLE_WRONG_NETWORK', `network.json describes network ${spec.id}, the manifest ${manifest.network}`, {
      network: spec.id,
      expected: manifest.network,
    });
  }
  renderClientConfig(spec, DRY_RUN_PATHS);
  const pki = await checkPki(files, manifest, opts);
  return { manifest, spec, files, sha256, size: bytes.byteLength, ...pki };
}
