/**
 * The API CA roll's rules with real certificates: the agent's acceptApiCas
 * (pin rule, roll proof, names, nothing written on refusal) and the
 * server's files (start, finish, refusal while a node is behind, a start
 * that crashed halfway).
 */
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { acceptApiCas, loadApiTrust, type ApiTrust } from '../../src/agent/api-ca.ts';
import { loadCaPinFile } from '../../src/agent/ca-pins.ts';
import { apiCaCn } from '../../src/bundle/names.ts';
import { isMvpnError } from '../../src/errors.ts';
import { createCa, crossCertify, type CaMaterial } from '../../src/pki/ca.ts';
import { completeApiFiles, finishApiCaRoll, finishDueApiCaRoll, loadApiCaState, rollApiCa } from '../../src/server/ops/api-ca-roll.ts';
import { caExpiries } from '../../src/server/ops/ca-roll.ts';
import { enroll } from '../../src/server/ops/enroll.ts';
import { createCsr } from '../../src/pki/csr.ts';
import { generateKeyPairPem } from '../../src/pki/keys.ts';
import { makeServer, openContext } from '../helpers/server-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

const now = new Date();
const validity = { notBefore: new Date(now.getTime() - 60_000), notAfter: new Date(now.getTime() + 365 * 86_400_000) };

function doc(cas: readonly string[], roll?: string): Buffer {
  return Buffer.from(JSON.stringify({ format: 'mvpn-api-ca-v1', cas, ...(roll === undefined ? {} : { roll }) }));
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'accepted';
  } catch (err) {
    return isMvpnError(err) ? err.code : String(err);
  }
}

describe('agent: following an API CA roll (acceptApiCas)', () => {
  it('follows a roll the pinned CA certified, drops the old CA at the finish, and refuses everything else without writing', async () => {
    const dir = await tmpDir('api-ca-unit');
    try {
      const ca1 = await createCa({ cn: apiCaCn(), ...validity });
      const ca2 = await createCa({ cn: apiCaCn(2), ...validity });
      const proof = (await crossCertify(ca1, ca2.certPem, validity.notBefore)) + ca1.certPem;
      const start = (await loadApiTrust(dir.path, ca1.certPem))!;
      expect(start.pinned).toBe(false);

      // The server lists what the config names: nothing to pin.
      const same = await acceptApiCas(dir.path, doc([ca1.certPem]), start, now);
      expect(same.changed).toBe(false);
      expect(await loadCaPinFile(dir.path, '_api')).toBeUndefined();

      // A new CA without the proof, or with a proof by a key the node never pinned: refused, nothing written.
      const impostor = await createCa({ cn: apiCaCn(), ...validity });
      const forgedProof = (await crossCertify(impostor, ca2.certPem, validity.notBefore)) + impostor.certPem;
      expect(await codeOf(acceptApiCas(dir.path, doc([ca1.certPem, ca2.certPem]), start, now))).toBe('MVPN_CA_NOT_PINNED');
      expect(await codeOf(acceptApiCas(dir.path, doc([ca1.certPem, ca2.certPem], forgedProof), start, now))).toBe('MVPN_CA_NOT_PINNED');
      // A proof whose old CA is the pinned one's name but whose signature is not: the cross-certificate does not verify.
      const lying = (await crossCertify(impostor, ca2.certPem, validity.notBefore)) + ca1.certPem;
      expect(await codeOf(acceptApiCas(dir.path, doc([ca1.certPem, ca2.certPem], lying), start, now))).toBe('MVPN_CA_ROLL_INVALID');
      // A CA that is not an API CA by name.
      const other = await createCa({ cn: 'mvpn-ca-alpha', ...validity });
      expect(await codeOf(acceptApiCas(dir.path, doc([other.certPem]), start, now))).toBe('MVPN_CA_WRONG_NETWORK');
      expect(await codeOf(acceptApiCas(dir.path, Buffer.from('{"format":"mvpn-api-ca-v1","cas":[],"x":1}'), start, now))).toBe('MVPN_SCHEMA_INVALID');
      expect(await loadCaPinFile(dir.path, '_api')).toBeUndefined();

      // The overlap: both pinned, with their certificates (TLS needs them), durably.
      const overlap = await acceptApiCas(dir.path, doc([ca1.certPem, ca2.certPem], proof), start, now);
      expect(overlap).toMatchObject({ changed: true, issuerCn: apiCaCn(2), issuerPem: ca2.certPem });
      const reloaded = (await loadApiTrust(dir.path, ca1.certPem))!;
      expect(reloaded).toMatchObject({ pinned: true, pems: [ca1.certPem, ca2.certPem] });

      // The finish: the new CA alone; the old one cannot come back.
      const finished = await acceptApiCas(dir.path, doc([ca2.certPem], proof), reloaded, now);
      expect(finished.trust.pems).toEqual([ca2.certPem]);
      const after: ApiTrust = (await loadApiTrust(dir.path, ca1.certPem))!;
      expect(after.pins).toHaveLength(1);
      expect(await codeOf(acceptApiCas(dir.path, doc([ca1.certPem, ca2.certPem], proof), after, now))).toBe('MVPN_CA_NOT_PINNED');
      expect((await loadApiTrust(dir.path, ca1.certPem))!.pems).toEqual([ca2.certPem]);
    } finally {
      await dir.remove();
    }
  });
});

