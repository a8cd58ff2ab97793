/**
 * Per-network certificate authorities (DESIGN.md §3). A CA is a self-signed
 * certificate (basicConstraints CA:TRUE critical, keyCertSign + cRLSign,
 * subject key identifier) and its PKCS#8 key, both PEM, so the server's
 * store can keep them as text.
 */
import type { KeyObject, webcrypto } from 'node:crypto';
import { PkiError } from '../errors.ts';
import { checkCaCn, checkValidity, cnName, keyIdOf, parseCertificate, randomSerialHex } from './common.ts';
import { childrenOf, encodingOf, readElement } from './der.ts';
import { generateKeyPairPem, importSigningKey, isKeyAlg, loadPrivateKey, publicKeyPemOf, signingAlgorithm, type KeyAlg } from './keys.ts';
import { derToPem, loadX509, x509, type X509 } from './x509.ts';

export interface CaMaterial {
  readonly alg: KeyAlg;
  readonly certPem: string;
  /** PKCS#8 PEM of the CA key; 0600 wherever it is written. */
  readonly keyPem: string;
}

export async function createCa(opts: { cn: string; alg?: KeyAlg; notBefore: Date; notAfter: Date }): Promise<CaMaterial> {
  const alg = opts.alg ?? 'ec-p256';
  if (!isKeyAlg(alg)) throw new PkiError('MVPN_KEY_INVALID', `unsupported key algorithm ${String(alg)}`);
  checkCaCn(opts.cn);
  checkValidity(opts.notBefore, opts.notAfter);
  const keys = await generateKeyPairPem(alg);
  const { cryptoKey } = await importSigningKey(keys.privateKeyPem);
  await loadX509();
  const publicKey = new (x509().PublicKey)(keys.publicKeyPem);
  const name = cnName(opts.cn);
  const cert = await x509().X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: name,
    issuer: name,
    notBefore: opts.notBefore,
    notAfter: opts.notAfter,
    publicKey,
    signingKey: cryptoKey,
    signingAlgorithm: signingAlgorithm(alg),
    extensions: [
      new (x509().BasicConstraintsExtension)(true, undefined, true),
      new (x509().KeyUsagesExtension)(x509().KeyUsageFlags.keyCertSign | x509().KeyUsageFlags.cRLSign, true),
      await x509().SubjectKeyIdentifierExtension.create(publicKey),
    ],
  });
  return { alg, certPem: derToPem('CERTIFICATE', cert.rawData), keyPem: keys.privateKeyPem };
}

/** A CA ready to sign: parsed certificate, signing key, key id. Checks that the key belongs to the certificate. */
export interface LoadedCa {
  readonly alg: KeyAlg;
  readonly cert: X509.X509Certificate;
  readonly signingKey: webcrypto.CryptoKey;
  /** The same key for node:crypto's sign (the fast issuing path in cert.ts). */
  readonly key: KeyObject;
  /** The DER of the certificate's subject, copied verbatim into every issued certificate's issuer. */
  readonly subjectDer: Buffer;
  readonly keyId: string;
}

/** Issuing 1,000 certificates from one CaMaterial parses and imports it once. */
const loaded = new WeakMap<CaMaterial, Promise<LoadedCa>>();

export function loadCa(ca: CaMaterial): Promise<LoadedCa> {
  let p = loaded.get(ca);
  if (!p) {
    p = loadCaUncached(ca);
    loaded.set(ca, p);
    p.catch(() => loaded.delete(ca));
  }
  return p;
}

async function loadCaUncached(ca: CaMaterial): Promise<LoadedCa> {
  await loadX509();
  const cert = parseCertificate(ca.certPem, 'CA certificate');
  const bc = cert.getExtension(x509().BasicConstraintsExtension);
  if (!bc?.ca) throw new PkiError('MVPN_CERT_INVALID', 'the CA certificate is not a CA (basicConstraints CA:TRUE missing)');
  const { alg, cryptoKey } = await importSigningKey(ca.keyPem);
  const certSpki = Buffer.from(cert.publicKey.rawData);
  const keySpki = Buffer.from(new (x509().PublicKey)(publicKeyPemOf(ca.keyPem)).rawData);
  if (!certSpki.equals(keySpki)) throw new PkiError('MVPN_CERT_KEY_MISMATCH', 'the CA key does not belong to the CA certificate');
  return { alg, cert, signingKey: cryptoKey, key: loadPrivateKey(ca.keyPem).key, subjectDer: subjectDerOf(cert), keyId: await keyIdOf(cert) };
}

/** The subject Name's DER from a certificate the library has already parsed (so it is well-formed). */
function subjectDerOf(cert: X509.X509Certificate): Buffer {
  const der = new Uint8Array(cert.rawData);
  const tbs = childrenOf(der, readElement(der, 0))[0]!;
  const fields = childrenOf(der, tbs);
  // version [0] is optional; then serial, signature, issuer, validity, subject.
  const subject = fields[fields[0]!.tag === 0xa0 ? 5 : 4];
  if (!subject) throw new PkiError('MVPN_CERT_INVALID', 'the CA certificate has no subject');
  return encodingOf(der, subject);
}

/**
 * A cross-certificate: `subjectCaPem`'s name and key, certified by `issuer`
 * (CA:TRUE, keyCertSign + cRLSign). It is how the key of a network's pinned
 * CA vouches for the CA that replaces it (see src/bundle/verify.ts, CA
 * pinning); openvpn never sees it. Valid as long as the new CA.
 */
export async function crossCertify(issuer: CaMaterial, subjectCaPem: string, notBefore: Date): Promise<string> {
  const signer = await loadCa(issuer);
  const subject = parseCertificate(subjectCaPem, 'new CA certificate');
  checkValidity(notBefore, subject.notAfter);
  const cert = await x509().X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: subject.subjectName,
    issuer: signer.cert.subjectName,
    notBefore,
    notAfter: subject.notAfter,
    publicKey: subject.publicKey,
    signingKey: signer.signingKey,
    signingAlgorithm: signingAlgorithm(signer.alg),
    extensions: [
      new (x509().BasicConstraintsExtension)(true, undefined, true),
      new (x509().KeyUsagesExtension)(x509().KeyUsageFlags.keyCertSign | x509().KeyUsageFlags.cRLSign, true),
      await x509().SubjectKeyIdentifierExtension.create(subject.publicKey),
      new (x509().AuthorityKeyIdentifierExtension)(signer.keyId, false),
    ],
  });
  return derToPem('CERTIFICATE', cert.rawData);
}
