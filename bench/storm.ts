/**
 * Swap-in storm: a whole experiment boots at once and every node asks the
 * server mode for its membership document and bundle.
 *
 * Setup (not measured): `server init` state in a temp dir, one network,
 * 1,000 nodes added and enrolled through the server's own enrollment code
 * (ops/enroll.ts, what POST /v1/enroll runs: token check, CSR, identity and
 * network certificates), each node's key made here "on the node". Then
 * `dist/mvpn-client server run` in a server namespace (HTTPS API on
 * 198.18.0.1:8443) and, as the ceiling, nginx in the same namespace
 * (198.18.0.1:9443) with its own config in a temp dir: the same listener
 * certificate, client certificates required and verified against the same
 * API CA, and each node's own bytes (saved from an unmeasured pass against
 * the server mode) chosen by the CN of its client certificate.
 *
 * Load: bench/storm-client.ts in a client namespace, in `workers`
 * processes (one Node process alone would be the bottleneck for nginx),
 * `concurrency` agents in flight in total; each agent makes a new TLS
 * connection with its own certificate and does GET /v1/membership then GET
 * of its bundle. Throughput = agents (and requests) per second of wall
 * time from the common start to the last agent done.
 *
 * Passes: warm (documents and bundles already built and cached by the
 * server) at each concurrency, alternating with nginx; and cold (the
 * server freshly restarted, so it builds and signs every document and
 * bundle on demand — what a real swap-in meets first).
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCsr } from '../src/pki/csr.ts';
import { generateKeyPairPem } from '../src/pki/keys.ts';
import { loadServerConfig } from '../src/server/config.ts';
import { initServer } from '../src/server/init.ts';
import { enroll } from '../src/server/ops/enroll.ts';
import { createNetwork } from '../src/server/ops/networks.ts';
import { addNode, createToken } from '../src/server/ops/nodes.ts';
import { SqliteStore } from '../src/server/store/sqlite.ts';
import { systemClock } from '../src/util/clock.ts';
import type { Netns } from '../src/netns/lab.ts';
import { sh } from '../src/netns/lab.ts';
import { startNotifyListener, type NotifyListener } from '../test/helpers/notify-listener.ts';
import { BIN, epochMs, profileEnv, NODE, pollUntil, ROOT, sleep, stopProc, within, type BenchEnv, type Proc } from './lib/env.ts';
import { fmtRange, round, summarize, type Summary } from './lib/stats.ts';
import type { Benchmark, BenchContext, SectionResult } from './lib/types.ts';
import type { WorkerResult } from './storm-client.ts';

const SERVER = '198.18.0.1';
const CLIENT = '198.18.0.2';
const MVPN_PORT = 8443;
const NGINX_PORT = 9443;
const NGINX = '/usr/sbin/nginx';

interface PassResult {
  readonly agents: number;
  readonly ok: number;
  readonly failures: number;
  readonly errors: Record<string, number>;
  readonly wallMs: number;
  readonly agentsPerS: number;
  readonly requestsPerS: number;
  readonly requestMs: number[];
  readonly agentMs: number[];
  /** CPU the server processes used during the pass, per agent served (ms). */
  readonly serverCpuMsPerAgent: number;
  readonly clientCpuMsPerAgent: number;
}

interface LevelResult {
  readonly concurrency: number;
  readonly runs: number;
  readonly failures: number;
  readonly errors: Record<string, number>;
  readonly agentsPerS: Summary;
  readonly requestsPerS: Summary;
  readonly requestMs: Summary;
  readonly agentMs: Summary;
  readonly serverCpuMsPerAgent: Summary;
  readonly clientCpuMsPerAgent: Summary;
}

function level(concurrency: number, passes: readonly PassResult[]): LevelResult {
  const errors: Record<string, number> = {};
  for (const p of passes) for (const [k, v] of Object.entries(p.errors)) errors[k] = (errors[k] ?? 0) + v;
  return {
    concurrency,
    runs: passes.length,
    failures: passes.reduce((a, p) => a + p.failures, 0),
    errors,
    agentsPerS: summarize(passes.map((p) => p.agentsPerS), 1),
    requestsPerS: summarize(passes.map((p) => p.requestsPerS), 1),
    requestMs: summarize(passes.flatMap((p) => p.requestMs), 1),
    agentMs: summarize(passes.flatMap((p) => p.agentMs), 1),
    serverCpuMsPerAgent: summarize(passes.map((p) => p.serverCpuMsPerAgent), 2),
    clientCpuMsPerAgent: summarize(passes.map((p) => p.clientCpuMsPerAgent), 2),
  };
}

