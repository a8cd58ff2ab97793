/**
 * Data plane: how fast the experiment LAN is, against its anchors in the same
 * run (issue 13). On the routed underlay of test/helpers/lan-lab.ts (the one
 * the lan-mtu tests prove), per path-MTU case:
 *
 * - underlay: iperf3/ping between the namespaces' underlay addresses;
 * - ours: the configs mvpn renders (fragment 1280 + mssfix, fast-io, txqueuelen 1000, AES-256-GCM);
 * - before: the rendering before issue 13 (no fragment/mssfix), the cost anchor at path MTU 1500;
 * - tuned-*: hand-tuned bare openvpn variants on top of ours (see VARIANTS).
 *
 * Each: TCP node→node (1 and 4 streams) and node→server (1 stream), 1472-byte
 * UDP node→node at a fixed 50 Mbit/s with loss, ping RTT p50/p99 (100 pings
 * of 56 bytes, 20 ms apart). Every iperf3 run lasts 3 s; node→node goes
 * through the server (client-to-client), as on a real LAN.
 */
import { readFile } from 'node:fs/promises';
import { dfPing, iperf, PATH_CASES, startLan, type LanOptions, type Member, type PathCase } from '../test/helpers/lan-lab.ts';
import { fmtRange, summarize } from './lib/stats.ts';
import type { Benchmark, SectionResult, Target } from './lib/types.ts';

interface Row {
  readonly pathCase: string;
  readonly variant: string;
  /** Samples, one per round (rounds interleave the variants of a case). */
  readonly tcp1: number[];
  readonly tcp4: number | null;
  readonly tcpServer: number | null;
  /** 1472-byte UDP at 50 Mbit/s, one sample per round. */
  readonly udpLossPct: number[];
  readonly rttP50: number | null;
  readonly rttP99: number | null;
  readonly df1472: string;
  /** During each 1-stream run: the server's openvpn CPU (% of one core), the sender's underlay datagrams per second and their mean size. */
  readonly serverCpu: number[];
  /** The sending and the receiving node's openvpn CPU the same way. */
  readonly nodeCpu: number[];
  readonly pps: number[];
  readonly bytesPerPacket: number[];
  /** UDP receive-buffer overflows (UdpRcvbufErrors) over the 1-stream runs: server, sending node, receiving node. */
  readonly rcvbufErrors: [number, number, number];
}

const FLAT: PathCase = { name: 'path MTU 1500', nodeMtus: [1500, 1500], serverMtu: 1500, middleMtu: 1500, blackHole: false };
const CASES: Record<string, PathCase> = {
  flat: FLAT,
  node1280: { ...PATH_CASES[0]!, name: 'node underlay 1280 (no ICMP)', nodeMtus: [1280, 1280] },
  server1280: PATH_CASES[1]!,
  blackhole1280: PATH_CASES[2]!,
};

const NO_FRAGMENT: LanOptions = { spec: { mtu: undefined, fragment: undefined }, server: { dataPlane: {} } };

/** Candidates: raw lines on top of ours (openvpn applies the last of a repeated option). */
const VARIANTS: Record<string, { readonly describe: string; readonly o: LanOptions }> = {
  ours: { describe: 'the configs mvpn renders', o: {} },
  before: { describe: 'ours without fragment and mssfix (the MTU handling before issue 13, openvpn\'s default `mssfix 1492 mtu`, so also `mssfix` alone at a 1500 path): the cost anchor', o: NO_FRAGMENT },
  'os-bufs': { describe: 'ours with the kernel\'s default socket buffers (`sndbuf 0`, `rcvbuf 0`: what ours rendered before SOCKET_BUFFER)', o: { extraLines: ['sndbuf 0', 'rcvbuf 0'] } },
  'mss-only': { describe: 'ours without `fragment`, keeping `mssfix 1280 mtu`: splits the cost into the clamp and the fragment layer', o: { ...NO_FRAGMENT, extraLines: ['mssfix 1280 mtu'] } },
  'frag-1500': { describe: 'ours with the network\'s fragment at 1500 (`network update --fragment 1500`, a fragment size chosen for the network from its paths\' MTU: openvpn fragments only what a 1500-byte path cannot carry)', o: { spec: { fragment: 1500 }, server: { dataPlane: { mtu: 1500, fragment: 1500 } } } },
  'node-probe': { describe: 'nodes fragment and clamp at their probed path MTU (1500), the server keeps fragment 1280 with `mssfix 1500 mtu`', o: { extraLines: ['fragment 1500 mtu', 'mssfix 1500 mtu'], serverLines: ['fragment 1280 mtu'] } },
  'tuned-txq': { describe: 'ours + txqueuelen 5000', o: { extraLines: ['txqueuelen 5000'] } },
  'tuned-bufs8m': { describe: 'ours + sndbuf/rcvbuf 8 MB (capped by net.core.[rw]mem_max)', o: { extraLines: ['sndbuf 8388608', 'rcvbuf 8388608'] } },
  'tuned-chacha': { describe: 'ours with CHACHA20-POLY1305', o: { spec: { ciphers: ['CHACHA20-POLY1305'] }, server: { ciphers: ['CHACHA20-POLY1305'] } } },
  'tuned-jumbo': { describe: 'tun-mtu 1500, no fragment, mssfix 0, mtu-disc no (kernel IP fragmentation; 1500 paths only)', o: { ...NO_FRAGMENT, extraLines: ['mssfix 0', 'mtu-disc no'] } },
};

