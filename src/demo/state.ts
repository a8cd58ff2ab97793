/**
 * The small state file a demo leaves in its base directory
 * (`/run/mvpn-demo/<id>.json`), so `demo down` can find what a kept (or
 * crashed) demo left: its namespace prefix, its directory and the pids it
 * started. Pids are only ever signalled after /proc/<pid>/cmdline was seen
 * to name the demo's directory.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { namespacePids, namespacesWithPrefix, removeNamespaces } from '../netns/lab.ts';
import { writeFileAtomic } from '../util/fs-atomic.ts';
import { stopPid } from './world.ts';

export const DEFAULT_BASE_DIR = '/run/mvpn-demo';
/** Every demo namespace starts with this, then `<id>-`. */
export const NS_PREFIX = 'mvd-';

export interface DemoState {
  readonly schema: 1;
  readonly id: string;
  readonly prefix: string;
  readonly dir: string;
  /** The `demo` process itself; while it lives and `kept` is false, the demo is running and tears down by itself. */
  readonly owner: number;
  readonly kept: boolean;
  readonly pids: readonly number[];
  readonly started_at: string;
}

export function stateFile(baseDir: string, id: string): string {
  return join(baseDir, `${id}.json`);
}

export async function writeState(baseDir: string, s: DemoState): Promise<void> {
  await writeFileAtomic(stateFile(baseDir, s.id), JSON.stringify(s, null, 2) + '\n', 0o600);
}

export async function readStates(baseDir: string): Promise<DemoState[]> {
  let names: string[];
  try {
    names = await readdir(baseDir);
  } catch {
    return [];
  }
  const out: DemoState[] = [];
  for (const n of names.filter((x) => /^[0-9a-f]{6}\.json$/.test(x))) {
    try {
      const s = JSON.parse(await readFile(join(baseDir, n), 'utf8')) as DemoState;
      if (s.schema === 1 && typeof s.id === 'string' && s.prefix.startsWith(NS_PREFIX) && typeof s.dir === 'string') out.push(s);
    } catch {
      // not ours or half-written: leave it
    }
  }
  return out;
}

/** Remove one demo: its processes (verified by pid), its namespaces, its directory and state file. */
export async function removeDemo(baseDir: string, s: DemoState): Promise<void> {
  await Promise.all(s.pids.map((pid) => stopPid(pid, s.dir)));
  await removeNamespaces(await namespacesWithPrefix(s.prefix));
  await rm(s.dir, { recursive: true, force: true });
  await rm(stateFile(baseDir, s.id), { force: true });
}

/**
 * `demo down`: every demo recorded in `baseDir` that is kept or whose demo
 * process is gone, plus `mvd-` namespaces no state file names and nothing
 * runs in (what a demo killed while building its topology leaves).
 * A demo that is still running (not kept) is left to tear itself down.
 */
export async function downAll(baseDir: string, say: (line: string) => void): Promise<{ removed: string[]; running: string[] }> {
  const removed: string[] = [];
  const running: string[] = [];
  const states = await readStates(baseDir);
  for (const s of states) {
    if (!s.kept && (await demoRuns(s.owner))) {
      running.push(s.id);
      continue;
    }
    say(`removing demo ${s.id} (${s.dir})`);
    await removeDemo(baseDir, s);
    removed.push(s.id);
  }
  const known = new Set(states.map((s) => s.prefix));
  const orphans = (await namespacesWithPrefix(NS_PREFIX)).filter((n) => ![...known].some((p) => n.startsWith(p)));
  const idle: string[] = [];
  for (const n of orphans) if ((await namespacePids(n)).length === 0) idle.push(n);
  if (idle.length > 0) {
    say(`removing ${idle.length} leftover namespace(s): ${idle.join(' ')}`);
    await removeNamespaces(idle);
  }
  return { removed, running };
}

/** Whether `pid` is still a `mvpn-client demo` (argv holds "demo" as a word, not `demo down`). */
async function demoRuns(pid: number): Promise<boolean> {
  try {
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    return argv.includes('demo') && !argv.includes('down');
  } catch {
    return false;
  }
}
