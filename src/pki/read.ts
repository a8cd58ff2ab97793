/**
 * Reading certificates and CRLs with the DER reader (der.ts) and checking
 * their signatures with node:crypto: the agent's whole verification path
 * (pki/verify.ts, checkCrl) runs on this, so an agent start or join never
 * loads @peculiar/x509 (~140 ms of a join in the executable, BENCHMARKS.md).
 * The library stays for issuing (ca.ts, cert.ts' reference, CSRs and CRLs
 * the server signs).
 *
 * Everything here is untrusted input: every element is bounds-checked and
 * any surprise is the caller's error code, never a crash.
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { PkiError, type ErrorCode } from '../errors.ts';
import { checkPemInput, onePemBlock } from './common.ts';
import { childrenOf, directoryText, encodingOf, oid, oidText, readElement, readTime, TAG, type DerElement } from './der.ts';
import { OID } from './x509.ts';

/**
 * Signature algorithms we read, by OID, with the hash node:crypto verifies
 * with (PKCS#1 v1.5 for RSA) and the key type that must sign them. EdDSA is
 * listed so a CSR with such a key is refused for its key type, not as unreadable.
 */
export const SIGNATURES: ReadonlyMap<string, { readonly hash: string | null; readonly keyType: string }> = new Map([
  ['1.2.840.10045.4.3.2', { hash: 'sha256', keyType: 'ec' }],
  ['1.2.840.10045.4.3.3', { hash: 'sha384', keyType: 'ec' }],
  ['1.2.840.10045.4.3.4', { hash: 'sha512', keyType: 'ec' }],
  ['1.2.840.113549.1.1.11', { hash: 'sha256', keyType: 'rsa' }],
  ['1.2.840.113549.1.1.12', { hash: 'sha384', keyType: 'rsa' }],
  ['1.2.840.113549.1.1.13', { hash: 'sha512', keyType: 'rsa' }],
  ['1.3.101.112', { hash: null, keyType: 'ed25519' }],
  ['1.3.101.113', { hash: null, keyType: 'ed448' }],
] as const);

const CN_OID = oid(OID.commonName);
const EXT = {
  basicConstraints: oid(OID.basicConstraints),
  keyUsage: oid(OID.keyUsage),
  extKeyUsage: oid(OID.extKeyUsage),
};

/** Every CN value in a Name (SEQUENCE OF SET OF SEQUENCE { type, value }); `bad` for anything that is not a Name. */
export function cnValues(der: Buffer, name: DerElement, bad: () => Error): string[] {
  if (name.tag !== TAG.sequence) throw bad();
  const out: string[] = [];
  for (const rdn of childrenOf(der, name)) {
    if (rdn.tag !== TAG.set) throw bad();
    for (const atv of childrenOf(der, rdn)) {
      const [type, value] = atv.tag === TAG.sequence ? childrenOf(der, atv) : [];
      if (type?.tag !== TAG.oid || !value) throw bad();
      if (encodingOf(der, type).equals(CN_OID)) out.push(directoryText(der, value));
    }
  }
  return out;
}

/** A Name for messages: "CN=x" for the one-CN names this project uses, else the CNs or a placeholder. */
function nameText(cns: readonly string[]): string {
  return cns.length === 0 ? '(no CN)' : cns.map((c) => `CN=${c}`).join(', ');
}

/** A signed object's three parts (Certificate and CertificateList have the same outer shape). */
interface Signed {
  readonly der: Buffer;
  readonly tbs: DerElement;
  readonly fields: DerElement[];
  /** The outer AlgorithmIdentifier's encoding, which must equal the inner one. */
  readonly alg: Buffer;
  readonly sig: DerElement;
}

function readSigned(der: Buffer): Signed {
  const top = readElement(der, 0);
  if (top.tag !== TAG.sequence || top.end !== der.length) throw new Error('not one SEQUENCE');
  const parts = childrenOf(der, top);
  const [tbs, alg, sig] = parts;
  if (parts.length !== 3 || tbs?.tag !== TAG.sequence || alg?.tag !== TAG.sequence || sig?.tag !== TAG.bitString) throw new Error('not a signed structure');
  if (sig.end - sig.contentStart < 2 || der[sig.contentStart] !== 0) throw new Error('malformed signature');
  return { der, tbs, fields: childrenOf(der, tbs), alg: encodingOf(der, alg), sig };
}

