/**
 * Property test over seeded mutations of a valid bundle and a valid
 * membership envelope (issue 3): at every layer — gzip bytes, tar bytes,
 * tar header fields, manifest and network.json fields, envelope bytes and
 * fields, membership fields — mutated input is either refused with an
 * MvpnError carrying a stable code (never a crash, never MVPN_INTERNAL) or
 * accepted only if it means exactly what the original meant:
 *
 * - with the membership binding (the agent's real path) nothing but the
 *   original bundle bytes is accepted;
 * - without it, an accepted bundle has exactly the original files (gzip and
 *   tar carry a few unauthenticated bytes — header timestamps, padding —
 *   that do not change content);
 * - an accepted envelope carries exactly the original payload;
 * - edits that are not re-signed, or re-signed with another key, are always
 *   refused. Edits re-signed with the real key model the server itself and
 *   must only never crash.
 *
 * Verification runs in memory; a sample runs the whole agent path including
 * install into a state directory, and at the end nothing exists under the
 * test's root outside that state directory. Reproduce a failure with
 * MVPN_FUZZ_SEED (and MVPN_FUZZ_ITERATIONS to scale the run).
 */
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { gzipDeterministic } from '../../src/bundle/build.ts';
import { extractBundle } from '../../src/bundle/extract.ts';
import { gunzipStrict } from '../../src/bundle/gzip.ts';
import { readInstalled } from '../../src/bundle/install.ts';
import { verifyMembership } from '../../src/bundle/membership.ts';
import { generateSigningKey, signDetached } from '../../src/bundle/sign.ts';
import { ALLOWED_NAMES, verifyBundle } from '../../src/bundle/verify.ts';
import { MvpnError } from '../../src/errors.ts';
import { makeBundle, makeBundleFixture, makeMembership } from '../helpers/bundle-fixtures.ts';
import { agentFlow } from '../helpers/adversarial/flow.ts';
import { Rng, mutateBytes, mutateJson, mutateTarHeader } from '../helpers/adversarial/mutate.ts';
import { sha256 } from '../helpers/adversarial/raw-bundle.ts';
import { snapshotTree } from '../helpers/adversarial/snapshot.ts';
import { rawTar } from '../helpers/adversarial/tar-raw.ts';
import { tmpDir } from '../helpers/tmp.ts';

const SEED = Number(process.env['MVPN_FUZZ_SEED'] ?? 0x6d76706e);
const ITERATIONS = Number(process.env['MVPN_FUZZ_ITERATIONS'] ?? 12_000);
/** Every SAMPLE-th iteration also runs the whole agent path with install. */
const SAMPLE = 40;

type Json = Parameters<typeof mutateJson>[1];

const f = await makeBundleFixture();
const good = await makeBundle(f);
const goodMembership = makeMembership(f, [{ bundle: good }], { serial: 1 });
const goodEnvelope = JSON.parse(goodMembership.toString()) as Record<string, string>;
const goodPayload = Buffer.from(goodEnvelope['payload']!, 'base64');
const goodTar = gunzipStrict(good.bytes, 1 << 22);
const goodFiles = extractBundle(good.bytes, ALLOWED_NAMES);
const goodManifest = JSON.parse(goodFiles.get('manifest.json')!.toString()) as Json;
const goodSpec = JSON.parse(goodFiles.get('network.json')!.toString()) as Json;
const goodDoc = JSON.parse(goodPayload.toString()) as Json;
const attacker = generateSigningKey();
const root = await tmpDir('fuzz');
afterAll(() => root.remove());

const expectGood = { network: f.network, version: 1, sha256: good.sha256, size: good.size };
const verifyOpts = { anchor: f.anchor, nodeId: f.nodeId, now: f.now, nodeKeyPem: f.pki.clients[f.nodeId]!.keyPem };

function sameFiles(a: ReadonlyMap<string, Buffer>, b: ReadonlyMap<string, Buffer>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (!b.get(k)?.equals(v)) return false;
  return true;
}

/** A bundle with the good files except those replaced, tarred like the builder does. */
function bundleWith(replace: Record<string, Buffer>): Buffer {
  const files = new Map(goodFiles);
  for (const [k, v] of Object.entries(replace)) files.set(k, v);
  return gzipDeterministic(rawTar([...files.keys()].sort().map((name) => ({ name, data: files.get(name)!, mode: name.endsWith('.key') ? 0o600 : 0o644 }))));
}

