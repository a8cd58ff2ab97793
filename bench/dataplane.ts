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
import { dfPing, iperf, PATH_CASES, startLan, type LanOptions, type Member, type PathCase } from '../test/helpers/lan-lab.ts';
import type { Benchmark, SectionResult, Target } from './lib/types.ts';

interface Row {
  readonly pathCase: string;
  readonly variant: string;
  readonly tcp1: number | null;
  readonly tcp4: number | null;
  readonly tcpServer: number | null;
  readonly udpLossPct: number | null;
  readonly rttP50: number | null;
  readonly rttP99: number | null;
  readonly df1472: string;
}

const FLAT: PathCase = { name: 'path MTU 1500', nodeMtus: [1500, 1500], serverMtu: 1500, middleMtu: 1500, blackHole: false };
const CASES: Record<string, PathCase> = {
  flat: FLAT,
  node1280: { ...PATH_CASES[0]!, name: 'node underlay 1280 (no ICMP)', nodeMtus: [1280, 1280] },
  server1280: PATH_CASES[1]!,
  blackhole1280: PATH_CASES[2]!,
};

/** Hand-tuned variants: raw lines on top of ours (openvpn applies the last of a repeated option). */
const VARIANTS: Record<string, { readonly describe: string; readonly o: LanOptions }> = {
  ours: { describe: 'the configs mvpn renders', o: {} },
  before: { describe: 'ours without fragment and mssfix (the MTU handling before issue 13): the cost anchor', o: { spec: { mtu: undefined, fragment: undefined }, server: { dataPlane: {} } } },
  'tuned-chacha': { describe: 'ours with CHACHA20-POLY1305', o: { spec: { ciphers: ['CHACHA20-POLY1305'] }, server: { ciphers: ['CHACHA20-POLY1305'] } } },
  'tuned-bufs': { describe: 'ours + sndbuf/rcvbuf 2 MB (capped by net.core.[rw]mem_max, which a shared machine keeps) and txqueuelen 5000', o: { extraLines: ['sndbuf 2097152', 'rcvbuf 2097152', 'txqueuelen 5000'] } },
  'tuned-jumbo': { describe: 'tun-mtu 1500, no fragment, mssfix 0, mtu-disc no (kernel IP fragmentation; 1500 paths only)', o: { spec: { mtu: undefined, fragment: undefined }, server: { dataPlane: {} }, extraLines: ['mssfix 0', 'mtu-disc no'] } },
};

