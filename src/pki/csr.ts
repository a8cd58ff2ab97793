/**
 * Certificate signing requests: the agent makes its key on the node and
 * sends only a CSR (DESIGN.md §3). The server trusts nothing in a CSR but
 * the public key and the CN, and only after the CSR's own signature shows
 * the sender holds the private key.
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { PkiError } from '../errors.ts';
import { checkLeafCn, cnName, csrDer } from './common.ts';
import { childrenOf, encodingOf, oid, readElement, TAG, type DerElement } from './der.ts';
import { importSigningKey, importVerifyKey, loadPublicKey, signingAlgorithm, type KeyAlg, type KeyPairPem } from './keys.ts';
import { derToPem, loadX509, OID, x509 } from './x509.ts';

export async function createCsr(opts: { keyPair: KeyPairPem; cn: string }): Promise<string> {
  await loadX509();
  checkLeafCn(opts.cn);
  const { alg, cryptoKey: privateKey } = await importSigningKey(opts.keyPair.privateKeyPem);
  const { cryptoKey: publicKey } = importVerifyKey(opts.keyPair.publicKeyPem);
  const csr = await x509().Pkcs10CertificateRequestGenerator.create({
    name: cnName(opts.cn),
    keys: { privateKey, publicKey },
    signingAlgorithm: signingAlgorithm(alg),
  });
  return derToPem('CERTIFICATE REQUEST', csr.rawData);
}

export interface ParsedCsr {
  readonly cn: string;
  readonly alg: KeyAlg;
  /** SPKI PEM, ready for issueCert. */
  readonly publicKeyPem: string;
}

/**
 * Signature algorithms a CSR may use, by OID, with the hash node:crypto
 * verifies with (PKCS#1 v1.5 for RSA). EdDSA is read too, so that such a
 * CSR is refused for its key type (MVPN_KEY_INVALID), not as unreadable.
 */
