/**
 * Certificate signing requests: the agent makes its key on the node and
 * sends only a CSR (DESIGN.md §3). The server trusts nothing in a CSR but
 * the public key and the CN, and only after the CSR's own signature shows
 * the sender holds the private key.
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { PkiError } from '../errors.ts';
import { checkLeafCn, cnName, csrDer } from './common.ts';
import { childrenOf, encodingOf, oidText, readElement, TAG, type DerElement } from './der.ts';
import { importSigningKey, importVerifyKey, loadPublicKey, signingAlgorithm, type KeyAlg, type KeyPairPem } from './keys.ts';
import { cnValues, SIGNATURES } from './read.ts';
import { derToPem, loadX509, x509 } from './x509.ts';

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

function invalid(message: string, cause?: unknown): PkiError {
  return new PkiError('MVPN_CSR_INVALID', message, cause === undefined ? undefined : { cause });
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
  const scheme = algOid?.tag === TAG.oid ? SIGNATURES.get(oidText(der.subarray(algOid.contentStart, algOid.end))) : undefined;
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
    cns = cnValues(der, fields[1]!, () => invalid('the CSR subject is not a Name'));
  } catch (err) {
    if (err instanceof PkiError) throw err;
    throw invalid('the CSR subject is not a Name', err);
  }
  return { cn: cns.length === 1 ? cns[0] : undefined, spki, key };
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
