/**
 * `mvpn-client demo` itself, on the built executable: one full run must end
 * with exit 0 (all 30 pairs, all six connected) and leave nothing; `demo
 * --keep` must leave a running demo that `demo down` removes completely.
 * The demos keep their files under a tmpDir() (`--dir`), so every process
 * they start names this test run's id and the suite's leak check sees it.
 */
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { namespacesWithPrefix } from '../../src/netns/lab.ts';
import { tmpDir } from '../helpers/tmp.ts';
import { builtBinary } from './binary.ts';

let bin: string;
let dir: { path: string; remove: () => Promise<void> };

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Processes whose command line names `marker`. */
async function processesNaming(marker: string): Promise<string[]> {
  const found: string[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      const cmd = (await readFile(`/proc/${e}/cmdline`, 'utf8')).split('\0').join(' ');
      if (cmd.includes(marker)) found.push(`${e}: ${cmd}`);
    } catch {
      // gone
    }
  }
  return found;
}

const demoId = (stderr: string): string => /demo ([0-9a-f]{6}): namespaces/.exec(stderr)?.[1] ?? 'unknown';

describe('mvpn-client demo (built binary)', () => {
  beforeAll(async () => {
    bin = builtBinary();
    dir = await tmpDir('demo');
  });
  afterAll(async () => {
    await run(['demo', 'down', '--dir', dir.path]);
    await dir.remove();
  }, 120_000);

  it('runs the whole demo: 30/30 pairs, six nodes connected, exit 0, nothing left behind', async () => {
    const r = await run(['demo', '--dir', dir.path]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toContain('30/30 ordered pairs answered');
    expect(r.stdout).toContain('RESULT: OK: 6/6 nodes connected');
    expect(r.stdout.match(/sees 5\/5/g)).toHaveLength(6);
    for (const what of ['topology built', 'server up', 'all enrolled', 'all connected', 'ping matrix']) expect(r.stdout).toContain(what);
    const id = demoId(r.stderr);
    expect(await namespacesWithPrefix(`mvd-${id}-`)).toEqual([]);
    expect(await readdir(dir.path)).toEqual([]);
    expect(await processesNaming(dir.path)).toEqual([]);
  }, 600_000);

  it('demo --keep leaves it running with commands to look around; demo down removes everything', async () => {
    const r = await run(['demo', '--keep', '--dir', dir.path]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    const id = demoId(r.stderr);
    expect(r.stdout).toContain('ip netns exec mvd-');
    expect(r.stdout).toContain(`demo down --dir ${dir.path}`);
    expect((await namespacesWithPrefix(`mvd-${id}-`)).length).toBeGreaterThan(0);
    expect((await processesNaming(dir.path)).length).toBeGreaterThan(6);
    // the printed status command works as printed
    const statusLine = r.stdout.split('\n').find((l) => l.includes(' status --runtime-dir '))!.trim().split(/\s+/);
    const st = await new Promise<number | null>((resolve) => spawn(statusLine[0]!, statusLine.slice(1), { stdio: 'ignore' }).once('exit', resolve));
    expect(st).toBe(0);

    const down = await run(['demo', 'down', '--dir', dir.path]);
    expect(down.code, down.stderr).toBe(0);
    expect(down.stdout).toContain(`removed demo(s) ${id}`);
    expect(await namespacesWithPrefix(`mvd-${id}-`)).toEqual([]);
    expect(await processesNaming(dir.path)).toEqual([]);
    expect(await readdir(dir.path)).toEqual([]);
  }, 600_000);
});
