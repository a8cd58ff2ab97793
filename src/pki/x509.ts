/**
 * The one place that loads @peculiar/x509. The library needs
 * `reflect-metadata` before first use and a WebCrypto provider; both are
 * process-wide, so every pki module imports `x509` from here and never from
 * the package directly.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(globalThis.crypto);

export { x509 };

/** DER bytes as a PEM block with the given label (64-column base64 lines). */
export function derToPem(label: string, der: ArrayBuffer | Uint8Array): string {
  const b64 = Buffer.from(der instanceof Uint8Array ? der : new Uint8Array(der)).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Upper bound for any PEM we parse (certificates, CSRs, CRLs, keys): keeps ASN.1 parsing bounded. */
export const MAX_PEM_BYTES = 1 << 20;

/** OIDs we look at directly. */
export const OID = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  subjectAltName: '2.5.29.17',
  crlNumber: '2.5.29.20',
  commonName: '2.5.4.3',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;
