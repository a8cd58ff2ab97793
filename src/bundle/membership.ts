/**
 * Accepting a membership document (DESIGN.md §4): TUF's rollback, freeze and
 * mix-and-match rules, scaled down. Checks run in this order so the error a
 * caller sees is the most basic one: envelope and signature, schema, node
 * binding, serial against the last accepted one, expiry against `now` (the
 * start of this update, passed in so tests need no clock).
 */
import { createHash } from 'node:crypto';
import { DocumentError } from '../errors.ts';
import { openEnvelope } from './envelope.ts';
import { limits } from './limits.ts';
import { MembershipDocSchema, parseWithSchema, type MembershipDoc } from './schema.ts';
import type { Anchor, SigningKey } from './sign.ts';
import { sealEnvelope } from './envelope.ts';
import { parseJsonStrict } from './strict-json.ts';

export interface AcceptedMembership {
  readonly doc: MembershipDoc;
  /** The exact signed document bytes. */
  readonly payload: Buffer;
  /** sha256 (hex) of `payload`: with `doc.serial`, what the next update is compared against. */
  readonly payloadSha256: string;
  /** The envelope as received; store it to keep rollback protection across restarts. */
  readonly envelope: Buffer;
}

export interface LastAccepted {
  readonly serial: number;
  readonly payloadSha256: string;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Validates a membership document's own consistency (also used by the building side). */
export function parseMembershipDoc(payload: Uint8Array): MembershipDoc {
  const doc = parseWithSchema(MembershipDocSchema, parseJsonStrict(payload, limits.membershipBytes, limits.jsonDepth, 'membership document'), 'membership document');
  checkMembershipDoc(doc);
  return doc;
}

function checkMembershipDoc(doc: MembershipDoc): void {
  if (Date.parse(doc.expires_at) <= Date.parse(doc.issued_at)) {
    throw new DocumentError('MVPN_SCHEMA_INVALID', 'membership document: expires_at: must be after issued_at', { context: { field: 'expires_at' } });
  }
  const seen = new Set<string>();
  for (const [i, n] of doc.networks.entries()) {
    if (seen.has(n.id)) {
      throw new DocumentError('MVPN_SCHEMA_INVALID', `membership document: networks[${i}].id: network ${JSON.stringify(n.id)} is listed twice`, {
        context: { field: `networks[${i}].id`, network: n.id },
      });
    }
    seen.add(n.id);
  }
}

/** `floor`: the serial from which the anchor's documents are accepted (a rotation statement's serial_floor; 0 without one). */
export function verifyMembership(envelope: Uint8Array, opts: { anchor: Anchor; nodeId: string; last?: LastAccepted; floor?: number; now: Date }): AcceptedMembership {
  const payload = openEnvelope(envelope, 'membership', opts.anchor);
  const doc = parseMembershipDoc(payload);
  const payloadSha256 = sha256Hex(payload);
  if (doc.node !== opts.nodeId) {
    throw new DocumentError('MVPN_MEMBERSHIP_WRONG_NODE', `the membership document is for node ${JSON.stringify(doc.node)}, this node is ${JSON.stringify(opts.nodeId)}`, {
      context: { node: doc.node, expected: opts.nodeId },
    });
  }
  if (opts.floor !== undefined && doc.serial < opts.floor) {
    throw new DocumentError('MVPN_MEMBERSHIP_ROLLBACK', `the membership document has serial ${doc.serial}, below the serial floor ${opts.floor} of the current trust anchor`, {
      context: { serial: doc.serial, floor: opts.floor },
      hint: 'documents signed by the current anchor start at the floor its rotation statement set; this one is stale or replayed',
    });
  }
  if (opts.last) {
    if (doc.serial < opts.last.serial) {
      throw new DocumentError('MVPN_MEMBERSHIP_ROLLBACK', `the membership document has serial ${doc.serial}, older than the accepted serial ${opts.last.serial}`, {
        context: { serial: doc.serial, last: opts.last.serial },
        hint: 'a source is serving a stale or replayed document; it is ignored',
      });
    }
    if (doc.serial === opts.last.serial && payloadSha256 !== opts.last.payloadSha256) {
      throw new DocumentError(
        'MVPN_MEMBERSHIP_EQUIVOCATION',
        `two different membership documents carry serial ${doc.serial}: the signing key produced conflicting documents or was misused`,
        { context: { serial: doc.serial, sha256: payloadSha256, lastSha256: opts.last.payloadSha256 } },
      );
    }
  }
  if (Date.parse(doc.expires_at) <= opts.now.getTime()) {
    throw new DocumentError('MVPN_MEMBERSHIP_EXPIRED', `the membership document expired at ${doc.expires_at}`, {
      context: { expiresAt: doc.expires_at, now: opts.now.toISOString() },
      hint: 'the server has not re-signed it in time, or this node clock is wrong',
    });
  }
  return { doc, payload, payloadSha256, envelope: Buffer.from(envelope) };
}

/**
 * The building side: validates `doc` with the same rules the agent applies,
 * serialises it in schema key order (same input, same bytes) and signs it.
 */
export function buildMembership(doc: MembershipDoc, key: SigningKey): Buffer {
  const clean = parseWithSchema(MembershipDocSchema, doc, 'membership document');
  checkMembershipDoc(clean);
  return sealEnvelope('membership', Buffer.from(JSON.stringify(clean), 'utf8'), key);
}