function resign(bytes: Buffer, how: 'original' | 'attacker' | 'real', type: 'manifest' | 'membership'): Buffer {
  if (how === 'original') return type === 'manifest' ? goodFiles.get('manifest.sig')! : Buffer.from(goodEnvelope['signature']!, 'base64');
  return signDetached(type, bytes, how === 'attacker' ? attacker : f.signingKey);
}

type Outcome = { ok: true; value: unknown } | { ok: false; err: unknown };
async function attempt(fn: () => unknown): Promise<Outcome> {
  try {
    return { ok: true, value: await fn() };
  } catch (err) {
    return { ok: false, err };
  }
}

test(`fuzz: ${ITERATIONS} seeded mutations (seed ${SEED}) — only the original is accepted, nothing crashes, nothing escapes`, async () => {
  const rng = new Rng(SEED);
  const stateDir = join(root.path, 'state');
  await mkdir(stateDir);
  await agentFlow(f, { membership: goodMembership, bundle: good.bytes }, stateDir);

  const failures: string[] = [];
  const counts: Record<string, { runs: number; accepted: number; codes: Set<string> }> = {};
  const fail = (family: string, what: string, why: string): void => {
    if (failures.length < 20) failures.push(`[${family}] ${what}: ${why}`);
  };
  /** Rejections must be typed; returns whether it was accepted. */
  const judge = (family: string, what: string, o: Outcome): boolean => {
    const c = (counts[family] ??= { runs: 0, accepted: 0, codes: new Set() });
    c.runs++;
    if (o.ok) {
      c.accepted++;
      return true;
    }
    if (!(o.err instanceof MvpnError)) fail(family, what, `crashed with ${String(o.err)}`);
    else if (o.err.code === 'MVPN_INTERNAL') fail(family, what, `internal error: ${o.err.message}`);
    else c.codes.add(o.err.code);
    return false;
  };
  const sampleInstall = async (family: string, what: string, bytes: Buffer): Promise<void> => {
    if (bytes.length === 0) return;
    const membership = makeMembership(f, [{ bundle: { bytes, sha256: sha256(bytes), size: bytes.length } }], { serial: 1 });
    const o = await attempt(() => agentFlow(f, { membership, bundle: bytes }, stateDir));
    if (judge(`${family}+install`, what, o)) {
      const files = extractBundle(bytes, ALLOWED_NAMES);
      if (!sameFiles(files, goodFiles)) fail(family, what, 'installed a bundle whose files differ from the original');
    }
  };
  const bundleProperty = async (family: string, what: string, bytes: Buffer, sample: boolean): Promise<void> => {
    if (bytes.equals(good.bytes)) return;
    const bound = await attempt(() => verifyBundle(bytes, { ...verifyOpts, expect: expectGood }));
    if (judge(`${family}/bound`, what, bound)) fail(family, what, 'accepted with the membership binding although the bytes differ');
    const free = await attempt(() => verifyBundle(bytes, verifyOpts));
    if (judge(family, what, free) && free.ok && !sameFiles((free.value as { files: Map<string, Buffer> }).files, goodFiles)) {
      fail(family, what, 'accepted different files');
    }
    if (sample) await sampleInstall(family, what, bytes);
  };

  const started = performance.now();
  for (let i = 0; i < ITERATIONS; i++) {
    const sample = i % SAMPLE === 0;
    const family = rng.pick(['gz-bytes', 'gz-bytes', 'tar-bytes', 'tar-bytes', 'tar-header', 'tar-header', 'manifest', 'spec', 'envelope-bytes', 'envelope-fields', 'membership'] as const);
    switch (family) {
      case 'gz-bytes': {
        const m = mutateBytes(rng, good.bytes);
        await bundleProperty(family, m.what, m.bytes, sample);
        break;
      }
      case 'tar-bytes':
      case 'tar-header': {
        const m = family === 'tar-bytes' ? mutateBytes(rng, goodTar) : mutateTarHeader(rng, goodTar);
        await bundleProperty(family, m.what, gzipDeterministic(m.bytes), sample);
        break;
      }
      case 'manifest': {
        const m = mutateJson(rng, goodManifest);
        const bytes = Buffer.from(JSON.stringify(m.value, null, 2) + '\n');
        if (bytes.equals(goodFiles.get('manifest.json')!)) break;
        const how = rng.pick(['original', 'attacker', 'real'] as const);
        const sig = Buffer.from(resign(bytes, how, 'manifest').toString('base64'));
        const bundle = bundleWith({ 'manifest.json': bytes, 'manifest.sig': how === 'original' ? goodFiles.get('manifest.sig')! : sig });
        const what = `${m.what} (signature: ${how})`;
        if (how === 'real') {
          // The server's own key: may be valid, must not crash, and the membership binding still holds.
          judge('manifest/real-key', what, await attempt(() => verifyBundle(bundle, verifyOpts)));
          if (judge('manifest/real-key/bound', what, await attempt(() => verifyBundle(bundle, { ...verifyOpts, expect: expectGood })))) {
            fail(family, what, 'accepted against the original membership entry');
          }
        } else if (judge(`manifest/${how}`, what, await attempt(() => verifyBundle(bundle, verifyOpts)))) {
          fail(family, what, 'accepted a manifest not signed by the anchor');
        }
        break;
      }
      case 'spec': {
        const m = mutateJson(rng, goodSpec);
        const spec = Buffer.from(JSON.stringify(m.value, null, 2) + '\n');
        if (spec.equals(goodFiles.get('network.json')!)) break;
        const resigned = rng.int(2) === 0;
        let bundle: Buffer;
        if (resigned) {
          const manifest = structuredClone(goodManifest) as { files: Record<string, string> };
          manifest.files['network.json'] = sha256(spec);
          const mb = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
          bundle = bundleWith({ 'network.json': spec, 'manifest.json': mb, 'manifest.sig': Buffer.from(signDetached('manifest', mb, f.signingKey).toString('base64')) });
          judge('spec/real-key', m.what, await attempt(() => verifyBundle(bundle, verifyOpts)));
        } else {
          bundle = bundleWith({ 'network.json': spec });
          if (judge('spec/unsigned', m.what, await attempt(() => verifyBundle(bundle, verifyOpts)))) fail(family, m.what, 'accepted a network.json the manifest does not cover');
        }
        break;
      }
      case 'envelope-bytes':
      case 'envelope-fields': {
        let bytes: Buffer;
        let what: string;
        if (family === 'envelope-bytes') ({ bytes, what } = mutateBytes(rng, goodMembership));
        else {
          const m = mutateJson(rng, goodEnvelope as unknown as Json);
          bytes = Buffer.from(JSON.stringify(m.value));
          what = m.what;
        }
        const o = await attempt(() => verifyMembership(bytes, { anchor: f.anchor, nodeId: f.nodeId, now: f.now }));
        if (judge(family, what, o) && o.ok && !(o.value as { payload: Buffer }).payload.equals(goodPayload)) fail(family, what, 'accepted a different payload');
        break;
      }
      case 'membership': {
        const m = mutateJson(rng, goodDoc);
        const payload = Buffer.from(JSON.stringify(m.value));
        if (payload.equals(goodPayload)) break;
        const how = rng.pick(['original', 'attacker', 'real'] as const);
        const key = how === 'attacker' ? attacker : f.signingKey;
        const env = Buffer.from(
          JSON.stringify({ format: 'mvpn-signed-v1', type: 'membership', key_id: key.keyId, payload: payload.toString('base64'), signature: resign(payload, how, 'membership').toString('base64') }),
        );
        const what = `${m.what} (signature: ${how})`;
        const o = await attempt(() => verifyMembership(env, { anchor: f.anchor, nodeId: f.nodeId, now: f.now }));
        if (judge(`membership/${how}`, what, o) && how !== 'real') fail(family, what, 'accepted a document not signed by the anchor');
        break;
      }
    }
  }
  const seconds = (performance.now() - started) / 1000;

  // Nothing escaped: the root holds only the state directory, and the install there is the original, intact.
  const snap = await snapshotTree(root.path);
  const outside = Object.keys(snap).filter((p) => p !== '.' && p !== 'state' && !p.startsWith('state/'));
  expect(outside).toEqual([]);
  expect((await readdir(join(stateDir, 'networks'))).filter((n) => !n.startsWith('.')).sort()).toEqual([f.network]);
  const installed = await readInstalled(stateDir, f.network, { anchor: f.anchor });
  expect(installed).toBeDefined();

  const summary = Object.entries(counts)
    .sort()
    .map(([k, c]) => `${k}: ${c.runs} runs, ${c.accepted} accepted, codes ${[...c.codes].sort().join(' ')}`)
    .join('\n  ');
  console.log(`fuzz: ${ITERATIONS} iterations, seed ${SEED}, ${seconds.toFixed(1)} s\n  ${summary}`);
  expect(failures, failures.join('\n')).toEqual([]);
  // The families really ran (a guard against a mutation helper that silently stops mutating).
  expect(Object.values(counts).reduce((n, c) => n + c.runs, 0)).toBeGreaterThanOrEqual(ITERATIONS);
}, 300_000);

