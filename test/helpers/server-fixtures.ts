/**
 * Server-mode test helpers: run the CLI through main() with buffers, make an
 * initialised state directory in a tmpDir, talk HTTPS to the API with or
 * without a node certificate, enroll a node the way the agent does (key made
 * here, CSR, token), and run a real openvpn client from an exported bundle
 * inside a namespace.
 */
import { request, type RequestOptions } from 'node:https';
import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { main } from '../../src/cli/main.ts';
import { bufferIo } from '../../src/cli/io.ts';
import { installBundle } from '../../src/bundle/install.ts';
import { parseAnchor } from '../../src/bundle/sign.ts';
import { verifyBundle } from '../../src/bundle/verify.ts';
import { renderClientConfig } from '../../src/openvpn/client-config.ts';
import { ManagementClient } from '../../src/openvpn/management.ts';
import { createCsr } from '../../src/pki/csr.ts';
import { generateKeyPairPem, type KeyAlg, type KeyPairPem } from '../../src/pki/keys.ts';
import { systemClock } from '../../src/util/clock.ts';
import type { ServerContext } from '../../src/server/ops/context.ts';
import { loadServerConfig } from '../../src/server/config.ts';
import { openStore, postgresUrl } from '../../src/server/store/open.ts';
import { waitFor, type Netns } from './netns.ts';
import { pgDump, sharedPostgres, testStoreEngine } from './postgres.ts';
import { tmpDir } from './tmp.ts';

export interface CliResult {
  readonly code: number;
  readonly out: string;
  readonly err: string;
  json<T = Record<string, unknown>>(): T;
}

/** Runs `mvpn-client ARGS` in-process (`stdin`: what it reads from standard input). */
export async function cli(args: readonly string[], stdin?: string): Promise<CliResult> {
  const io = bufferIo({}, stdin === undefined ? undefined : Buffer.from(stdin));
  const code = await main(args, io);
  const out = io.out();
  return {
    code,
    out,
    err: io.err(),
    json<T>() {
      try {
        return JSON.parse(out) as T;
      } catch {
        throw new Error(`not JSON (exit ${code}): ${out}\nstderr: ${io.err()}`);
      }
    },
  };
}

export interface TestServer {
  readonly stateDir: string;
  readonly dir: string;
  /** `mvpn-client server ARGS --state-dir <this>`; throws unless it exits 0 (use cli() for failures). */
  run(args: readonly string[]): Promise<CliResult>;
  /** Same, with --json, parsed. */
  json<T = Record<string, unknown>>(args: readonly string[]): Promise<T>;
  remove(): Promise<void>;
}

/**
 * `server init` into a fresh tmpDir with test ranges (pool 198.19.0.0/16), an API on 127.0.0.1:0 and metrics
 * on 127.0.0.1:0 (a free port: tests never meet on the default 9474, nor see each other's metrics).
 */
export async function makeServer(
  opts: { label?: string; address?: string; listen?: string; metricsListen?: string; extra?: readonly string[]; store?: 'sqlite' | 'postgres' } = {},
): Promise<TestServer> {
  const dir = await tmpDir(opts.label ?? 'srv');
  const stateDir = join(dir.path, 'state');
  const init = await cli([
    'server',
    'init',
    '--state-dir',
    stateDir,
    '--address',
    opts.address ?? '127.0.0.1',
    '--listen',
    opts.listen ?? '127.0.0.1:0',
    '--metrics-listen',
    opts.metricsListen ?? '127.0.0.1:0',
    '--pool',
    '198.19.0.0/16',
    '--port-range',
    '1194-1293',
    // MVPN_TEST_STORE=postgres: a fresh database on this file's PostgreSQL cluster (test/helpers/postgres.ts).
    ...((opts.store ?? testStoreEngine()) === 'postgres' ? ['--store-url', await (await sharedPostgres()).createDatabase()] : []),
    ...(opts.extra ?? []),
  ]);
  if (init.code !== 0) throw new Error(`server init failed: ${init.err}`);
  const run = async (args: readonly string[]) => {
    const r = await cli(['server', ...args, '--state-dir', stateDir]);
    if (r.code !== 0) throw new Error(`mvpn-client server ${args.join(' ')} exited ${r.code}: ${r.err}`);
    return r;
  };
  return {
    stateDir,
    dir: dir.path,
    run,
    json: async <T>(args: readonly string[]) => (await run([...args, '--json'])).json<T>(),
    remove: dir.remove,
  };
}

