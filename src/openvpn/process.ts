/**
 * openvpn processes by pid: naming the per-instance runtime files, finding an
 * instance that still runs, stopping it, and cleaning up after a crashed
 * previous run of the agent or server.
 *
 * Safety rule: a pid is only ever signalled after /proc/<pid>/cmdline shows
 * it is an openvpn started with *this* instance's `--writepid` or
 * `--management` path. A pid file can outlive its process and the pid can be
 * reused by anything; the command line check (repeated right before every
 * signal) is what keeps us from killing an unrelated process. Nothing is
 * ever found or stopped by name alone.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile, rm, lstat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { nullLogger, type Logger } from '../log.ts';
import { systemClock, type Clock } from '../util/clock.ts';
import type { OpenvpnEvent } from './events.ts';

/** Runtime file names for an instance; cleanupLeftovers recognises exactly these. */
export function runtimePaths(runtimeDir: string, id: string): { mgmtSocket: string; pidFile: string } {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(id)) throw new Error(`instance id ${JSON.stringify(id)} cannot name runtime files`);
  return { mgmtSocket: join(runtimeDir, `openvpn-${id}.sock`), pidFile: join(runtimeDir, `openvpn-${id}.pid`) };
}

const PID_FILE = /^openvpn-.+\.pid$/;
const SOCKET_FILE = /^openvpn-.+\.sock$/;

export interface InstanceFiles {
  readonly pidFile?: string;
  readonly mgmtSocket?: string;
}

/** Value of `--opt` in argv (the first one), if any. */
function argAfter(argv: readonly string[], opt: string): string | undefined {
  const i = argv.indexOf(opt);
  return i === -1 ? undefined : argv[i + 1];
}

/**
 * True when argv is an openvpn started for these files: argv[0] names an
 * `openvpn` binary and its `--writepid` or `--management` argument is one of
 * the given paths. Pure.
 */
export function isOpenvpnFor(argv: readonly string[], files: InstanceFiles): boolean {
  if (argv.length === 0 || basename(argv[0]!) !== 'openvpn') return false;
  const pid = argAfter(argv, '--writepid');
  const sock = argAfter(argv, '--management');
  return (
    (files.pidFile !== undefined && pid !== undefined && resolve(pid) === resolve(files.pidFile)) ||
    (files.mgmtSocket !== undefined && sock !== undefined && resolve(sock) === resolve(files.mgmtSocket))
  );
}

/** True when argv is an openvpn whose pid file or management socket lies in runtimeDir with our naming. Pure. */
export function isOpenvpnInDir(argv: readonly string[], runtimeDir: string): boolean {
  if (argv.length === 0 || basename(argv[0]!) !== 'openvpn') return false;
  const inDir = (p: string | undefined, re: RegExp): boolean => p !== undefined && resolve(dirname(p)) === resolve(runtimeDir) && re.test(basename(p));
  return inDir(argAfter(argv, '--writepid'), PID_FILE) || inDir(argAfter(argv, '--management'), SOCKET_FILE);
}

