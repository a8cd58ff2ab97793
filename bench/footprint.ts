/**
 * Footprint: what the agent costs a node while nothing happens, and what its
 * command-line tools cost the person typing them.
 *
 * - Agent idle: `dist/mvpn-client run` with every network of the shared
 *   world connected (16 in a full run), left alone for 60 s after a 5 s
 *   settle. RSS = VmRSS from /proc/<pid>/status sampled every second (and
 *   VmHWM, the peak since start); CPU = utime+stime from /proc/<pid>/stat
 *   over the window, as a share of one core. Reaped children (the health
 *   check's `ip` runs) are reported separately (cutime+cstime), the openvpn
 *   processes' RSS for context.
 * - `mvpn-client status` (table) and `status --json` against that agent, and
 *   `--version`: wall time from spawn to exit, 20 runs each, sequential.
 *   Anchors in the same run: `openvpn --version` and the bare Node runtime
 *   the executable is built from (`node -e 0`).
 * - Sizes: the executable, its JavaScript bundle, the .deb and .rpm.
 */
import { execFile, spawn } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { withMetricsOn } from './footprint-metrics.ts';
import { agentStatus } from './lib/agent-world.ts';
import { BIN, NODE, OPENVPN, ROOT, sleep, stopProc, within } from './lib/env.ts';
import { fmtRange, round, summarize, type Summary } from './lib/stats.ts';
import { serverIdle, type ServerIdle } from './server-idle.ts';
import type { Benchmark, SectionResult } from './lib/types.ts';

const exec = promisify(execFile);

interface ProcTimes {
  readonly self: number;
  readonly children: number;
}

/** utime+stime and cutime+cstime in clock ticks (fields 14-17 of /proc/<pid>/stat, counted after the command name). */
export async function procTimes(pid: number): Promise<ProcTimes> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state); utime is field 14 → f[11]
  const n = (i: number): number => Number(f[i]);
  return { self: n(11) + n(12), children: n(13) + n(14) };
}

/** A 5 s settle, then VmRSS every second for `idleS` seconds and the CPU times at both ends. */
export async function idleWindow(pid: number, idleS: number): Promise<{ rss: number[]; c0: ProcTimes; c1: ProcTimes; wallS: number }> {
  await sleep(5_000);
  const rss: number[] = [];
  const c0 = await procTimes(pid);
  const t0 = performance.now();
  while (performance.now() - t0 < idleS * 1000) {
    rss.push(await procStatusKb(pid, 'VmRSS'));
    await sleep(1_000);
  }
  return { rss, c0, c1: await procTimes(pid), wallS: (performance.now() - t0) / 1000 };
}

export async function procStatusKb(pid: number, field: 'VmRSS' | 'VmHWM' | 'RssAnon' | 'RssFile'): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  if (!m) throw new Error(`no ${field} for pid ${pid}`);
  return Number(m[1]);
}

