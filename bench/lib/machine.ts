/**
 * What the figures were measured on. These machines are shared, so the load
 * average at the start is recorded next to the hardware.
 */
import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { promisify } from 'node:util';
import { BIN, OPENVPN } from './env.ts';

const run = promisify(execFile);

export interface Machine {
  readonly nproc: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly kernel: string;
  readonly openvpn: string;
  readonly node: string;
  readonly mvpnClient: string;
  readonly loadAvgAtStart: readonly number[];
  readonly note: string;
}

async function firstLine(cmd: string, args: string[]): Promise<string> {
  try {
    const r = await run(cmd, args);
    return (r.stdout || r.stderr).split('\n')[0]!.trim();
  } catch (err) {
    // openvpn --version exits 1 after printing its version
    const e = err as { stdout?: string; stderr?: string };
    return ((e.stdout ?? '') || (e.stderr ?? '')).split('\n')[0]?.trim() || 'unknown';
  }
}

export async function describeMachine(): Promise<Machine> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? cpus()[0]?.model ?? 'unknown';
  const nproc = Number((await firstLine('nproc', [])) || cpus().length);
  const binVersion = await firstLine(BIN, ['--version']);
  const binSize = await stat(BIN).then((s) => s.size, () => 0);
  return {
    nproc,
    cpuModel: model,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: await firstLine('uname', ['-sr']),
    openvpn: await firstLine(OPENVPN, ['--version']),
    node: process.version,
    mvpnClient: `${binVersion} (${binSize} bytes)`,
    loadAvgAtStart: loadavg().map((x) => Math.round(x * 100) / 100),
    note: `shared ${nproc}-core VM: other engineers' builds and tests run on it at the same time, so absolute figures are noisy; each comparison is measured side by side in the same run`,
  };
}
