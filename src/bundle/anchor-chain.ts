/**
 * Trust-anchor rotation: TUF's root-rotation rule, scaled down to one key.
 *
 * A rotation statement is an `anchor-rotation` envelope (envelope.ts, the one
 * signed format) whose payload names the anchor it retires (`previous`), the
 * new anchor (`anchor`), its link number (`version`; the first anchor is 1)
 * and the membership serial from which the new key's documents are accepted
 * (`serial_floor`). It is signed by the previous key and co-signed by the new
 * one (the server proves it holds the key it hands trust to).
 *
 * A node walks the chain one link at a time from the anchor it has
 * (followChain, pure): a link applies only when `previous` is the current
 * anchor and both signatures verify; after it, only the new key is trusted,
 * and every earlier anchor is "retired" — a document or a link that leads
 * back to one is refused. The config's anchor has no known version (a
 * startup tarball made after a rotation carries the newer key): it is placed
 * in the chain by the link that made it current (placeConfigAnchor); from
 * then on versions must follow one by one.
 */
import { DocumentError } from '../errors.ts';
import { hasCoSignature, openEnvelope, sealEnvelope } from './envelope.ts';
import { limits } from './limits.ts';
import { AnchorChainSchema, parseWithSchema, RotationStatementSchema, type AnchorChain, type RotationStatement } from './schema.ts';
import { anchorToString, decodeBase64Strict, parseAnchor, type Anchor, type SigningKey } from './sign.ts';
import { parseJsonStrict } from './strict-json.ts';

/** What a node trusts after walking the chain. */
export interface TrustState {
  /** The current anchor, with every anchor it replaced in `retired`. */
  readonly anchor: Anchor;
  /** Link number of `anchor`; undefined while it is the config's anchor and no link applied. */
  readonly version: number | undefined;
  /** Documents signed by `anchor` are accepted from this serial on (0 before any rotation). */
  readonly serialFloor: number;
  /** The envelopes applied, in order: what the agent pins (agent/anchor-state.ts). */
  readonly applied: readonly Buffer[];
}

export function initialTrust(configAnchor: Anchor): TrustState {
  return { anchor: { publicKey: configAnchor.publicKey, keyId: configAnchor.keyId, retired: [] }, version: undefined, serialFloor: 0, applied: [] };
}

/** The most links a chain may hold (each is a few hundred bytes). */
export const MAX_CHAIN_LINKS = 64;

function invalid(message: string, context: Record<string, unknown> = {}): DocumentError {
  return new DocumentError('MVPN_ANCHOR_STATEMENT_INVALID', message, {
    context,
    hint: 'the rotation statement is ignored and the current anchor stays; if the server really rotated, check which source serves this chain',
  });
}

/** The payload of a statement, without checking any signature (the walk does that with the right key). */
export function readStatement(envelope: Uint8Array): RotationStatement {
  const env = parseJsonStrict(envelope, limits.envelopeBytes, 4, 'rotation statement') as { type?: unknown; payload?: unknown };
  const payload = typeof env.payload === 'string' ? decodeBase64Strict(env.payload) : undefined;
  if (env.type !== 'anchor-rotation' || payload === undefined) throw invalid('the chain holds something that is not an anchor-rotation envelope');
  return parseWithSchema(RotationStatementSchema, parseJsonStrict(payload, 4096, 2, 'rotation statement'), 'rotation statement');
}

function sameKey(a: Anchor, b: Anchor): boolean {
  return a.publicKey.equals(b.publicKey);
}

/**
 * Applies the links of `statements` that follow `trust`, in version order.
 * Links already behind the current version are skipped; a link whose
 * `previous` is the current anchor must carry the next version, verify with
 * the current anchor and be co-signed by the new one, and must not name an
 * anchor that was ever trusted before (MVPN_ANCHOR_ROLLBACK). Throws
 * MVPN_ANCHOR_STATEMENT_INVALID for a link that claims to follow the current
 * anchor but cannot be trusted (forged, not co-signed, version gap or
 * conflict). Pure: no clock, no I/O.
 */
