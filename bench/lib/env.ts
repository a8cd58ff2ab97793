/**
 * What every benchmark shares: one run id, namespaces and temp directories
 * named after it, a cleanup stack that runs on success, failure, Ctrl-C,
 * SIGTERM and the run's time limit, and process helpers that stop only the
 * processes we started, by pid.
 *
 * Rules (DESIGN.md §9, applied to benchmarks):
 * - Namespaces come from src/netns/lab.ts with the prefix `mvb-<run>-` and
 *   assertLabAddress, so every address is from 198.18.0.0/15 (or the
 *   documentation ranges) and anything left can be found by prefix.
 * - Nothing is ever sent from the host namespace to a lab address: every
 *   process that talks over the lab network is started inside a namespace
 *   (`ip netns exec`, which execs, so the pid we hold is the process's own).
 *   Unix sockets (agent status, openvpn management) are files, not network.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { assertLabAddress, Lab, removeNamespaces, namespacesWithPrefix, type Netns } from '../../src/netns/lab.ts';

export const ROOT = resolve(import.meta.dirname, '../..');
/**
 * The executable measured: dist/mvpn-client, or MVPN_BENCH_BIN (a build of a
 * given commit made apart from the shared dist/, e.g. to compare before and
 * after a change while someone else rebuilds dist/).
 */
export const BIN = process.env['MVPN_BENCH_BIN'] ? resolve(process.env['MVPN_BENCH_BIN']) : join(ROOT, 'dist/mvpn-client');
export const NODE = join(ROOT, 'node_modules/.bin/node');
export const OPENVPN = '/usr/sbin/openvpn';

export type Cleanup = () => Promise<void> | void;

/** Output of a child, kept bounded (a chatty daemon must not grow our heap for the whole run). */
export class OutputTail {
  private text = '';
  private readonly max: number;
  private readonly watchers: { needle: string; resolve: () => void }[] = [];
  constructor(max = 256 * 1024) {
    this.max = max;
  }
  push(chunk: Buffer | string): void {
    const s = chunk.toString();
    this.text += s;
    if (this.text.length > this.max) this.text = this.text.slice(this.text.length - this.max / 2);
    for (const w of [...this.watchers]) {
      if (this.text.includes(w.needle)) {
        this.watchers.splice(this.watchers.indexOf(w), 1);
        w.resolve();
      }
    }
  }
  toString(): string {
    return this.text;
  }
  /** Resolves when `needle` has appeared (checked on every chunk; no polling delay). */
  waitFor(needle: string): Promise<void> {
    if (this.text.includes(needle)) return Promise.resolve();
    return new Promise((r) => this.watchers.push({ needle, resolve: r }));
  }
}

export interface Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly out: OutputTail;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  alive(): boolean;
}

