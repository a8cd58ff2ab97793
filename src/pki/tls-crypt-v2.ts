/**
 * Native tls-crypt-v2 key handling, byte-compatible with openvpn 2.5+
 * (`--genkey tls-crypt-v2-server` / `--genkey tls-crypt-v2-client`), so a
 * server issuing keys for 1,000 nodes does not spawn openvpn 1,000 times.
 *
 * Format (openvpn doc/tls-crypt-v2.txt, src/openvpn/tls_crypt.c):
 * - Server key: one openvpn `struct key`, 64 bytes cipher material then 64
 *   bytes HMAC material (128 bytes). tls-crypt-v2 uses AES-256-CTR and
 *   HMAC-SHA256, so Ke = cipher[0..32) and Ka = hmac[0..32).
 * - Client key file: PEM of Kc || WKc, where Kc is two `struct key`s (256
 *   random bytes) and
 *     len = uint16 big-endian total length of WKc
 *     T   = HMAC-SHA256(Ka, len || Kc || metadata)
 *     WKc = T || AES-256-CTR(Ke, IV = T[0..16), Kc || metadata) || len
 * - metadata = type byte || data: 0x00 user data (at most 733 bytes), or
 *   0x01 followed by a 64-bit big-endian unix timestamp (openvpn's default,
 *   which `--tls-crypt-v2-max-age` reads).
 *
 * The server unwraps WKc from the client's first packet with the server
 * key, so a client key wrapped under another server key is refused before
 * any TLS happens.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { PkiError } from '../errors.ts';
import { derToPem } from './x509.ts';

const SERVER_LABEL = 'OpenVPN tls-crypt-v2 server key';
const CLIENT_LABEL = 'OpenVPN tls-crypt-v2 client key';
const SERVER_KEY_LEN = 128;
const CLIENT_KEY_LEN = 256;
const TAG_LEN = 32;
const MAX_WKC_LEN = 1024;
/** Metadata including its type byte. */
export const TLS_CRYPT_V2_MAX_METADATA_LEN = MAX_WKC_LEN - (CLIENT_KEY_LEN + TAG_LEN + 2);

const METADATA_USER = 0x00;
const METADATA_TIMESTAMP = 0x01;

export type TlsCryptV2Metadata =
  | { readonly type: 'user'; readonly data: Buffer }
  | { readonly type: 'timestamp'; readonly time: Date }
  | { readonly type: 'other'; readonly typeByte: number; readonly data: Buffer };

function pemBody(pem: string, label: string, what: string): Buffer {
  if (typeof pem !== 'string' || pem.length > 16_384) throw new PkiError('MVPN_KEY_INVALID', `${what} is not a PEM string of sane size`);
  const m = new RegExp(`^\\s*-----BEGIN ${label}-----\\r?\\n([A-Za-z0-9+/=\\r\\n]+)-----END ${label}-----\\s*$`).exec(pem);
  if (!m) throw new PkiError('MVPN_KEY_INVALID', `${what} must be one PEM block "-----BEGIN ${label}-----"`);
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
}

function serverKeys(serverKeyPem: string): { ke: Buffer; ka: Buffer } {
  const raw = pemBody(serverKeyPem, SERVER_LABEL, 'tls-crypt-v2 server key');
  if (raw.length !== SERVER_KEY_LEN) throw new PkiError('MVPN_KEY_INVALID', `tls-crypt-v2 server key has ${raw.length} bytes, expected ${SERVER_KEY_LEN}`);
  return { ke: raw.subarray(0, 32), ka: raw.subarray(64, 96) };
}

/** A fresh server key (PEM). Keep it 0600 on the server; it never leaves it. */
export function generateTlsCryptV2ServerKey(): string {
  return derToPem(SERVER_LABEL, randomBytes(SERVER_KEY_LEN));
}

/** Throws MVPN_KEY_INVALID unless `pem` is a well-formed server key. */
export function checkTlsCryptV2ServerKey(pem: string): void {
  serverKeys(pem);
}

function encodeMetadata(metadata: Uint8Array | undefined, now: Date): Buffer {
  if (metadata === undefined) {
    const b = Buffer.alloc(9);
    b[0] = METADATA_TIMESTAMP;
    b.writeBigInt64BE(BigInt(Math.floor(now.getTime() / 1000)), 1);
    return b;
  }
  if (metadata.length > TLS_CRYPT_V2_MAX_METADATA_LEN - 1) {
    throw new PkiError('MVPN_KEY_INVALID', `tls-crypt-v2 metadata too long (${metadata.length} bytes, at most ${TLS_CRYPT_V2_MAX_METADATA_LEN - 1})`);
  }
  return Buffer.concat([Buffer.from([METADATA_USER]), metadata]);
}

