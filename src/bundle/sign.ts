/**
 * Ed25519 signing with the server's key and verification with the node's
 * pinned trust anchor (DESIGN.md §3). Signatures cover a pre-authentication
 * encoding that binds the document type (ARCHITECTURE.md):
 *
 *   "mvpn-signed-v1\n" + type + "\n" + payloadLength + "\n" + payload
 *
 * so a signed manifest can never be replayed as a membership document (or
 * the other way round), and the length prefix leaves no room for ambiguity
 * about where the type ends and the payload begins.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { DocumentError, PkiError } from '../errors.ts';
import type { SIGNED_TYPES } from './schema.ts';

export type SignedType = (typeof SIGNED_TYPES)[number];

export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly keyId: string;
}

/** The pinned public key a node trusts; `keyId` is only a hint for rotation, never trusted on its own. */
export interface Anchor {
  readonly publicKey: KeyObject;
  readonly keyId: string;
  /**
   * Anchors this one replaced through rotation statements (anchor-chain.ts).
   * Never trusted: a signature that verifies with one of them is refused
   * with its own code (MVPN_ANCHOR_RETIRED) instead of "invalid".
   */
  readonly retired?: readonly Anchor[];
}

/** The retired anchor whose key made `signature`, if any. */
export function retiredSigner(type: SignedType, payload: Uint8Array, signature: Uint8Array, anchor: Anchor): Anchor | undefined {
  return anchor.retired?.find((r) => verifyDetached(type, payload, signature, r));
}

export const SIGNATURE_BYTES = 64;
const ANCHOR_PREFIX = 'ed25519:';

function rawPublicKey(k: KeyObject): Buffer {
  const jwk = k.export({ format: 'jwk' });
  return Buffer.from(jwk.x ?? '', 'base64url');
}

/** First 16 hex digits of sha256 over the raw 32-byte public key. */
export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(rawPublicKey(publicKey)).digest('hex').slice(0, 16);
}

export function generateSigningKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, publicKey, keyId: keyIdOf(publicKey) };
}

/** PKCS#8 PEM; store it 0600. */
export function signingKeyToPem(k: SigningKey): string {
  return k.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}

export function signingKeyFromPem(pem: string): SigningKey {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch (err) {
    throw new PkiError('MVPN_KEY_INVALID', 'the signing key is not a readable PKCS#8 PEM private key', { cause: err });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new PkiError('MVPN_KEY_INVALID', `the signing key is ${privateKey.asymmetricKeyType ?? 'unknown'}, expected ed25519`);
  }
  const publicKey = createPublicKey(privateKey);
  return { privateKey, publicKey, keyId: keyIdOf(publicKey) };
}

/** `ed25519:<base64 of the raw 32 bytes>`, the form shipped in startup tarballs. */
export function anchorToString(k: SigningKey | Anchor): string {
  return ANCHOR_PREFIX + rawPublicKey(k.publicKey).toString('base64');
}

/** Parses an anchor line (or a file's content holding one line). MVPN_ANCHOR_INVALID otherwise. */
export function parseAnchor(text: string): Anchor {
  const line = text.trim();
  const m = /^ed25519:([A-Za-z0-9+/]{43}=)$/.exec(line);
  const raw = m ? Buffer.from(m[1]!, 'base64') : undefined;
  if (!m || !raw || raw.length !== 32 || raw.toString('base64') !== m[1]) {
    throw new DocumentError('MVPN_ANCHOR_INVALID', 'the trust anchor must be one line "ed25519:<base64 of 32 bytes>"', {
      hint: 'copy the anchor printed by `mvpn-client server init` (or the anchor file from the startup tarball)',
    });
  }
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
  } catch (err) {
    throw new DocumentError('MVPN_ANCHOR_INVALID', 'the trust anchor is not a usable Ed25519 public key', { cause: err });
  }
  return { publicKey, keyId: keyIdOf(publicKey) };
}

/** The bytes a signature covers: type-bound, length-prefixed. */
export function preAuthEncoding(type: SignedType, payload: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(`mvpn-signed-v1\n${type}\n${payload.byteLength}\n`, 'ascii'), payload]);
}

export function signDetached(type: SignedType, payload: Uint8Array, key: SigningKey): Buffer {
  return sign(null, preAuthEncoding(type, payload), key.privateKey);
}

/** True only for a 64-byte Ed25519 signature over this type and payload by the anchor's key. */
export function verifyDetached(type: SignedType, payload: Uint8Array, signature: Uint8Array, anchor: Anchor): boolean {
  if (signature.byteLength !== SIGNATURE_BYTES) return false;
  try {
    return verify(null, preAuthEncoding(type, payload), anchor.publicKey, signature);
  } catch {
    return false;
  }
}

/** Strict base64: canonical alphabet and padding only (Buffer.from would skip junk characters). */
export function decodeBase64Strict(s: string): Buffer | undefined {
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(s)) return undefined;
  const b = Buffer.from(s, 'base64');
  return b.toString('base64') === s ? b : undefined;
}