/** Rejects after `ms` with a message naming what hung: every wait in a benchmark is bounded. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${Math.round(ms / 1000)} s`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class BenchEnv {
  readonly runId = randomBytes(3).toString('hex');
  readonly prefix = `mvb-${this.runId}-`;
  private readonly cleanups: { what: string; fn: Cleanup }[] = [];
  private labs = 0;
  private cleaning: Promise<void> | undefined;

  /** Register a cleanup; they run last-in first-out. Returns a function that runs it now (once). */
  defer(what: string, fn: Cleanup): () => Promise<void> {
    const entry = { what, fn };
    this.cleanups.push(entry);
    return async () => {
      const i = this.cleanups.indexOf(entry);
      if (i === -1) return;
      this.cleanups.splice(i, 1);
      await fn();
    };
  }

  async cleanupAll(): Promise<void> {
    this.cleaning ??= (async () => {
      while (this.cleanups.length > 0) {
        const c = this.cleanups.pop()!;
        try {
          await within(Promise.resolve(c.fn()), 30_000, `cleanup ${c.what}`);
        } catch (err) {
          process.stderr.write(`bench: cleanup ${c.what} failed: ${(err as Error).message}\n`);
        }
      }
      // Whatever a crashed step left under our prefix (all of it ours by name).
      const left = await namespacesWithPrefix(this.prefix);
      if (left.length > 0) await removeNamespaces(left);
    })();
    return this.cleaning;
  }

  /** A lab whose namespaces are `mvb-<run>-<k>-…`; destroyed by cleanupAll (or by the returned lab's owner). */
  lab(): Lab {
    const lab = new Lab({ prefix: `${this.prefix}${++this.labs}-`, checkAddress: assertLabAddress });
    this.defer(`lab ${lab.prefix}`, () => lab.destroy());
    return lab;
  }

  /** A fresh temp directory `/tmp/mvb-<run>-<label>-…` (0755: the status socket and nginx need to reach in), removed at cleanup. */
  async tmpDir(label: string): Promise<string> {
    const path = await mkdtemp(join(tmpdir(), `${this.prefix}${label}-`));
    await chmod(path, 0o755);
    this.defer(`rm ${path}`, () => rm(path, { recursive: true, force: true }));
    return path;
  }

  /**
   * Start a process inside `ns`. Its output goes into a bounded tail. The
   * lab stops it by pid when it is destroyed; stopProc stops it earlier.
   */
  spawnIn(ns: Netns, cmd: string, args: readonly string[], opts: SpawnOptions = {}): Proc {
    const child = spawn('ip', ['netns', 'exec', ns.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    ns.lab.track(child);
    return wrap(child);
  }

  /** A process in the host namespace that sends no network traffic (python notify listener, `status` over a unix socket). */
  spawnHost(cmd: string, args: readonly string[], opts: SpawnOptions = {}): Proc {
    const child = spawn(cmd, [...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    const p = wrap(child);
    this.defer(`pid ${p.pid}`, () => stopProc(p));
    return p;
  }
}

function wrap(child: ChildProcess): Proc {
  if (child.pid === undefined) throw new Error(`could not start ${child.spawnargs.join(' ')}`);
  const out = new OutputTail();
  child.stdout?.on('data', (d: Buffer) => out.push(d));
  child.stderr?.on('data', (d: Buffer) => out.push(d));
  const closed = new Promise<void>((r) => child.once('close', () => r()));
  // 'exit' can come before the last output; wait for the pipes to close too (bounded: a grandchild may hold them).
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => void Promise.race([closed, sleep(1_000)]).then(() => r({ code, signal }))),
  );
  return { child, pid: child.pid, out, exited, alive: () => child.exitCode === null && child.signalCode === null };
}

/** SIGTERM by pid, SIGKILL after `graceMs`; resolves when it has exited. */
export async function stopProc(p: Proc, graceMs = 10_000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!p.alive()) return;
  try {
    process.kill(p.pid, signal);
  } catch {
    return;
  }
  const done = await Promise.race([p.exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (done) return;
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch {
    return;
  }
  await Promise.race([p.exited, sleep(5_000)]);
}

/** Poll `cond` every `intervalMs` until it holds; throws after `timeoutMs` naming `what`. */
export async function pollUntil<T>(what: string, cond: () => Promise<T | undefined> | T | undefined, timeoutMs: number, intervalMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v !== undefined) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) throw new Error(`${what}: not reached within ${Math.round(timeoutMs / 1000)} s${lastErr ? ` (last error: ${(lastErr as Error).message})` : ''}`);
    await sleep(intervalMs);
  }
}

/**
 * The benchmarks measure dist/mvpn-client but set up state directories with
 * the code in src/, so a binary older than the source is refused (a store
 * migration in src/ that the old binary does not know would fail the run).
 */
export function requireBuilt(opts: { allowStale?: boolean } = {}): void {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run ./build.sh first (the benchmarks measure the built executable)`);
  if (!existsSync(OPENVPN)) throw new Error(`${OPENVPN} is missing: apt-get install openvpn`);
  const built = statSync(BIN).mtimeMs;
  const newer = (dir: string): string | undefined => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        const n = newer(p);
        if (n) return n;
      } else if (statSync(p).mtimeMs > built) return p;
    }
    return undefined;
  };
  const n = newer(join(ROOT, 'src'));
  if (n === undefined) return;
  const msg = `${BIN} is older than ${n}: run ./build.sh first (the benchmarks measure the built executable)`;
  if (!opts.allowStale) throw new Error(`${msg}, or pass --allow-stale`);
  process.stderr.write(`bench: warning: ${msg}\n`);
}

/**
 * MVPN_BENCH_PROFILE=DIR: the mvpn-client processes a benchmark starts
 * (agents, server daemons) write V8 CPU profiles there when they exit; read
 * them with bench/profile-summary.ts. The executable honours NODE_OPTIONS.
 */
export function profileEnv(): Record<string, string> {
  const dir = process.env['MVPN_BENCH_PROFILE'];
  return dir ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${dir}` } : {};
}

/** Epoch milliseconds with sub-millisecond precision, comparable across processes on this machine. */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}