/** Whether `key` made the signature of `s`; false for an algorithm we do not read or a key of another type. */
function signedBy(s: Signed, key: KeyObject): boolean {
  const algOid = childrenOf(s.alg, readElement(s.alg, 0))[0];
  const scheme = algOid?.tag === TAG.oid ? SIGNATURES.get(oidText(s.alg.subarray(algOid.contentStart, algOid.end))) : undefined;
  if (!scheme || scheme.keyType !== key.asymmetricKeyType) return false;
  try {
    return verify(scheme.hash, s.der.subarray(s.tbs.start, s.tbs.end), key, s.der.subarray(s.sig.contentStart + 1, s.sig.end));
  } catch {
    return false;
  }
}

/** What the agent checks of a certificate. */
export interface CertInfo {
  readonly issuerDer: Buffer;
  readonly subjectDer: Buffer;
  readonly issuer: string;
  readonly subject: string;
  readonly subjectCns: readonly string[];
  /** Lower-case hex of the serial's content bytes. */
  readonly serialHex: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The SubjectPublicKeyInfo exactly as encoded in the certificate. */
  readonly spkiDer: Buffer;
  /** basicConstraints cA. */
  readonly isCa: boolean;
  /** keyUsage present and digitalSignature set. */
  readonly digitalSignature: boolean;
  /** extendedKeyUsage OIDs (dotted), [] when absent. */
  readonly extKeyUsages: readonly string[];
  /** Whether `issuer`'s key signed this certificate. */
  signedBy(issuer: CertInfo): boolean;
}

function boolean(der: Buffer, e: DerElement): boolean {
  if (e.tag !== TAG.boolean || e.end - e.contentStart !== 1) throw new Error('malformed BOOLEAN');
  return der[e.contentStart] !== 0;
}

/**
 * A certificate (exactly one PEM "CERTIFICATE" block): TBSCertificate is
 * [0] version, serial, signature, issuer, validity, subject, SPKI, then
 * optional [1]/[2] unique IDs and [3] extensions (RFC 5280 §4.1).
 */
export function readCertificate(pem: string, what = 'certificate'): CertInfo {
  checkPemInput(pem, 'MVPN_CERT_INVALID', what);
  const der = Buffer.from(onePemBlock(pem, 'CERTIFICATE', 'MVPN_CERT_INVALID', what));
  try {
    const s = readSigned(der);
    const f = s.fields[0]?.tag === 0xa0 ? s.fields.slice(1) : s.fields;
    const [serial, alg, issuer, validity, subject, spki] = f;
    if (serial?.tag !== TAG.integer || alg?.tag !== TAG.sequence || validity?.tag !== TAG.sequence || spki?.tag !== TAG.sequence || !issuer || !subject) {
      throw new Error('not a TBSCertificate');
    }
    if (!encodingOf(der, alg).equals(s.alg)) throw new Error('the inner and outer signature algorithms differ');
    const [nb, na] = childrenOf(der, validity);
    if (!nb || !na) throw new Error('malformed validity');
    const bad = (): Error => new Error('malformed Name');
    const issuerCns = cnValues(der, issuer, bad);
    const subjectCns = cnValues(der, subject, bad);
    let isCa = false;
    let digitalSignature = false;
    let extKeyUsages: string[] = [];
    const exts = f.slice(6).find((e) => e.tag === 0xa3);
    if (exts) {
      const [list] = childrenOf(der, exts);
      if (list?.tag !== TAG.sequence) throw new Error('malformed extensions');
      for (const ext of childrenOf(der, list)) {
        const parts = childrenOf(der, ext);
        const id = parts[0];
        const value = parts[parts.length - 1];
        if (ext.tag !== TAG.sequence || id?.tag !== TAG.oid || value?.tag !== TAG.octetString || parts.length > 3) throw new Error('malformed extension');
        const inner = readElement(der, value.contentStart, value.end);
        const idDer = encodingOf(der, id);
        if (idDer.equals(EXT.basicConstraints)) {
          const [flag] = childrenOf(der, inner);
          isCa = flag?.tag === TAG.boolean && boolean(der, flag);
        } else if (idDer.equals(EXT.keyUsage)) {
          if (inner.tag !== TAG.bitString || inner.end - inner.contentStart < 1) throw new Error('malformed keyUsage');
          digitalSignature = inner.end - inner.contentStart >= 2 && (der[inner.contentStart + 1]! & 0x80) !== 0;
        } else if (idDer.equals(EXT.extKeyUsage)) {
          extKeyUsages = childrenOf(der, inner).map((u) => {
            if (u.tag !== TAG.oid) throw new Error('malformed extKeyUsage');
            return oidText(der.subarray(u.contentStart, u.end));
          });
        }
      }
    }
    const spkiDer = encodingOf(der, spki);
    const info: CertInfo = {
      issuerDer: encodingOf(der, issuer),
      subjectDer: encodingOf(der, subject),
      issuer: nameText(issuerCns),
      subject: nameText(subjectCns),
      subjectCns,
      serialHex: der.subarray(serial.contentStart, serial.end).toString('hex'),
      notBefore: readTime(der, nb),
      notAfter: readTime(der, na),
      spkiDer,
      isCa,
      digitalSignature,
      extKeyUsages,
      signedBy: (by) => signedBy(s, publicKeyOf(by)),
    };
    return info;
  } catch (err) {
    if (err instanceof PkiError) throw err;
    throw new PkiError('MVPN_CERT_INVALID', `${what} is not a readable X.509 certificate`, { cause: err });
  }
}

