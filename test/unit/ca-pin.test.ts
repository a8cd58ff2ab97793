/**
 * A network's identity on the node (issue 22 finding 4) and the CA roll that
 * may change it (issue 19): verifyBundle's CA-name binding, the pin rule and
 * ca-roll.crt, with real certificates, CRLs and signed bundles.
 *
 * The first two cases are the regression for the finding: before the fix a
 * bundle for lab1 carrying lab2's (or an attacker's) complete credentials,
 * signed with the server's real key, verified.
 */
import { describe, expect, test } from 'vitest';
import { buildBundle } from '../../src/bundle/build.ts';
import { caCn, serverCn } from '../../src/bundle/names.ts';
import { verifyBundle, type VerifiedBundle } from '../../src/bundle/verify.ts';
import { MvpnError } from '../../src/errors.ts';
import { createCa, crossCertify, type CaMaterial } from '../../src/pki/ca.ts';
import { issueCert } from '../../src/pki/cert.ts';
import { createCrl } from '../../src/pki/crl.ts';
import { generateKeyPairPem } from '../../src/pki/keys.ts';
import { caFacts } from '../../src/pki/verify.ts';
import { caExpiry, CA_WARN_DAYS } from '../../src/server/ops/ca-roll.ts';
import { DAY, HOUR, bundleInput, makeBundleFixture, makeSpec } from '../helpers/bundle-fixtures.ts';
import { makeTestPki } from '../helpers/pki-fixtures.ts';

const f = await makeBundleFixture();
const node = f.nodeId;
const oldPin = (await caFacts(f.pki.ca.certPem)).pin;

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (err) {
    return err instanceof MvpnError ? err.code : `not an MvpnError: ${String(err)}`;
  }
  return undefined;
}

type Parts = { caPem?: string; crlPem?: string; nodeCertPem?: string; tlsCryptV2ClientKey?: string; caRollPem?: string; spec?: ReturnType<typeof makeSpec> };

async function verify(parts: Parts, pinnedCas?: readonly string[]): Promise<VerifiedBundle> {
  const b = await buildBundle({ ...bundleInput(f), ...parts });
  return verifyBundle(b.bytes, { anchor: f.anchor, nodeId: node, now: f.now, ...(pinnedCas ? { pinnedCas } : {}) });
}

/** A CA of lab1 after a roll, its node certificate for `node` (same key), its CRL, and the proof signed by `signer`. */
async function rolled(gen: number, signer: CaMaterial, oldCaPem: string) {
  const notBefore = new Date(f.now.getTime() - HOUR);
  const ca = await createCa({ cn: caCn('lab1', gen), notBefore, notAfter: new Date(f.now.getTime() + 365 * DAY) });
  const kp = await generateKeyPairPem('ec-p256');
  const cert = await issueCert({ ca, publicKeyPem: kp.publicKeyPem, cn: node, usage: 'client', notBefore, notAfter: new Date(f.now.getTime() + 30 * DAY) });
  const crlPem = await createCrl({ ca, revoked: [], thisUpdate: notBefore, nextUpdate: new Date(f.now.getTime() + 7 * DAY), crlNumber: 2 });
  const proof = (await crossCertify(signer, ca.certPem, notBefore)) + oldCaPem;
  return { ca, certPem: cert.certPem, crlPem, proof, pin: (await caFacts(ca.certPem)).pin };
}

