/**
 * The chain-walking rule of trust-anchor rotation (src/bundle/anchor-chain.ts),
 * TUF's root rotation scaled down: every case builds real statements with
 * real Ed25519 keys and walks them from a given trust.
 */
import { describe, expect, it } from 'vitest';
import { buildRotation, followChain, initialTrust, MAX_CHAIN_LINKS, parseChain, serializeChain, type TrustState } from '../../src/bundle/anchor-chain.ts';
import { sealEnvelope } from '../../src/bundle/envelope.ts';
import { buildMembership, verifyMembership } from '../../src/bundle/membership.ts';
import type { MembershipDoc } from '../../src/bundle/schema.ts';
import { anchorToString, generateSigningKey, parseAnchor, type SigningKey } from '../../src/bundle/sign.ts';
import { toMvpnError } from '../../src/errors.ts';

const NOW = new Date('2026-12-02T12:00:00Z');
const anchorOf = (k: SigningKey) => parseAnchor(anchorToString(k));
const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (err) {
    return toMvpnError(err).code;
  }
  return undefined;
};
const rot = (version: number, previous: SigningKey, next: SigningKey, serialFloor = 100) => buildRotation({ version, previous, next, serialFloor, issuedAt: NOW });

const [k1, k2, k3, k4, kx] = [1, 2, 3, 4, 5].map(() => generateSigningKey()) as [SigningKey, SigningKey, SigningKey, SigningKey, SigningKey];
const s2 = rot(2, k1, k2, 100);
const s3 = rot(3, k2, k3, 200);
const s4 = rot(4, k3, k4, 300);
const fromK1 = initialTrust(anchorOf(k1));

function walk(trust: TrustState, statements: Buffer[]): TrustState {
  return followChain(trust, statements);
}

