/**
 * The signed envelope (`mvpn-signed-v1`, ARCHITECTURE.md) that carries the
 * membership document. The signature, not the channel, carries the trust,
 * so the same envelope may be relayed by boss, a CM, a file or any cache.
 */
import { DocumentError } from '../errors.ts';
import { limits } from './limits.ts';
import { EnvelopeSchema, parseWithSchema } from './schema.ts';
import { decodeBase64Strict, retiredSigner, signDetached, verifyDetached, type Anchor, type SignedType, type SigningKey } from './sign.ts';
import { parseJsonStrict } from './strict-json.ts';

/** `coSigners` add signatures by further keys (an anchor rotation: the new key co-signs). */
export function sealEnvelope(type: SignedType, payload: Uint8Array, key: SigningKey, coSigners: readonly SigningKey[] = []): Buffer {
  const env = {
    format: 'mvpn-signed-v1',
    type,
    key_id: key.keyId,
    payload: Buffer.from(payload).toString('base64'),
    signature: signDetached(type, payload, key).toString('base64'),
    ...(coSigners.length === 0 ? {} : { co_signatures: coSigners.map((k) => ({ key_id: k.keyId, signature: signDetached(type, payload, k).toString('base64') })) }),
  };
  return Buffer.from(JSON.stringify(env) + '\n', 'utf8');
}

/** True when the envelope also carries a valid signature over `payload` by `coSigner` (after openEnvelope). */
export function hasCoSignature(bytes: Uint8Array, type: SignedType, payload: Uint8Array, coSigner: Anchor): boolean {
  const env = parseWithSchema(EnvelopeSchema, parseJsonStrict(bytes, limits.envelopeBytes, 4, 'signed envelope'), 'signed envelope');
  return (env.co_signatures ?? []).some((c) => {
    const sig = decodeBase64Strict(c.signature);
    return c.key_id === coSigner.keyId && sig !== undefined && verifyDetached(type, payload, sig, coSigner);
  });
}

/**
 * Returns the verified payload bytes, or throws: MVPN_JSON_* / MVPN_SCHEMA_INVALID
 * for a malformed envelope, MVPN_SIGNATURE_MISSING when it carries no
 * signature, MVPN_SIGNATURE_INVALID when the type is not `type`, the key is
 * not the anchor's, or the signature does not verify (context `unknownKey`
 * when it names another key: the caller may look for a rotation statement),
 * MVPN_ANCHOR_RETIRED when it verifies with an anchor a rotation retired.
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
  const payload = decodeBase64Strict(env.payload);
  const signature = decodeBase64Strict(env.signature);
  if (env.key_id !== anchor.keyId) {
    const retired = payload !== undefined && signature !== undefined ? retiredSigner(type, payload, signature, anchor) : undefined;
    if (retired !== undefined) throw retiredError(type, retired, anchor);
    throw new DocumentError('MVPN_SIGNATURE_INVALID', `the ${type} is signed by key ${env.key_id}, but the trust anchor is key ${anchor.keyId}`, {
      context: { keyId: env.key_id, anchorKeyId: anchor.keyId, unknownKey: true },
      hint: 'the server signing key changed or the document comes from another server; check the anchor in the agent config',
    });
  }
  if (payload === undefined || signature === undefined || !verifyDetached(type, payload, signature, anchor)) {
    throw new DocumentError('MVPN_SIGNATURE_INVALID', `the ${type} signature does not verify with the trust anchor (key ${anchor.keyId})`, {
      context: { keyId: anchor.keyId },
    });
  }
  return payload;
}

export function retiredError(what: string, retired: Anchor, current: Anchor): DocumentError {
  return new DocumentError('MVPN_ANCHOR_RETIRED', `the ${what} is signed by key ${retired.keyId}, an anchor retired by rotation; only key ${current.keyId} is trusted now`, {
    context: { keyId: retired.keyId, anchorKeyId: current.keyId },
    hint: 'a source is serving documents signed with the old server key (stale relay, or someone holding the retired key); it is ignored',
  });
}