/** The process's argv, or undefined when it is gone (or a zombie, whose cmdline is empty). */
export async function readCmdline(pid: number, procRoot = '/proc'): Promise<string[] | undefined> {
  try {
    return parseCmdline(await readFile(`${procRoot}/${pid}/cmdline`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** /proc/<pid>/cmdline as argv; a zombie's is empty (undefined). */
function parseCmdline(raw: string): string[] | undefined {
  return raw === '' ? undefined : raw.replace(/\0$/, '').split('\0');
}

/** Alive and not a zombie. */
export async function isAlive(pid: number, procRoot = '/proc'): Promise<boolean> {
  try {
    const stat = await readFile(`${procRoot}/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

async function readPidFile(path: string): Promise<number | undefined> {
  try {
    const text = (await readFile(path, 'utf8')).trim();
    if (!/^\d{1,10}$/.test(text)) return undefined;
    const pid = Number(text);
    return pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Every live openvpn whose argv satisfies `match`, by scanning /proc. The
 * reads are synchronous: /proc files are made in memory, and one promise
 * per process (open, stat, read, close through the thread pool) made the
 * agent's start-up scan ~36 ms of CPU with a few hundred processes against
 * ~4 ms read directly (issue 14).
 */
export async function scanOpenvpn(match: (argv: readonly string[]) => boolean, procRoot = '/proc'): Promise<number[]> {
  const found: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync(procRoot);
  } catch {
    return Promise.resolve(found);
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    let argv: string[] | undefined;
    try {
      argv = parseCmdline(readFileSync(`${procRoot}/${pid}/cmdline`, 'utf8'));
    } catch {
      continue;
    }
    if (argv && match(argv)) found.push(pid);
  }
  return Promise.resolve(found);
}

export interface FindOptions {
  readonly procRoot?: string;
  /**
   * `always` (default): after the pid file, scan every process's cmdline.
   * `when-files-exist`: scan only when the pid file or the management socket
   * exists. For a caller that ran cleanupLeftovers (a full scan) on this
   * runtime directory at start and is the only one using it since: any
   * openvpn of this instance is then its own child, and a live one holds
   * its files (openvpn writes both within milliseconds of starting, and
   * only we remove them, after checking).
   */
  readonly scan?: 'always' | 'when-files-exist';
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    // Anything but "not there" (EACCES, ENOTDIR...) counts as there: scan.
    return (e as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/**
 * The pid of a live openvpn that runs this instance (by its pid file, then by
 * scanning /proc for its management socket or pid file), or undefined. The
 * supervisor refuses to start a second one.
 */
export async function findRunning(files: InstanceFiles, opts: FindOptions = {}): Promise<number | undefined> {
  const procRoot = opts.procRoot ?? '/proc';
  if (files.pidFile !== undefined) {
    const pid = await readPidFile(files.pidFile);
    if (pid !== undefined) {
      const argv = await readCmdline(pid, procRoot);
      if (argv && isOpenvpnFor(argv, files) && (await isAlive(pid, procRoot))) return pid;
    }
  }
  if (opts.scan === 'when-files-exist') {
    const paths = [files.pidFile, files.mgmtSocket].filter((p): p is string => p !== undefined);
    const present = await Promise.all(paths.map(exists));
    if (!present.includes(true)) return undefined;
  }
  for (const pid of await scanOpenvpn((argv) => isOpenvpnFor(argv, files), procRoot)) {
    if (await isAlive(pid, procRoot)) return pid;
  }
  return undefined;
}

export interface TerminateOptions {
  /** Time between SIGTERM and SIGKILL. */
  readonly graceMs?: number;
  /** Time to wait after SIGKILL before giving up. */
  readonly killWaitMs?: number;
  readonly pollMs?: number;
  readonly clock?: Clock;
  /** Called right before each signal; false means the pid is no longer the process we meant, so we stop there. */
  readonly stillOurs?: () => Promise<boolean>;
  readonly kill?: (pid: number, signal: NodeJS.Signals) => void;
  readonly alive?: (pid: number) => Promise<boolean>;
}

function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((r) => clock.setTimeout(r, ms));
}

function signalPid(kill: (pid: number, signal: NodeJS.Signals) => void, pid: number, sig: NodeJS.Signals): void {
  try {
    kill(pid, sig);
  } catch {
    // already gone
  }
}

/**
 * Stops a process that is not our child (a leftover): SIGTERM (+ SIGCONT, so
 * a stopped process can act on it), poll until gone, SIGKILL after the grace
 * period. Resolves to how it ended.
 */
export async function terminatePid(pid: number, opts: TerminateOptions = {}): Promise<'exited' | 'killed' | 'stuck' | 'not-ours'> {
  const clock = opts.clock ?? systemClock;
  const kill = opts.kill ?? ((p, s) => process.kill(p, s));
  const alive = opts.alive ?? ((p) => isAlive(p));
  const stillOurs = opts.stillOurs ?? (async () => true);
  const pollMs = opts.pollMs ?? 50;
  const waitGone = async (ms: number): Promise<boolean> => {
    const deadline = clock.now() + ms;
    for (;;) {
      if (!(await alive(pid))) return true;
      if (clock.now() >= deadline) return false;
      await sleep(clock, pollMs);
    }
  };
  if (!(await alive(pid))) return 'exited';
  if (!(await stillOurs())) return 'not-ours';
  signalPid(kill, pid, 'SIGTERM');
  signalPid(kill, pid, 'SIGCONT');
  if (await waitGone(opts.graceMs ?? 5_000)) return 'exited';
  if (!(await stillOurs())) return 'not-ours';
  signalPid(kill, pid, 'SIGKILL');
  return (await waitGone(opts.killWaitMs ?? 5_000)) ? 'killed' : 'stuck';
}

export interface CleanupOptions {
  readonly graceMs?: number;
  readonly clock?: Clock;
  readonly logger?: Logger<OpenvpnEvent>;
  readonly procRoot?: string;
  readonly kill?: (pid: number, signal: NodeJS.Signals) => void;
}

/**
 * After a crash of the agent (or server), stops every openvpn its previous
 * run left behind in `runtimeDir` and removes their stale pid files and
 * management sockets (only files named as runtimePaths names them). Call it
 * once at startup, before any supervisor starts. A pid that no longer is our
 * openvpn is left alone and only its stale pid file goes.
 */
export async function cleanupLeftovers(runtimeDir: string, opts: CleanupOptions = {}): Promise<{ stopped: number[]; removed: string[] }> {
  const logger = opts.logger ?? nullLogger<OpenvpnEvent>();
  const procRoot = opts.procRoot ?? '/proc';
  const stopped: number[] = [];
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(runtimeDir);
  } catch {
    return { stopped, removed };
  }
  const pidFiles = names.filter((n) => PID_FILE.test(n)).map((n) => join(runtimeDir, n));
  const sockets = names.filter((n) => SOCKET_FILE.test(n)).map((n) => join(runtimeDir, n));

  const candidates = new Map<number, string>();
  for (const file of pidFiles) {
    const pid = await readPidFile(file);
    if (pid === undefined) continue;
    const argv = await readCmdline(pid, procRoot);
    if (argv && isOpenvpnInDir(argv, runtimeDir)) candidates.set(pid, file);
    else if (argv) logger.emit({ kind: 'leftover.skipped', pid, file, reason: 'that pid is not an openvpn of this runtime directory' });
  }
  // Also those whose pid file is gone.
  for (const pid of await scanOpenvpn((argv) => isOpenvpnInDir(argv, runtimeDir), procRoot)) {
    if (!candidates.has(pid)) candidates.set(pid, `/proc/${pid}/cmdline`);
  }

  const survivors: number[] = [];
  for (const [pid, file] of candidates) {
    const outcome = await terminatePid(pid, {
      ...(opts.graceMs === undefined ? {} : { graceMs: opts.graceMs }),
      ...(opts.clock === undefined ? {} : { clock: opts.clock }),
      ...(opts.kill === undefined ? {} : { kill: opts.kill }),
      alive: (p) => isAlive(p, procRoot),
      stillOurs: async () => {
        const argv = await readCmdline(pid, procRoot);
        return argv !== undefined && isOpenvpnInDir(argv, runtimeDir);
      },
    });
    if (outcome === 'exited' || outcome === 'killed') {
      stopped.push(pid);
      logger.emit({ kind: 'leftover.stopped', pid, file });
    } else if (outcome === 'stuck') {
      survivors.push(pid);
    }
  }

  // Files still named by a surviving process stay; everything else is stale.
  const inUse = new Set<string>();
  for (const pid of survivors) {
    const argv = (await readCmdline(pid, procRoot)) ?? [];
    for (const opt of ['--writepid', '--management']) {
      const p = argAfter(argv, opt);
      if (p !== undefined) inUse.add(resolve(p));
    }
  }
  for (const path of [...pidFiles, ...sockets]) {
    if (inUse.has(resolve(path))) continue;
    try {
      const st = await lstat(path);
      if (st.isDirectory()) continue;
      await rm(path, { force: true });
      removed.push(path);
      logger.emit({ kind: 'leftover.removed', path });
    } catch {
      // gone meanwhile
    }
  }
  return { stopped, removed };
}
