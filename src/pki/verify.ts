/**
 * Checking a leaf certificate against a network's CA the way openvpn's
 * `remote-cert-tls` + `crl-verify` would, but before openvpn ever sees it,
 * so the agent can refuse a bundle with a precise reason. `now` is passed
 * in (Nebula's VerifyCertificate(now, cert)) so expiry is testable.
 */
import { createHash, createPublicKey } from 'node:crypto';
import { PkiError } from '../errors.ts';
import { normaliseSerial } from './common.ts';
import type { CertUsage } from './cert.ts';
import { loadPrivateKey } from './keys.ts';
import { readCertificate, type CertInfo } from './read.ts';
import { derToPem, OID } from './x509.ts';

export interface VerifiedCert {
  readonly cn: string;
  readonly serialHex: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly publicKeyPem: string;
}

function inValidity(cert: CertInfo, now: Date): boolean {
  return cert.notBefore.getTime() <= now.getTime() && now.getTime() <= cert.notAfter.getTime();
}

/**
 * Checks in this order, each failure with its own code: readable
 * (MVPN_CERT_INVALID); issued and signed by this CA, which is a CA
 * (MVPN_CERT_WRONG_ISSUER); CA and certificate valid at `now`
 * (MVPN_CERT_EXPIRED, also for not-yet-valid); not revoked
 * (MVPN_CERT_REVOKED); a leaf with digitalSignature and the EKU for `usage`
 * (MVPN_CERT_WRONG_USAGE); the CN expected (MVPN_CERT_WRONG_CN).
 */
export async function verifyCert(opts: {
  certPem: string;
  caCertPem: string;
  usage: CertUsage;
  now: Date;
  expectCn?: string;
  revokedSerials?: readonly string[];
}): Promise<VerifiedCert> {
  const cert = readCertificate(opts.certPem, 'certificate');
  const ca = readCertificate(opts.caCertPem, 'CA certificate');

  if (!ca.isCa) throw new PkiError('MVPN_CERT_WRONG_ISSUER', `"${ca.subject}" is not a CA certificate`);
  if (!cert.issuerDer.equals(ca.subjectDer)) {
    throw new PkiError('MVPN_CERT_WRONG_ISSUER', `the certificate is issued by "${cert.issuer}", not by this network's CA "${ca.subject}"`, {
      context: { issuer: cert.issuer, ca: ca.subject },
    });
  }
  if (!cert.signedBy(ca)) throw new PkiError('MVPN_CERT_WRONG_ISSUER', `the certificate's signature does not verify with this network's CA "${ca.subject}"`);

  if (!inValidity(ca, opts.now)) {
    throw new PkiError('MVPN_CERT_EXPIRED', `the CA certificate is valid only from ${ca.notBefore.toISOString()} to ${ca.notAfter.toISOString()}`, {
      context: { which: 'ca', notBefore: ca.notBefore.toISOString(), notAfter: ca.notAfter.toISOString() },
    });
  }
  if (!inValidity(cert, opts.now)) {
    throw new PkiError('MVPN_CERT_EXPIRED', `the certificate is valid only from ${cert.notBefore.toISOString()} to ${cert.notAfter.toISOString()}`, {
      context: { which: 'cert', notBefore: cert.notBefore.toISOString(), notAfter: cert.notAfter.toISOString() },
    });
  }

  const serialHex = normaliseSerial(cert.serialHex);
  if (opts.revokedSerials?.some((s) => normaliseSerial(s) === serialHex)) {
    throw new PkiError('MVPN_CERT_REVOKED', `the certificate (serial ${serialHex}) is revoked`, { context: { serial: serialHex } });
  }

  if (cert.isCa) throw new PkiError('MVPN_CERT_WRONG_USAGE', 'the certificate is a CA certificate, not a node or server certificate');
  if (!cert.digitalSignature) {
    throw new PkiError('MVPN_CERT_WRONG_USAGE', 'the certificate lacks keyUsage digitalSignature');
  }
  const wanted = opts.usage === 'server' ? OID.serverAuth : OID.clientAuth;
  if (!cert.extKeyUsages.includes(wanted)) {
    throw new PkiError('MVPN_CERT_WRONG_USAGE', `the certificate is not a ${opts.usage} certificate (extendedKeyUsage ${opts.usage === 'server' ? 'serverAuth' : 'clientAuth'} missing)`, {
      context: { usage: opts.usage },
    });
  }

  const cn = cert.subjectCns.length === 1 ? cert.subjectCns[0] : undefined;
  if (cn === undefined) throw new PkiError('MVPN_CERT_INVALID', 'the certificate subject must have exactly one CN');
  if (opts.expectCn !== undefined && cn !== opts.expectCn) {
    throw new PkiError('MVPN_CERT_WRONG_CN', `the certificate is for ${JSON.stringify(cn)}, expected ${JSON.stringify(opts.expectCn)}`, {
      context: { cn, expected: opts.expectCn },
    });
  }
  return { cn, serialHex, notBefore: cert.notBefore, notAfter: cert.notAfter, publicKeyPem: derToPem('PUBLIC KEY', cert.spkiDer) };
}

