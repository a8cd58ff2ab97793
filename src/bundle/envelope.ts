/**
 * The signed envelope (`mvpn-signed-v1`, ARCHITECTURE.md) that carries the
 * membership document. The signature, not the channel, carries the trust,
 * so the same envelope may be relayed by boss, a CM, a file or any cache.
 */
import { DocumentError } from '../errors.ts';
import { limits } from './limits.ts';
import { EnvelopeSchema, parseWithSchema } from './schema.ts';
import { decodeBase64Strict, signDetached, verifyDetached, type Anchor, type SignedType, type SigningKey } from './sign.ts';
import { parseJsonStrict } from './strict-json.ts';

export function sealEnvelope(type: SignedType, payload: Uint8Array, key: SigningKey): Buffer {
  const env = {
    format: 'mvpn-signed-v1',
    type,
    key_id: key.keyId,
    payload: Buffer.from(payload).toString('base64'),
    signature: signDetached(type, payload, key).toString('base64'),
  };
  return Buffer.from(JSON.stringify(env) + '\n', 'utf8');
}

/**
 * Returns the verified payload bytes, or throws: MVPN_JSON_* / MVPN_SCHEMA_INVALID
 * for a malformed envelope, MVPN_SIGNATURE_MISSING when it carries no
 * signature, MVPN_SIGNATURE_INVALID when the type is not `type`, the key is
 * not the anchor's, or the signature does not verify.
 */
export function openEnvelope(bytes: Uint8Array, type: SignedType, anchor: Anchor): Buffer {
  const raw = parseJsonStrict(bytes, limits.envelopeBytes, 4, 'signed envelope');
  const env = parseWithSchema(EnvelopeSchema, raw, 'signed envelope');
  if (env.type !== type) {
    throw new DocumentError('MVPN_SIGNATURE_INVALID', `the envelope holds a signed ${env.type}, expected a ${type}`, { context: { type: env.type } });
  }
  if (env.signature === undefined || env.signature === '') {
    throw new DocumentError('MVPN_SIGNATURE_MISSING', `the ${type} envelope carries no signature`);
  }
  if (env.key_id !== anchor.keyId) {
    throw new DocumentError('MVPN_SIGNATURE_INVALID', `the ${type} is signed by key ${env.key_id}, but the trust anchor is key ${anchor.keyId}`, {
      context: { keyId: env.key_id, anchorKeyId: anchor.keyId },
      hint: 'the server signing key changed or the document comes from another server; check the anchor in the agent config',
    });
  }
  const payload = decodeBase64Strict(env.payload);
  const signature = decodeBase64Strict(env.signature);
  if (payload === undefined || signature === undefined || !verifyDetached(type, payload, signature, anchor)) {
    throw new DocumentError('MVPN_SIGNATURE_INVALID', `the ${type} signature does not verify with the trust anchor (key ${anchor.keyId})`, {
      context: { keyId: anchor.keyId },
    });
  }
  return payload;
}