/** Which variants run on which case, and how many interleaved rounds. */
const PLAN: readonly [string, readonly string[], number][] = [
  ['flat', ['ours', 'before', 'mss-only', 'frag-1500', 'tuned-txq', 'tuned-bufs8m', 'tuned-chacha', 'tuned-jumbo'], 7],
  ['node1280', ['ours'], 3],
  ['server1280', ['ours'], 3],
  ['blackhole1280', ['ours', 'before'], 3],
];
const QUICK_PLAN: readonly [string, readonly string[], number][] = [
  ['flat', ['ours', 'before'], 1],
  ['blackhole1280', ['ours'], 1],
];

interface IperfEnd {
  end?: { sum_received?: { bits_per_second?: number }; sum?: { lost_percent?: number; packets?: number } };
}

async function mbit(a: Member, b: Member, args: readonly string[], to?: string): Promise<number | null> {
  const r = await iperf(a, b, ['-t', '3', ...args], 30_000, to);
  const bps = (r.report as IperfEnd).end?.sum_received?.bits_per_second;
  return r.ok && bps !== undefined ? Math.round(bps / 1e6) : null;
}

async function udpLoss(a: Member, b: Member, to?: string): Promise<number | null> {
  const r = await iperf(a, b, ['-u', '-l', '1472', '-b', '50M', '-t', '3'], 30_000, to);
  const s = (r.report as IperfEnd).end?.sum;
  return r.ok && s?.lost_percent !== undefined ? Math.round(s.lost_percent * 100) / 100 : null;
}

async function rtt(a: Member, to: string): Promise<[number | null, number | null]> {
  const r = await a.ns.exec('ping', ['-n', '-c', '100', '-i', '0.02', '-W', '2', to], { allowFail: true, timeoutMs: 30_000 });
  const ms = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((x, y) => x - y);
  if (ms.length === 0) return [null, null];
  const q = (p: number): number => Math.round(ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]! * 1000) / 1000;
  return [q(0.5), q(0.99)];
}