const keys = new WeakMap<CertInfo, KeyObject>();

/** The certificate's public key as a node:crypto key (MVPN_CERT_INVALID when node:crypto cannot read it). */
export function publicKeyOf(cert: CertInfo, code: ErrorCode = 'MVPN_CERT_INVALID'): KeyObject {
  let key = keys.get(cert);
  if (key === undefined) {
    try {
      key = createPublicKey({ key: cert.spkiDer, format: 'der', type: 'spki' });
    } catch (err) {
      throw new PkiError(code, `the public key of "${cert.subject}" is not readable`, { cause: err });
    }
    keys.set(cert, key);
  }
  return key;
}

/** What the agent checks of a CRL. */
export interface CrlInfo {
  readonly issuerDer: Buffer;
  readonly issuer: string;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date | undefined;
  /** Lower-case hex of each revoked serial's content bytes. */
  readonly revokedSerials: readonly string[];
  signedBy(ca: CertInfo): boolean;
}

/**
 * A CRL (exactly one PEM "X509 CRL" block): TBSCertList is version,
 * signature, issuer, thisUpdate, optional nextUpdate, optional
 * revokedCertificates, [0] extensions (RFC 5280 §5.1).
 */
export function readCrl(pem: string): CrlInfo {
  checkPemInput(pem, 'MVPN_CRL_INVALID', 'CRL');
  const der = Buffer.from(onePemBlock(pem, 'X509 CRL', 'MVPN_CRL_INVALID', 'CRL'));
  try {
    const s = readSigned(der);
    const f = s.fields[0]?.tag === TAG.integer ? s.fields.slice(1) : s.fields;
    const [alg, issuer, thisUpdate, ...rest] = f;
    if (alg?.tag !== TAG.sequence || !issuer || !thisUpdate) throw new Error('not a TBSCertList');
    if (!encodingOf(der, alg).equals(s.alg)) throw new Error('the inner and outer signature algorithms differ');
    const isTime = (e: DerElement | undefined): e is DerElement => e?.tag === TAG.utcTime || e?.tag === TAG.generalizedTime;
    const next = isTime(rest[0]) ? rest.shift() : undefined;
    const revoked = rest[0]?.tag === TAG.sequence ? rest.shift() : undefined;
    const revokedSerials = revoked
      ? childrenOf(der, revoked).map((entry) => {
          const [serial] = entry.tag === TAG.sequence ? childrenOf(der, entry) : [];
          if (serial?.tag !== TAG.integer) throw new Error('malformed revoked entry');
          return der.subarray(serial.contentStart, serial.end).toString('hex');
        })
      : [];
    return {
      issuerDer: encodingOf(der, issuer),
      issuer: nameText(cnValues(der, issuer, () => new Error('malformed Name'))),
      thisUpdate: readTime(der, thisUpdate),
      nextUpdate: next ? readTime(der, next) : undefined,
      revokedSerials,
      signedBy: (ca) => signedBy(s, publicKeyOf(ca, 'MVPN_CRL_INVALID')),
    };
  } catch (err) {
    if (err instanceof PkiError) throw err;
    throw new PkiError('MVPN_CRL_INVALID', 'CRL is not a readable X.509 CRL', { cause: err });
  }
}