/** `fn` with a ServerContext on the state directory, closed afterwards whatever happens. */
export async function withContext<T>(stateDir: string, fn: (ctx: ServerContext) => Promise<T>): Promise<T> {
  const ctx = await openContext(stateDir);
  try {
    return await fn(ctx);
  } finally {
    ctx.close();
  }
}

/**
 * Everything the state store holds, as bytes on disk or on the wire: the
 * SQLite file and its WAL, or a pg_dump of the PostgreSQL database — for
 * tests that check what is never stored (a token, a private key).
 */
export async function storeBytes(stateDir: string): Promise<Buffer[]> {
  const { config, paths } = await loadServerConfig(stateDir);
  if (config.store === undefined) {
    return [await readFile(paths.store), await readFile(`${paths.store}-wal`).catch(() => Buffer.alloc(0))];
  }
  return [await pgDump(await postgresUrl(config.store))];
}

/** A ServerContext on a state directory (its own store connection; close it). */
export async function openContext(stateDir: string, now?: () => number): Promise<ServerContext & { close(): void }> {
  const { config, paths } = await loadServerConfig(stateDir);
  const store = await openStore(config, paths);
  return { config, paths, store, clock: now ? { now } : systemClock, close: () => store.close() };
}

export interface HttpResult {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  json<T = Record<string, unknown>>(): T;
}

export interface ClientTls {
  readonly ca: string;
  readonly cert?: string;
  readonly key?: string;
}

/** One HTTPS request to the API (new connection each time, no pooling). */
export function https(
  port: number,
  path: string,
  tls: ClientTls,
  opts: { method?: string; body?: string | Buffer; headers?: Record<string, string>; host?: string } = {},
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const o: RequestOptions = {
      host: opts.host ?? '127.0.0.1',
      port,
      path,
      method: opts.method ?? 'GET',
      ca: tls.ca,
      ...(tls.cert ? { cert: tls.cert, key: tls.key } : {}),
      headers: { ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}), ...opts.headers },
      agent: false,
      timeout: 20_000,
    };
    const req = request(o, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body,
          json: <T>() => JSON.parse(body.toString('utf8')) as T,
        });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    if (opts.body !== undefined) req.end(opts.body);
    else req.end();
  });
}

export interface Enrolled {
  readonly node: string;
  readonly keyPair: KeyPairPem;
  readonly identityCertPem: string;
  readonly tls: ClientTls;
}

/** What the agent does at enrollment: key made here, CSR with CN = node, token. */
export async function enroll(
  port: number,
  caPem: string,
  node: string,
  token: string,
  opts: { alg?: KeyAlg; cn?: string } = {},
): Promise<{ res: HttpResult; enrolled?: Enrolled }> {
  const keyPair = await generateKeyPairPem(opts.alg ?? 'ec-p256');
  const csr = await createCsr({ keyPair, cn: opts.cn ?? node });
  const res = await https(port, '/v1/enroll', { ca: caPem }, { method: 'POST', body: JSON.stringify({ node, token, csr }) });
  if (res.status !== 200) return { res };
  const identityCertPem = res.json<{ identity_cert: string }>().identity_cert;
  return { res, enrolled: { node, keyPair, identityCertPem, tls: { ca: caPem, cert: identityCertPem, key: keyPair.privateKeyPem } } };
}

export interface VpnClient {
  readonly child: ChildProcess;
  readonly output: () => string;
  readonly dev: string;
  stop(): Promise<void>;
}

/**
 * A real openvpn client inside `ns` from an exported bundle, installed and
 * rendered with the agent's own code (verifyBundle, installBundle,
 * renderClientConfig). The management hold is released (and turned off, so
 * restarts after a lost server do not wait for us).
 */
export async function startVpnClient(
  ns: Netns,
  opts: { bundlePath: string; anchorPath: string; node: string; workDir: string },
): Promise<VpnClient> {
  const anchor = parseAnchor((await readFile(opts.anchorPath, 'utf8')).trim());
  const verified = await verifyBundle(await readFile(opts.bundlePath), { anchor, nodeId: opts.node, now: new Date() });
  const mgmtSocket = join(opts.workDir, `${verified.manifest.network}.sock`);
  const dev = `mv-${verified.manifest.network}`;
  const installed = await installBundle(verified, {
    stateDir: opts.workDir,
    render: (spec, _dir, files) =>
      renderClientConfig(spec, { ca: files.ca, cert: files.cert, key: files.key, tlsCryptV2: files.tlsCryptV2, crl: files.crl, mgmtSocket, dev }),
  });
  return startOpenvpnClient(ns, installed.configPath, mgmtSocket, dev);
}