/** Which variants run on which case: everything at 1500, ours and the best tuning on the small paths. */
const PLAN: readonly [string, readonly string[]][] = [
  ['flat', ['ours', 'before', 'tuned-chacha', 'tuned-bufs', 'tuned-jumbo']],
  ['node1280', ['ours']],
  ['server1280', ['ours']],
  ['blackhole1280', ['ours', 'before', 'tuned-bufs']],
];
const QUICK_PLAN: readonly [string, readonly string[]][] = [
  ['flat', ['ours', 'before']],
  ['blackhole1280', ['ours']],
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

async function measure(pathCase: string, variant: string, n1: Member, n2: Member, srv: Member, underlay: boolean): Promise<Row> {
  const to = underlay ? n2.underlayIp : undefined;
  const [rttP50, rttP99] = await rtt(n1, to ?? n2.tunnelIp);
  const df = underlay ? '-' : `${await dfPing(n1, n2)}/3`;
  return {
    pathCase,
    variant,
    tcp1: await mbit(n1, n2, [], to),
    tcp4: await mbit(n1, n2, ['-P', '4'], to),
    tcpServer: await mbit(n1, srv, [], underlay ? srv.underlayIp : undefined),
    udpLossPct: await udpLoss(n1, n2, to),
    rttP50,
    rttP99,
    df1472: df,
  };
}

export const dataplaneBench: Benchmark = {
  name: 'dataplane',
  describe: 'LAN throughput/loss/latency per path-MTU case vs the underlay, the pre-fix rendering and hand-tuned openvpn',
  async run(ctx) {
    const rows: Row[] = [];
    for (const [key, variants] of ctx.quick ? QUICK_PLAN : PLAN) {
      for (const variant of variants) {
        const lab = ctx.env.lab();
        const dir = await ctx.env.tmpDir(`dp-${key}`);
        try {
          ctx.log(`dataplane: ${key} / ${variant}`);
          const lan = await startLan(lab, dir, CASES[key]!, VARIANTS[variant]!.o);
          const [n1, n2] = lan.nodes as [Member, Member];
          await dfPing(n1, n2, 56, 1);
          if (key === 'flat' && variant === 'ours') rows.push(await measure(CASES[key]!.name, 'underlay', n1, n2, lan.server, true));
          rows.push(await measure(CASES[key]!.name, variant, n1, n2, lan.server, false));
        } finally {
          await lab.destroy();
        }
      }
    }
    const get = (c: string, v: string): Row | undefined => rows.find((r) => r.pathCase === c && r.variant === v);
    const ours = get(FLAT.name, 'ours');
    const tuned = rows.filter((r) => r.pathCase === FLAT.name && r.variant.startsWith('tuned-'));
    const best = tuned.reduce<Row | undefined>((b, r) => ((r.tcp1 ?? 0) > (b?.tcp1 ?? 0) ? r : b), undefined);
    const before = get(FLAT.name, 'before');
    const oursRows = rows.filter((r) => r.variant === 'ours');
    const pct = (a: number | null | undefined, b: number | null | undefined): string => (a && b ? `${Math.round((a / b) * 100)}%` : 'n/a');
    const targets: Target[] = [
      {
        what: 'node→node TCP (1 stream), ours vs the best hand-tuned bare openvpn, path MTU 1500',
        goal: '≥ 95%',
        measured: `${pct(ours?.tcp1, best?.tcp1)} (${ours?.tcp1 ?? '?'} vs ${best?.tcp1 ?? '?'} Mbit/s, ${best?.variant ?? '?'})`,
        met: ours?.tcp1 != null && best?.tcp1 != null && ours.tcp1 >= 0.95 * best.tcp1,
      },
      {
        what: '1472-byte UDP loss at 50 Mbit/s, ours, every path-MTU case',
        goal: '0%',
        measured: oursRows.map((r) => `${r.pathCase}: ${r.udpLossPct ?? '?'}%`).join('; '),
        met: oursRows.every((r) => r.udpLossPct === 0),
      },
      {
        what: 'cost of fragment+mssfix at path MTU 1500 (node→node TCP, ours vs before)',
        goal: '≤ 5%',
        measured: before?.tcp1 && ours?.tcp1 ? `${Math.round((1 - ours.tcp1 / before.tcp1) * 100)}% (${ours.tcp1} vs ${before.tcp1} Mbit/s)` : 'n/a',
        met: before?.tcp1 != null && ours?.tcp1 != null && ours.tcp1 >= 0.95 * before.tcp1,
      },
    ];
    return { targets, data: { rows, variants: Object.fromEntries(Object.entries(VARIANTS).map(([k, v]) => [k, v.describe])) } };
  },
  render(r: SectionResult) {
    const rows = (r.data['rows'] ?? []) as Row[];
    const variants = (r.data['variants'] ?? {}) as Record<string, string>;
    const n = (x: number | null): string => (x === null ? 'n/a' : String(x));
    return [
      'Routed underlay of namespaces (test/helpers/lan-lab.ts): nodes — router — router — server; node→node goes through the server. Mbit/s from iperf3 (3 s each); UDP: 1472-byte datagrams at 50 Mbit/s; RTT: 100 pings of 56 bytes; DF: replies to three 1472-byte DF pings.',
      '',
      '| path | variant | TCP 1 stream | TCP 4 streams | TCP node→server | UDP 1472 loss | RTT p50 / p99 ms | DF 1472 |',
      '|---|---|---|---|---|---|---|---|',
      ...rows.map((x) => `| ${x.pathCase} | ${x.variant} | ${n(x.tcp1)} | ${n(x.tcp4)} | ${n(x.tcpServer)} | ${x.udpLossPct === null ? 'n/a' : `${x.udpLossPct}%`} | ${n(x.rttP50)} / ${n(x.rttP99)} | ${x.df1472} |`),
      '',
      'Variants: ' + Object.entries(variants).map(([k, v]) => `**${k}**: ${v}`).join('; ') + '.',
    ].join('\n');
  },
};
