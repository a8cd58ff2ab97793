/**
 * The adversarial corpus (issue 3): every hostile input is refused with its
 * own error code, the network's previously installed bundle is
 * byte-identical afterwards, and nothing was created, changed or removed
 * anywhere under the test's root (state directories and the directory that
 * escape attempts aim at).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { readInstalled } from '../../src/bundle/install.ts';
import { sha256Hex } from '../../src/bundle/membership.ts';
import { verifyBundle } from '../../src/bundle/verify.ts';
import { MvpnError } from '../../src/errors.ts';
import { makeBundle, makeBundleFixture, makeMembership } from '../helpers/bundle-fixtures.ts';
import { FORBIDDEN_DIRECTIVES, makeCorpus, type AdversarialCase } from '../helpers/adversarial/cases.ts';
import { agentFlow } from '../helpers/adversarial/flow.ts';
import { rawBundle } from '../helpers/adversarial/raw-bundle.ts';
import { snapshotTree, treeHash } from '../helpers/adversarial/snapshot.ts';
import { tmpDir } from '../helpers/tmp.ts';

const f = await makeBundleFixture();
const good = await makeBundle(f);
const goodMembership = makeMembership(f, [{ bundle: good }], { serial: 1 });
const goodLast = { serial: 1, payloadSha256: sha256Hex(Buffer.from(JSON.parse(goodMembership.toString()).payload as string, 'base64')) };
const root = await tmpDir('adv');
afterAll(() => root.remove());
const corpus = await makeCorpus({ f, good, goodMembership, escapeDir: root.path });

describe('adversarial corpus', () => {
  test('has at least 40 cases with unique names, covering every forbidden directive', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(40);
    expect(new Set(corpus.map((c) => c.name)).size).toBe(corpus.length);
    for (const d of FORBIDDEN_DIRECTIVES) expect(corpus.some((c) => c.name === `options: forbidden directive "${d}"`)).toBe(true);
    console.log(`adversarial corpus: ${corpus.length} cases`);
  });

  test('the raw builder with no options makes a bundle the verifier accepts (cases differ from good only in their defect)', async () => {
    const bytes = rawBundle(f);
    const v = await verifyBundle(bytes, { anchor: f.anchor, nodeId: f.nodeId, now: f.now, nodeKeyPem: f.pki.clients[f.nodeId]!.keyPem });
    expect(v.manifest.network).toBe(f.network);
    const central = rawBundle(f, { central: true });
    await expect(verifyBundle(central, { anchor: f.anchor, nodeId: f.nodeId, now: f.now })).resolves.toBeDefined();
  });

  test.each(corpus.map((c) => [c.name, c] as const))('%s', async (_name, c: AdversarialCase) => {
    const caseDir = await mkdtemp(join(root.path, 'case-'));
    const stateDir = join(caseDir, 'state');
    try {
      await agentFlow(f, { membership: goodMembership, bundle: good.bytes }, stateDir);
      const installBefore = await treeHash(join(stateDir, 'networks'));
      const before = await snapshotTree(root.path);

      const err = await agentFlow(f, { membership: c.membership, bundle: c.bundle ?? good.bytes, last: c.last ?? goodLast, ...(c.nodeKeyPem ? { nodeKeyPem: c.nodeKeyPem } : {}) }, stateDir).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, 'the hostile input was accepted').toBeInstanceOf(MvpnError);
      expect({ code: (err as MvpnError).code, message: (err as MvpnError).message }).toMatchObject({ code: c.code });

      expect(await treeHash(join(stateDir, 'networks'))).toBe(installBefore);
      expect(await snapshotTree(root.path)).toEqual(before);
      const still = await readInstalled(stateDir, f.network);
      expect(still?.sha256).toBe(good.sha256);
    } finally {
      await rm(caseDir, { recursive: true, force: true });
    }
  });
});
