/**
 * Server issuance benchmark: per-node credentials AND bundles through the
 * server mode's own code path, compared with easy-rsa (what MetaVPN used)
 * on the same machine in the same run.
 *
 * Per node, on a real state directory (SQLite store, fsync'd commits):
 *   export path — `node add` (address allocation, tls-crypt-v2 client key,
 *                 one transaction) + `export` (central EC key, certificate,
 *                 transaction, bundle build + manifest signature, signed
 *                 membership document, both files written atomically);
 *   enroll path — `node add` + `node token` + enrollment (CSR check,
 *                 identity certificate, network certificate, transaction;
 *                 the CSR is made beforehand, "on the node", untimed) + the
 *                 signed membership document and bundle the API serves.
 * These call the same functions the CLI and the HTTPS API call (src/server/ops,
 * DocumentService), without argv parsing or process start-up.
 *
 * easy-rsa: `build-client-full NAME nopass` with EASYRSA_ALGO=ec
 * EASYRSA_CURVE=prime256v1 in a throwaway PKI, for a sample; it makes only
 * the key and certificate (less work than either native path). Also reported:
 * easy-rsa plus `openvpn --genkey tls-crypt-v2-client`, the per-node work a
 * non-native server would do for the same credentials.
 *
 * Rates are nodes per second from the mean time per node (sequential, one
 * node after the other, as easy-rsa must). The ratio uses those rates. A
 * third run measures the export path's throughput with --concurrency nodes
 * in flight (a testbed swapping in asks for many at once).
 *
 * Bulk path — what an operator runs when a testbed swaps in: `node add
 * N1 … Nk --network X` then `export --all --network X --out-dir D`
 * (addNodes + exportNodes: one transaction per call, one CRL per network,
 * files renamed after all are synced, one directory fsync). Timed for all
 * --count nodes in one call each, and in calls of --batch nodes; the rate
 * is nodes over wall time (add + export), files written, durable.
 *
 * Run: node_modules/.bin/node bench/server-issuance.ts [--count 1000] [--sample 20] [--concurrency 8] [--batch 100] [--out bench/results/server-issuance.json]
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { signingKeyFromPem } from '../src/bundle/sign.ts';
import { createCsr } from '../src/pki/csr.ts';
import { generateKeyPairPem } from '../src/pki/keys.ts';
import { loadServerConfig } from '../src/server/config.ts';
import { DocumentService } from '../src/server/doc-service.ts';
import { initServer } from '../src/server/init.ts';
import type { ServerContext } from '../src/server/ops/context.ts';
import { enroll } from '../src/server/ops/enroll.ts';
import { exportNode, exportNodes } from '../src/server/ops/export.ts';
import { createNetwork } from '../src/server/ops/networks.ts';
import { addNode, addNodes, createToken } from '../src/server/ops/nodes.ts';
import { SqliteStore } from '../src/server/store/sqlite.ts';
import { systemClock } from '../src/util/clock.ts';
import { flag, msStats as stats, timed, type MsStats as Stats } from './lib/stats.ts';

const run = promisify(execFile);
const EASYRSA = '/usr/share/easy-rsa/easyrsa';

async function serverContext(stateDir: string): Promise<ServerContext & { close(): void }> {
  const { config, paths } = await loadServerConfig(stateDir);
  const store = SqliteStore.open(paths.store);
  return { config, paths, store, clock: systemClock, close: () => store.close() };
}

async function main(): Promise<void> {
  const count = Number(flag('count', '1000'));
  const sample = Number(flag('sample', '20'));
  const concurrency = Number(flag('concurrency', '8'));
  const batch = Number(flag('batch', '100'));
  const out = flag('out', join(import.meta.dirname, 'results', 'server-issuance.json'));
  if (!Number.isInteger(count) || count < 1 || count > 8000 || !Number.isInteger(sample) || sample < 1 || !Number.isInteger(batch) || batch < 1) {
    throw new Error('--count (1..8000, a /19 per bulk network), --sample and --batch must be positive integers');
  }

  const dir = await mkdtemp(join(tmpdir(), 'mvpn-bench-server-'));
  try {
    const stateDir = join(dir, 'state');
    // Networks from the benchmark range (/17s, the bulk ones /19s): room for 8,000 nodes each. No traffic is sent.
    await initServer({ stateDir, addresses: ['198.18.0.1'], listen: '127.0.0.1:0', pool: '198.18.0.0/15' });
    const ctx = await serverContext(stateDir);
    const key = signingKeyFromPem(await readFile(ctx.paths.signingKey, 'utf8'));
    const apiCa = { alg: 'ec-p256' as const, certPem: await readFile(ctx.paths.apiCaCert, 'utf8'), keyPem: await readFile(ctx.paths.apiCaKey, 'utf8') };
    await createNetwork(ctx, { id: 'exp', subnet: '198.18.0.0/17' });
    await createNetwork(ctx, { id: 'enr', subnet: '198.18.128.0/17' });
    await createNetwork(ctx, { id: 'par', subnet: '198.19.0.0/17' });
    await createNetwork(ctx, { id: 'bulk', subnet: '198.19.128.0/19' });
    await createNetwork(ctx, { id: 'bat', subnet: '198.19.160.0/19' });
    const docs = new DocumentService(ctx, key);
    const outDir = join(dir, 'export');
    await mkdir(outDir);

    // Warm-up (JIT, imports) on a third network, not measured.
    await createNetwork(ctx, { id: 'warm', subnet: '198.19.192.0/24' });
    for (let i = 0; i < 5; i++) {
      await addNode(ctx, { node: `warm${i}`, network: 'warm' });
      await exportNode(ctx, key, `warm${i}`, 'warm', join(outDir, `warm${i}.tar.gz`));
    }

    process.stderr.write(`server export path: ${count} nodes...\n`);
    const exportAdd: number[] = [];
    const exportExport: number[] = [];
    const exportTotal: number[] = [];
    let bundleBytes = 0;
    const t0 = performance.now();
    for (let i = 0; i < count; i++) {
      const [tAdd] = await timed(() => addNode(ctx, { node: `e${i}`, network: 'exp' }));
      const [tExp, r] = await timed(() => exportNode(ctx, key, `e${i}`, 'exp', join(outDir, `e${i}.tar.gz`)));
      bundleBytes += r.size;
      exportAdd.push(tAdd);
      exportExport.push(tExp);
      exportTotal.push(tAdd + tExp);
    }
    const exportWall = (performance.now() - t0) / 1000;

    process.stderr.write(`server enroll path: making ${count} node keys and CSRs (untimed, "on the nodes")...\n`);
    const csrs: string[] = [];
    for (let i = 0; i < count; i++) csrs.push(await createCsr({ keyPair: await generateKeyPairPem('ec-p256'), cn: `n${i}` }));
    process.stderr.write(`server enroll path: ${count} nodes...\n`);
    const enrollTotal: number[] = [];
    const enrollEnroll: number[] = [];
    const enrollServe: number[] = [];
    const t1 = performance.now();
    for (let i = 0; i < count; i++) {
      const node = `n${i}`;
      const [tAdd] = await timed(() => addNode(ctx, { node, network: 'enr' }));
      const [tTok, tok] = await timed(() => createToken(ctx, node, 3600_000));
      const [tEnr] = await timed(() => enroll(ctx, apiCa, { node, token: tok.token, csr: csrs[i]! }));
      const [tDoc, served] = await timed(() => docs.membership(node));
      if (served.bytes.length === 0) throw new Error('empty document');
      enrollEnroll.push(tEnr);
      enrollServe.push(tDoc);
      enrollTotal.push(tAdd + tTok + tEnr + tDoc);
    }
    const enrollWall = (performance.now() - t1) / 1000;

    // Throughput with several nodes in flight, as the daemon sees it when a whole testbed swaps in
    // (WebCrypto work runs on libuv's thread pool while the event loop prepares the next node).
    process.stderr.write(`server export path, ${concurrency} in flight: ${count} nodes...\n`);
    const t2 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        for (let i = next++; i < count; i = next++) {
          await addNode(ctx, { node: `p${i}`, network: 'par' });
          await exportNode(ctx, key, `p${i}`, 'par', join(outDir, `p${i}.tar.gz`));
        }
      }),
    );
    const parallelWall = (performance.now() - t2) / 1000;

    // Bulk: the CLI's `node add N1 … Nk` and `export --all --out-dir` (one call each), then the same in calls of --batch.
    const bulkRun = async (network: string, size: number) => {
      const dirOut = join(outDir, network);
      await mkdir(dirOut);
      let add = 0;
      let exp = 0;
      for (let from = 0; from < count; from += size) {
        const ids = Array.from({ length: Math.min(size, count - from) }, (_, k) => `${network}${from + k}`);
        const [tA] = await timed(() => addNodes(ctx, ids.map((node) => ({ node, network }))));
        const [tE, rs] = await timed(() => exportNodes(ctx, key, ids.map((node) => ({ node, network, outFile: join(dirOut, `${node}.tar.gz`) }))));
        if (rs.length !== ids.length) throw new Error('short export');
        add += tA;
        exp += tE;
      }
      const wall = (add + exp) / 1000;
      return {
        batchSize: Math.min(size, count),
        calls: Math.ceil(count / size),
        addSeconds: Math.round(add) / 1000,
        exportSeconds: Math.round(exp) / 1000,
        wallSeconds: Math.round(wall * 1000) / 1000,
        perNodeMs: Math.round(((add + exp) / count) * 1000) / 1000,
        perSecond: Math.round((count / wall) * 10) / 10,
      };
    };
    process.stderr.write(`server bulk path: ${count} nodes in one node add + one export call...\n`);
    const bulkOne = await bulkRun('bulk', count);
    process.stderr.write(`server bulk path: ${count} nodes in calls of ${batch}...\n`);
    const bulkBatched = await bulkRun('bat', batch);
    ctx.close();

    process.stderr.write(`easy-rsa build-client-full (EC): ${sample} nodes...\n`);
    const easy: number[] = [];
    const genkey: number[] = [];
    const pkiDir = join(dir, 'easyrsa');
    await mkdir(pkiDir);
    const env = { ...process.env, EASYRSA_PKI: join(pkiDir, 'pki'), EASYRSA_BATCH: '1', EASYRSA_ALGO: 'ec', EASYRSA_CURVE: 'prime256v1' };
    const easyVersion = (await run(EASYRSA, ['--version'], { env })).stdout.match(/Version:\s*(\S+)/)?.[1] ?? 'unknown';
    await run(EASYRSA, ['init-pki'], { env, cwd: pkiDir });
    await run(EASYRSA, ['build-ca', 'nopass'], { env: { ...env, EASYRSA_REQ_CN: 'bench CA' }, cwd: pkiDir });
    await run('openvpn', ['--genkey', 'tls-crypt-v2-server', join(pkiDir, 'tc2-server.key')]);
    for (let i = 0; i < sample; i++) {
      const [t] = await timed(() => run(EASYRSA, ['build-client-full', `node${i}`, 'nopass'], { env, cwd: pkiDir }));
      easy.push(t);
      const [g] = await timed(() => run('openvpn', ['--tls-crypt-v2', join(pkiDir, 'tc2-server.key'), '--genkey', 'tls-crypt-v2-client', join(pkiDir, `c${i}.key`)]));
      genkey.push(g);
    }

    const exp = stats(exportTotal);
    const enr = stats(enrollTotal);
    const easyrsa = stats(easy);
    const easyPlus = stats(easy.map((t, i) => t + genkey[i]!));
    const ratio = (a: Stats, b: Stats) => Math.round((a.perSecond / b.perSecond) * 10) / 10;
    const result = {
      benchmark: 'server-issuance',
      date: new Date().toISOString(),
      machine: {
        node: process.version,
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model ?? 'unknown',
        easyrsa: easyVersion,
        openvpn: (await run('openvpn', ['--version']).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? '' }))).stdout.split('\n')[0],
      },
      params: { count, sample, keyType: 'ec-p256', sqliteSynchronous: 'FULL' },
      server: {
        exportPath: {
          perNode: exp,
          nodeAdd: stats(exportAdd),
          export: stats(exportExport),
          wallSeconds: Math.round(exportWall * 100) / 100,
          meanBundleBytes: Math.round(bundleBytes / count),
        },
        enrollPath: { perNode: enr, enroll: stats(enrollEnroll), membershipAndBundle: stats(enrollServe), wallSeconds: Math.round(enrollWall * 100) / 100 },
        exportPathConcurrent: { concurrency, wallSeconds: Math.round(parallelWall * 100) / 100, perSecond: Math.round((count / parallelWall) * 10) / 10 },
        bulk: { oneCall: bulkOne, batched: bulkBatched },
      },
      easyrsa: { buildClientFull: easyrsa, buildClientFullPlusOpenvpnGenkeyTlsCryptV2: easyPlus },
      ratios: {
        exportPathOverEasyrsa: ratio(exp, easyrsa),
        enrollPathOverEasyrsa: ratio(enr, easyrsa),
        exportPathOverEasyrsaPlusGenkey: ratio(exp, easyPlus),
        enrollPathOverEasyrsaPlusGenkey: ratio(enr, easyPlus),
        exportPathConcurrentOverEasyrsa: Math.round((count / parallelWall / easyrsa.perSecond) * 10) / 10,
        bulkOneCallOverEasyrsa: Math.round((bulkOne.perSecond / easyrsa.perSecond) * 10) / 10,
        bulkBatchedOverEasyrsa: Math.round((bulkBatched.perSecond / easyrsa.perSecond) * 10) / 10,
        bulkOneCallOverEasyrsaMedian: Math.round((easyrsa.medianMs / bulkOne.perNodeMs) * 10) / 10,
        bulkBatchedOverEasyrsaMedian: Math.round((easyrsa.medianMs / bulkBatched.perNodeMs) * 10) / 10,
      },
      // The target (≥ 50× easy-rsa's rate) for each way of issuing; the bulk path is what a swap-in uses.
      target: {
        ratio: 50,
        met: Math.round((bulkOne.perSecond / easyrsa.perSecond) * 10) / 10 >= 50,
        bulkOneCall: Math.round((bulkOne.perSecond / easyrsa.perSecond) * 10) / 10 >= 50,
        bulkBatched: Math.round((bulkBatched.perSecond / easyrsa.perSecond) * 10) / 10 >= 50,
        sequential: ratio(exp, easyrsa) >= 50 && ratio(enr, easyrsa) >= 50,
      },
    };
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, JSON.stringify(result, null, 2) + '\n');

    const line = (name: string, s: Stats) =>
      `${name.padEnd(52)} n=${String(s.n).padStart(5)}  median ${s.medianMs.toFixed(2).padStart(8)} ms  mean ${s.meanMs.toFixed(2).padStart(8)} ms  ${String(s.perSecond).padStart(8)}/s`;
    console.log(line('server export path (add + export, files written)', exp));
    console.log(line('  node add', result.server.exportPath.nodeAdd));
    console.log(line('  export', result.server.exportPath.export));
    console.log(line('server enroll path (add + token + enroll + serve)', enr));
    console.log(line('  enroll', result.server.enrollPath.enroll));
    console.log(line('  membership document + bundle', result.server.enrollPath.membershipAndBundle));
    console.log(line('easy-rsa build-client-full (EC)', easyrsa));
    console.log(line('easy-rsa + openvpn --genkey tls-crypt-v2-client', easyPlus));
    console.log(
      `ratio (rate): export ${result.ratios.exportPathOverEasyrsa}x, enroll ${result.ratios.enrollPathOverEasyrsa}x easy-rsa; ` +
        `vs easy-rsa + genkey: ${result.ratios.exportPathOverEasyrsaPlusGenkey}x / ${result.ratios.enrollPathOverEasyrsaPlusGenkey}x; target 50x sequential ${result.target.sequential ? 'met' : 'NOT met'}`,
    );
    const bulkLine = (what: string, b: typeof bulkOne, r: number) =>
      `${what.padEnd(52)} ${b.calls} call(s) of ${b.batchSize}: add ${b.addSeconds}s + export ${b.exportSeconds}s = ${b.perNodeMs} ms/node, ${b.perSecond}/s (${r}x easy-rsa, target 50x ${r >= 50 ? 'met' : 'NOT met'})`;
    console.log(bulkLine('server bulk path (node add N… + export --all)', bulkOne, result.ratios.bulkOneCallOverEasyrsa));
    console.log(bulkLine('server bulk path, batched', bulkBatched, result.ratios.bulkBatchedOverEasyrsa));
    console.log(
      `export path with ${concurrency} in flight: ${result.server.exportPathConcurrent.perSecond}/s (${result.ratios.exportPathConcurrentOverEasyrsa}x easy-rsa)`,
    );
    console.log(`wall: ${count} nodes export path ${result.server.exportPath.wallSeconds}s, enroll path ${result.server.enrollPath.wallSeconds}s; results in ${out}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