/** utime+stime of `pids` in ms (clock ticks of 10 ms). */
async function cpuMsOf(pids: readonly number[]): Promise<number> {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const text = await readFile(`/proc/${pid}/stat`, 'utf8');
      const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // exited
    }
  }
  return ticks * 10;
}

/** A process and its direct children (nginx: master and workers). */
async function withChildren(pid: number): Promise<number[]> {
  const { readdir } = await import('node:fs/promises');
  const out = [pid];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const text = await readFile(`/proc/${e}/stat`, 'utf8');
      if (Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(e));
    } catch {
      // exited
    }
  }
  return out;
}

interface Storm {
  readonly env: BenchEnv;
  readonly srv: Netns;
  readonly cli: Netns;
  readonly dir: string;
  readonly stateDir: string;
  readonly identities: string;
  readonly caPem: string;
  readonly notify: NotifyListener;
  daemon?: Proc;
}

/** State dir, one network, `count` nodes enrolled through ops/enroll.ts. */
async function setup(ctx: BenchContext, count: number): Promise<Storm> {
  const { env } = ctx;
  const lab = env.lab();
  const srv = await lab.ns('srv');
  const cli = await lab.ns('cli');
  await lab.link(srv, cli, { aName: 'eth0', bName: 'eth0', aAddr: `${SERVER}/30`, bAddr: `${CLIENT}/30` });
  const dir = await env.tmpDir('storm');
  const stateDir = join(dir, 'state');
  await initServer({ stateDir, addresses: [SERVER], listen: `${SERVER}:${MVPN_PORT}`, pool: '198.19.0.0/16' });
  const { config, paths } = await loadServerConfig(stateDir);
  const store = SqliteStore.open(paths.store);
  const sctx = { config, paths, store, clock: systemClock };
  const caPem = await readFile(paths.apiCaCert, 'utf8');
  const apiCa = { alg: 'ec-p256' as const, certPem: caPem, keyPem: await readFile(paths.apiCaKey, 'utf8') };
  const ids: { node: string; cert: string; key: string }[] = [];
  const t0 = performance.now();
  try {
    // A /22: room for 1,000 nodes. No traffic is ever sent to these addresses here.
    await createNetwork(sctx, { id: 'storm', subnet: '198.19.0.0/22', remotes: [SERVER] });
    for (let i = 0; i < count; i++) {
      const node = `n${String(i).padStart(4, '0')}`;
      await addNode(sctx, { node, network: 'storm' });
      const { token } = createToken(sctx, node, 3600_000);
      const kp = await generateKeyPairPem('ec-p256');
      const r = await enroll(sctx, apiCa, { node, token, csr: await createCsr({ keyPair: kp, cn: node }) });
      ids.push({ node, cert: r.identityCertPem, key: kp.privateKeyPem });
      if ((i + 1) % 250 === 0) ctx.log(`storm: ${i + 1}/${count} nodes enrolled`);
    }
  } finally {
    store.close();
  }
  ctx.log(`storm: ${count} nodes added and enrolled in ${((performance.now() - t0) / 1000).toFixed(1)} s (setup, not measured)`);
  const identities = join(dir, 'identities.json');
  await writeFile(identities, JSON.stringify(ids));
  const notify = await startNotifyListener();
  env.defer('notify listener', () => notify.stop());
  return { env, srv, cli, dir, stateDir, identities, caPem, notify };
}

async function startDaemon(s: Storm): Promise<void> {
  if (s.daemon) await stopProc(s.daemon, 30_000);
  const before = new Set(s.notify.received);
  const d = s.env.spawnIn(s.srv, BIN, ['server', 'run', '--state-dir', s.stateDir], { env: { ...process.env, ...profileEnv(), NOTIFY_SOCKET: s.notify.socket } });
  s.daemon = d;
  const exited = d.exited.then((e) => {
    throw new Error(`server run exited (${e.code ?? e.signal}) before READY=1:\n${d.out.toString().slice(-3000)}`);
  });
  await within(Promise.race([s.notify.waitFor((m) => !before.has(m) && m.fields['READY'] === '1', 60_000), exited]), 65_000, 'server READY=1');
}