describe('a bundle with another CA than the one pinned (issue 22 finding 4)', () => {
  test("another network's complete credentials, consistently swapped and re-signed with the real anchor, are refused: the CA is not lab1's", async () => {
    const lab2 = await makeTestPki({ clients: [node], serverCn: serverCn('lab2'), caCn: caCn('lab2'), now: f.now });
    const c = lab2.clients[node]!;
    const swapped: Parts = { caPem: lab2.ca.certPem, crlPem: lab2.crlPem, nodeCertPem: c.certPem, tlsCryptV2ClientKey: c.tlsCryptV2Key };
    expect(await codeOf(verify(swapped, [oldPin]))).toBe('MVPN_CA_WRONG_NETWORK');
    // Not even a first install takes a CA named for another network.
    expect(await codeOf(verify(swapped))).toBe('MVPN_CA_WRONG_NETWORK');
  });

  test("an attacker's CA that copies lab1's name is refused by a node that pinned lab1's CA; without a pin (first install) it would be taken", async () => {
    const c = f.otherPki.clients[node]!;
    const forged: Parts = { caPem: f.otherPki.ca.certPem, crlPem: f.otherPki.crlPem, nodeCertPem: c.certPem, tlsCryptV2ClientKey: c.tlsCryptV2Key };
    const err = await verify(forged, [oldPin]).catch((e: unknown) => e as MvpnError);
    expect(err).toBeInstanceOf(MvpnError);
    expect((err as MvpnError).code).toBe('MVPN_CA_NOT_PINNED');
    expect((err as MvpnError).message).toContain('lab1');
    expect((await verify(forged)).cas.map((x) => x.cn)).toEqual([caCn('lab1')]);
    // The genuine bundle passes with the pin, and reports the pin it stands for.
    expect((await verify({}, [oldPin])).cas.map((x) => x.pin)).toEqual([oldPin]);
  });

  test('a CA whose CN is not tied to the network id is refused', async () => {
    const pki = await makeTestPki({ clients: [node], serverCn: serverCn('lab1'), caCn: 'mvpn test CA', now: f.now });
    const c = pki.clients[node]!;
    expect(await codeOf(verify({ caPem: pki.ca.certPem, crlPem: pki.crlPem, nodeCertPem: c.certPem, tlsCryptV2ClientKey: c.tlsCryptV2Key }))).toBe('MVPN_CA_WRONG_NETWORK');
  });

  test("a server CN that is not the network's own is refused", async () => {
    expect(await codeOf(verify({ spec: makeSpec('lab1', { server_cn: serverCn('lab2') }) }))).toBe('MVPN_BUNDLE_WRONG_NETWORK');
    expect(await codeOf(verify({ spec: makeSpec('lab1', { server_cn: 'vpn-server' }) }))).toBe('MVPN_BUNDLE_WRONG_NETWORK');
  });
});

