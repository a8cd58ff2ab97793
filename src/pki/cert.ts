/**
 * Issuing node (client) and server certificates from a CA.
 *
 * openvpn's `remote-cert-tls client|server` requires a keyUsage extension
 * and the matching extendedKeyUsage, so every leaf carries
 * digitalSignature (critical) and clientAuth or serverAuth. Leaves are never
 * CAs (basicConstraints CA:FALSE) and carry subject and authority key
 * identifiers so chains stay unambiguous across CA rotation.
 */
import { isIP } from 'node:net';
import { PkiError } from '../errors.ts';
import { loadCa, type CaMaterial } from './ca.ts';
import { checkLeafCn, checkSerialHex, checkValidity, cnName, randomSerialHex } from './common.ts';
import { loadPublicKey, signingAlgorithm } from './keys.ts';
import { derToPem, OID, x509 } from './x509.ts';

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

export async function issueCert(opts: IssueCertOptions): Promise<{ certPem: string; serialHex: string }> {
  if (opts.usage !== 'server' && opts.usage !== 'client') throw new PkiError('MVPN_CERT_INVALID', `unknown certificate usage ${String(opts.usage)}; use server or client`);
  checkLeafCn(opts.cn);
  checkValidity(opts.notBefore, opts.notAfter);
  const serialHex = opts.serialHex === undefined ? randomSerialHex() : checkSerialHex(opts.serialHex);
  for (const d of opts.dnsNames ?? []) if (!DNS_NAME.test(d)) throw new PkiError('MVPN_CERT_INVALID', `invalid DNS name ${JSON.stringify(d)} for subjectAltName`);
  for (const ip of opts.ipAddresses ?? []) if (isIP(ip) === 0) throw new PkiError('MVPN_CERT_INVALID', `invalid IP address ${JSON.stringify(ip)} for subjectAltName`);
  loadPublicKey(opts.publicKeyPem); // allowed key type, or MVPN_KEY_INVALID
  const ca = await loadCa(opts.ca);
  const publicKey = new x509.PublicKey(opts.publicKeyPem);

  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, false),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([opts.usage === 'server' ? OID.serverAuth : OID.clientAuth], false),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
    new x509.AuthorityKeyIdentifierExtension(ca.keyId, false),
  ];
  const san = [...(opts.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })), ...(opts.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value }))];
  if (san.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(san, false));

  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialHex,
    subject: cnName(opts.cn),
    issuer: ca.cert.subjectName,
    notBefore: opts.notBefore,
    notAfter: opts.notAfter,
    publicKey,
    signingKey: ca.signingKey,
    signingAlgorithm: signingAlgorithm(ca.alg),
    extensions,
  });
  return { certPem: derToPem('CERTIFICATE', cert.rawData), serialHex: cert.serialNumber.toLowerCase() };
}
