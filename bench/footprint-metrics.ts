/**
 * The footprint bench's "metrics on" variant (issue 20): the same agent and
 * networks as the main (metrics off) run, started again with
 * `metrics_listen` on the node namespace's loopback, and scraped over it
 * every `scrapeEveryS` seconds (Prometheus' usual 15 s) by curl inside the
 * namespace during the same idle window. Reports RSS and CPU as the main
 * run does, READY time (prom-client is imported at start-up with the
 * listener on), and each scrape's wall time and size. Side by side with the
 * main run's figures, which are the metrics-off anchor.
 */
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import type { AgentWorld } from './lib/agent-world.ts';
import { sleep, stopProc, within } from './lib/env.ts';
import { round, summarize, type Summary } from './lib/stats.ts';
import { procStatusKb, procTimes } from './footprint.ts';
import type { Benchmark, SectionResult } from './lib/types.ts';

const exec = promisify(execFile);

export interface MetricsOnFootprint {
  readonly readyMs: number;
  readonly idleSeconds: number;
  readonly scrapeEverySeconds: number;
  readonly agentRssMiB: Summary;
  readonly agentPeakRssMiB: number;
  readonly agentCpuPercentOfOneCore: number;
  readonly scrapeMs: Summary;
  readonly scrapeBytes: number;
}

const LISTEN = '127.0.0.1:9475';

export async function metricsOnFootprint(w: AgentWorld, membership: string, count: number, idleS: number, clkTck: number, scrapeEveryS = 15): Promise<MetricsOnFootprint> {
  const dirs = await w.agentConfig('footprint-metrics', membership);
  const config = JSON.parse(await readFile(dirs.config, 'utf8')) as Record<string, unknown>;
  await writeFile(dirs.config, JSON.stringify({ ...config, metrics_listen: LISTEN }, null, 2));
  const { proc, readyMs } = await w.runAgent(dirs, count);
  const scrape = async (): Promise<{ ms: number; bytes: number }> => {
    const t0 = performance.now();
    const r = await w.node.exec('curl', ['-sf', '--max-time', '10', `http://${LISTEN}/metrics`]);
    return { ms: performance.now() - t0, bytes: Buffer.byteLength(r.stdout) };
  };
  try {
    await sleep(5_000);
    const first = await scrape();
    if (!first.bytes) throw new Error('the metrics listener answered with nothing');
    const rss: number[] = [];
    const scrapes: number[] = [];
    const c0 = await procTimes(proc.pid);
    const t0 = performance.now();
    let nextScrape = 0;
    while (performance.now() - t0 < idleS * 1000) {
      if (performance.now() - t0 >= nextScrape) {
        scrapes.push((await scrape()).ms);
        nextScrape += scrapeEveryS * 1000;
      }
      rss.push(await procStatusKb(proc.pid, 'VmRSS'));
      await sleep(1_000);
    }
    const c1 = await procTimes(proc.pid);
    const wallS = (performance.now() - t0) / 1000;
    return {
      readyMs: Math.round(readyMs),
      idleSeconds: round(wallS, 1),
      scrapeEverySeconds: scrapeEveryS,
      agentRssMiB: summarize(rss.map((k) => k / 1024), 1),
      agentPeakRssMiB: round((await procStatusKb(proc.pid, 'VmHWM')) / 1024, 1),
      agentCpuPercentOfOneCore: round(((c1.self - c0.self) / clkTck / wallS) * 100, 3),
      scrapeMs: summarize(scrapes, 1),
      scrapeBytes: first.bytes,
    };
  } finally {
    await stopProc(proc, 30_000);
    await within(w.waitNoTaps(), 30_000, 'footprint (metrics on) teardown');
  }
}

/** The report's lines for the variant, next to the metrics-off figures of the same run. */
function renderMetricsOn(m: MetricsOnFootprint, off: { agentRssMiB: Summary; agentCpuPercentOfOneCore: number }): string {
  return [
    '',
    `Metrics on (\`metrics_listen\` ${LISTEN}, scraped every ${m.scrapeEverySeconds} s during ${m.idleSeconds} s idle after a 5 s settle; the same networks as above), next to the metrics-off run above:`,
    '',
    '| what | metrics off | metrics on |',
    '|---|---:|---:|',
    `| agent RSS, 1 s samples: median (max) | ${off.agentRssMiB.median} (${off.agentRssMiB.max}) MiB | ${m.agentRssMiB.median} (${m.agentRssMiB.max}) MiB |`,
    `| agent peak RSS since start (VmHWM) | | ${m.agentPeakRssMiB} MiB |`,
    `| agent CPU (utime+stime), share of one core | ${off.agentCpuPercentOfOneCore}% | ${m.agentCpuPercentOfOneCore}% |`,
    `| READY after start (prom-client and the listener load at start-up) | | ${m.readyMs} ms |`,
    `| one scrape, curl in the namespace, wall time: median (max) of ${m.scrapeMs.n} | | ${m.scrapeMs.median} (${m.scrapeMs.max}) ms, ${m.scrapeBytes} bytes |`,
  ].join('\n');
}

/**
 * The footprint benchmark with the metrics-on variant after its own run (the
 * metrics-off agent is stopped by then: both use the same networks and tap
 * names). Kept outside footprint.ts so that file's measurements stay as they are.
 */
export function withMetricsOn(base: Benchmark): Benchmark {
  return {
    ...base,
    async run(ctx) {
      const r = await base.run(ctx);
      const w = await ctx.agentWorld();
      const clkTck = Number((await exec('getconf', ['CLK_TCK'])).stdout.trim()) || 100;
      ctx.log('footprint: metrics on (agent metrics_listen, scraped every 15 s)');
      const metricsOn = await metricsOnFootprint(w, await w.publish(ctx.maxNetworks), ctx.maxNetworks, ctx.quick ? 10 : 60, clkTck);
      return { ...r, data: { ...r.data, metricsOn } };
    },
    render(s: SectionResult): string {
      const m = s.data['metricsOn'] as MetricsOnFootprint | undefined;
      const off = s.data as { agentRssMiB: Summary; agentCpuPercentOfOneCore: number };
      return base.render(s) + (m === undefined ? '' : '\n' + renderMetricsOn(m, off));
    },
  };
}
