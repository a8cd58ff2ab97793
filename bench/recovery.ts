/**
 * Recovery: how long a node is off its LAN after something dies.
 *
 * 1. `kill -9` of one openvpn under the agent (shared world, every network
 *    connected): from the kill to the agent's status showing that network
 *    connected again with a new pid. Each repetition kills a different
 *    network, so each restart is that network's first (the supervisor's
 *    backoff grows for repeated crashes within 60 s; the first delay is
 *    0.5–1 s by design, reported from the agent's log).
 * 2. Server daemon restart: the real server mode (`dist/mvpn-client server
 *    run` in a server namespace, one L2 network, its openvpn server) and
 *    agents in their own namespaces on a switch, enrolled beforehand
 *    through the server's own enrollment code, fetching over HTTPS with
 *    mTLS. From stopping the daemon to every agent connected again — a
 *    *new* session (connected_since after the stop), not the stale view of
 *    a client that has not noticed yet. Two ways: SIGTERM and start again
 *    (`systemctl restart`), and SIGKILL and start again (a crash: its
 *    openvpn server is left running and the new daemon's leftover cleanup
 *    stops it first).
 */
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { saveIdentity } from '../src/agent/identity.ts';
import type { AgentStatus } from '../src/agent/status.ts';
import type { Netns } from '../src/netns/lab.ts';
import { createCsr } from '../src/pki/csr.ts';
import { generateKeyPairPem } from '../src/pki/keys.ts';
import { loadServerConfig } from '../src/server/config.ts';
import { initServer } from '../src/server/init.ts';
import { enroll } from '../src/server/ops/enroll.ts';
import { createNetwork, setNetworkState } from '../src/server/ops/networks.ts';
import { addNode, createToken } from '../src/server/ops/nodes.ts';
import { SqliteStore } from '../src/server/store/sqlite.ts';
import { systemClock } from '../src/util/clock.ts';
import { startNotifyListener, type NotifyListener } from '../test/helpers/notify-listener.ts';
import { agentStatus, allConnected } from './lib/agent-world.ts';
import { BIN, epochMs, profileEnv, OPENVPN, pollUntil, sleep, stopProc, within, type BenchEnv, type Proc } from './lib/env.ts';
import { fmtRange, round, summarize, type Summary } from './lib/stats.ts';
import type { Benchmark, BenchContext, SectionResult } from './lib/types.ts';

// ---------------------------------------------------------------- kill -9 of one openvpn

async function killOpenvpn(ctx: BenchContext, reps: number): Promise<{ recoveredMs: number[]; backoffMs: number[]; othersUntouched: boolean }> {
  const w = await ctx.agentWorld();
  const count = ctx.maxNetworks;
  const dirs = await w.agentConfig('recovery-kill', await w.publish(count));
  const { proc } = await w.runAgent(dirs, count);
  const recoveredMs: number[] = [];
  const backoffMs: number[] = [];
  let othersUntouched = true;
  try {
    await sleep(2_000);
    for (let r = 0; r < Math.min(reps, count); r++) {
      const before = await agentStatus(dirs.runtimeDir);
      const victim = before.networks[r]!;
      const oldPid = victim.pid!;
      const logMark = proc.out.toString().length;
      const t0 = epochMs();
      process.kill(oldPid, 'SIGKILL'); // an openvpn our agent started
      await pollUntil(
        `network ${victim.id} connected again after kill -9`,
        async () => {
          const n = (await agentStatus(dirs.runtimeDir)).networks.find((x) => x.id === victim.id);
          return n?.state === 'connected' && n.pid !== null && n.pid !== oldPid ? true : undefined;
        },
        60_000,
        10,
      );
      recoveredMs.push(epochMs() - t0);
      const delay = new RegExp(`${victim.id}: restarting in (\\d+) ms`).exec(proc.out.toString().slice(logMark));
      if (delay) backoffMs.push(Number(delay[1]));
      const after = await agentStatus(dirs.runtimeDir);
      for (const n of before.networks) if (n.id !== victim.id && after.networks.find((x) => x.id === n.id)?.pid !== n.pid) othersUntouched = false;
      ctx.log(`recovery: kill -9 of ${victim.id}'s openvpn → connected again in ${Math.round(recoveredMs.at(-1)!)} ms (backoff ${backoffMs.at(-1) ?? '?'} ms)`);
      await sleep(1_000);
    }
  } finally {
    await stopProc(proc, 30_000);
    await within(w.waitNoTaps(), 30_000, 'recovery teardown');
  }
  return { recoveredMs, backoffMs, othersUntouched };
}

