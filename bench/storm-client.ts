/**
 * Load generator for the swap-in storm (bench/storm.ts starts it inside the
 * client namespace; never run it from the host namespace). Each simulated
 * agent is one node: its own TLS client certificate and key, one new
 * connection (no session resumption — a booting node has none), GET
 * /v1/membership, then GET of the bundle the document names (resolved
 * against the document's URL, as the agent does), both on that connection,
 * then close. `concurrency` agents are in flight at once.
 *
 * Protocol with the parent: prints `ready` once every TLS context is made,
 * waits for `go` on stdin (so several workers start together), prints one
 * JSON line with the result and exits.
 *
 * Run by bench/storm.ts: node bench/storm-client.ts CONFIG.json
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { Client } from 'undici';

interface Config {
  readonly origin: string;
  readonly ca: string;
  readonly identities: string;
  readonly worker: number;
  readonly workers: number;
  readonly concurrency: number;
  /** Save the bytes received (m/<node>.json, b/<node>/<net>-<version>.tar.gz) for the nginx ceiling. */
  readonly save?: string;
}

interface Identity {
  readonly node: string;
  readonly cert: string;
  readonly key: string;
}

export interface WorkerResult {
  readonly worker: number;
  readonly agents: number;
  readonly ok: number;
  readonly failures: number;
  readonly errors: Record<string, number>;
  readonly startEpochMs: number;
  readonly endEpochMs: number;
  readonly membershipMs: number[];
  readonly bundleMs: number[];
  readonly agentMs: number[];
  readonly bytes: number;
  /** CPU this worker used during the pass (user + system), ms. */
  readonly cpuMs: number;
}

const epochMs = (): number => performance.timeOrigin + performance.now();

async function main(): Promise<void> {
  const cfg = JSON.parse(await readFile(process.argv[2]!, 'utf8')) as Config;
  const all = JSON.parse(await readFile(cfg.identities, 'utf8')) as Identity[];
  const mine = all.filter((_, i) => i % cfg.workers === cfg.worker);
  const ca = cfg.ca;
  const membershipUrl = new URL('/v1/membership', cfg.origin);

  // TLS contexts (CA, certificate and key parsed) are made before the start, as a booting agent has its identity
  // loaded before it connects; each connection still does a full handshake with its own certificate.
  const contexts = new Map(mine.map((id) => [id.node, createSecureContext({ ca, cert: id.cert, key: id.key })]));
  const lines = createInterface({ input: process.stdin });
  const go = new Promise<void>((resolve) => lines.on('line', (l) => l.trim() === 'go' && resolve()));
  process.stdout.write('ready\n');
  await go;

  const errors: Record<string, number> = {};
  const membershipMs: number[] = [];
  const bundleMs: number[] = [];
  const agentMs: number[] = [];
  let ok = 0;
  let bytes = 0;
  const fail = (what: string): void => {
    errors[what] = (errors[what] ?? 0) + 1;
  };

  const oneAgent = async (id: Identity): Promise<void> => {
    const client = new Client(cfg.origin, {
      connect: { secureContext: contexts.get(id.node)!, timeout: 60_000 },
      headersTimeout: 60_000,
      bodyTimeout: 60_000,
      pipelining: 1,
    });
    const t0 = performance.now();
    let phase = 'membership';
    try {
      const r1 = await client.request({ method: 'GET', path: membershipUrl.pathname });
      const doc = Buffer.from(await r1.body.arrayBuffer());
      const t1 = performance.now();
      if (r1.statusCode !== 200) return fail(`membership HTTP ${r1.statusCode}`);
      const envelope = JSON.parse(doc.toString('utf8')) as { payload: string };
      const m = JSON.parse(Buffer.from(envelope.payload, 'base64').toString('utf8')) as { networks: { id: string; bundle: { url: string; size: number; version: number } }[] };
      const b = m.networks[0]?.bundle;
      if (!b) return fail('membership lists no network');
      const bundleUrl = new URL(b.url, membershipUrl);
      phase = 'bundle';
      const r2 = await client.request({ method: 'GET', path: bundleUrl.pathname });
      const bundle = Buffer.from(await r2.body.arrayBuffer());
      const t2 = performance.now();
      if (r2.statusCode !== 200) return fail(`bundle HTTP ${r2.statusCode}`);
      if (bundle.length !== b.size) return fail('bundle size differs from the document');
      membershipMs.push(t1 - t0);
      bundleMs.push(t2 - t1);
      agentMs.push(t2 - t0);
      bytes += doc.length + bundle.length;
      ok++;
      if (cfg.save) {
        await mkdir(join(cfg.save, 'b', id.node), { recursive: true });
        await writeFile(join(cfg.save, 'm', `${id.node}.json`), doc);
        await writeFile(join(cfg.save, 'b', id.node, `${m.networks[0]!.id}-${b.version}.tar.gz`), bundle);
      }
    } catch (err) {
      const e = err as { code?: string; name?: string; message?: string };
      fail(`${phase}: ${e.code ?? e.name ?? 'error'} (${String(e.message).slice(0, 80)})`);
    } finally {
      await client.close().catch(() => client.destroy().catch(() => undefined));
    }
  };

  if (cfg.save) await mkdir(join(cfg.save, 'm'), { recursive: true });
  const startEpochMs = epochMs();
  const cpu0 = process.cpuUsage();
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(cfg.concurrency, mine.length)) }, async () => {
      for (let i = next++; i < mine.length; i = next++) await oneAgent(mine[i]!);
    }),
  );
  const endEpochMs = epochMs();
  const cpu = process.cpuUsage(cpu0);
  const result: WorkerResult = {
    worker: cfg.worker,
    agents: mine.length,
    ok,
    failures: mine.length - ok,
    errors,
    startEpochMs,
    endEpochMs,
    membershipMs,
    bundleMs,
    agentMs,
    bytes,
    cpuMs: (cpu.user + cpu.system) / 1000,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
  lines.close();
}

main().catch((err: unknown) => {
  process.stderr.write(`storm-client: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
