/**
 * Running short external commands (ip, openvpn --genkey, ...) with a timeout
 * and captured output. Long-running children go through the supervisors in
 * src/openvpn instead.
 */
import { execFile } from 'node:child_process';

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly code: number;
}

export type ExecFn = (cmd: string, args: readonly string[], opts?: { timeoutMs?: number; input?: string }) => Promise<ExecResult>;

/** Resolves with the exit code (never rejects on a non-zero exit); rejects only if the command cannot run. */
export const execCommand: ExecFn = (cmd, args, opts = {}) =>
  new Promise((resolve, reject) => {
    const child = execFile(cmd, [...args], { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 8 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === 'string') {
        reject(err);
        return;
      }
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ stdout, stderr, code });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
