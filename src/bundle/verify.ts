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
 *     server_cn is the network's own server, `mvpn-server-<id>`;
 *  7. PEM files are exactly one block of the expected kind (openvpn would
 *     load every extra certificate in ca.crt as a trusted CA), except that
 *     ca.crt and crl.pem hold two during a CA roll's overlap;
 *  8. the network's identity: every CA in ca.crt is named for this network
 *     (`mvpn-ca-<id>[.<n>]`, MVPN_CA_WRONG_NETWORK) and is pinned by this
 *     node, or ca-roll.crt proves that a pinned CA certified it
 *     (MVPN_CA_NOT_PINNED, MVPN_CA_ROLL_INVALID);
 *  9. one current CRL per CA; node certificate issued by one of the CAs,
 *     clientAuth, CN = node id, valid at `now`, not revoked; the private key
 *     (central node.key, or the node's own key) matches the certificate.
 */
import { BundleError, PkiError, type ErrorCode } from '../errors.ts';
import { renderClientConfig } from '../openvpn/client-config.ts';
import { checkCrl } from '../pki/crl.ts';
import { caFacts, certMatchesKey, verifyCert, verifyCrossCert, type CaFacts } from '../pki/verify.ts';
import { extractBundle, type ExtractLimits } from './extract.ts';
import { limits } from './limits.ts';
import { caCn, caGeneration, serverCn } from './names.ts';
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
  /** The network's CAs in ca.crt (one, or the old and the new during a roll's overlap): the node pins these. */
  readonly cas: readonly CaFacts[];
  /** The CA roll ca-roll.crt proves, if it has one. */
  readonly roll?: CaRoll;
}