/** One pass: `workers` load generators in the client namespace, started together. */
async function pass(s: Storm, port: number, concurrency: number, workers: number, serverPid: number, save?: string): Promise<PassResult> {
  const procs: Proc[] = [];
  const serverPids = await withChildren(serverPid);
  try {
    for (let w = 0; w < workers; w++) {
      const cfgPath = join(s.dir, `client-${port}-${w}.json`);
      await writeFile(
        cfgPath,
        JSON.stringify({ origin: `https://${SERVER}:${port}`, ca: s.caPem, identities: s.identities, worker: w, workers, concurrency: Math.ceil(concurrency / workers), ...(save ? { save } : {}) }),
      );
      procs.push(s.env.spawnIn(s.cli, NODE, [join(ROOT, 'bench/storm-client.ts'), cfgPath], { stdio: ['pipe', 'pipe', 'pipe'], cwd: ROOT }));
    }
    await within(Promise.all(procs.map((p) => p.out.waitFor('ready\n'))), 60_000, 'storm clients ready');
    const cpu0 = await cpuMsOf(serverPids);
    for (const p of procs) p.child.stdin!.write('go\n');
    await within(Promise.all(procs.map((p) => p.exited)), 300_000, 'storm pass');
    const serverCpuMs = (await cpuMsOf(serverPids)) - cpu0;
    const results = procs.map((p) => {
      const line = p.out.toString().split('\n').find((l) => l.startsWith('{'));
      if (!line) throw new Error(`storm client gave no result:\n${p.out.toString().slice(-3000)}`);
      return JSON.parse(line) as WorkerResult;
    });
    const start = Math.min(...results.map((r) => r.startEpochMs));
    const end = Math.max(...results.map((r) => r.endEpochMs));
    const wallMs = end - start;
    const agents = results.reduce((a, r) => a + r.agents, 0);
    const ok = results.reduce((a, r) => a + r.ok, 0);
    const errors: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    return {
      agents,
      ok,
      failures: agents - ok,
      errors,
      wallMs: round(wallMs, 1),
      agentsPerS: round((ok / wallMs) * 1000, 1),
      requestsPerS: round(((2 * ok) / wallMs) * 1000, 1),
      requestMs: results.flatMap((r) => [...r.membershipMs, ...r.bundleMs]),
      agentMs: results.flatMap((r) => r.agentMs),
      serverCpuMsPerAgent: round(serverCpuMs / Math.max(1, ok), 2),
      clientCpuMsPerAgent: round(results.reduce((a, r) => a + r.cpuMs, 0) / Math.max(1, ok), 2),
    };
  } finally {
    await Promise.all(procs.map((p) => stopProc(p, 5_000)));
  }
}

// ---------------------------------------------------------------- nginx

