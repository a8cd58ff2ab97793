/**
 * Key pairs as PEM (PKCS#8 private, SPKI public) and the two key types the
 * project allows: ECDSA P-256 (the default) and RSA 2048 (for old images).
 * Anything else is refused with MVPN_KEY_INVALID, so a CSR with a weak or
 * unexpected key never reaches a CA.
 */
import { createPrivateKey, createPublicKey, generateKeyPair, type KeyObject, type webcrypto } from 'node:crypto';
import { PkiError } from '../errors.ts';
import { MAX_PEM_BYTES } from './x509.ts';

export type KeyAlg = 'ec-p256' | 'rsa-2048';

export const KEY_ALGS: readonly KeyAlg[] = ['ec-p256', 'rsa-2048'];

export interface KeyPairPem {
  readonly alg: KeyAlg;
  /** PKCS#8 PEM ("PRIVATE KEY"). */
  readonly privateKeyPem: string;
  /** SPKI PEM ("PUBLIC KEY"). */
  readonly publicKeyPem: string;
}

type CryptoKey = webcrypto.CryptoKey;
type Algorithm = webcrypto.Algorithm;
type EcdsaParams = webcrypto.EcdsaParams;

/** WebCrypto parameters for importing and signing with each key type (CSRs and CRLs go through @peculiar/x509, which wants CryptoKeys). */
const webCrypto: Record<
  KeyAlg,
  { imp: webcrypto.RsaHashedImportParams | webcrypto.EcKeyImportParams; sign: Algorithm | EcdsaParams }
> = {
  'ec-p256': {
    imp: { name: 'ECDSA', namedCurve: 'P-256' },
    sign: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
  },
  'rsa-2048': {
    imp: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    sign: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as Algorithm,
  },
};

export function isKeyAlg(v: unknown): v is KeyAlg {
  return typeof v === 'string' && (KEY_ALGS as readonly string[]).includes(v);
}

/** Signature algorithm used by certificates, CSRs and CRLs signed with a key of `alg` (always SHA-256). */
export function signingAlgorithm(alg: KeyAlg): Algorithm | EcdsaParams {
  return webCrypto[alg].sign;
}

/**
 * A fresh key pair. node:crypto's generateKeyPair does generation and both
 * PEM encodings in one job on libuv's thread pool: about half the CPU of
 * WebCrypto's generate + two exports, and RSA keys do not block the event loop.
 */
export async function generateKeyPairPem(alg: KeyAlg): Promise<KeyPairPem> {
  if (!isKeyAlg(alg)) throw new PkiError('MVPN_KEY_INVALID', `unsupported key algorithm ${String(alg)}; use one of ${KEY_ALGS.join(', ')}`);
  const encoding = { publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } } as const;
  const { privateKey, publicKey } = await new Promise<{ privateKey: string; publicKey: string }>((resolve, reject) => {
    const done = (err: Error | null, publicKey: string, privateKey: string): void => (err ? reject(err) : resolve({ privateKey, publicKey }));
    if (alg === 'ec-p256') generateKeyPair('ec', { namedCurve: 'P-256', ...encoding }, done);
    else generateKeyPair('rsa', { modulusLength: 2048, publicExponent: 0x10001, ...encoding }, done);
  });
  return { alg, privateKeyPem: privateKey, publicKeyPem: publicKey };
}

function algOfKeyObject(key: KeyObject): KeyAlg | undefined {
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'ec' && d?.namedCurve === 'prime256v1') return 'ec-p256';
  if (key.asymmetricKeyType === 'rsa' && d?.modulusLength === 2048) return 'rsa-2048';
  return undefined;
}

function describe(key: KeyObject): string {
  const d = key.asymmetricKeyDetails;
  return [key.asymmetricKeyType, d?.namedCurve, d?.modulusLength === undefined ? undefined : `${d.modulusLength} bits`].filter(Boolean).join(' ');
}

function checkSize(pem: string): void {
  if (typeof pem !== 'string' || pem.length === 0) throw new PkiError('MVPN_KEY_INVALID', 'key is empty');
  if (pem.length > MAX_PEM_BYTES) throw new PkiError('MVPN_KEY_INVALID', `key PEM is too large (${pem.length} bytes)`);
}

/** A private key (PKCS#8, or the traditional "EC/RSA PRIVATE KEY" forms openssl writes) of an allowed type. */
export function loadPrivateKey(pem: string): { alg: KeyAlg; key: KeyObject } {
  checkSize(pem);
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw new PkiError('MVPN_KEY_INVALID', 'not a readable unencrypted private key PEM', { cause: err });
  }
  const alg = algOfKeyObject(key);
  if (!alg) throw new PkiError('MVPN_KEY_INVALID', `unsupported key type ${describe(key)}; allowed: EC P-256, RSA 2048`, { context: { keyType: describe(key) } });
  return { alg, key };
}

/** A public key (SPKI PEM) of an allowed type. */
export function loadPublicKey(pem: string): { alg: KeyAlg; key: KeyObject } {
  checkSize(pem);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw new PkiError('MVPN_KEY_INVALID', 'not a readable public key PEM', { cause: err });
  }
  if (key.type !== 'public') throw new PkiError('MVPN_KEY_INVALID', 'expected a public key');
  const alg = algOfKeyObject(key);
  if (!alg) throw new PkiError('MVPN_KEY_INVALID', `unsupported key type ${describe(key)}; allowed: EC P-256, RSA 2048`, { context: { keyType: describe(key) } });
  return { alg, key };
}

/**
 * The algorithm of a private or public key PEM. Throws MVPN_KEY_INVALID for
 * anything unreadable or of a type the project does not allow.
 */
export function detectKeyAlg(pem: string): KeyAlg {
  checkSize(pem);
  return /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem) ? loadPrivateKey(pem).alg : loadPublicKey(pem).alg;
}

/** SPKI PEM of the public half of a private key. */
export function publicKeyPemOf(privateKeyPem: string): string {
  const { key } = loadPrivateKey(privateKeyPem);
  return createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString();
}

/** A non-extractable WebCrypto signing key for certificates, CSRs and CRLs. */
export async function importSigningKey(privateKeyPem: string): Promise<{ alg: KeyAlg; cryptoKey: CryptoKey }> {
  const { alg, key } = loadPrivateKey(privateKeyPem);
  const cryptoKey = key.toCryptoKey(webCrypto[alg].imp, false, ['sign']);
  return { alg, cryptoKey };
}

/** A WebCrypto public key (for CSR generation, which wants a key pair). */
export function importVerifyKey(publicKeyPem: string): { alg: KeyAlg; cryptoKey: CryptoKey } {
  const { alg, key } = loadPublicKey(publicKeyPem);
  return { alg, cryptoKey: key.toCryptoKey(webCrypto[alg].imp, true, ['verify']) };
}
