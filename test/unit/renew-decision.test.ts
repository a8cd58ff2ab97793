/**
 * The renewal decision (src/agent/renew.ts decideRenewal): `now` and the
 * validity of the node's certificates in, renew-or-wait out. Table-driven,
 * no clock.
 */
import { describe, expect, it } from 'vitest';
import { decideRenewal, renewAt, type CertLife } from '../../src/agent/renew.ts';

const H = 3_600_000;
/** A certificate valid for 30 h from t=0: two thirds = 20 h. */
const id: CertLife = { what: 'identity', notBefore: 0, notAfter: 30 * H };
/** A network certificate issued later: valid 6 h .. 36 h, two thirds at 26 h. */
const net: CertLife = { what: 'network alpha', notBefore: 6 * H, notAfter: 36 * H };
/** A short one: valid 0 .. 12 h, two thirds at 8 h. */
const short: CertLife = { what: 'network beta', notBefore: 0, notAfter: 12 * H };

describe('decideRenewal', () => {
  const table: { name: string; now: number; certs: CertLife[]; want: ReturnType<typeof decideRenewal> }[] = [
    { name: 'nothing to renew: wait forever', now: 0, certs: [], want: { kind: 'wait', at: undefined } },
    { name: 'fresh identity: wait for its two-thirds point', now: 1 * H, certs: [id], want: { kind: 'wait', at: 20 * H } },
    { name: 'one millisecond before two thirds: wait', now: 20 * H - 1, certs: [id], want: { kind: 'wait', at: 20 * H } },
    {
      name: 'exactly at two thirds: renew',
      now: 20 * H,
      certs: [id],
      want: { kind: 'renew', what: 'identity', expired: false, reason: `the identity certificate passed two thirds of its lifetime (expires ${new Date(30 * H).toISOString()})` },
    },
    { name: 'the earliest two-thirds point of several wins the wait', now: 2 * H, certs: [id, net, short], want: { kind: 'wait', at: 8 * H } },
    {
      name: 'a network certificate due while the identity is not: renew',
      now: 9 * H,
      certs: [id, net, short],
      want: { kind: 'renew', what: 'network beta', expired: false, reason: `the network beta certificate passed two thirds of its lifetime (expires ${new Date(12 * H).toISOString()})` },
    },
    {
      name: 'two due: the one that expires first names the reason',
      now: 26 * H,
      certs: [net, id],
      want: { kind: 'renew', what: 'identity', expired: false, reason: `the identity certificate passed two thirds of its lifetime (expires ${new Date(30 * H).toISOString()})` },
    },
    {
      name: 'expired (the server may still accept it): renew at once, said so',
      now: 31 * H,
      certs: [id],
      want: { kind: 'renew', what: 'identity', expired: true, reason: `the identity certificate expired at ${new Date(30 * H).toISOString()}` },
    },
    {
      name: 'at the expiry instant: expired',
      now: 12 * H,
      certs: [short, net],
      want: { kind: 'renew', what: 'network beta', expired: true, reason: `the network beta certificate expired at ${new Date(12 * H).toISOString()}` },
    },
    { name: 'not yet valid (clock behind): wait for its point', now: -5 * H, certs: [id], want: { kind: 'wait', at: 20 * H } },
  ];
  for (const t of table) {
    it(t.name, () => {
      expect(decideRenewal(t.now, t.certs)).toEqual(t.want);
    });
  }

  it('renewAt is two thirds into the validity, whatever the lifetime', () => {
    for (const [nb, na] of [
      [0, 3],
      [1_000, 4_000],
      [Date.UTC(2026, 0, 1), Date.UTC(2028, 3, 5)],
    ] as const) {
      const at = renewAt({ notBefore: nb, notAfter: na });
      expect(at - nb).toBe(Math.floor(((na - nb) * 2) / 3));
      expect(decideRenewal(at - 1, [{ what: 'x', notBefore: nb, notAfter: na }]).kind).toBe('wait');
      expect(decideRenewal(at, [{ what: 'x', notBefore: nb, notAfter: na }]).kind).toBe('renew');
    }
  });
});