// ---------------------------------------------------------------- server daemon restart

interface ServerWorld {
  readonly srv: Netns;
  readonly stateDir: string;
  readonly notify: NotifyListener;
  readonly agents: { node: string; ns: Netns; runtimeDir: string; proc: Proc }[];
  daemon: Proc;
}

async function makeServerWorld(env: BenchEnv, nodes: number): Promise<ServerWorld> {
  const lab = env.lab();
  const dir = await env.tmpDir('recovery-srv');
  const sw = await lab.ns('sw');
  const srv = await lab.ns('srv');
  const ports: string[] = [];
  const [, sp] = await lab.link(srv, sw, { aName: 'eth0', aAddr: '198.18.0.1/24' });
  ports.push(sp);
  const nodeNs: Netns[] = [];
  for (let k = 1; k <= nodes; k++) {
    const ns = await lab.ns(`node${k}`);
    const [, p] = await lab.link(ns, sw, { aName: 'eth0', aAddr: `198.18.0.${10 + k}/24` });
    ports.push(p);
    nodeNs.push(ns);
  }
  await lab.bridge(sw, 'br0', ports);

  const stateDir = join(dir, 'state');
  await initServer({ stateDir, addresses: ['198.18.0.1'], listen: '198.18.0.1:8443', vpnListen: '198.18.0.1', pool: '198.19.0.0/16', portRange: '1194-1293' });
  const { config, paths } = await loadServerConfig(stateDir);
  const store = SqliteStore.open(paths.store);
  const sctx = { config, paths, store, clock: systemClock };
  const apiCa = { alg: 'ec-p256' as const, certPem: await readFile(paths.apiCaCert, 'utf8'), keyPem: await readFile(paths.apiCaKey, 'utf8') };
  const agentDirs: { node: string; stateDir: string; runtimeDir: string; config: string }[] = [];
  try {
    await createNetwork(sctx, { id: 'rec', remotes: ['198.18.0.1'] });
    setNetworkState(sctx, 'rec', 'up');
    for (let k = 1; k <= nodes; k++) {
      const node = `pc${k}`;
      await addNode(sctx, { node, network: 'rec' });
      const { token } = createToken(sctx, node, 3600_000);
      const kp = await generateKeyPairPem('ec-p256');
      const r = await enroll(sctx, apiCa, { node, token, csr: await createCsr({ keyPair: kp, cn: node }) });
      const base = join(dir, node);
      await mkdir(base, { recursive: true });
      const d = { node, stateDir: join(base, 'state'), runtimeDir: join(base, 'run'), config: join(base, 'config.json') };
      await saveIdentity(d.stateDir, { keyPem: kp.privateKeyPem, certPem: r.identityCertPem, caPem: apiCa.certPem });
      await writeFile(
        d.config,
        JSON.stringify({
          node: { id: node },
          sources: [{ type: 'https', url: 'https://198.18.0.1:8443/' }],
          anchor: join(stateDir, 'trust-anchor'),
          server_ca: paths.apiCaCert,
          state_dir: d.stateDir,
          runtime_dir: d.runtimeDir,
          reconcile_interval_s: 3600,
          ready_timeout_s: 120,
          openvpn: OPENVPN,
        }),
      );
      agentDirs.push(d);
    }
  } finally {
    store.close();
  }

  const notify = await startNotifyListener();
  env.defer('notify listener', () => notify.stop());
  const world: ServerWorld = { srv, stateDir, notify, agents: [], daemon: undefined as unknown as Proc };
  await startDaemon(env, world);
  for (const [i, d] of agentDirs.entries()) {
    const proc = env.spawnIn(nodeNs[i]!, BIN, ['run', '--config', d.config]);
    world.agents.push({ node: d.node, ns: nodeNs[i]!, runtimeDir: d.runtimeDir, proc });
  }
  env.defer('recovery agents', async () => {
    await Promise.all(world.agents.map((a) => stopProc(a.proc, 30_000)));
  });
  for (const a of world.agents) {
    await pollUntil(`agent ${a.node} connected`, async () => (allConnected(await agentStatus(a.runtimeDir), 1) ? true : undefined), 120_000, 100).catch((err: Error) => {
      throw new Error(`${err.message}\nagent:\n${a.proc.out.toString().slice(-3000)}\nserver:\n${world.daemon.out.toString().slice(-3000)}`);
    });
  }
  return world;
}