/**
 * Wraps a fresh random client key under the server key and returns the
 * client key file (PEM) openvpn's `--tls-crypt-v2` accepts on the client.
 * Without `metadata` the key carries a creation timestamp (`now`), as
 * `openvpn --genkey tls-crypt-v2-client` does; with it, user metadata.
 */
export function wrapTlsCryptV2ClientKey(serverKeyPem: string, metadata?: Uint8Array, opts: { now?: Date; clientKey?: Uint8Array } = {}): string {
  const { ke, ka } = serverKeys(serverKeyPem);
  const md = encodeMetadata(metadata, opts.now ?? new Date());
  const kc = opts.clientKey === undefined ? randomBytes(CLIENT_KEY_LEN) : Buffer.from(opts.clientKey);
  if (kc.length !== CLIENT_KEY_LEN) throw new PkiError('MVPN_KEY_INVALID', `tls-crypt-v2 client key material must be ${CLIENT_KEY_LEN} bytes`);
  const wkcLen = TAG_LEN + kc.length + md.length + 2;
  const len = Buffer.alloc(2);
  len.writeUInt16BE(wkcLen);
  const tag = createHmac('sha256', ka).update(len).update(kc).update(md).digest();
  const cipher = createCipheriv('aes-256-ctr', ke, tag.subarray(0, 16));
  const ct = Buffer.concat([cipher.update(kc), cipher.update(md), cipher.final()]);
  return derToPem(CLIENT_LABEL, Buffer.concat([kc, tag, ct, len]));
}

/** Kc and WKc of a client key file, with the structural checks openvpn's client makes. */
export function parseTlsCryptV2ClientKey(clientKeyPem: string): { clientKey: Buffer; wrapped: Buffer } {
  const raw = pemBody(clientKeyPem, CLIENT_LABEL, 'tls-crypt-v2 client key');
  if (raw.length < CLIENT_KEY_LEN + TAG_LEN + 1 + 2) throw new PkiError('MVPN_KEY_INVALID', `tls-crypt-v2 client key is too short (${raw.length} bytes)`);
  const wrapped = raw.subarray(CLIENT_KEY_LEN);
  if (wrapped.length > MAX_WKC_LEN) throw new PkiError('MVPN_KEY_INVALID', 'tls-crypt-v2 wrapped client key is too long');
  if (wrapped.readUInt16BE(wrapped.length - 2) !== wrapped.length) throw new PkiError('MVPN_KEY_INVALID', 'tls-crypt-v2 wrapped client key has a wrong length field');
  return { clientKey: raw.subarray(0, CLIENT_KEY_LEN), wrapped };
}

/**
 * What the openvpn server does with WKc: decrypt with Ke, check the tag with
 * Ka. Throws MVPN_KEY_INVALID when the client key was not wrapped with this
 * server key (or was altered). Also checks that the unwrapped Kc equals the
 * Kc the client holds.
 */
export function unwrapTlsCryptV2ClientKey(serverKeyPem: string, clientKeyPem: string): { clientKey: Buffer; metadata: TlsCryptV2Metadata } {
  const { ke, ka } = serverKeys(serverKeyPem);
  const { clientKey, wrapped } = parseTlsCryptV2ClientKey(clientKeyPem);
  const len = wrapped.subarray(wrapped.length - 2);
  const tag = wrapped.subarray(0, TAG_LEN);
  const decipher = createDecipheriv('aes-256-ctr', ke, tag.subarray(0, 16));
  const plain = Buffer.concat([decipher.update(wrapped.subarray(TAG_LEN, wrapped.length - 2)), decipher.final()]);
  const check = createHmac('sha256', ka).update(len).update(plain).digest();
  if (!timingSafeEqual(check, tag)) throw new PkiError('MVPN_KEY_INVALID', 'tls-crypt-v2 client key was not wrapped with this server key');
  if (plain.length < CLIENT_KEY_LEN + 1) throw new PkiError('MVPN_KEY_INVALID', 'tls-crypt-v2 wrapped client key has no metadata');
  const kc = plain.subarray(0, CLIENT_KEY_LEN);
  if (!timingSafeEqual(kc, clientKey)) throw new PkiError('MVPN_KEY_INVALID', 'tls-crypt-v2 client key does not match its wrapped copy');
  const md = plain.subarray(CLIENT_KEY_LEN);
  let metadata: TlsCryptV2Metadata;
  if (md[0] === METADATA_USER) metadata = { type: 'user', data: Buffer.from(md.subarray(1)) };
  else if (md[0] === METADATA_TIMESTAMP && md.length === 9) metadata = { type: 'timestamp', time: new Date(Number(md.readBigInt64BE(1)) * 1000) };
  else metadata = { type: 'other', typeByte: md[0]!, data: Buffer.from(md.subarray(1)) };
  return { clientKey: Buffer.from(kc), metadata };
}
