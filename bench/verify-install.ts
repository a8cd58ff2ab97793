/**
 * Verify + install benchmark: what one network update costs the agent on a
 * node, for a typical bundle (key made on the node, two remotes, one extra
 * option, EC P-256 certificates, an empty CRL).
 *
 * Per run: verify the membership envelope, verify the bundle (sha256 and
 * size binding, strict gunzip, in-memory tar extraction, manifest
 * signature, schemas, allow-list, certificate chain and CRL), then install
 * it atomically (fresh 0700 directory, files written and fsynced, symlink
 * switch, old version removed). Runs alternate between two versions so
 * every install really switches and cleans up, as an update does.
 *
 * Run: node_modules/.bin/node bench/verify-install.ts [--runs 200] [--warmup 20] [--out bench/results/verify-install.json]
 * Writes JSON to --out and prints a summary. No assertions: timings only.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { buildBundle } from '../src/bundle/build.ts';
import { installBundle } from '../src/bundle/install.ts';
import { verifyMembership } from '../src/bundle/membership.ts';
import { verifyBundle } from '../src/bundle/verify.ts';
import { bundleInput, makeBundleFixture, makeMembership, makeSpec, testRenderer } from '../test/helpers/bundle-fixtures.ts';
import { flag, msStats as stats, type MsStats as Stats } from './lib/stats.ts';

async function main(): Promise<void> {
  const runs = Number(flag('runs', '200'));
  const warmup = Number(flag('warmup', '20'));
  const out = flag('out', 'bench/results/verify-install.json');

  const f = await makeBundleFixture({ nodes: ['pc101'] });
  const spec = makeSpec('lab1', { extra_options: [['sndbuf', '393216']] });
  const bundles = await Promise.all([1, 2].map((version) => buildBundle(bundleInput(f, { version, spec }))));
  const envelopes = bundles.map((b, i) => makeMembership(f, [{ bundle: b, version: i + 1 }], { serial: i + 1 }));
  const nodeKeyPem = f.pki.clients['pc101']!.keyPem;
  const root = await mkdtemp(join(tmpdir(), 'mvpn-bench-verify-install-'));
  const stateDir = join(root, 'state');
  await mkdir(stateDir);
  const render = testRenderer(join(root, 'run'));

  const membership: number[] = [];
  const verify: number[] = [];
  const install: number[] = [];
  const total: number[] = [];
  try {
    for (let i = 0; i < warmup + runs; i++) {
      const k = i % 2;
      const bytes = bundles[k]!.bytes;
      const t0 = performance.now();
      const m = verifyMembership(envelopes[k]!, { anchor: f.anchor, nodeId: 'pc101', now: f.now });
      const e = m.doc.networks[0]!;
      const t1 = performance.now();
      const v = await verifyBundle(bytes, {
        anchor: f.anchor,
        nodeId: 'pc101',
        now: f.now,
        nodeKeyPem,
        expect: { network: e.id, version: e.bundle.version, sha256: e.bundle.sha256, size: e.bundle.size },
      });
      const t2 = performance.now();
      await installBundle(v, { stateDir, nodeKeyPath: '/var/lib/mvpn-client/identity/node.key', render });
      const t3 = performance.now();
      if (i >= warmup) {
        membership.push(t1 - t0);
        verify.push(t2 - t1);
        install.push(t3 - t2);
        total.push(t3 - t0);
      }
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }

  const result = {
    benchmark: 'verify-install',
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    tmpdir: tmpdir(),
    bundle: { bytes: bundles[0]!.size, files: 7, keyOrigin: 'node', certs: 'EC P-256' },
    runs,
    warmup,
    membershipVerify: stats(membership),
    bundleVerify: stats(verify),
    install: stats(install),
    verifyAndInstall: stats(total),
  };
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify(result, null, 2) + '\n');
  const line = (name: string, s: Stats): string => `${name.padEnd(18)} median ${s.medianMs.toFixed(2)} ms  min ${s.minMs.toFixed(2)}  max ${s.maxMs.toFixed(2)}  p95 ${s.p95Ms.toFixed(2)}`;
  console.log(`verify+install, ${runs} runs (${warmup} warm-up), bundle ${result.bundle.bytes} bytes, ${result.cpus} CPUs`);
  console.log(line('membership verify', result.membershipVerify));
  console.log(line('bundle verify', result.bundleVerify));
  console.log(line('install', result.install));
  console.log(line('verify+install', result.verifyAndInstall));
  console.log(`wrote ${out}`);
}

await main();