describe('server: API CA roll files', () => {
  it('starts, refuses to finish while a node is behind, finishes with --force semantics, and completes a start that crashed halfway', async () => {
    const server = await makeServer({ label: 'api-ca-roll' });
    try {
      const ctx = await openContext(server.stateDir);
      try {
        await server.run(['network', 'create', 'alpha']);
        await server.run(['node', 'add', 'pc1', '--network', 'alpha']);
        const { token } = await server.json<{ token: string }>(['node', 'token', 'pc1']);
        const before = await loadApiCaState(ctx.paths);
        const keyPair = await generateKeyPairPem('ec-p256');
        await enroll(ctx, before.issuer, { node: 'pc1', token, csr: await createCsr({ keyPair, cn: 'pc1' }) });

        const r = await rollApiCa(ctx, { overlapMs: 3_600_000 });
        expect(r).toMatchObject({ ca: apiCaCn(2), previous: apiCaCn(), nodes: 1 });
        const during = await loadApiCaState(ctx.paths);
        expect(during.trustedPems).toEqual([before.issuer.certPem, during.issuer.certPem]);
        expect(during.listener.certPem).toBe(before.listener.certPem);
        expect(during.rollPem).toBeDefined();
        expect(await codeOf(rollApiCa(ctx))).toBe('MVPN_CA_ROLL_REFUSED');

        // After the overlap: the daemon does not finish while pc1 is behind, and its daily warning names pc1 and the command.
        const later = await openContext(server.stateDir, () => Date.now() + 2 * 3_600_000);
        try {
          expect(await finishDueApiCaRoll(later)).toBeUndefined();
          const warnings = (await caExpiries(later, Date.now() + 2 * 3_600_000)).map((e) => e.warning ?? '');
          expect(warnings.find((w) => w.includes('overlap ended'))).toMatch(/pc1.*server api roll-ca --finish --force/);
          // The API CA's own expiry warning names the command that rolls it.
          const nearEnd = await caExpiries(later, Date.now() + (10 * 365 - 30) * 86_400_000);
          expect(nearEnd.find((e) => e.which === 'API CA')?.warning).toContain('mvpn-client server api roll-ca');
        } finally {
          later.close();
        }

        const refused = await finishApiCaRoll(ctx).catch((e: unknown) => e);
        expect(isMvpnError(refused) && refused.code).toBe('MVPN_CA_ROLL_REFUSED');
        expect((refused as Error).message).toContain('pc1');

        const fin = await finishApiCaRoll(ctx, { force: true });
        expect(fin).toMatchObject({ ca: apiCaCn(2), previous: apiCaCn(), dropped: ['pc1'] });
        const after = await loadApiCaState(ctx.paths);
        expect(after.trustedPems).toEqual([during.issuer.certPem]);
        // The listener: a leaf from the new CA, then the cross-certificate.
        expect(after.listener.certPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
        expect(await codeOf(finishApiCaRoll(ctx))).toBe('MVPN_CA_ROLL_REFUSED');

        // A start that crashed after writing the new pair, before ca-prev.crt and the renames.
        const ca3 = await createCa({ cn: apiCaCn(3), ...validity });
        await writeFile(`${ctx.paths.apiCaKey}.next`, ca3.keyPem, { mode: 0o600 });
        await writeFile(`${ctx.paths.apiCaCert}.next`, ca3.certPem);
        await completeApiFiles(ctx.paths);
        expect(await readFile(ctx.paths.apiCaPrev, 'utf8')).toBe(during.issuer.certPem);
        expect(await readFile(ctx.paths.apiCaCert, 'utf8')).toBe(ca3.certPem);
        expect(await readFile(ctx.paths.apiCaKey, 'utf8')).toBe(ca3.keyPem);
        await rm(ctx.paths.apiCaPrev);
        // One that crashed before its certificate was written: the step never happened.
        const ca4: CaMaterial = await createCa({ cn: apiCaCn(4), ...validity });
        await writeFile(`${ctx.paths.apiCaKey}.next`, ca4.keyPem, { mode: 0o600 });
        await completeApiFiles(ctx.paths);
        expect(await stat(`${ctx.paths.apiCaKey}.next`).catch(() => undefined)).toBeUndefined();
        expect(await readFile(ctx.paths.apiCaKey, 'utf8')).toBe(ca3.keyPem);
      } finally {
        ctx.close();
      }
    } finally {
      await server.remove();
    }
  });
});
