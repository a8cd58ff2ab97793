/**
 * The node's identity across a renewal (src/agent/identity.ts): at every
 * point a crash can interrupt it, the stored identity is a certificate
 * with its own key — the old pair until identity.crt is switched, the new
 * one after — and the old key stays on disk until the renewal is finished.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { finishRenewal, identityPaths, loadIdentity, renewalPending, saveIdentity, saveRenewalKey, switchIdentity } from '../../src/agent/identity.ts';
import { createCa } from '../../src/pki/ca.ts';
import { issueCert } from '../../src/pki/cert.ts';
import { generateKeyPairPem } from '../../src/pki/keys.ts';
import { tmpDir } from '../helpers/tmp.ts';

const DAY = 86_400_000;
let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

async function world() {
  const dir = await tmpDir('identity');
  cleanup = dir.remove;
  const now = Date.now();
  const ca = await createCa({ cn: 'api-ca', notBefore: new Date(now - DAY), notAfter: new Date(now + 10 * DAY) });
  const pair = async () => {
    const key = await generateKeyPairPem('ec-p256');
    const cert = await issueCert({ ca, publicKeyPem: key.publicKeyPem, cn: 'pc1', usage: 'client', notBefore: new Date(now - DAY), notAfter: new Date(now + DAY) });
    return { keyPem: key.privateKeyPem, certPem: cert.certPem };
  };
  return { stateDir: join(dir.path, 'state'), ca, pair };
}

describe('identity across a renewal', () => {
  it('keeps the old pair until the switch, the new pair after it, and removes the old key only when finished', async () => {
    const w = await world();
    const old = await w.pair();
    const next = await w.pair();
    await saveIdentity(w.stateDir, { ...old, caPem: w.ca.certPem });
    const paths = identityPaths(w.stateDir);

    // crash after the new key was stored, before the server answered: still the old identity
    const keyFile = await saveRenewalKey(w.stateDir, next.keyPem);
    expect(keyFile).toMatch(/\/identity\/node-[0-9a-f]{12}\.key$/);
    let id = (await loadIdentity(w.stateDir))!;
    expect([id.certPem, id.paths.key]).toEqual([old.certPem, paths.key]);
    expect(await renewalPending(w.stateDir)).toBe(false);

    // the switch: one rename; from here the new pair, and the old key still there for bundles that name it
    id = await switchIdentity(w.stateDir, { certPem: next.certPem, caPem: w.ca.certPem, replacedSerial: 'ab' });
    expect([id.keyPem, id.paths.key]).toEqual([next.keyPem, keyFile]);
    expect((await loadIdentity(w.stateDir))!.paths.key).toBe(keyFile);
    expect(await renewalPending(w.stateDir)).toBe(true);
    expect(await readFile(paths.key, 'utf8')).toBe(old.keyPem);

    // finished: the marker and the unused old key go; a key an installed bundle still names stays
    const another = await saveRenewalKey(w.stateDir, (await w.pair()).keyPem);
    const removed = await finishRenewal(w.stateDir, id, [another]);
    expect(removed).toEqual([paths.key]);
    expect((await readdir(paths.dir)).sort()).toEqual(['api-ca.crt', 'identity.crt', another.split('/').pop()!, keyFile.split('/').pop()!].sort());
    expect(await renewalPending(w.stateDir)).toBe(false);
    expect((await loadIdentity(w.stateDir))!.keyPem).toBe(next.keyPem);
  });

  it('a certificate no stored key matches is no identity (the node enrolls again)', async () => {
    const w = await world();
    const a = await w.pair();
    const b = await w.pair();
    await saveIdentity(w.stateDir, { ...a, caPem: w.ca.certPem });
    await saveIdentity(w.stateDir, { keyPem: a.keyPem, certPem: b.certPem, caPem: w.ca.certPem });
    expect(await loadIdentity(w.stateDir)).toBeUndefined();
    await expect(switchIdentity(w.stateDir, { certPem: b.certPem, caPem: w.ca.certPem, replacedSerial: 'ab' })).rejects.toThrow(/no key file/);
  });
});
