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
 */
import { readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
const added: string[] = [];

async function guardTestRanges(): Promise<void> {
  for (const prefix of GUARDED) {
    const r = await sh('ip', ['route', 'show', 'exact', prefix], { allowFail: true });
    if (r.code !== 0 || r.stdout.trim() !== '') continue;
    const hostAddr = await sh('ip', ['-o', 'addr', 'show', 'to', prefix], { allowFail: true });
    if (hostAddr.stdout.trim() !== '') continue;
    const add = await sh('ip', ['route', 'add', 'unreachable', prefix], { allowFail: true });
    if (add.code === 0) added.push(prefix);
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
  for (const prefix of added.splice(0)) await sh('ip', ['route', 'del', 'unreachable', prefix], { allowFail: true });
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