/** nginx from Debian, installed if missing (the package's own service is never started: policy-rc.d). */
async function ensureNginx(ctx: BenchContext): Promise<string | undefined> {
  if (existsSync(NGINX)) return undefined;
  ctx.log('storm: nginx is missing; apt-get install nginx');
  const { writeFile: wf, rm } = await import('node:fs/promises');
  const policy = '/usr/sbin/policy-rc.d';
  // Without systemd, Debian's postinst would start nginx on port 80 of the host; a policy-rc.d refusing every start prevents that.
  const madePolicy = !existsSync(policy);
  if (madePolicy) await wf(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  try {
    const env = ['env', 'DEBIAN_FRONTEND=noninteractive'];
    let r = await sh(env[0]!, [...env.slice(1), 'apt-get', 'install', '-y', '-qq', '--no-install-recommends', 'nginx'], { allowFail: true, timeoutMs: 300_000 });
    if (r.code !== 0) {
      await sh(env[0]!, [...env.slice(1), 'apt-get', 'update', '-qq'], { allowFail: true, timeoutMs: 300_000 });
      r = await sh(env[0]!, [...env.slice(1), 'apt-get', 'install', '-y', '-qq', '--no-install-recommends', 'nginx'], { allowFail: true, timeoutMs: 300_000 });
    }
    if (r.code !== 0 || !existsSync(NGINX)) return `apt-get install nginx failed: ${(r.stderr || r.stdout).trim().split('\n').slice(-2).join(' ')}`;
    return undefined;
  } finally {
    if (madePolicy) await rm(policy, { force: true });
  }
}

async function startNginx(s: Storm, bytesDir: string): Promise<Proc> {
  const dir = join(s.dir, 'nginx');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(join(dir, 'tmp'), { recursive: true });
  const api = join(s.stateDir, 'api');
  const conf = `# mvpn bench: the storm's ceiling. Same certificate, same client-certificate check, same bytes per node.
daemon off;
master_process on;
user root;
worker_processes auto;
worker_rlimit_nofile 16384;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  default_type application/octet-stream;
  # keepalive_timeout: nginx's default (75 s). With 5 s, overloaded clients lost their second request to an idle close.
  map $ssl_client_s_dn $node {
    default "";
    "~(^|,)CN=(?<cn>[A-Za-z0-9._@-]+)" $cn;
  }
  server {
    listen ${SERVER}:${NGINX_PORT} ssl;
    ssl_certificate ${api}/server.crt;
    ssl_certificate_key ${api}/server.key;
    ssl_client_certificate ${api}/ca.crt;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    root ${bytesDir};
    location = /v1/membership { default_type application/json; try_files /m/$node.json =404; }
    # named captures: evaluating $node runs the map's regex, which would overwrite $1/$2
    location ~ ^/v1/bundles/(?<net>[a-z][a-z0-9-]*)/(?<ver>[0-9]+)$ { default_type application/gzip; try_files /b/$node/$net-$ver.tar.gz =404; }
  }
}
`;
  await writeFile(join(dir, 'nginx.conf'), conf);
  const p = s.env.spawnIn(s.srv, NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')]);
  await pollUntil(
    'nginx listening',
    async () => {
      if (!p.alive()) throw new Error(`nginx exited: ${p.out.toString()} ${await readFile(join(dir, 'error.log'), 'utf8').catch(() => '')}`);
      return (await s.srv.exec('ss', ['-Htln', `sport = :${NGINX_PORT}`])).stdout.includes(String(NGINX_PORT)) ? true : undefined;
    },
    20_000,
    50,
  );
  return p;
}

// ---------------------------------------------------------------- the benchmark

export const stormBench: Benchmark = {
  name: 'storm',
  describe: '1,000 agents fetch membership + bundle over HTTPS/mTLS at once; nginx with the same bytes as the ceiling',
  async run(ctx) {
    const count = ctx.quick ? 100 : 1000;
    const levels = ctx.quick ? [20, 100] : [100, 1000];
    const reps = ctx.quick ? 1 : 5;
    const coldReps = ctx.quick ? 1 : 3;
    const workers = 2;
    const nginxProblem = await ensureNginx(ctx);
    const s = await setup(ctx, count);
    await startDaemon(s);
    const bytesDir = join(s.dir, 'bytes');
    // Unmeasured: saves what the server mode serves each node, for nginx; also a check that all of it works.
    const saved = await pass(s, MVPN_PORT, 100, workers, s.daemon!.pid, bytesDir);
    if (saved.failures > 0) throw new Error(`the server mode failed ${saved.failures} of ${count} agents before measuring: ${JSON.stringify(saved.errors)}`);
    const nginx = nginxProblem === undefined ? await startNginx(s, bytesDir) : undefined;
    if (nginxProblem) ctx.log(`storm: no nginx ceiling: ${nginxProblem}`);

    const warm = new Map<number, PassResult[]>(levels.map((l) => [l, []]));
    const ceil = new Map<number, PassResult[]>(levels.map((l) => [l, []]));
    try {
      for (let r = 0; r < reps; r++) {
        for (const c of levels) {
          const order = r % 2 === 0 ? ['mvpn', 'nginx'] : ['nginx', 'mvpn'];
          for (const who of order) {
            if (who === 'nginx' && !nginx) continue;
            const p = who === 'mvpn' ? await pass(s, MVPN_PORT, c, workers, s.daemon!.pid) : await pass(s, NGINX_PORT, c, workers, nginx!.pid);
            (who === 'mvpn' ? warm : ceil).get(c)!.push(p);
            ctx.log(`storm: ${who} ${c} in flight: ${p.agentsPerS} agents/s, ${p.failures} failed, p99 ${summarize(p.requestMs).p99.toFixed(0)} ms per request, server CPU ${p.serverCpuMsPerAgent} ms/agent, clients ${p.clientCpuMsPerAgent} ms/agent`);
            await sleep(500);
          }
        }
      }
      const cold: PassResult[] = [];
      const top = levels.at(-1)!;
      for (let r = 0; r < coldReps; r++) {
        await startDaemon(s);
        const t = epochMs();
        const p = await pass(s, MVPN_PORT, top, workers, s.daemon!.pid);
        cold.push(p);
        ctx.log(`storm: mvpn cold (restarted, nothing cached) ${top} in flight: ${p.agentsPerS} agents/s, ${p.failures} failed (${Math.round(epochMs() - t)} ms)`);
      }
      const mv = levels.map((c) => level(c, warm.get(c)!));
      const ng = nginx ? levels.map((c) => level(c, ceil.get(c)!)) : [];
      const coldLevel = level(top, cold);
      const failures = mv.reduce((a, l) => a + l.failures, 0) + coldLevel.failures;
      const ratios = ng.map((n, i) => round(n.agentsPerS.median / mv[i]!.agentsPerS.median, 2));
      const worst = ratios.length ? Math.max(...ratios) : NaN;
      // A ceiling that failed requests is no ceiling.
      const nginxFailures = ng.reduce((a, l) => a + l.failures, 0);
      if (nginxFailures > 0) ctx.log(`storm: nginx failed ${nginxFailures} agents: ${JSON.stringify(ng.map((l) => l.errors))}`);
      return {
        targets: [
          { what: `storm failures (${count} agents, every pass, warm and cold)`, goal: '0', measured: String(failures), met: failures === 0 },
          {
            what: `storm throughput, nginx / server mode (warm, worst of ${levels.join(' and ')} in flight)`,
            goal: '≤ 3×',
            measured: !nginx ? `no nginx: ${nginxProblem}` : nginxFailures > 0 ? `nginx failed ${nginxFailures} agents: no valid ceiling` : `${worst}× (${levels.map((c, i) => `${c}: ${ratios[i]}×`).join(', ')})`,
            met: nginx !== undefined && nginxFailures === 0 && worst <= 3,
          },
        ],
        data: { agents: count, workers, reps, coldReps, mvpn: mv, nginx: ng, mvpnCold: coldLevel, ratios, nginxProblem: nginxProblem ?? null, nginxVersion: nginx ? (await sh(NGINX, ['-v'], { allowFail: true })).stderr.trim() : null },
      };
    } finally {
      if (nginx) await stopProc(nginx, 10_000);
      if (s.daemon) await stopProc(s.daemon, 30_000);
    }
  },
  render(r: SectionResult): string {
    const d = r.data as { agents: number; workers: number; reps: number; coldReps: number; mvpn: LevelResult[]; nginx: LevelResult[]; mvpnCold: LevelResult; ratios: number[]; nginxProblem: string | null; nginxVersion: string | null };
    const row = (who: string, l: LevelResult): string =>
      `| ${who} | ${l.concurrency} | ${fmtRange(l.agentsPerS)} | ${fmtRange(l.requestsPerS)} | ${l.requestMs.median.toFixed(0)} / ${l.requestMs.p99.toFixed(0)} | ${l.agentMs.median.toFixed(0)} / ${l.agentMs.p99.toFixed(0)} | ${l.serverCpuMsPerAgent?.median.toFixed(2) ?? 'n/a'} | ${l.clientCpuMsPerAgent?.median.toFixed(2) ?? 'n/a'} | ${l.failures}${l.failures ? ` ${JSON.stringify(l.errors)}` : ''} |`;
    const rows: string[] = [];
    d.mvpn.forEach((l, i) => {
      rows.push(row('server mode (warm)', l));
      if (d.nginx[i]) rows.push(row(`nginx (ceiling)`, d.nginx[i]));
    });
    rows.push(row('server mode (cold: just restarted, builds every document and bundle)', d.mvpnCold));
    return [
      `${d.agents} simulated agents, each a new TLS connection with its own client certificate doing GET /v1/membership then GET of its bundle; load from ${d.workers} client processes in another namespace. Throughput: median (min–max) of ${d.reps} passes (cold: ${d.coldReps}); latency percentiles over all requests of all passes. ${d.nginxVersion ? `${d.nginxVersion} with worker_processes auto, same certificate and client-certificate check, same bytes.` : `No nginx ceiling: ${d.nginxProblem}.`}`,
      '',
      '| server | in flight | agents/s | requests/s | request p50 / p99 ms | agent p50 / p99 ms | server CPU ms/agent | client CPU ms/agent | failures |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...rows,
      '',
      d.ratios.length ? `nginx / server mode throughput: ${d.mvpn.map((l, i) => `${l.concurrency} in flight ${d.ratios[i]}×`).join(', ')}.` : '',
      'CPU columns: utime+stime of the server processes (nginx: master and workers) and of the load generators during a pass, per agent served (median of passes); on this 2-core machine server and clients share the cores, so CPU per agent is the figure that noise affects least.',
    ].join('\n');
  },
};
