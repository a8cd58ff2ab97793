/**
 * Issuance: runs bench/server-issuance.ts (the server mode's own code path,
 * 1,000 nodes, against easy-rsa `build-client-full` with EC keys in the same
 * run) as a child process and puts its figures into the table. See that file
 * for what exactly is timed.
 *
 * Two target rows: the bulk path (`node add N…` + `export --all`, what a
 * testbed swap-in runs) and one node at a time (export and enrollment,
 * which nodes that enroll themselves always are).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NODE, ROOT, within } from './lib/env.ts';
import type { Benchmark, SectionResult } from './lib/types.ts';

interface Stats {
  n: number;
  medianMs: number;
  meanMs: number;
  minMs: number;
  maxMs: number;
  perSecond: number;
}

interface Bulk {
  batchSize: number;
  calls: number;
  addSeconds: number;
  exportSeconds: number;
  wallSeconds: number;
  perNodeMs: number;
  perSecond: number;
}

interface IssuanceResult {
  params: { count: number; sample: number };
  machine: { easyrsa: string };
  server: {
    exportPath: { perNode: Stats; nodeAdd: Stats; export: Stats; wallSeconds: number; meanBundleBytes: number };
    enrollPath: { perNode: Stats; enroll: Stats; membershipAndBundle: Stats; wallSeconds: number };
    exportPathConcurrent: { concurrency: number; wallSeconds: number; perSecond: number };
    /** Absent in results from before the bulk path existed. */
    bulk?: { oneCall: Bulk; batched: Bulk };
  };
  easyrsa: { buildClientFull: Stats; buildClientFullPlusOpenvpnGenkeyTlsCryptV2: Stats };
  ratios: {
    exportPathOverEasyrsa: number;
    enrollPathOverEasyrsa: number;
    exportPathOverEasyrsaPlusGenkey: number;
    enrollPathOverEasyrsaPlusGenkey: number;
    exportPathConcurrentOverEasyrsa: number;
    bulkOneCallOverEasyrsa?: number;
    bulkBatchedOverEasyrsa?: number;
    bulkOneCallOverEasyrsaMedian?: number;
    bulkBatchedOverEasyrsaMedian?: number;
  };
}

function medianRatios(r: IssuanceResult): { export: number; enroll: number } {
  const e = r.easyrsa.buildClientFull.medianMs;
  return { export: Math.round((e / r.server.exportPath.perNode.medianMs) * 10) / 10, enroll: Math.round((e / r.server.enrollPath.perNode.medianMs) * 10) / 10 };
}

