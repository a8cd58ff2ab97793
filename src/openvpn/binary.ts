/**
 * Finding the openvpn binary and checking its version once at startup, so a
 * missing or too old openvpn is one clear error (MVPN_DEPENDENCY_MISSING)
 * instead of every network crash-looping in backoff.
 *
 * 2.5 is the floor: tls-crypt-v2 and `data-ciphers` (both in the hardened
 * template) appeared there.
 */
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { ConfigError } from '../errors.ts';
import { execCommand, type ExecFn } from '../util/exec.ts';

export interface OpenvpnBinary {
  readonly path: string;
  /** e.g. "2.6.14" */
  readonly version: string;
  readonly major: number;
  readonly minor: number;
}

export const MIN_OPENVPN = { major: 2, minor: 5 } as const;

const SYSTEM_DIRS = ['/usr/sbin', '/usr/local/sbin', '/sbin', '/usr/bin', '/usr/local/bin', '/bin'];

/** Parses the first line of `openvpn --version` ("OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL ..."). Pure. */
export function parseOpenvpnVersion(output: string): { version: string; major: number; minor: number } | undefined {
  const m = /^OpenVPN (\d+)\.(\d+)(\.\d+)?([A-Za-z0-9_~+-]*)\s/m.exec(output);
  if (!m) return undefined;
  return { version: `${m[1]}.${m[2]}${m[3] ?? ''}${m[4] ?? ''}`, major: Number(m[1]), minor: Number(m[2]) };
}

async function executable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Resolves `explicitPath` (from config) or searches PATH and the usual sbin
 * directories (a service's PATH may lack /usr/sbin), then runs
 * `openvpn --version` (which exits 1 on 2.x after printing; only the text
 * matters).
 */
export async function findOpenvpn(opts: { explicitPath?: string; env?: NodeJS.ProcessEnv; exec?: ExecFn } = {}): Promise<OpenvpnBinary> {
  const exec = opts.exec ?? execCommand;
  const env = opts.env ?? process.env;
  const candidates =
    opts.explicitPath !== undefined
      ? [opts.explicitPath]
      : [...(env['PATH'] ?? '').split(delimiter).filter((d) => d.startsWith('/')), ...SYSTEM_DIRS].map((d) => join(d, 'openvpn'));
  let path: string | undefined;
  for (const c of candidates) {
    if (await executable(c)) {
      path = c;
      break;
    }
  }
  if (path === undefined) {
    throw new ConfigError('MVPN_DEPENDENCY_MISSING', opts.explicitPath !== undefined ? `openvpn is not executable at ${opts.explicitPath}` : 'openvpn is not installed', {
      hint: 'install it (Debian/Ubuntu: apt-get install openvpn) or set the path to the binary in the config',
      context: { searched: candidates },
    });
  }
  let out: string;
  try {
    const r = await exec(path, ['--version'], { timeoutMs: 10_000 });
    out = r.stdout + r.stderr;
  } catch (err) {
    throw new ConfigError('MVPN_DEPENDENCY_MISSING', `cannot run ${path} --version: ${(err as Error).message}`, { cause: err, context: { path } });
  }
  const v = parseOpenvpnVersion(out);
  if (!v) throw new ConfigError('MVPN_DEPENDENCY_MISSING', `${path} does not look like openvpn (no version in its --version output)`, { context: { path } });
  if (v.major < MIN_OPENVPN.major || (v.major === MIN_OPENVPN.major && v.minor < MIN_OPENVPN.minor)) {
    throw new ConfigError('MVPN_DEPENDENCY_MISSING', `openvpn ${v.version} at ${path} is too old; ${MIN_OPENVPN.major}.${MIN_OPENVPN.minor} or newer is needed (tls-crypt-v2)`, {
      context: { path, version: v.version },
      hint: 'install a newer openvpn',
    });
  }
  return { path, ...v };
}
