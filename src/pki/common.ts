/**
 * Helpers shared by the pki modules: parsing PEM into library objects with
 * the right error code, CN rules, serial numbers and dates.
 */
import { randomBytes } from 'node:crypto';
import { PkiError } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';
import { derToPem, MAX_PEM_BYTES, x509, type X509 } from './x509.ts';

/**
 * CNs of node and server certificates. They become file names in openvpn's
 * client-config-dir and appear in logs and `kill CN` commands, so they are
 * kept to a conservative character set.
 */
const LEAF_CN = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
/** CA names are for people ("mvpn net1 CA"): printable ASCII, no leading/trailing space. */
const CA_CN = /^[\x21-\x7e](?:[\x20-\x7e]{0,62}[\x21-\x7e])?$/;

export function checkLeafCn(cn: string, code: ErrorCode = 'MVPN_CERT_WRONG_CN'): void {
  if (typeof cn !== 'string' || !LEAF_CN.test(cn)) {
    throw new PkiError(code, `invalid common name ${JSON.stringify(cn)}: use 1-64 characters from A-Z a-z 0-9 . _ @ -, starting with a letter or digit`, {
      context: { cn },
    });
  }
}

export function checkCaCn(cn: string): void {
  if (typeof cn !== 'string' || !CA_CN.test(cn)) {
    throw new PkiError('MVPN_CERT_INVALID', `invalid CA name ${JSON.stringify(cn)}: use 1-64 printable ASCII characters`, { context: { cn } });
  }
}

export function checkValidity(notBefore: Date, notAfter: Date): void {
  if (!(notBefore instanceof Date) || Number.isNaN(notBefore.getTime()) || !(notAfter instanceof Date) || Number.isNaN(notAfter.getTime())) {
    throw new PkiError('MVPN_CERT_INVALID', 'notBefore and notAfter must be valid dates');
  }
  if (notAfter.getTime() <= notBefore.getTime()) {
    throw new PkiError('MVPN_CERT_INVALID', `notAfter (${notAfter.toISOString()}) must be after notBefore (${notBefore.toISOString()})`);
  }
}

/** A subject/issuer name holding just a CN (PrintableString when the text allows, else UTF8String: the library's choice, which der.ts matches). */
export function cnName(cn: string): X509.Name {
  return new (x509().Name)([{ CN: [cn] }]);
}

/**
 * 16 random bytes as a positive DER INTEGER: top bit clear (so no 00 pad
 * byte is needed) and first byte non-zero (so DER does not shorten it and
 * the hex we hand out is exactly the hex read back from the certificate).
 */
export function randomSerialHex(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f || 0x01;
  return b.toString('hex');
}

/** Lower-case hex without leading zero bytes, the form serials are compared in. */
export function normaliseSerial(hex: string): string {
  const h = hex.toLowerCase();
  return h.replace(/^(00)+(?=[0-9a-f]{2})/, '');
}

/** A caller-chosen serial: 1-20 bytes of even-length hex, positive, no redundant leading zero byte. */
export function checkSerialHex(hex: string): string {
  if (typeof hex !== 'string' || !/^(?:[0-9a-fA-F]{2}){1,20}$/.test(hex)) {
    throw new PkiError('MVPN_CERT_INVALID', `invalid serial ${JSON.stringify(hex)}: use 1-20 bytes of hex`);
  }
  const h = hex.toLowerCase();
  if (parseInt(h.slice(0, 2), 16) >= 0x80) throw new PkiError('MVPN_CERT_INVALID', `invalid serial ${h}: must be positive (first byte below 80)`);
  if (h.length > 2 && h.startsWith('00')) throw new PkiError('MVPN_CERT_INVALID', `invalid serial ${h}: no leading zero byte`);
  if (/^0+$/.test(h)) throw new PkiError('MVPN_CERT_INVALID', 'invalid serial 00: must be positive');
  return h;
}

export function checkPemInput(pem: unknown, code: ErrorCode, what: string): asserts pem is string {
  if (typeof pem !== 'string' || pem.trim().length === 0) throw new PkiError(code, `${what} is empty`);
  if (pem.length > MAX_PEM_BYTES) throw new PkiError(code, `${what} is too large (${pem.length} bytes)`);
}

/** The DER bytes of exactly one PEM block with the given label; anything else is `code`. */
export function onePemBlock(pem: string, label: string, code: ErrorCode, what: string): ArrayBuffer {
  const re = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]*)-----END ${label}-----`, 'g');
  const blocks = [...pem.matchAll(re)];
  if (blocks.length !== 1) throw new PkiError(code, `${what} must be exactly one PEM "${label}" block (found ${blocks.length})`);
  const der = Buffer.from(blocks[0]![1]!.replace(/\s+/g, ''), 'base64');
  if (der.length === 0) throw new PkiError(code, `${what} PEM block is empty`);
  return der.buffer.slice(der.byteOffset, der.byteOffset + der.length);
}

export function parseCertificate(pem: string, what = 'certificate'): X509.X509Certificate {
  checkPemInput(pem, 'MVPN_CERT_INVALID', what);
  const block = onePemBlock(pem, 'CERTIFICATE', 'MVPN_CERT_INVALID', what);
  try {
    return new (x509().X509Certificate)(block);
  } catch (err) {
    throw new PkiError('MVPN_CERT_INVALID', `${what} is not a readable X.509 certificate`, { cause: err });
  }
}

/** The DER of a CSR PEM (exactly one "CERTIFICATE REQUEST" block), or MVPN_CSR_INVALID. */
export function csrDer(pem: string): ArrayBuffer {
  checkPemInput(pem, 'MVPN_CSR_INVALID', 'CSR');
  return onePemBlock(pem, 'CERTIFICATE REQUEST', 'MVPN_CSR_INVALID', 'CSR');
}

/** The subject key identifier of a CA certificate (hex), computed from its key if the extension is absent. */
export async function keyIdOf(cert: X509.X509Certificate): Promise<string> {
  const ski = cert.getExtension(x509().SubjectKeyIdentifierExtension);
  if (ski) return ski.keyId;
  return Buffer.from(await cert.publicKey.getKeyIdentifier()).toString('hex');
}

/** SPKI PEM of a certificate's or CSR's public key. */
export function spkiPem(pub: X509.PublicKey): string {
  return derToPem('PUBLIC KEY', pub.rawData);
}