describe('followChain', () => {
  it.each<[string, TrustState, Buffer[], SigningKey, number | undefined, number]>([
    ['no statements: the config anchor stays', fromK1, [], k1, undefined, 0],
    ['one link from the config anchor', fromK1, [s2], k2, 2, 100],
    ['two links, one version at a time', fromK1, [s2, s3], k3, 3, 200],
    ['links in any order are walked by version', fromK1, [s4, s2, s3], k4, 4, 300],
    ['a config anchor made after a rotation skips the links before it', initialTrust(anchorOf(k2)), [s2, s3], k3, 3, 200],
    ['a config anchor made after two rotations is placed at the link that made it current', initialTrust(anchorOf(k3)), [s2, s3], k3, 3, 200],
    ['a config anchor no link leads to stays unplaced', initialTrust(anchorOf(kx)), [s2, s3], kx, undefined, 0],
  ])('%s', (_name, trust, statements, want, version, floor) => {
    const t = walk(trust, statements);
    expect(t.anchor.keyId).toBe(want.keyId);
    expect(t.version).toBe(version);
    expect(t.serialFloor).toBe(floor);
  });

  it('retires every anchor it walked past, and keeps the applied statements to pin', () => {
    const t = walk(fromK1, [s2, s3]);
    expect(t.anchor.retired?.map((r) => r.keyId)).toEqual([k1.keyId, k2.keyId]);
    expect(t.applied).toEqual([s2, s3]);
  });

  it('a placed config anchor knows every earlier anchor as retired, through links each vouched for by its successor', () => {
    const t = walk(initialTrust(anchorOf(k3)), [s2, s3, s4]);
    expect(t.anchor.keyId).toBe(k4.keyId);
    expect(t.anchor.retired?.map((r) => r.keyId)).toEqual([k1.keyId, k2.keyId, k3.keyId]);
    expect(t.applied).toEqual([s2, s3, s4]);
    // A link that names k3 but that k3 never co-signed does not place it.
    const fake = sealEnvelope(
      'anchor-rotation',
      Buffer.from(JSON.stringify({ version: 7, previous: anchorToString(kx), anchor: anchorToString(k3), serial_floor: 0, issued_at: '2026-12-02T12:00:00Z' })),
      kx,
    );
    expect(walk(initialTrust(anchorOf(k3)), [fake]).version).toBeUndefined();
  });

  it('a pinned trust ignores a stale chain (links at or below its version): no rollback by withholding', () => {
    const pinned = walk(fromK1, [s2, s3]);
    expect(walk(pinned, [s2]).anchor.keyId).toBe(k3.keyId);
    expect(walk(pinned, []).version).toBe(3);
    // walking again from the pinned state with the full chain changes nothing
    expect(walk(pinned, [s2, s3]).applied).toHaveLength(2);
  });

  it('refuses a forged statement: one signed by an unknown key that claims to follow the anchor', () => {
    // Claims K1 as previous, but K1 never signed it.
    const forged = sealEnvelope(
      'anchor-rotation',
      Buffer.from(JSON.stringify({ version: 2, previous: anchorToString(k1), anchor: anchorToString(kx), serial_floor: 0, issued_at: '2026-12-02T12:00:00Z' })),
      kx,
      [kx],
    );
    expect(codeOf(() => walk(fromK1, [forged]))).toBe('MVPN_ANCHOR_STATEMENT_INVALID');
    let message = '';
    try {
      walk(fromK1, [forged]);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain(`not signed by the current anchor (key ${k1.keyId})`);
  });

  it('refuses a statement the new key did not co-sign (the server must hold the key it hands trust to)', () => {
    const payload = Buffer.from(JSON.stringify({ version: 2, previous: anchorToString(k1), anchor: anchorToString(k2), serial_floor: 0, issued_at: '2026-12-02T12:00:00Z' }));
    expect(codeOf(() => walk(fromK1, [sealEnvelope('anchor-rotation', payload, k1)]))).toBe('MVPN_ANCHOR_STATEMENT_INVALID');
    expect(codeOf(() => walk(fromK1, [sealEnvelope('anchor-rotation', payload, k1, [kx])]))).toBe('MVPN_ANCHOR_STATEMENT_INVALID');
  });

  it('refuses a rollback: a valid link back to a retired anchor', () => {
    const pinned = walk(fromK1, [s2]);
    expect(codeOf(() => walk(pinned, [rot(3, k2, k1)]))).toBe('MVPN_ANCHOR_ROLLBACK');
    const at3 = walk(fromK1, [s2, s3]);
    expect(codeOf(() => walk(at3, [rot(4, k3, k2)]))).toBe('MVPN_ANCHOR_ROLLBACK');
    // nor may a link "rotate" to the key it retires
    expect(codeOf(() => walk(fromK1, [rot(2, k1, k1)]))).toBe('MVPN_ANCHOR_ROLLBACK');
  });

  it('refuses a version gap or a conflicting next link after a pinned version', () => {
    const pinned = walk(fromK1, [s2]);
    expect(codeOf(() => walk(pinned, [rot(4, k2, k3)]))).toBe('MVPN_ANCHOR_STATEMENT_INVALID');
    expect(codeOf(() => walk(pinned, [rot(3, kx, k3)]))).toBe('MVPN_ANCHOR_STATEMENT_INVALID');
  });

  it('refuses a statement whose payload was altered after signing, and a chain longer than the cap', () => {
    const env = JSON.parse(s2.toString()) as { payload: string };
    const payload = JSON.parse(Buffer.from(env.payload, 'base64').toString()) as Record<string, unknown>;
    const altered = Buffer.from(JSON.stringify({ ...env, payload: Buffer.from(JSON.stringify({ ...payload, serial_floor: 0 })).toString('base64') }));
    expect(codeOf(() => walk(fromK1, [altered]))).toBe('MVPN_ANCHOR_STATEMENT_INVALID');
    expect(codeOf(() => walk(fromK1, Array.from({ length: MAX_CHAIN_LINKS + 1 }, () => s2)))).toBe('MVPN_ANCHOR_STATEMENT_INVALID');
  });

  it('the served chain format round-trips and is strict', () => {
    expect(parseChain(serializeChain([s2, s3]))).toEqual([s2, s3]);
    expect(codeOf(() => parseChain(Buffer.from('{"format":"mvpn-anchor-chain-v1","statements":[],"extra":1}')))).toBe('MVPN_SCHEMA_INVALID');
  });
});

describe('documents after a rotation', () => {
  const doc = (serial: number): MembershipDoc => ({
    node: 'pc1',
    serial,
    issued_at: '2026-12-02T00:00:00Z',
    expires_at: '2026-12-09T00:00:00Z',
    networks: [],
  });
  const after = walk(fromK1, [s2]);

  it('a document signed by the retired key is refused with its own code, one by an unknown key as before', () => {
    expect(codeOf(() => verifyMembership(buildMembership(doc(500), k1), { anchor: after.anchor, nodeId: 'pc1', now: NOW }))).toBe('MVPN_ANCHOR_RETIRED');
    const e = (() => {
      try {
        verifyMembership(buildMembership(doc(500), kx), { anchor: after.anchor, nodeId: 'pc1', now: NOW });
      } catch (err) {
        return toMvpnError(err);
      }
      return undefined;
    })();
    expect(e?.code).toBe('MVPN_SIGNATURE_INVALID');
    expect(e?.context['unknownKey']).toBe(true);
  });

  it("the statement's serial floor replaces a poisoned serial: the new key's documents count from the floor", () => {
    const poisoned = verifyMembership(buildMembership(doc(Number.MAX_SAFE_INTEGER), k1), { anchor: fromK1.anchor, nodeId: 'pc1', now: NOW });
    const last = { serial: poisoned.doc.serial, payloadSha256: poisoned.payloadSha256 };
    // Before the rotation, nothing legitimate gets past it.
    expect(codeOf(() => verifyMembership(buildMembership(doc(150), k1), { anchor: fromK1.anchor, nodeId: 'pc1', last, now: NOW }))).toBe('MVPN_MEMBERSHIP_ROLLBACK');
    // After it, the stored document (retired key) is dropped and the floor applies.
    expect(verifyMembership(buildMembership(doc(150), k2), { anchor: after.anchor, nodeId: 'pc1', floor: after.serialFloor, now: NOW }).doc.serial).toBe(150);
    expect(codeOf(() => verifyMembership(buildMembership(doc(99), k2), { anchor: after.anchor, nodeId: 'pc1', floor: after.serialFloor, now: NOW }))).toBe(
      'MVPN_MEMBERSHIP_ROLLBACK',
    );
  });
});