export function followChain(trust: TrustState, statements: readonly Uint8Array[]): TrustState {
  if (statements.length > MAX_CHAIN_LINKS) throw invalid(`the anchor chain has ${statements.length} links, more than ${MAX_CHAIN_LINKS}`);
  const links = statements.map((bytes) => ({ bytes: Buffer.from(bytes), s: readStatement(bytes) })).sort((a, b) => a.s.version - b.s.version);
  let cur = trust.version === undefined ? placeConfigAnchor(trust, links) : trust;
  for (const { bytes, s } of links) {
    if (cur.version !== undefined && s.version <= cur.version) continue; // history this node already walked
    const previous = parseAnchor(s.previous);
    if (!sameKey(previous, cur.anchor)) {
      // With no version yet: a link that does not concern this anchor. After one: the next link must follow it.
      if (cur.version !== undefined && s.version === cur.version + 1) {
        throw invalid(`rotation statement ${s.version} does not follow the current anchor (key ${cur.anchor.keyId}): it names key ${previous.keyId} as previous`, {
          version: s.version,
        });
      }
      continue;
    }
    if (cur.version !== undefined && s.version !== cur.version + 1) {
      throw invalid(`rotation statement ${s.version} skips versions: the current anchor is version ${cur.version}`, { version: s.version });
    }
    let payload: Buffer;
    try {
      payload = openEnvelope(bytes, 'anchor-rotation', { publicKey: cur.anchor.publicKey, keyId: cur.anchor.keyId });
    } catch (err) {
      throw invalid(`rotation statement ${s.version} is not signed by the current anchor (key ${cur.anchor.keyId}): ${(err as Error).message}`, { version: s.version });
    }
    const next = parseAnchor(s.anchor);
    const retired = [...(cur.anchor.retired ?? []), { publicKey: cur.anchor.publicKey, keyId: cur.anchor.keyId }];
    if (retired.some((r) => sameKey(r, next))) {
      throw new DocumentError('MVPN_ANCHOR_ROLLBACK', `rotation statement ${s.version} names key ${next.keyId}, an anchor this node already retired`, {
        context: { version: s.version, keyId: next.keyId },
        hint: 'a retired anchor never becomes current again; rotate to a new key instead',
      });
    }
    if (!hasCoSignature(bytes, 'anchor-rotation', payload, next)) {
      throw invalid(`rotation statement ${s.version} is not co-signed by the new anchor (key ${next.keyId}) it names`, { version: s.version });
    }
    cur = { anchor: { publicKey: next.publicKey, keyId: next.keyId, retired }, version: s.version, serialFloor: s.serial_floor, applied: [...cur.applied, bytes] };
  }
  return cur;
}

interface Link {
  readonly bytes: Buffer;
  readonly s: RotationStatement;
}

/** True when `link` names `key` as its new anchor and `key` co-signed it (so `key` itself vouches for the link). */
function leadsTo(link: Link, key: Anchor): boolean {
  if (link.s.anchor !== anchorToString(key) || link.s.previous === link.s.anchor) return false;
  const env = JSON.parse(link.bytes.toString('utf8')) as { payload: string };
  const payload = decodeBase64Strict(env.payload);
  return payload !== undefined && hasCoSignature(link.bytes, 'anchor-rotation', payload, key);
}

/**
 * A config anchor made after a rotation (a startup tarball installed again)
 * is a link of the chain, not its start: find the link that made it current,
 * vouched for by the anchor's own co-signature, and walk back from there
 * the same way, so every earlier anchor is known as retired (and installed
 * bundles they signed stay readable) and the version and serial floor are
 * that link's. Without such a link the trust is unchanged.
 */
function placeConfigAnchor(trust: TrustState, links: readonly Link[]): TrustState {
  const byVersion = new Map(links.map((l) => [l.s.version, l]));
  const here = [...links].reverse().find((l) => leadsTo(l, trust.anchor));
  if (here === undefined) return trust;
  const back: Link[] = [here];
  const retired: Anchor[] = [];
  for (let link: Link | undefined = here; link !== undefined; ) {
    const previous = parseAnchor(link.s.previous);
    retired.unshift({ publicKey: previous.publicKey, keyId: previous.keyId });
    const before = byVersion.get(link.s.version - 1);
    link = before !== undefined && leadsTo(before, previous) ? before : undefined;
    if (link) back.unshift(link);
  }
  return {
    anchor: { publicKey: trust.anchor.publicKey, keyId: trust.anchor.keyId, retired },
    version: here.s.version,
    serialFloor: here.s.serial_floor,
    applied: back.map((l) => l.bytes),
  };
}

/** The served chain document → its statement envelopes. */
export function parseChain(bytes: Uint8Array): Buffer[] {
  const chain = parseWithSchema(AnchorChainSchema, parseJsonStrict(bytes, limits.envelopeBytes, 4, 'anchor chain'), 'anchor chain');
  return chain.statements.map((s) => decodeBase64Strict(s) ?? Buffer.alloc(0));
}

export function serializeChain(statements: readonly Uint8Array[]): Buffer {
  const chain: AnchorChain = { format: 'mvpn-anchor-chain-v1', statements: statements.map((s) => Buffer.from(s).toString('base64')) };
  return Buffer.from(JSON.stringify(chain) + '\n', 'utf8');
}

/** The building side: a statement retiring `previous` for `next`, signed by both. */
export function buildRotation(input: { version: number; previous: SigningKey; next: SigningKey; serialFloor: number; issuedAt: Date }): Buffer {
  const statement = parseWithSchema(
    RotationStatementSchema,
    {
      version: input.version,
      previous: anchorToString(input.previous),
      anchor: anchorToString(input.next),
      serial_floor: input.serialFloor,
      issued_at: input.issuedAt.toISOString().replace(/\.\d{3}Z$/, 'Z'),
    },
    'rotation statement',
  );
  return sealEnvelope('anchor-rotation', Buffer.from(JSON.stringify(statement), 'utf8'), input.previous, [input.next]);
}
