/**
 * Certificate signing requests: the agent makes its key on the node and
 * sends only a CSR (DESIGN.md §3). The server trusts nothing in a CSR but
 * the public key and the CN, and only after the CSR's own signature shows
 * the sender holds the private key.
 */
import { PkiError } from '../errors.ts';
import { checkLeafCn, cnName, cnOf, parseCsrPem, spkiPem } from './common.ts';
import { importSigningKey, importVerifyKey, loadPublicKey, signingAlgorithm, type KeyAlg, type KeyPairPem } from './keys.ts';
import { derToPem, x509 } from './x509.ts';

export async function createCsr(opts: { keyPair: KeyPairPem; cn: string }): Promise<string> {
  checkLeafCn(opts.cn);
  const { alg, cryptoKey: privateKey } = await importSigningKey(opts.keyPair.privateKeyPem);
  const { cryptoKey: publicKey } = importVerifyKey(opts.keyPair.publicKeyPem);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
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
 * Checks, in this order: readable (MVPN_CSR_INVALID), self-signature
 * (MVPN_CSR_INVALID), key type allowed (MVPN_KEY_INVALID), exactly one
 * well-formed CN (MVPN_CSR_INVALID), CN as expected (MVPN_CERT_WRONG_CN).
 */
export async function parseCsr(pem: string, opts: { expectCn?: string; allowedAlgs: readonly KeyAlg[] }): Promise<ParsedCsr> {
  const csr = parseCsrPem(pem);
  let ok: boolean;
  try {
    ok = await csr.verify();
  } catch (err) {
    throw new PkiError('MVPN_CSR_INVALID', 'the CSR signature cannot be checked (unsupported or malformed key or signature)', { cause: err });
  }
  if (!ok) throw new PkiError('MVPN_CSR_INVALID', 'the CSR signature does not verify: it was not signed by the key it contains');
  const publicKeyPem = spkiPem(csr.publicKey);
  const { alg } = loadPublicKey(publicKeyPem);
  if (!opts.allowedAlgs.includes(alg)) {
    throw new PkiError('MVPN_KEY_INVALID', `key type ${alg} is not allowed here; allowed: ${opts.allowedAlgs.join(', ') || 'none'}`, { context: { alg } });
  }
  const cn = cnOf(csr.subjectName);
  if (cn === undefined) throw new PkiError('MVPN_CSR_INVALID', 'the CSR subject must have exactly one CN');
  checkLeafCn(cn, 'MVPN_CSR_INVALID');
  if (opts.expectCn !== undefined && cn !== opts.expectCn) {
    throw new PkiError('MVPN_CERT_WRONG_CN', `the CSR is for ${JSON.stringify(cn)}, expected ${JSON.stringify(opts.expectCn)}`, { context: { cn, expected: opts.expectCn } });
  }
  return { cn, alg, publicKeyPem };
}
