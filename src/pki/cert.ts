/**
 * Issuing node (client) and server certificates from a CA.
 *
 * openvpn's `remote-cert-tls client|server` requires a keyUsage extension
 * and the matching extendedKeyUsage, so every leaf carries
 * digitalSignature (critical) and clientAuth or serverAuth. Leaves are never
 * CAs (basicConstraints CA:FALSE) and carry subject and authority key
 * identifiers so chains stay unambiguous across CA rotation.
 *
 * The TBSCertificate is written directly as DER (der.ts) and signed with
 * node:crypto: this one fixed profile is all we issue, and building it
 * through @peculiar/x509's schema layer cost ~3 ms per certificate, which
 * dominated issuing credentials for a whole testbed. The encoding is the
 * one @peculiar/x509 produces for the same input (same extension order,
 * PrintableString names when possible, UTCTime until 2049); the pki tests
 * compare the two byte for byte for both key types.
 */
import { createHash, sign, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { PkiError } from '../errors.ts';
import { loadCa, type CaMaterial } from './ca.ts';
import { checkLeafCn, checkSerialHex, checkValidity, randomSerialHex } from './common.ts';
import { bitString, childrenOf, derNull, derTrue, directoryString, explicit, implicit, octetString, oid, readElement, seq, set, tlv, time, TAG } from './der.ts';
import { loadPublicKey, type KeyAlg } from './keys.ts';
import { derToPem, OID } from './x509.ts';

export type CertUsage = 'server' | 'client';

const DNS_NAME = /^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

export interface IssueCertOptions {
  readonly ca: CaMaterial;
  /** SPKI PEM of the subject's key (from a CSR or a key made for an export). */
  readonly publicKeyPem: string;
  readonly cn: string;
  readonly usage: CertUsage;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Lower-case hex; random 16 bytes when absent. */
  readonly serialHex?: string;
  /** subjectAltName entries (server certificates: the names clients dial). */
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
}

/** AlgorithmIdentifier of the signature, by CA key type (SHA-256 always; RSA carries an explicit NULL parameter). */
const SIGNATURE_ALGORITHM: Record<KeyAlg, Buffer> = {
  'ec-p256': seq(oid('1.2.840.10045.4.3.2')),
  'rsa-2048': seq(oid('1.2.840.113549.1.1.11'), derNull),
};

const VERSION_3 = explicit(0, tlv(TAG.integer, Uint8Array.of(2)));
const CN = oid(OID.commonName);
const EXT = {
  basicConstraints: oid(OID.basicConstraints),
  keyUsage: oid(OID.keyUsage),
  extKeyUsage: oid(OID.extKeyUsage),
  subjectKeyIdentifier: oid(OID.subjectKeyIdentifier),
  authorityKeyIdentifier: oid(OID.authorityKeyIdentifier),
  subjectAltName: oid(OID.subjectAltName),
};
/** basicConstraints with cA FALSE (the DEFAULT, so omitted): an empty SEQUENCE. */
const LEAF_BASIC_CONSTRAINTS = seq(EXT.basicConstraints, octetString(seq()));
/** keyUsage critical, digitalSignature only (bit 0: one byte 0x80, 7 unused bits). */
const DIGITAL_SIGNATURE = seq(EXT.keyUsage, derTrue, octetString(tlv(TAG.bitString, Uint8Array.of(7, 0x80))));
const EXT_KEY_USAGE: Record<CertUsage, Buffer> = {
  server: seq(EXT.extKeyUsage, octetString(seq(oid(OID.serverAuth)))),
  client: seq(EXT.extKeyUsage, octetString(seq(oid(OID.clientAuth)))),
};

/**
 * The subject key's SPKI DER and its RFC 5280 §4.2.1.2 method 1 identifier
 * (SHA-1 of the subjectPublicKey bits), after checking the key type
 * (MVPN_KEY_INVALID). Remembered for a few recent keys: an enrollment
 * certifies one key for the API and for every network the node is in.
 */
const subjectKeys = new Map<string, { spki: Buffer; keyId: Buffer }>();

function subjectKey(publicKeyPem: string): { spki: Buffer; keyId: Buffer } {
  const hit = subjectKeys.get(publicKeyPem);
  if (hit) return hit;
  const { key } = loadPublicKey(publicKeyPem);
  const spki = key.export({ type: 'spki', format: 'der' });
  const [, bits] = childrenOf(spki, readElement(spki, 0));
  if (bits?.tag !== TAG.bitString) throw new PkiError('MVPN_KEY_INVALID', 'public key has no subjectPublicKey bit string');
  // Skip the "unused bits" byte: the identifier hashes the key bytes only.
  const entry = { spki, keyId: createHash('sha1').update(spki.subarray(bits.contentStart + 1, bits.end)).digest() };
  if (subjectKeys.size >= 64) subjectKeys.delete(subjectKeys.keys().next().value!);
  subjectKeys.set(publicKeyPem, entry);
  return entry;
}

function subjectAltName(dnsNames: readonly string[], ipAddresses: readonly string[]): Buffer | undefined {
  if (dnsNames.length === 0 && ipAddresses.length === 0) return undefined;
  const names = [
    ...dnsNames.map((d) => implicit(2, Buffer.from(d, 'ascii'))),
    ...ipAddresses.map((ip) => implicit(7, ipBytes(ip))),
  ];
  return seq(EXT.subjectAltName, octetString(seq(...names)));
}

/** An IPv4 (4 bytes) or IPv6 (16 bytes) address in network order; `ip` has passed isIP. */
export function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  // An embedded IPv4 tail (::ffff:192.0.2.1) becomes two hex groups first.
  const text = ip.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_, a: string, b: string, c: string, d: string) =>
    `${((Number(a) << 8) | Number(b)).toString(16)}:${((Number(c) << 8) | Number(d)).toString(16)}`,
  );
  const halves = text.split('::');
  const groups = (part: string | undefined): number[] => (part ? part.split(':').map((g) => parseInt(g, 16)) : []);
  const head = groups(halves[0]);
  const tail = groups(halves[1]);
  const words = halves.length === 1 ? head : [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  if (words.length !== 8 || words.some((w) => !(w >= 0 && w <= 0xffff))) throw new PkiError('MVPN_CERT_INVALID', `invalid IP address ${JSON.stringify(ip)} for subjectAltName`);
  const out = Buffer.alloc(16);
  words.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

function signAsync(key: KeyObject, data: Buffer): Promise<Buffer> {
  // ECDSA signatures come out DER-encoded (the default), as X.509 wants; RSA uses PKCS#1 v1.5.
  return new Promise((resolve, reject) => sign('sha256', data, key, (err, sig) => (err ? reject(err) : resolve(sig))));
}

export async function issueCert(opts: IssueCertOptions): Promise<{ certPem: string; serialHex: string }> {
  if (opts.usage !== 'server' && opts.usage !== 'client') throw new PkiError('MVPN_CERT_INVALID', `unknown certificate usage ${String(opts.usage)}; use server or client`);
  checkLeafCn(opts.cn);
  checkValidity(opts.notBefore, opts.notAfter);
  const serialHex = opts.serialHex === undefined ? randomSerialHex() : checkSerialHex(opts.serialHex);
  for (const d of opts.dnsNames ?? []) if (!DNS_NAME.test(d)) throw new PkiError('MVPN_CERT_INVALID', `invalid DNS name ${JSON.stringify(d)} for subjectAltName`);
  for (const ip of opts.ipAddresses ?? []) if (isIP(ip) === 0 || ip.includes('%')) throw new PkiError('MVPN_CERT_INVALID', `invalid IP address ${JSON.stringify(ip)} for subjectAltName`);
  const { spki, keyId } = subjectKey(opts.publicKeyPem); // allowed key type, or MVPN_KEY_INVALID
  const ca = await loadCa(opts.ca);

  const extensions = [
    LEAF_BASIC_CONSTRAINTS,
    DIGITAL_SIGNATURE,
    EXT_KEY_USAGE[opts.usage],
    seq(EXT.subjectKeyIdentifier, octetString(octetString(keyId))),
    seq(EXT.authorityKeyIdentifier, octetString(seq(implicit(0, Buffer.from(ca.keyId, 'hex'))))),
  ];
  const san = subjectAltName(opts.dnsNames ?? [], opts.ipAddresses ?? []);
  if (san) extensions.push(san);

  const algorithm = SIGNATURE_ALGORITHM[ca.alg];
  const tbs = seq(
    VERSION_3,
    tlv(TAG.integer, Buffer.from(serialHex, 'hex')), // checked: positive, minimal
    algorithm,
    ca.subjectDer,
    seq(time(opts.notBefore), time(opts.notAfter)),
    seq(set(seq(CN, directoryString(opts.cn)))),
    spki,
    explicit(3, seq(...extensions)),
  );
  const signature = await signAsync(ca.key, tbs);
  return { certPem: derToPem('CERTIFICATE', seq(tbs, algorithm, bitString(signature))), serialHex };
}