/** SIGTERM to a child this test started, and wait for its exit (nothing if it is gone already). */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/**
 * A real openvpn client inside `ns` from a rendered config whose management
 * socket is `mgmtSocket`: the hold is released and turned off.
 */
export async function startOpenvpnClient(ns: Netns, configPath: string, mgmtSocket: string, dev: string): Promise<VpnClient> {
  const child = ns.spawn('openvpn', ['--config', configPath]);
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString('utf8')));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString('utf8')));
  let mgmt: ManagementClient | undefined;
  const ok = await waitFor(async () => {
    try {
      mgmt = await ManagementClient.connect(mgmtSocket, { timeoutMs: 2_000 });
      return true;
    } catch {
      return false;
    }
  }, 20_000);
  if (!ok || !mgmt) throw new Error(`openvpn client in ${ns.name} never opened its management socket:\n${output}`);
  await mgmt.command('hold off');
  await mgmt.holdRelease();
  mgmt.close();
  return {
    child,
    dev,
    output: () => output,
    stop: () => stopChild(child),
  };
}

const ROOT = join(import.meta.dirname, '../..');

export interface ServerDaemonRun {
  readonly child: ChildProcess;
  log(): string;
  /** SIGTERM and wait for its exit (nothing if it is gone already). */
  stop(): Promise<void>;
}

/** `mvpn-client server run` on `s`'s state dir inside `ns` (from the sources), its output kept. */
export function startServerDaemon(ns: Netns, s: TestServer): ServerDaemonRun {
  let log = '';
  const child = ns.spawn(process.execPath, [join(ROOT, 'src/main.ts'), 'server', 'run', '--state-dir', s.stateDir], { cwd: ROOT });
  child.stderr?.on('data', (d: Buffer) => (log += d.toString('utf8')));
  child.stdout?.on('data', (d: Buffer) => (log += d.toString('utf8')));
  return {
    child,
    log: () => log,
    stop: () => stopChild(child),
  };
}

/** The daemon's status.json (undefined while it has none). */
export async function readSnapshot<T>(s: TestServer): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(join(s.stateDir, 'run', 'status.json'), 'utf8')) as T;
  } catch {
    return undefined;
  }
}

export interface PingMember {
  readonly name: string;
  readonly ns: Netns;
  readonly address: string;
}

/** Every ordered pair of `among` that does not answer one ping (`a→b`); empty when all do. */
export async function failingPairs(among: readonly PingMember[]): Promise<string[]> {
  const failed: string[] = [];
  await Promise.all(
    among.map(async (a) => {
      for (const b of among) if (a !== b && !(await a.ns.ping(b.address, { timeoutS: 1 }))) failed.push(`${a.name}→${b.name}`);
    }),
  );
  return failed;
}

/**
 * L3 roaming convergence: waits for the openvpn client on `mgmtSocket` to
 * report CONNECTED to `remote`, then for every pair of `among` to answer;
 * `convergedMs` is the time between the two (undefined: never).
 */
export async function roamConvergence(mgmtSocket: string, remote: string, among: readonly PingMember[], withinMs: number): Promise<{ connectedAt: number; convergedMs?: number; failed: string[] }> {
  const mgmt = await ManagementClient.connect(mgmtSocket, { timeoutMs: 2_000 });
  let connectedAt = 0;
  try {
    await waitFor(async () => {
      const st = await mgmt.state().catch(() => undefined);
      if (st?.name === 'CONNECTED' && st.remoteIp === remote) connectedAt = Date.now();
      return connectedAt > 0;
    }, withinMs, 100);
  } finally {
    mgmt.close();
  }
  if (connectedAt === 0) return { connectedAt, failed: ['never CONNECTED'] };
  let failed: string[] = [];
  const ok = await waitFor(async () => (failed = await failingPairs(among)).length === 0, withinMs, 100);
  return { connectedAt, ...(ok ? { convergedMs: Date.now() - connectedAt } : {}), failed };
}