/** `server run` in the server namespace; resolves at its READY=1 with the ms it took. */
async function startDaemon(env: BenchEnv, w: ServerWorld): Promise<number> {
  const before = new Set(w.notify.received);
  const t0 = epochMs();
  w.daemon = env.spawnIn(w.srv, BIN, ['server', 'run', '--state-dir', w.stateDir], { env: { ...process.env, ...profileEnv(), NOTIFY_SOCKET: w.notify.socket } });
  const d = w.daemon;
  const exited = d.exited.then((e) => {
    throw new Error(`server run exited (${e.code ?? e.signal}) before READY=1:\n${d.out.toString().slice(-3000)}`);
  });
  await within(Promise.race([w.notify.waitFor((m) => !before.has(m) && m.fields['READY'] === '1', 60_000), exited]), 65_000, `server READY=1:\n${d.out.toString().slice(-3000)}`);
  return epochMs() - t0;
}

interface RestartTrial {
  readonly stopMs: number;
  readonly daemonReadyMs: number;
  readonly allConnectedMs: number;
  /** The last node to reconnect: what its openvpn said (ms after the stop), to show where the time went. */
  readonly slowest: { node: string; ms: number; log: [number, string][] };
}

const INTERESTING = /Restart pause|SIGUSR1|SIGTERM|RESTART|Connection reset|Initialization Sequence Completed|TLS Error|TLS key negotiation failed|-> connect|Inactivity timeout|exit-notify/;

/** Lines of an agent's log written after `wall0` that say what its openvpn did, as [ms after wall0, text]. */
function excerpt(text: string, wall0: number): [number, string][] {
  const out: [number, string][] = [];
  for (const line of text.split('\n')) {
    const t = Date.parse(line.slice(0, 24));
    if (!Number.isFinite(t) || t < wall0 || !INTERESTING.test(line)) continue;
    out.push([t - wall0, line.slice(25, 185)]);
    if (out.length >= 30) break;
  }
  return out;
}

async function restartTrial(env: BenchEnv, w: ServerWorld, signal: 'SIGTERM' | 'SIGKILL'): Promise<RestartTrial> {
  const t0 = epochMs();
  const wall0 = Date.now();
  await stopProc(w.daemon, 30_000, signal);
  const stopMs = epochMs() - t0;
  const readyMs = await startDaemon(env, w);
  const daemonReadyMs = stopMs + readyMs;
  const fresh = (s: AgentStatus): boolean => s.networks.length === 1 && s.networks[0]!.state === 'connected' && Date.parse(s.networks[0]!.connected_since ?? '') >= wall0;
  const each = await Promise.all(
    w.agents.map(async (a) => {
      await pollUntil(`agent ${a.node} reconnected after server ${signal}`, async () => (fresh(await agentStatus(a.runtimeDir)) ? true : undefined), 180_000, 20);
      return { a, ms: epochMs() - t0 };
    }),
  );
  const last = each.reduce((x, y) => (y.ms > x.ms ? y : x));
  return { stopMs, daemonReadyMs, allConnectedMs: epochMs() - t0, slowest: { node: last.a.node, ms: Math.round(last.ms), log: excerpt(last.a.proc.out.toString(), wall0) } };
}

// ---------------------------------------------------------------- the benchmark

interface RestartSummary {
  readonly stopMs: Summary;
  readonly daemonReadyMs: Summary;
  readonly allConnectedMs: Summary;
}