/** A roll from the CA pinned as `from` to the CA pinned as `to` (pins: SHA-256 of the SPKI, hex). */
export interface CaRoll {
  readonly from: string;
  readonly to: string;
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
  /**
   * The CA pins this node holds for the network (src/agent/ca-pins.ts);
   * undefined on first install and for offline inspection.
   */
  readonly pinnedCas?: readonly string[];
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

/**
 * `text` as a list of 1..`max` PEM blocks, each passing checkSinglePem, with
 * nothing before, between or after them.
 */
export function splitPems(text: string, labels: readonly string[], max: number, code: ErrorCode, what: string): string[] {
  const blocks = text.match(/-----BEGIN [A-Za-z0-9 -]{1,64}-----\r?\n[A-Za-z0-9+/=\r\n]{1,400000}?-----END [A-Za-z0-9 -]{1,64}-----\r?\n?/g) ?? [];
  if (blocks.length === 0 || blocks.length > max || blocks.join('') !== text) {
    throw new PkiError(code, `${what} must be ${max === 1 ? 'exactly one' : `1 to ${max}`} PEM "${labels[0]!}" block${max === 1 ? '' : 's'} and nothing else`, { context: { file: what } });
  }
  for (const b of blocks) checkSinglePem(b, labels, code, what);
  return blocks;
}

/**
 * Whose CAs a set of pins is about: a network's (ca.crt/ca-roll.crt of its
 * bundles) or the server's API CA (src/agent/api-ca.ts). The pin and roll
 * rules below are the same for both; only names and messages differ.
 */
export interface CaScope {
  /** "network alpha", "the API". */
  readonly label: string;
  /** The generation of a CA name of this scope, undefined for a name that is not one. */
  readonly generation: (cn: string) => number | undefined;
  /** The expected names, for messages. */
  readonly names: string;
  /** Where the CAs and the roll come from, for messages. */
  readonly caFile: string;
  readonly rollFile: string;
  /** What the operator of a node does about a CA that is not pinned. */
  readonly notPinnedHint: string;
}

export function networkCaScope(network: string): CaScope {
  return {
    label: `network ${network}`,
    generation: (cn) => caGeneration(cn, network),
    names: `${JSON.stringify(caCn(network))} or ${JSON.stringify(`${caCn(network)}.<n>`)}`,
    caFile: 'ca.crt',
    rollFile: 'ca-roll.crt',
    notPinnedHint: 'a server rolls a CA with `server network roll-ca`, which certifies the new CA with the old one; if the network was deleted and created again, remove the pin under <state>/ca-pins/ on this node',
  };
}

/** The CAs of a scope, each tied to it by name (issue 22, finding 4). */
export async function checkCaSet(caPems: readonly string[], scope: CaScope): Promise<CaFacts[]> {
  const cas: CaFacts[] = [];
  for (const pem of caPems) {
    const ca = await caFacts(pem, scope.caFile);
    if (scope.generation(ca.cn) === undefined) {
      throw new PkiError('MVPN_CA_WRONG_NETWORK', `${scope.caFile} holds the CA ${JSON.stringify(ca.cn)}, which is not a CA of ${scope.label} (expected ${scope.names})`, {
        context: { cn: ca.cn, scope: scope.label },
        hint: `the server sent another CA than ${scope.label}'s own`,
      });
    }
    cas.push(ca);
  }
  if (cas.length === 2 && (cas[0]!.cn === cas[1]!.cn || cas[0]!.pin === cas[1]!.pin)) {
    throw new PkiError('MVPN_CERT_INVALID', `${scope.caFile} holds two CAs with the same name or key; during a CA roll it holds the old and the new CA`);
  }
  return cas;
}

/**
 * A roll proof (ca-roll.crt): the cross-certificate for one of `cas`, then
 * the old CA that signed it. Returns the roll it proves (old pin -> new pin).
 */
export async function checkCaRoll(rollPem: string, caPems: readonly string[], cas: readonly CaFacts[], scope: CaScope, now: Date): Promise<CaRoll> {
  const file = scope.rollFile;
  const [crossPem, oldPem] = splitPems(rollPem, ['CERTIFICATE'], 2, 'MVPN_CA_ROLL_INVALID', file);
  if (oldPem === undefined) throw new PkiError('MVPN_CA_ROLL_INVALID', `${file} must hold the cross-certificate and then the old CA certificate`);
  const old = await caFacts(oldPem, `the old CA in ${file}`);
  const cross = await caFacts(crossPem!, `the cross-certificate in ${file}`);
  const i = cas.findIndex((c) => c.pin === cross.pin && c.cn === cross.cn);
  if (i < 0) throw new PkiError('MVPN_CA_ROLL_INVALID', `${file} certifies a CA that is not in ${scope.caFile}`);
  const oldGen = scope.generation(old.cn);
  const newGen = scope.generation(cas[i]!.cn)!;
  if (oldGen === undefined || oldGen >= newGen) {
    throw new PkiError('MVPN_CA_ROLL_INVALID', `${file}: the old CA ${JSON.stringify(old.cn)} must be an earlier CA of ${scope.label} than ${JSON.stringify(cas[i]!.cn)}`);
  }
  await verifyCrossCert({ crossPem: crossPem!, issuerCaPem: oldPem, subjectCaPem: caPems[i]!, now });
  return { from: old.pin, to: cas[i]!.pin };
}

/**
 * The pin rule: every CA is pinned, or is the new CA of a roll whose old CA
 * is pinned. Without pins (first install, offline inspection) the CAs are
 * taken as they are and become the pins.
 */
export function checkCaPins(cas: readonly CaFacts[], roll: CaRoll | undefined, pins: readonly string[] | undefined, scope: CaScope): void {
  if (pins === undefined) return;
  for (const ca of cas) {
    if (pins.includes(ca.pin)) continue;
    if (roll !== undefined && roll.to === ca.pin && pins.includes(roll.from)) continue;
    throw new PkiError('MVPN_CA_NOT_PINNED', `${scope.caFile} holds the CA ${JSON.stringify(ca.cn)} (key sha256 ${ca.pin.slice(0, 16)}…), which is not the CA this node pinned for ${scope.label}, and no CA roll signed by the pinned CA vouches for it`, {
      context: { scope: scope.label, cn: ca.cn, pin: ca.pin },
      hint: scope.notPinnedHint,
    });
  }
}

async function checkPki(files: ReadonlyMap<string, Buffer>, manifest: Manifest, opts: VerifyBundleOptions): Promise<Pick<VerifiedBundle, 'cert' | 'crl' | 'cas' | 'roll'>> {
  const text = (name: BundleFileName): string => files.get(name)!.toString('latin1');
  const caPems = splitPems(text('ca.crt'), ['CERTIFICATE'], 2, 'MVPN_CERT_INVALID', 'ca.crt');
  const certPem = text('node.crt');
  const crlPems = splitPems(text('crl.pem'), ['X509 CRL'], 2, 'MVPN_CRL_INVALID', 'crl.pem');
  checkSinglePem(certPem, ['CERTIFICATE'], 'MVPN_CERT_INVALID', 'node.crt');
  checkSinglePem(text('tls-crypt-v2.key'), ['OpenVPN tls-crypt-v2 client key'], 'MVPN_KEY_INVALID', 'tls-crypt-v2.key');

  // Identity before anything else: the CAs must be this network's, and pinned (or a pinned CA vouches for them).
  const scope = networkCaScope(manifest.network);
  const cas = await checkCaSet(caPems, scope);
  const roll = files.has('ca-roll.crt') ? await checkCaRoll(text('ca-roll.crt'), caPems, cas, scope, opts.now) : undefined;
  checkCaPins(cas, roll, opts.pinnedCas, scope);

  // One CRL per CA, in the same order (openvpn's crl-verify needs each issuer's CRL).
  if (crlPems.length !== caPems.length) {
    throw new PkiError('MVPN_CRL_INVALID', `crl.pem holds ${crlPems.length} CRL(s) for ${caPems.length} CA(s) in ca.crt; each CA needs its own current CRL`);
  }
  const crls = [];
  for (let i = 0; i < caPems.length; i++) crls.push(await checkCrl({ crlPem: crlPems[i]!, caCertPem: caPems[i]!, now: opts.now }));

  // The chain (the newest CA that issued node.crt), then revocation by any of the network's CRLs.
  let cert: Awaited<ReturnType<typeof verifyCert>> | undefined;
  let issuer = 0;
  for (let i = caPems.length - 1; i >= 0 && cert === undefined; i--) {
    try {
      cert = await verifyCert({ certPem, caCertPem: caPems[i]!, usage: 'client', now: opts.now, expectCn: opts.nodeId });
      issuer = i;
    } catch (err) {
      if (i === 0 || (err as PkiError).code !== 'MVPN_CERT_WRONG_ISSUER') throw err;
    }
  }
  if (cert === undefined) throw new PkiError('MVPN_CERT_WRONG_ISSUER', 'node.crt is issued by none of the CAs in ca.crt');
  if (crls.some((c) => c.revokedSerials.includes(cert.serialHex))) {
    throw new PkiError('MVPN_CERT_REVOKED', `node.crt (serial ${cert.serialHex}) is revoked by the bundle's CRL`, { context: { serial: cert.serialHex } });
  }
  const crl = crls[issuer]!;

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
    crl: { thisUpdate: crl.thisUpdate, nextUpdate: crl.nextUpdate, revokedSerials: crls.flatMap((c) => c.revokedSerials) },
    cas,
    ...(roll === undefined ? {} : { roll }),
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
  if (spec.server_cn !== serverCn(spec.id)) {
    throw bundleError('MVPN_BUNDLE_WRONG_NETWORK', `network.json names the server ${JSON.stringify(spec.server_cn)}, which is not network ${spec.id}'s server ${JSON.stringify(serverCn(spec.id))}`, {
      server_cn: spec.server_cn,
      expected: serverCn(spec.id),
    });
  }
  renderClientConfig(spec, DRY_RUN_PATHS);
  const pki = await checkPki(files, manifest, opts);
  return { manifest, spec, files, sha256, size: bytes.byteLength, ...pki };
}