/** Whether the private key is the one the certificate was issued for (e.g. a central node.key against node.crt). */
export async function certMatchesKey(certPem: string, privateKeyPem: string): Promise<boolean> {
  const cert = readCertificate(certPem);
  const { key } = loadPrivateKey(privateKeyPem);
  return cert.spkiDer.equals(createPublicKey(key).export({ type: 'spki', format: 'der' }));
}

/** What the agent needs of a network CA certificate: its name, its pin and its lifetime. */
export interface CaFacts {
  readonly cn: string;
  /** SHA-256 (hex) of the CA's SubjectPublicKeyInfo DER: what a node pins. */
  readonly pin: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

function caCertOf(pem: string, what: string): CertInfo {
  const ca = readCertificate(pem, what);
  // The code verifyCert gives a chain whose "CA" is not one.
  if (!ca.isCa) throw new PkiError('MVPN_CERT_WRONG_ISSUER', `${what} is not a CA certificate (basicConstraints CA:TRUE missing)`);
  return ca;
}

function pinOf(cert: CertInfo): string {
  return createHash('sha256').update(cert.spkiDer).digest('hex');
}

export async function caFacts(pem: string, what = 'CA certificate'): Promise<CaFacts> {
  const ca = caCertOf(pem, what);
  const cn = ca.subjectCns.length === 1 ? ca.subjectCns[0] : undefined;
  if (cn === undefined) throw new PkiError('MVPN_CERT_INVALID', `${what}: the subject must have exactly one CN`);
  return { cn, pin: pinOf(ca), notBefore: ca.notBefore, notAfter: ca.notAfter };
}

/**
 * Checks that `crossPem` certifies `subjectCaPem` (same subject name, same
 * key, CA:TRUE) and is signed by `issuerCaPem`'s key, and is valid at `now`.
 * The issuer's own validity is not checked: a roll exists because the old CA
 * ends, and a node that was offline past that end must still be able to
 * follow the roll its pinned key signed. Every failure is MVPN_CA_ROLL_INVALID.
 */
export async function verifyCrossCert(opts: { crossPem: string; issuerCaPem: string; subjectCaPem: string; now: Date }): Promise<void> {
  const bad = (why: string): PkiError => new PkiError('MVPN_CA_ROLL_INVALID', `ca-roll.crt: ${why}`, { hint: 'the server must certify the new CA with the old CA key (server network roll-ca)' });
  let cross: CertInfo;
  try {
    cross = caCertOf(opts.crossPem, 'the cross-certificate');
  } catch (err) {
    throw bad((err as Error).message);
  }
  const issuer = caCertOf(opts.issuerCaPem, 'the old CA certificate');
  const subject = caCertOf(opts.subjectCaPem, 'the new CA certificate');
  if (!cross.issuerDer.equals(issuer.subjectDer)) throw bad(`issued by "${cross.issuer}", not by the old CA "${issuer.subject}"`);
  if (!cross.subjectDer.equals(subject.subjectDer)) throw bad(`certifies "${cross.subject}", not the new CA "${subject.subject}"`);
  if (!cross.spkiDer.equals(subject.spkiDer)) throw bad("certifies another key than the new CA's");
  if (!cross.signedBy(issuer)) throw bad('its signature does not verify with the old CA key');
  if (!inValidity(cross, opts.now)) throw bad(`valid only from ${cross.notBefore.toISOString()} to ${cross.notAfter.toISOString()}`);
}