const summarizeTrials = (t: readonly RestartTrial[]): RestartSummary => ({
  stopMs: summarize(t.map((x) => x.stopMs), 1),
  daemonReadyMs: summarize(t.map((x) => x.daemonReadyMs), 1),
  allConnectedMs: summarize(t.map((x) => x.allConnectedMs), 1),
});

export const recoveryBench: Benchmark = {
  name: 'recovery',
  describe: 'kill -9 of one openvpn → connected again; server daemon restart / crash → all nodes connected again',
  async run(ctx) {
    const reps = ctx.quick ? 1 : 5;
    const kill = await killOpenvpn(ctx, reps);
    const nodes = ctx.quick ? 2 : 4;
    const restartReps = ctx.quick ? 1 : 3;
    ctx.log(`recovery: server mode with ${nodes} enrolled agents`);
    const w = await makeServerWorld(ctx.env, nodes);
    const term: RestartTrial[] = [];
    const crash: RestartTrial[] = [];
    for (let r = 0; r < restartReps; r++) {
      await sleep(2_000);
      term.push(await restartTrial(ctx.env, w, 'SIGTERM'));
      ctx.log(`recovery: server restart (SIGTERM) → ${nodes} nodes connected again in ${Math.round(term.at(-1)!.allConnectedMs)} ms`);
      await sleep(2_000);
      crash.push(await restartTrial(ctx.env, w, 'SIGKILL'));
      ctx.log(`recovery: server crash (SIGKILL) + start → ${nodes} nodes connected again in ${Math.round(crash.at(-1)!.allConnectedMs)} ms`);
    }
    const k = summarize(kill.recoveredMs, 1);
    const t = summarizeTrials(term);
    return {
      targets: [
        { what: 'kill -9 of one openvpn → connected again (median)', goal: 'report', measured: `${Math.round(k.median)} ms`, met: true },
        { what: `server daemon restart → all ${nodes} nodes connected again (median)`, goal: 'report', measured: `${Math.round(t.allConnectedMs.median)} ms`, met: true },
      ],
      data: {
        kill: { networks: ctx.maxNetworks, recoveredMs: k, backoffMs: summarize(kill.backoffMs, 0), othersUntouched: kill.othersUntouched, samples: kill.recoveredMs.map((x) => round(x, 1)) },
        serverRestart: { nodes, sigterm: t, sigkill: summarizeTrials(crash), samples: { sigterm: term, sigkill: crash } },
      },
    };
  },
  render(s: SectionResult): string {
    const d = s.data as {
      kill: { networks: number; recoveredMs: Summary; backoffMs: Summary; othersUntouched: boolean };
      serverRestart: { nodes: number; sigterm: RestartSummary; sigkill: RestartSummary };
    };
    const r = d.serverRestart;
    return [
      `Median (min–max), milliseconds.`,
      '',
      '| event | daemon back (READY=1) | every node connected again |',
      '|---|---:|---:|',
      `| \`kill -9\` of one of ${d.kill.networks} openvpn clients (n=${d.kill.recoveredMs.n}; of which supervisor backoff ${fmtRange(d.kill.backoffMs, ' ms')}) | — | ${fmtRange(d.kill.recoveredMs, ' ms')} |`,
      `| server daemon SIGTERM + start, ${r.nodes} nodes (n=${r.sigterm.allConnectedMs.n}) | ${fmtRange(r.sigterm.daemonReadyMs, ' ms')} | ${fmtRange(r.sigterm.allConnectedMs, ' ms')} |`,
      `| server daemon SIGKILL + start, ${r.nodes} nodes (n=${r.sigkill.allConnectedMs.n}) | ${fmtRange(r.sigkill.daemonReadyMs, ' ms')} | ${fmtRange(r.sigkill.allConnectedMs, ' ms')} |`,
      '',
      `The other networks' openvpn processes were ${d.kill.othersUntouched ? 'untouched (same pids)' : '**restarted too**'} by the kill of one. "Connected again" after a server restart means a new session (the agent's connected_since is after the stop).`,
    ].join('\n');
  },
};
