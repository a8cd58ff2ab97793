/**
 * Runs once around the whole suite. Fixes the run id the workers inherit, and
 * at the end checks that the suite left nothing behind: no namespace of this
 * run and no process whose command line names this run's id. Anything found
 * is removed (namespaces) or stopped by pid, and the suite fails.
 *
 * While the suite runs, the test ranges that the host itself does not use are
 * made unreachable in the host namespace, so a test that by mistake talks to
 * a lab address from outside the lab fails at once instead of sending traffic
 * out through the host's default route. Only 198.18.0.0/15, the range the
 * labs use: on these machines the documentation ranges are real — the host's
 * own link is in 192.0.2.0/24 and the package mirrors answer at an address in
 * 203.0.113.0/24, so guarding those broke apt (and debootstrap) during tests.
 *
 * Several suites run on one host at once (engineers' worktrees, the lead's
 * full run), all in the one host namespace, and the guard route is shared:
 * a suite that added it used to delete it at its end while another suite's
 * tests still relied on it (agent-via's "without via" cases then went out
 * by the default route and timed out instead of failing at once). So each
 * suite registers in GUARD_DIR (a file named by its run id, holding its pid)
 * and the route is removed only by the last live suite, and only when a
 * registered suite added it (the `route-added` marker): a route that was
 * there before (the host's, or one added by a suite of an older checkout that
 * does not register) is left to whoever made it.
 */
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isAlive } from '../../src/openvpn/process.ts';
import { leftoverNamespaces, sh } from './netns.ts';
import { runId } from './run-id.ts';

export async function setup(): Promise<void> {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 24) {
    throw new Error(
      `tests need the pinned Node 24 runtime, this is ${process.version}: run them with \`npm test\` or \`npx vitest run FILE\` (both put node_modules/.bin first on PATH), not node_modules/.bin/vitest directly`,
    );
  }
  runId();
  await guardTestRanges();
}

const GUARDED = ['198.18.0.0/15'];
/** The suites that rely on the guard route now: one file per run id, holding the suite's pid. */
const GUARD_DIR = join(tmpdir(), 'mvpn-test-range-guard');
/** Present while the guard route is one a registered suite added. */
const ADDED = 'route-added';

/** Run ids of the other suites registered in GUARD_DIR whose process still lives (stale files are removed). */
async function otherLiveSuites(id: string): Promise<string[]> {
  const live: string[] = [];
  for (const name of await readdir(GUARD_DIR).catch(() => [] as string[])) {
    if (name === id || name === ADDED) continue;
    const pid = Number(await readFile(join(GUARD_DIR, name), 'utf8').catch(() => ''));
    if (Number.isInteger(pid) && pid > 0 && (await isAlive(pid))) live.push(name);
    else await rm(join(GUARD_DIR, name), { force: true });
  }
  return live;
}

async function guardTestRanges(): Promise<void> {
  await mkdir(GUARD_DIR, { recursive: true, mode: 0o755 });
  await writeFile(join(GUARD_DIR, runId()), String(process.pid));
  for (const prefix of GUARDED) {
    const r = await sh('ip', ['route', 'show', 'exact', prefix], { allowFail: true });
    if (r.code !== 0 || r.stdout.trim() !== '') continue;
    const hostAddr = await sh('ip', ['-o', 'addr', 'show', 'to', prefix], { allowFail: true });
    if (hostAddr.stdout.trim() !== '') continue;
    const add = await sh('ip', ['route', 'add', 'unreachable', prefix], { allowFail: true });
    if (add.code === 0) await writeFile(join(GUARD_DIR, ADDED), prefix);
  }
}

/** Removes the guard route unless another live suite still relies on it. GUARD_DIR itself stays (another suite may be registering). */
async function releaseTestRanges(): Promise<void> {
  const id = runId();
  await rm(join(GUARD_DIR, id), { force: true });
  if ((await otherLiveSuites(id)).length > 0) return;
  const added = await readFile(join(GUARD_DIR, ADDED), 'utf8').catch(() => undefined);
  if (added === undefined) return;
  await rm(join(GUARD_DIR, ADDED), { force: true });
  for (const prefix of GUARDED) {
    if (prefix === added) await sh('ip', ['route', 'del', 'unreachable', prefix], { allowFail: true });
  }
}

async function leftoverProcesses(id: string): Promise<{ pid: number; cmd: string }[]> {
  const found: { pid: number; cmd: string }[] = [];
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const cmd = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
      if (cmd.includes(`mvt-${id}`)) found.push({ pid, cmd });
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

export async function teardown(): Promise<void> {
  await releaseTestRanges();
  const id = runId();
  const procs = await leftoverProcesses(id);
  for (const p of procs) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  const ns = await leftoverNamespaces();
  for (const n of ns) await sh('ip', ['netns', 'del', n], { allowFail: true });
  const dirs = (await readdir(tmpdir())).filter((d) => d.startsWith(`mvt-${id}-`)).map((d) => join(tmpdir(), d));
  for (const d of dirs) await rm(d, { recursive: true, force: true });
  if (procs.length > 0 || ns.length > 0 || dirs.length > 0) {
    throw new Error(
      `the test suite left things behind (now removed): namespaces [${ns.join(', ')}], processes [${procs.map((p) => `${p.pid}: ${p.cmd}`).join('; ')}], temp directories [${dirs.join(', ')}]`,
    );
  }
  process.stderr.write(`leak check: no namespace, process or temp directory of test run ${id} left behind\n`);
}
