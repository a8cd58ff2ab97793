/**
 * `promtool` from Debian's prometheus package (build.sh installs it): checks
 * exposition text and rule files the way Prometheus itself would read them.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';

export const PROMTOOL = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => existsSync(p));
export const PROMETHEUS = ['/usr/bin/prometheus', '/usr/local/bin/prometheus'].find((p) => existsSync(p));

export interface PromtoolResult {
  readonly code: number;
  readonly out: string;
}

/** Runs promtool with `args`, `stdin` piped in; never throws on a non-zero exit. */
export function promtool(args: readonly string[], stdin?: string): Promise<PromtoolResult> {
  if (!PROMTOOL) throw new Error('promtool is not installed (apt-get install prometheus, or run ./build.sh as root)');
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, out }));
    child.stdin.end(stdin ?? '');
  });
}