/** utime+stime of a process in clock ticks (USER_HZ, 100 on Linux). */
async function cpuTicks(pid: number | undefined): Promise<number> {
  if (pid === undefined) return NaN;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

/** The transmit counters of `dev` in a member's namespace: [packets, bytes]. */
async function txCounters(m: Member, dev: string): Promise<[number, number]> {
  const r = await m.ns.exec('cat', ['/proc/net/dev']);
  const f = r.stdout.split('\n').find((l) => l.trim().startsWith(`${dev}:`))?.split(':')[1]?.trim().split(/\s+/) ?? [];
  return [Number(f[9]), Number(f[8])];
}

async function rcvbufErrors(m: Member): Promise<number> {
  const lines = (await m.ns.exec('cat', ['/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Udp:'));
  const i = lines[0]?.split(/\s+/).indexOf('RcvbufErrors') ?? -1;
  return i < 0 ? 0 : Number(lines[1]?.split(/\s+/)[i] ?? 0);
}

/** The figures sampleTcp reads before and after a run. */
async function probe(c: Cell): Promise<{ cpu: [number, number, number]; tx: [number, number]; errs: [number, number, number] }> {
  return {
    cpu: [await cpuTicks(c.srv.pid), await cpuTicks(c.n1.pid), await cpuTicks(c.n2.pid)],
    tx: await txCounters(c.n1, 'eth0'),
    errs: [await rcvbufErrors(c.srv), await rcvbufErrors(c.n1), await rcvbufErrors(c.n2)],
  };
}

interface Cell {
  readonly row: Row;
  readonly n1: Member;
  readonly n2: Member;
  readonly srv: Member;
  readonly underlay: boolean;
}

/** One interleaved round's samples for a cell: TCP 1 stream (with the CPU/packet probe) and the UDP loss. */
async function sampleTcp(c: Cell): Promise<void> {
  const to = c.underlay ? c.n2.underlayIp : undefined;
  const t0 = performance.now();
  const p0 = await probe(c);
  const tcp1 = await mbit(c.n1, c.n2, [], to);
  const p1 = await probe(c);
  const s = (performance.now() - t0) / 1000;
  if (tcp1 !== null) c.row.tcp1.push(tcp1);
  if (!c.underlay) {
    c.row.serverCpu.push(Math.round((p1.cpu[0] - p0.cpu[0]) / s));
    c.row.nodeCpu.push(Math.round((p1.cpu[1] - p0.cpu[1]) / s), Math.round((p1.cpu[2] - p0.cpu[2]) / s));
  }
  c.row.pps.push(Math.round((p1.tx[0] - p0.tx[0]) / s));
  c.row.bytesPerPacket.push(Math.round((p1.tx[1] - p0.tx[1]) / Math.max(1, p1.tx[0] - p0.tx[0])));
  for (const i of [0, 1, 2]) c.row.rcvbufErrors[i]! += p1.errs[i]! - p0.errs[i]!;
  const loss = await udpLoss(c.n1, c.n2, to);
  if (loss !== null) c.row.udpLossPct.push(loss);
}

/** The once-per-cell figures: RTT, DF pings, TCP with 4 streams and to the server. */
async function measureOnce(pathCase: string, variant: string, n1: Member, n2: Member, srv: Member, underlay: boolean): Promise<Row> {
  const to = underlay ? n2.underlayIp : undefined;
  const [rttP50, rttP99] = await rtt(n1, to ?? n2.tunnelIp);
  const df = underlay ? '-' : `${await dfPing(n1, n2)}/3`;
  return {
    pathCase,
    variant,
    tcp1: [],
    tcp4: await mbit(n1, n2, ['-P', '4'], to),
    tcpServer: await mbit(n1, srv, [], underlay ? srv.underlayIp : undefined),
    udpLossPct: [],
    rttP50,
    rttP99,
    df1472: df,
    serverCpu: [],
    nodeCpu: [],
    pps: [],
    bytesPerPacket: [],
    rcvbufErrors: [0, 0, 0],
  };
}

const median = (xs: readonly number[]): number | null => (xs.length === 0 ? null : summarize(xs).median);
/** "0% (0–0.2%, n=5)": the median loss with its spread. */
const lossText = (xs: readonly number[]): string => (xs.length === 0 ? 'n/a' : `${fmtRange(summarize(xs), '%', 2)}, n=${xs.length}`);

export const dataplaneBench: Benchmark = {
  name: 'dataplane',
  describe: 'LAN throughput/loss/latency per path-MTU case vs the underlay, the pre-fix rendering and hand-tuned openvpn',
  async run(ctx) {
    const rows: Row[] = [];
    for (const [key, variants, rounds] of ctx.quick ? QUICK_PLAN : PLAN) {
      // Every variant of a case up at once (own namespaces each), then measured in turns, so each round compares them within a minute.
      const cells: Cell[] = [];
      const labs = variants.map(() => ctx.env.lab());
      try {
        for (const [i, variant] of variants.entries()) {
          ctx.log(`dataplane: ${key} / ${variant} starting`);
          const lan = await startLan(labs[i]!, await ctx.env.tmpDir(`dp-${key}`), CASES[key]!, VARIANTS[variant]!.o);
          const [n1, n2] = lan.nodes as [Member, Member];
          await dfPing(n1, n2, 56, 1);
          const base = { n1, n2, srv: lan.server };
          if (key === 'flat' && variant === 'ours') {
            // The underlay once, outside the rounds: a 12 Gbit/s run just before a variant's would weigh on that variant alone.
            const underlay: Cell = { ...base, underlay: true, row: await measureOnce(CASES[key]!.name, 'underlay', n1, n2, lan.server, true) };
            await sampleTcp(underlay);
            rows.push(underlay.row);
          }
          cells.push({ ...base, underlay: false, row: await measureOnce(CASES[key]!.name, variant, n1, n2, lan.server, false) });
        }
        for (let r = 0; r < rounds; r++) {
          ctx.log(`dataplane: ${key} round ${r + 1}/${rounds}`);
          for (let k = 0; k < cells.length; k++) await sampleTcp(cells[(k + r) % cells.length]!);
        }
      } finally {
        for (const lab of labs) await lab.destroy();
      }
      rows.push(...cells.map((c) => c.row));
    }
    const get = (c: string, v: string): Row | undefined => rows.find((r) => r.pathCase === c && r.variant === v);
    const ours = get(FLAT.name, 'ours');
    const oursTcp = median(ours?.tcp1 ?? []);
    // The hand-tuned anchors that still carry full frames over a black hole (tuned-jumbo does not: shown, not the target's anchor).
    const tuned = rows.filter((r) => r.pathCase === FLAT.name && r.variant.startsWith('tuned-') && r.variant !== 'tuned-jumbo');
    const best = tuned.reduce<Row | undefined>((b, r) => ((median(r.tcp1) ?? 0) > (median(b?.tcp1 ?? []) ?? 0) ? r : b), undefined);
    const bestTcp = median(best?.tcp1 ?? []);
    const beforeTcp = median(get(FLAT.name, 'before')?.tcp1 ?? []);
    const frag1500Tcp = median(get(FLAT.name, 'frag-1500')?.tcp1 ?? []);
    const cost = (t: number | null): string => (t && beforeTcp ? `${Math.round((1 - t / beforeTcp) * 100)}%` : 'n/a');
    const oursRows = rows.filter((r) => r.variant === 'ours');
    const pct = (a: number | null, b: number | null): string => (a && b ? `${Math.round((a / b) * 100)}%` : 'n/a');
    const targets: Target[] = [
      {
        what: 'node→node TCP (1 stream, medians of interleaved runs), ours vs the best hand-tuned bare openvpn that keeps full frames, path MTU 1500',
        goal: '≥ 95%',
        measured: `${pct(oursTcp, bestTcp)} (${oursTcp ?? '?'} vs ${bestTcp ?? '?'} Mbit/s, ${best?.variant ?? '?'}, n=${ours?.tcp1.length ?? 0})`,
        met: oursTcp !== null && bestTcp !== null && oursTcp >= 0.95 * bestTcp,
      },
      {
        what: '1472-byte UDP loss at 50 Mbit/s, ours, every path-MTU case (every run)',
        goal: '0%',
        measured: oursRows.map((r) => `${r.pathCase}: ${lossText(r.udpLossPct)}`).join('; '),
        met: oursRows.every((r) => r.udpLossPct.length > 0 && r.udpLossPct.every((x) => x === 0)),
      },
      {
        what: 'cost of the default fragment 1280 + mssfix at path MTU 1500 (node→node TCP medians, ours vs before)',
        goal: '≤ 5%',
        measured: beforeTcp && oursTcp ? `${cost(oursTcp)} (${oursTcp} vs ${beforeTcp} Mbit/s); a network at \`--fragment 1500\`: ${cost(frag1500Tcp)} (${frag1500Tcp ?? '?'} Mbit/s)` : 'n/a',
        met: beforeTcp !== null && oursTcp !== null && oursTcp >= 0.95 * beforeTcp,
      },
    ];
    return { targets, data: { rows, variants: Object.fromEntries(Object.entries(VARIANTS).filter(([k]) => rows.some((r) => r.variant === k)).map(([k, v]) => [k, v.describe])) } };
  },
  render(r: SectionResult) {
    const rows = (r.data['rows'] ?? []) as Row[];
    const variants = (r.data['variants'] ?? {}) as Record<string, string>;
    const n = (x: number | null): string => (x === null ? 'n/a' : String(x));
    const range = (xs: readonly number[]): string => fmtRange(summarize(xs));
    return [
      'Routed underlay of namespaces (test/helpers/lan-lab.ts): nodes — router — router — server; node→node goes through the server. Every variant of a path case runs at once in its own namespaces and is measured in turns: TCP 1 stream and UDP loss are the median (min–max) of one 3 s iperf3 run each per round, the rounds interleaving the variants (n in the column), so a comparison is never across more than a few minutes; TCP 4 streams and to the server: one run. UDP: 1472-byte datagrams at 50 Mbit/s; RTT: 100 pings of 56 bytes; DF: replies to three 1472-byte DF pings. During the 1-stream runs (medians): the openvpn processes\' CPU (% of one core; nodes: both ends pooled), the sending node\'s underlay datagrams per second and their mean size, and UDP receive-buffer overflows (UdpRcvbufErrors, summed over the runs) in the server\'s, the sending and the receiving node\'s namespace.',
      '',
      '| path | variant | TCP 1 stream | n | TCP 4 streams | TCP node→server | UDP 1472 loss | RTT p50 / p99 ms | DF 1472 | openvpn CPU server / nodes | datagrams/s | bytes/datagram | rcvbuf errors server / sender / receiver |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
      ...rows.map(
        (x) =>
          `| ${x.pathCase} | ${x.variant} | ${range(x.tcp1)} | ${x.tcp1.length} | ${n(x.tcp4)} | ${n(x.tcpServer)} | ${lossText(x.udpLossPct)} | ${n(x.rttP50)} / ${n(x.rttP99)} | ${x.df1472} | ${x.serverCpu.length ? `${median(x.serverCpu)}% / ${median(x.nodeCpu)}%` : '-'} | ${n(median(x.pps))} | ${n(median(x.bytesPerPacket))} | ${x.rcvbufErrors.join(' / ')} |`,
      ),
      '',
      'Variants: ' + Object.entries(variants).map(([k, v]) => `**${k}**: ${v}`).join('; ') + '.',
    ].join('\n');
  },
};
