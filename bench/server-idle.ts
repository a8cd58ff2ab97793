/**
 * The server daemon's idle footprint (issue 14 asks for it, no target yet):
 * `mvpn-client server run` in a server namespace with N networks up (one
 * openvpn server each), no nodes, 5 s settle, then RSS every second and
 * utime+stime of the daemon and of the children it reaped over the window.
 * Part of the footprint benchmark (bench/footprint.ts).
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadServerConfig } from '../src/server/config.ts';
import { initServer } from '../src/server/init.ts';
import { createNetwork, setNetworkState } from '../src/server/ops/networks.ts';
import { SqliteStore } from '../src/server/store/sqlite.ts';
import { systemClock } from '../src/util/clock.ts';
import { startNotifyListener } from '../test/helpers/notify-listener.ts';
import { idleWindow, procStatusKb } from './footprint.ts';
import { BIN, pollUntil, profileEnv, stopProc, within } from './lib/env.ts';
import { round, summarize, type Summary } from './lib/stats.ts';
import type { BenchContext } from './lib/types.ts';

export interface ServerIdle {
  readonly networks: number;
  readonly idleSeconds: number;
  readonly readyMs: number;
  readonly rssMiB: Summary;
  readonly rssAnonMiB: number;
  readonly rssFileMiB: number;
  readonly cpuPercentOfOneCore: number;
  readonly reapedChildrenCpuPercentOfOneCore: number;
  /** Live children at the end (the openvpn servers). */
  readonly children: number;
  readonly openvpnRssMiBTotal: number;
}

/** Pids of the live children of `pid` (all its threads). */
async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const t of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const text = await readFile(`/proc/${pid}/task/${t}/children`, 'utf8').catch(() => '');
    for (const c of text.split(' ')) if (c.trim() !== '') out.push(Number(c));
  }
  return out;
}

export async function serverIdle(ctx: BenchContext, networks: number, idleS: number, clkTck: number): Promise<ServerIdle> {
  const env = ctx.env;
  const lab = env.lab();
  const srv = await lab.ns('srvidle');
  // The listen address on a veth to a peer namespace (no node ever connects).
  await lab.link(srv, await lab.ns('peer'), { aName: 'eth0', aAddr: '198.18.0.1/24' });
  const dir = await env.tmpDir(`server-idle-${networks}`);
  const stateDir = join(dir, 'state');
  await initServer({ stateDir, addresses: ['198.18.0.1'], listen: '198.18.0.1:8443', vpnListen: '198.18.0.1', pool: '198.19.0.0/16', portRange: `1194-${1194 + networks - 1}` });
  const { config, paths } = await loadServerConfig(stateDir);
  const store = SqliteStore.open(paths.store);
  try {
    const sctx = { config, paths, store, clock: systemClock };
    for (let n = 1; n <= networks; n++) {
      await createNetwork(sctx, { id: `idle${n}`, remotes: ['198.18.0.1'] });
      setNetworkState(sctx, `idle${n}`, 'up');
    }
  } finally {
    store.close();
  }
  const notify = await startNotifyListener();
  env.defer('server-idle notify listener', () => notify.stop());
  const t0 = performance.now();
  const d = env.spawnIn(srv, BIN, ['server', 'run', '--state-dir', stateDir], { env: { ...process.env, ...profileEnv(), NOTIFY_SOCKET: notify.socket } });
  try {
    await within(notify.waitFor((m) => m.fields['READY'] === '1', 300_000), 305_000, `server READY=1 with ${networks} networks:\n${d.out.toString().slice(-3000)}`);
    const readyMs = performance.now() - t0;
    await pollUntil(`${networks} openvpn servers running`, async () => ((await childrenOf(d.pid)).length >= networks ? true : undefined), 300_000, 200);
    ctx.log(`footprint: server daemon with ${networks} networks ready in ${Math.round(readyMs)} ms; settling 5 s, then ${idleS} s idle`);
    const { rss, c0, c1, wallS } = await idleWindow(d.pid, idleS);
    const kids = await childrenOf(d.pid);
    let openvpnKb = 0;
    for (const k of kids) openvpnKb += await procStatusKb(k, 'VmRSS').catch(() => 0);
    return {
      networks,
      idleSeconds: round(wallS, 1),
      readyMs: round(readyMs, 0),
      rssMiB: summarize(rss.map((k) => k / 1024), 1),
      rssAnonMiB: round((await procStatusKb(d.pid, 'RssAnon')) / 1024, 1),
      rssFileMiB: round((await procStatusKb(d.pid, 'RssFile')) / 1024, 1),
      cpuPercentOfOneCore: round(((c1.self - c0.self) / clkTck / wallS) * 100, 3),
      reapedChildrenCpuPercentOfOneCore: round(((c1.children - c0.children) / clkTck / wallS) * 100, 3),
      children: kids.length,
      openvpnRssMiBTotal: round(openvpnKb / 1024, 1),
    };
  } finally {
    await stopProc(d, 60_000);
  }
}