const CSR_SIGNATURES: ReadonlyMap<string, { readonly hash: string | null; readonly keyType: string }> = new Map([
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

function invalid(message: string, cause?: unknown): PkiError {
  return new PkiError('MVPN_CSR_INVALID', message, cause === undefined ? undefined : { cause });
}

/** The text of a directory string; anything that is not one reads as "" (which no CN rule accepts). */
function directoryText(der: Buffer, e: DerElement): string {
  const body = der.subarray(e.contentStart, e.end);
  switch (e.tag) {
    case TAG.utf8String:
      return body.toString('utf8');
    case TAG.printableString:
    case 0x16: // IA5String
    case 0x14: // TeletexString
      return body.toString('latin1');
    case 0x1e: // BMPString
      return body.length % 2 === 0 ? Buffer.from(body).swap16().toString('utf16le') : '';
    default:
      return '';
  }
}

/** Every CN value in a Name (SEQUENCE OF SET OF SEQUENCE { type, value }). */
function cnValues(der: Buffer, name: DerElement): string[] {
  if (name.tag !== TAG.sequence) throw invalid('the CSR subject is not a Name');
  const out: string[] = [];
  for (const rdn of childrenOf(der, name)) {
    if (rdn.tag !== TAG.set) throw invalid('the CSR subject is not a Name');
    for (const atv of childrenOf(der, rdn)) {
      const [type, value] = atv.tag === TAG.sequence ? childrenOf(der, atv) : [];
      if (type?.tag !== TAG.oid || !value) throw invalid('the CSR subject is not a Name');
      if (encodingOf(der, type).equals(CN_OID)) out.push(directoryText(der, value));
    }
  }
  return out;
}

/**
 * Reads a PKCS#10 request with the DER reader and checks its signature with
 * node:crypto: the library's generic ASN.1 parser and WebCrypto verify cost
 * about 1 ms per enrollment. Everything here is untrusted input: every
 * element is bounds-checked (der.ts) and any surprise is MVPN_CSR_INVALID.
 */
function readCsr(pem: string): { cn: string | undefined; spki: Buffer; key: KeyObject } {
  const der = Buffer.from(csrDer(pem));
  let info: DerElement, sig: DerElement, fields: DerElement[], algOid: DerElement | undefined;
  try {
    let sigAlg: DerElement;
    const top = readElement(der, 0);
    if (top.tag !== TAG.sequence || top.end !== der.length) throw new Error('not one SEQUENCE');
    [info, sigAlg, sig] = childrenOf(der, top) as [DerElement, DerElement, DerElement];
    if (info?.tag !== TAG.sequence || sigAlg?.tag !== TAG.sequence || sig?.tag !== TAG.bitString) throw new Error('not a CertificationRequest');
    fields = childrenOf(der, info);
    const [version, subject, spki] = fields;
    if (version?.tag !== TAG.integer || der.subarray(version.contentStart, version.end).toString('hex') !== '00') throw new Error('not a version 1 request');
    if (subject?.tag !== TAG.sequence || spki?.tag !== TAG.sequence) throw new Error('no subject or key');
    [algOid] = childrenOf(der, sigAlg);
  } catch (err) {
    if (err instanceof PkiError) throw err;
    throw invalid('CSR is not a readable PKCS#10 request', err);
  }
  const scheme = algOid?.tag === TAG.oid ? CSR_SIGNATURES.get(oidText(der.subarray(algOid.contentStart, algOid.end))) : undefined;
  const spki = encodingOf(der, fields[2]!);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch (err) {
    throw invalid('the CSR signature cannot be checked (unsupported or malformed key or signature)', err);
  }
  if (!scheme || scheme.keyType !== key.asymmetricKeyType || der[sig.contentStart] !== 0) {
    throw invalid('the CSR signature cannot be checked (unsupported or malformed key or signature)');
  }
  let ok: boolean;
  try {
    ok = verify(scheme.hash, der.subarray(info.start, info.end), key, der.subarray(sig.contentStart + 1, sig.end));
  } catch (err) {
    throw invalid('the CSR signature cannot be checked (unsupported or malformed key or signature)', err);
  }
  if (!ok) throw invalid('the CSR signature does not verify: it was not signed by the key it contains');
  let cns: string[];
  try {
    cns = cnValues(der, fields[1]!);
  } catch (err) {
    if (err instanceof PkiError) throw err;
    throw invalid('the CSR subject is not a Name', err);
  }
  return { cn: cns.length === 1 ? cns[0] : undefined, spki, key };
}

/** Dotted text of an OID's content bytes. */
function oidText(body: Uint8Array): string {
  const arcs: number[] = [];
  let v = 0;
  for (const b of body) {
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      if (arcs.length === 0) arcs.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
      else arcs.push(v);
      v = 0;
    }
  }
  return arcs.join('.');
}

/**
 * Checks, in this order: readable (MVPN_CSR_INVALID), self-signature
 * (MVPN_CSR_INVALID), key type allowed (MVPN_KEY_INVALID), exactly one
 * well-formed CN (MVPN_CSR_INVALID), CN as expected (MVPN_CERT_WRONG_CN).
 */
export async function parseCsr(pem: string, opts: { expectCn?: string; allowedAlgs: readonly KeyAlg[] }): Promise<ParsedCsr> {
  const csr = readCsr(pem);
  const publicKeyPem = derToPem('PUBLIC KEY', csr.spki);
  const { alg } = loadPublicKey(publicKeyPem);
  if (!opts.allowedAlgs.includes(alg)) {
    throw new PkiError('MVPN_KEY_INVALID', `key type ${alg} is not allowed here; allowed: ${opts.allowedAlgs.join(', ') || 'none'}`, { context: { alg } });
  }
  const cn = csr.cn;
  if (cn === undefined) throw new PkiError('MVPN_CSR_INVALID', 'the CSR subject must have exactly one CN');
  checkLeafCn(cn, 'MVPN_CSR_INVALID');
  if (opts.expectCn !== undefined && cn !== opts.expectCn) {
    throw new PkiError('MVPN_CERT_WRONG_CN', `the CSR is for ${JSON.stringify(cn)}, expected ${JSON.stringify(opts.expectCn)}`, { context: { cn, expected: opts.expectCn } });
  }
  return { cn, alg, publicKeyPem };
}