describe('a CA roll proved by the pinned CA (issue 19)', () => {
  test('overlap: both CAs, both CRLs and the cross-certificate pass with the old pin; the pins become both; after the overlap the new CA alone passes', async () => {
    const r = await rolled(2, f.pki.ca, f.pki.ca.certPem);
    const overlap: Parts = { caPem: f.pki.ca.certPem + r.ca.certPem, crlPem: f.pki.crlPem + r.crlPem, nodeCertPem: r.certPem, caRollPem: r.proof };
    const v = await verify(overlap, [oldPin]);
    expect(v.cas.map((x) => x.pin)).toEqual([oldPin, r.pin]);
    expect(v.roll).toEqual({ from: oldPin, to: r.pin });
    // The old node certificate is still good during the overlap (a node that has not re-fetched is not cut off).
    expect((await verify({ ...overlap, nodeCertPem: f.pki.clients[node]!.certPem }, [oldPin])).cert.cn).toBe(node);
    const after: Parts = { caPem: r.ca.certPem, crlPem: r.crlPem, nodeCertPem: r.certPem, caRollPem: r.proof };
    expect((await verify(after, [oldPin, r.pin])).cas.map((x) => x.pin)).toEqual([r.pin]);
    // A node that was offline through the whole overlap follows with its old pin alone.
    expect((await verify(after, [oldPin])).cas.map((x) => x.pin)).toEqual([r.pin]);
    // Without the proof the new CA is not pinned.
    expect(await codeOf(verify({ ...after, caRollPem: undefined }, [oldPin]))).toBe('MVPN_CA_NOT_PINNED');
    // Once the pin has moved, the old CA is refused.
    expect(await codeOf(verify({}, [r.pin]))).toBe('MVPN_CA_NOT_PINNED');
    // CRLs: one per CA, in the same order.
    expect(await codeOf(verify({ ...overlap, crlPem: r.crlPem }, [oldPin]))).toBe('MVPN_CRL_INVALID');
    expect(await codeOf(verify({ ...overlap, crlPem: r.crlPem + f.pki.crlPem }, [oldPin]))).toBe('MVPN_CRL_INVALID');
  });

  test('a roll certified by a key the node did not pin (a stolen signing key alone) is refused; so is a malformed or backwards proof', async () => {
    const attacker = f.otherPki.ca; // named mvpn-ca-lab1, but not the pinned key
    const r = await rolled(2, attacker, attacker.certPem);
    const parts: Parts = { caPem: r.ca.certPem, crlPem: r.crlPem, nodeCertPem: r.certPem, caRollPem: r.proof };
    expect(await codeOf(verify(parts, [oldPin]))).toBe('MVPN_CA_NOT_PINNED');
    // The proof claims the pinned CA as the old one, but the pinned key did not sign it.
    expect(await codeOf(verify({ ...parts, caRollPem: r.proof.replace(attacker.certPem, f.pki.ca.certPem) }, [oldPin]))).toBe('MVPN_CA_ROLL_INVALID');
    // A cross-certificate alone, without the old CA.
    const good = await rolled(3, f.pki.ca, f.pki.ca.certPem);
    const crossOnly = good.proof.slice(0, good.proof.indexOf(f.pki.ca.certPem));
    expect(await codeOf(verify({ caPem: good.ca.certPem, crlPem: good.crlPem, nodeCertPem: good.certPem, caRollPem: crossOnly }, [oldPin]))).toBe('MVPN_CA_ROLL_INVALID');
    // Backwards: a generation-1 CA "rolled" from a generation-2 one.
    const g2 = await rolled(2, f.pki.ca, f.pki.ca.certPem);
    const back = (await crossCertify(g2.ca, f.pki.ca.certPem, new Date(f.now.getTime() - HOUR))) + g2.ca.certPem;
    expect(await codeOf(verify({ caRollPem: back }, [g2.pin]))).toBe('MVPN_CA_ROLL_INVALID');
  });

  test('ca.crt holds at most two CAs, with different names', async () => {
    const r = await rolled(2, f.pki.ca, f.pki.ca.certPem);
    expect(await codeOf(verify({ caPem: f.pki.ca.certPem + r.ca.certPem + r.ca.certPem, crlPem: f.pki.crlPem + r.crlPem }, [oldPin]))).toBe('MVPN_CERT_INVALID');
    expect(await codeOf(verify({ caPem: f.pki.ca.certPem + f.otherPki.ca.certPem, crlPem: f.pki.crlPem + f.otherPki.crlPem }))).toBe('MVPN_CERT_INVALID');
    expect(await codeOf(verify({ caPem: f.pki.ca.certPem + 'junk\n' + r.ca.certPem, crlPem: f.pki.crlPem + r.crlPem }, [oldPin]))).toBe('MVPN_CERT_INVALID');
  });
});

describe('CA expiry warnings', () => {
  test('a CA is warned about within its warning window, with the command that rolls it; `now` is injected', async () => {
    const facts = await caFacts(f.pki.ca.certPem);
    const end = facts.notAfter.getTime();
    const fix = 'mvpn-client server network roll-ca lab1';
    expect(caExpiry('network lab1 CA', facts, end - (CA_WARN_DAYS + 1) * DAY, fix).warning).toBeUndefined();
    const near = caExpiry('network lab1 CA', facts, end - 10 * DAY, fix);
    expect(near.daysLeft).toBe(10);
    expect(near.warning).toContain('expires in 10 day(s)');
    expect(near.warning).toContain(fix);
    expect(caExpiry('network lab1 CA', facts, end + 3 * DAY, fix).warning).toContain('expired 3 day(s) ago');
  });
});