export const issuanceBench: Benchmark = {
  name: 'issuance',
  describe: 'certificates + bundles for 1,000 nodes through the server mode vs easy-rsa build-client-full (EC)',
  async run(ctx) {
    const dir = await ctx.env.tmpDir('issuance');
    const out = join(dir, 'server-issuance.json');
    const count = ctx.quick ? 100 : 1000;
    const sample = ctx.quick ? 5 : 20;
    const args = ['--count', String(count), '--sample', String(sample), '--concurrency', '8', '--batch', String(ctx.quick ? 25 : 100), '--out', out];
    const p = ctx.env.spawnHost(NODE, [join(ROOT, 'bench/server-issuance.ts'), ...args], { cwd: ROOT });
    const exit = await within(p.exited, 15 * 60_000, 'bench/server-issuance.ts');
    if (exit.code !== 0) throw new Error(`bench/server-issuance.ts exited ${exit.code ?? exit.signal}:\n${p.out.toString().slice(-4000)}`);
    const r = JSON.parse(await readFile(out, 'utf8')) as IssuanceResult;
    // Per node, medians (as every table here): a few slow outliers on the shared machine pull the means, which the
    // script's own rate ratios use; both are shown.
    const med = medianRatios(r);
    const worst = Math.min(med.export, med.enroll);
    const bulk = r.server.bulk!;
    const bulkRatio = r.ratios.bulkOneCallOverEasyrsa!;
    return {
      targets: [
        {
          what: `certificates + bundles for ${count} nodes, bulk path (\`node add\` of all + \`export --all\`, one call each, files written) vs easy-rsa build-client-full EC (rates; easy-rsa from its mean)`,
          goal: '≥ 50×',
          measured: `${bulkRatio}× (${bulk.oneCall.perSecond} vs ${r.easyrsa.buildClientFull.perSecond} nodes/s; ${r.ratios.bulkBatchedOverEasyrsa}× in calls of ${bulk.batched.batchSize}; against easy-rsa's median ${r.ratios.bulkOneCallOverEasyrsaMedian}× / ${r.ratios.bulkBatchedOverEasyrsaMedian}×)`,
          met: bulkRatio >= 50,
        },
        {
          what: `certificates + bundles for ${count} nodes one at a time, server mode vs easy-rsa build-client-full EC (per node, medians, sequential; worse of export and enrollment paths)`,
          goal: '≥ 50×',
          measured: `${worst}× (export ${med.export}×, enrollment ${med.enroll}×; from means ${r.ratios.exportPathOverEasyrsa}× / ${r.ratios.enrollPathOverEasyrsa}×; ${r.ratios.exportPathConcurrentOverEasyrsa}× with ${r.server.exportPathConcurrent.concurrency} in flight)`,
          met: worst >= 50,
        },
      ],
      data: r as unknown as Record<string, unknown>,
    };
  },
  render(s: SectionResult): string {
    const r = s.data as unknown as IssuanceResult;
    const bulk = r.server.bulk;
    const bulkRow = (what: string, b: Bulk, ratio: number | undefined): string =>
      `| ${what} | ${b.calls} × ${b.batchSize} | ${b.addSeconds} + ${b.exportSeconds} s | ${b.perNodeMs.toFixed(2)} | ${b.perSecond} | ${ratio}× |`;
    const row = (what: string, st: Stats): string => `| ${what} | ${st.n} | ${st.medianMs.toFixed(2)} (${st.minMs.toFixed(2)}–${st.maxMs.toFixed(2)}) | ${st.meanMs.toFixed(2)} | ${st.perSecond} |`;
    return [
      `bench/server-issuance.ts: ${r.params.count} nodes through the server mode's own functions on a real state directory (SQLite, synchronous=FULL), easy-rsa ${r.machine.easyrsa} for a sample of ${r.params.sample}. Per node, milliseconds.`,
      '',
      '| path | n | median (min–max) | mean | nodes/s |',
      '|---|---:|---:|---:|---:|',
      row('server: node add + export (central EC key, certificate, bundle, signed document, files written)', r.server.exportPath.perNode),
      row('  of which node add', r.server.exportPath.nodeAdd),
      row('  of which export', r.server.exportPath.export),
      row('server: node add + token + enrollment (CSR) + document and bundle as served', r.server.enrollPath.perNode),
      row('  of which enrollment', r.server.enrollPath.enroll),
      row('  of which document + bundle build', r.server.enrollPath.membershipAndBundle),
      row('easy-rsa build-client-full (EC prime256v1)', r.easyrsa.buildClientFull),
      row('easy-rsa + openvpn --genkey tls-crypt-v2-client', r.easyrsa.buildClientFullPlusOpenvpnGenkeyTlsCryptV2),
      '',
      `Ratio of medians: export path ${medianRatios(r).export}×, enrollment path ${medianRatios(r).enroll}× easy-rsa. ` +
        `Ratio of rates (from means): export path ${r.ratios.exportPathOverEasyrsa}×, enrollment path ${r.ratios.enrollPathOverEasyrsa}× easy-rsa ` +
        `(${r.ratios.exportPathOverEasyrsaPlusGenkey}× / ${r.ratios.enrollPathOverEasyrsaPlusGenkey}× against easy-rsa plus the tls-crypt-v2 key a node also needs). ` +
        `With ${r.server.exportPathConcurrent.concurrency} nodes in flight the export path makes ${r.server.exportPathConcurrent.perSecond} nodes/s (${r.ratios.exportPathConcurrentOverEasyrsa}×). ` +
        `Wall time for ${r.params.count} nodes: export ${r.server.exportPath.wallSeconds} s, enrollment ${r.server.enrollPath.wallSeconds} s.`,
      ...(bulk
        ? [
            '',
            `Bulk path, the same ${r.params.count} nodes: \`server node add N1 … Nk --network X\` then \`server export --all --network X --out-dir D\` (addNodes + exportNodes: one transaction per call, one CRL per network, every file synced, one directory fsync), nodes per second over the wall time of both calls, against easy-rsa's rate in this run.`,
            '',
            '| path | calls × nodes | node add + export | ms per node | nodes/s | × easy-rsa |',
            '|---|---:|---:|---:|---:|---:|',
            bulkRow('server bulk: all nodes in one call each', bulk.oneCall, r.ratios.bulkOneCallOverEasyrsa),
            bulkRow(`server bulk: calls of ${bulk.batched.batchSize}`, bulk.batched, r.ratios.bulkBatchedOverEasyrsa),
          ]
        : []),
    ].join('\n');
  },
};
