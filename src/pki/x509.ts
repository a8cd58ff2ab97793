/**
 * The one place that loads @peculiar/x509. The library needs
 * `reflect-metadata` before first use and a WebCrypto provider; both are
 * process-wide, so every pki module gets the library from here and never from
 * the package directly.
 *
 * It is loaded on first use (`await loadX509()` at the top of every exported
 * async pki function, then `x509()` inside): loading it costs ~55 ms of
 * start-up in the executable (measured with --cpu-prof), which `status`,
 * `--version` and most admin verbs would otherwise pay for nothing. The
 * agent's checks (verify.ts, checkCrl) do not use it at all (read.ts); it
 * loads for issuing and for making a CSR.
 */
import { MvpnError } from '../errors.ts';
import type * as X509 from '@peculiar/x509';

export type { X509 };

let lib: typeof X509 | undefined;

export async function loadX509(): Promise<typeof X509> {
  if (lib === undefined) {
    await import('reflect-metadata');
    const m = await import('@peculiar/x509');
    m.cryptoProvider.set(globalThis.crypto);
    lib = m;
  }
  return lib;
}

/** The loaded library; only valid after `await loadX509()`. */
export function x509(): typeof X509 {
  if (lib === undefined) throw new MvpnError('MVPN_INTERNAL', 'internal error: @peculiar/x509 used before loadX509()');
  return lib;
}

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