/** Wall time of one command from spawn to exit (host namespace: these talk to unix sockets only). */
function wall(cmd: string, args: readonly string[], okCodes: readonly number[] = [0]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, [...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      const ms = performance.now() - t0;
      if (!okCodes.includes(code ?? -1)) reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}`));
      else resolve(ms);
    });
  });
}

async function timeRuns(runs: number, cmd: string, args: readonly string[], okCodes?: readonly number[]): Promise<Summary> {
  await wall(cmd, args, okCodes); // page cache
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) samples.push(await wall(cmd, args, okCodes));
  return summarize(samples, 1);
}

/** Peak RSS of a short command in kB (GNU time's %M). */
async function peakRssKb(cmd: string, args: readonly string[]): Promise<number | undefined> {
  try {
    const r = await exec('/usr/bin/time', ['-f', '%M', cmd, ...args]).catch((e: { stderr?: string }) => ({ stderr: e.stderr ?? '' }));
    const last = r.stderr.trim().split('\n').at(-1) ?? '';
    return /^\d+$/.test(last) ? Number(last) : undefined;
  } catch {
    return undefined;
  }
}

async function sizeOf(path: string): Promise<number | null> {
  return stat(path).then(
    (s) => s.size,
    () => null,
  );
}

async function findPackage(ext: string): Promise<number | null> {
  const f = (await readdir(join(ROOT, 'dist')).catch(() => [] as string[])).find((n) => n.endsWith(ext));
  return f ? sizeOf(join(ROOT, 'dist', f)) : null;
}

const metricsOffBench: Benchmark = {
  name: 'footprint',
  describe: 'agent RSS and CPU over 60 s idle with 16 networks; status / --version wall time; binary size',
  async run(ctx) {
    const w = await ctx.agentWorld();
    const count = ctx.maxNetworks;
    const idleS = ctx.quick ? 10 : 60;
    const runs = ctx.quick ? 5 : 20;
    const clkTck = Number((await exec('getconf', ['CLK_TCK'])).stdout.trim()) || 100;
    const dirs = await w.agentConfig('footprint', await w.publish(count));
    const { proc, readyMs } = await w.runAgent(dirs, count);
    let agentPart: Awaited<ReturnType<Benchmark['run']>>;
    try {
      ctx.log(`footprint: agent with ${count} networks ready in ${Math.round(readyMs)} ms; settling 5 s, then ${idleS} s idle`);
      const { rss, c0, c1, wallS } = await idleWindow(proc.pid, idleS);
      const hwmKb = await procStatusKb(proc.pid, 'VmHWM');
      // File-backed pages are the executable's own (shared, reclaimable); anonymous ones are the heap.
      const anonKb = await procStatusKb(proc.pid, 'RssAnon');
      const fileKb = await procStatusKb(proc.pid, 'RssFile');
      const cpuPct = round(((c1.self - c0.self) / clkTck / wallS) * 100, 3);
      const childPct = round(((c1.children - c0.children) / clkTck / wallS) * 100, 3);
      const status = await agentStatus(dirs.runtimeDir);
      let openvpnKb = 0;
      for (const n of status.networks) if (n.pid !== null) openvpnKb += await procStatusKb(n.pid, 'VmRSS').catch(() => 0);

      ctx.log('footprint: status / --version wall times');
      const statusTable = await timeRuns(runs, BIN, ['status', '--runtime-dir', dirs.runtimeDir]);
      const statusJson = await timeRuns(runs, BIN, ['status', '--json', '--runtime-dir', dirs.runtimeDir]);
      const version = await timeRuns(runs, BIN, ['--version']);
      const openvpnVersion = await timeRuns(runs, OPENVPN, ['--version'], [0, 1]);
      const nodeFloor = await timeRuns(runs, NODE, ['-e', '0']);
      const statusPeakKb = await peakRssKb(BIN, ['status', '--runtime-dir', dirs.runtimeDir]);
      const rssS = summarize(rss.map((k) => k / 1024), 1);
      const data = {
        networks: count,
        idleSeconds: round(wallS, 1),
        agentRssMiB: rssS,
        agentPeakRssMiB: round(hwmKb / 1024, 1),
        agentRssAnonMiB: round(anonKb / 1024, 1),
        agentRssFileMiB: round(fileKb / 1024, 1),
        agentCpuPercentOfOneCore: cpuPct,
        reapedChildrenCpuPercentOfOneCore: childPct,
        openvpnRssMiBTotal: round(openvpnKb / 1024, 1),
        openvpnRssMiBEach: round(openvpnKb / 1024 / Math.max(1, status.networks.length), 1),
        statusMs: statusTable,
        statusJsonMs: statusJson,
        versionMs: version,
        openvpnVersionMs: openvpnVersion,
        nodeRuntimeFloorMs: nodeFloor,
        statusPeakRssMiB: statusPeakKb === undefined ? null : round(statusPeakKb / 1024, 1),
        sizes: {
          executable: await sizeOf(BIN),
          jsBundle: await sizeOf(join(ROOT, 'build/mvpn-client.cjs')),
          agentBundle: await sizeOf(join(ROOT, 'build/mvpn-agent.cjs')),
          deb: await findPackage('.deb'),
          rpm: await findPackage('.rpm'),
          openvpn: await sizeOf(OPENVPN),
        },
      };
      agentPart = {
        // Issue 14's targets; the command times against `node -e 0` of the same runtime, same run.
        targets: [
          {
            what: `agent RSS, idle with ${count} networks (max of 1 s samples)`,
            goal: '≤ 60 MB',
            measured: `${round(rssS.max * 1.048576, 1)} MB (${rssS.max} MiB)`,
            met: rssS.max * 1.048576 <= 60,
          },
          { what: 'agent anonymous RSS at the end of the idle window', goal: '≤ 25 MB', measured: `${round((anonKb / 1024) * 1.048576, 1)} MB`, met: (anonKb / 1024) * 1.048576 <= 25 },
          {
            what: `agent CPU, idle with ${count} networks, ${Math.round(wallS)} s, including its children`,
            goal: '≤ 0.3% of one core',
            measured: `${round(cpuPct + childPct, 3)}% (agent ${cpuPct}%, children ${childPct}%)`,
            met: cpuPct + childPct <= 0.3,
          },
          {
            what: '`mvpn-client status` wall time / `node -e 0` (medians)',
            goal: '≤ 1.5×',
            measured: `${round(statusTable.median / nodeFloor.median, 2)}× (${statusTable.median} / ${nodeFloor.median} ms)`,
            met: statusTable.median <= 1.5 * nodeFloor.median,
          },
          {
            what: '`mvpn-client --version` wall time / `node -e 0` (medians)',
            goal: '≤ 1.3×',
            measured: `${round(version.median / nodeFloor.median, 2)}× (${version.median} / ${nodeFloor.median} ms)`,
            met: version.median <= 1.3 * nodeFloor.median,
          },
        ],
        data,
      };
    } finally {
      await stopProc(proc, 30_000);
      await within(w.waitNoTaps(), 30_000, 'footprint teardown');
    }
    // The server daemon idle (no target yet), after the agent has gone: 16 and 100 networks up, no nodes.
    const serverIdles: ServerIdle[] = [];
    for (const n of ctx.quick ? [4] : [16, 100]) serverIdles.push(await serverIdle(ctx, n, idleS, clkTck));
    return { targets: agentPart.targets, data: { ...agentPart.data, serverIdle: serverIdles } };
  },
  render(s: SectionResult): string {
    const d = s.data as {
      networks: number;
      idleSeconds: number;
      agentRssMiB: Summary;
      agentPeakRssMiB: number;
      agentRssAnonMiB?: number;
      agentRssFileMiB?: number;
      agentCpuPercentOfOneCore: number;
      reapedChildrenCpuPercentOfOneCore: number;
      openvpnRssMiBTotal: number;
      openvpnRssMiBEach: number;
      statusMs: Summary;
      statusJsonMs: Summary;
      versionMs: Summary;
      openvpnVersionMs: Summary;
      nodeRuntimeFloorMs: Summary;
      statusPeakRssMiB: number | null;
      sizes: Record<string, number | null>;
      serverIdle?: ServerIdle[];
    };
    const mib = (b: number | null | undefined): string => (b == null ? 'n/a' : `${(b / 2 ** 20).toFixed(1)} MiB`);
    return [
      `Agent idle with ${d.networks} networks connected, ${d.idleSeconds} s after a 5 s settle:`,
      '',
      '| what | measured |',
      '|---|---:|',
      `| agent RSS, 1 s samples: median (min–max) | ${fmtRange(d.agentRssMiB, ' MiB', 1)} |`,
      `| agent peak RSS since start (VmHWM) | ${d.agentPeakRssMiB} MiB |`,
      `| of the RSS at the end: anonymous (heap) / file-backed (the executable's pages) | ${d.agentRssAnonMiB ?? 'n/a'} / ${d.agentRssFileMiB ?? 'n/a'} MiB |`,
      `| agent CPU (utime+stime), share of one core | ${d.agentCpuPercentOfOneCore}% |`,
      `| its reaped children (e.g. \`ip\`, systemd-notify), share of one core | ${d.reapedChildrenCpuPercentOfOneCore}% |`,
      `| the ${d.networks} openvpn clients' RSS, total (each) | ${d.openvpnRssMiBTotal} MiB (${d.openvpnRssMiBEach}) |`,
      '',
      `Command wall time, spawn to exit, median (min–max) of ${d.statusMs.n}:`,
      '',
      '| command | ms |',
      '|---|---:|',
      `| \`mvpn-client status\` (${d.networks} networks) | ${fmtRange(d.statusMs, '', 1)} |`,
      `| \`mvpn-client status --json\` | ${fmtRange(d.statusJsonMs, '', 1)} |`,
      `| \`mvpn-client --version\` | ${fmtRange(d.versionMs, '', 1)} |`,
      `| anchor: \`openvpn --version\` | ${fmtRange(d.openvpnVersionMs, '', 1)} |`,
      `| anchor: the Node runtime alone, \`node -e 0\` | ${fmtRange(d.nodeRuntimeFloorMs, '', 1)} |`,
      '',
      `Peak RSS of one \`status\`: ${d.statusPeakRssMiB ?? 'n/a'} MiB. Sizes: executable ${mib(d.sizes['executable'])} (its JavaScript: the CLI bundle ${mib(d.sizes['jsBundle'])}, the agent's own ${mib(d.sizes['agentBundle'])}), .deb ${mib(d.sizes['deb'])}, .rpm ${mib(d.sizes['rpm'])}; for comparison /usr/sbin/openvpn ${mib(d.sizes['openvpn'])} (plus shared libraries).`,
      ...(d.serverIdle === undefined || d.serverIdle.length === 0
        ? []
        : [
            '',
            `Server daemon (\`server run\`) idle with N networks up (one openvpn server each, no nodes), ${d.serverIdle[0]!.idleSeconds} s after a 5 s settle:`,
            '',
            '| networks | READY=1 after | RSS median (min–max) | anonymous / file-backed at the end | CPU, share of one core | reaped children | live children (openvpn servers), their RSS total |',
            '|---:|---:|---:|---:|---:|---:|---:|',
            ...d.serverIdle.map(
              (x) =>
                `| ${x.networks} | ${x.readyMs} ms | ${fmtRange(x.rssMiB, ' MiB', 1)} | ${x.rssAnonMiB} / ${x.rssFileMiB} MiB | ${x.cpuPercentOfOneCore}% | ${x.reapedChildrenCpuPercentOfOneCore}% | ${x.children}, ${x.openvpnRssMiBTotal} MiB |`,
            ),
          ]),
    ].join('\n');
  },
};

/** With the metrics-on variant (bench/footprint-metrics.ts) after the main run. */
export const footprintBench: Benchmark = withMetricsOn(metricsOffBench);
