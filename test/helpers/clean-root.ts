/**
 * A clean Debian root to install the package and the startup tarball into:
 * `debootstrap --variant=minbase` (no Node.js, no systemd running), built
 * once and cached as a tar outside the repository, then unpacked afresh for
 * every test and removed afterwards.
 *
 * Design notes:
 * - The package's run-time dependencies (openvpn, iproute2) are part of the
 *   cached root (`--include`), resolved by debootstrap from Debian's archive.
 *   That is what `apt-get install ./mvpn-client.deb` would do, without
 *   needing the network on every run; `dpkg -i` in the test then checks that
 *   the Depends line is satisfiable by exactly those packages.
 * - The cache key names release, architecture, variant and the included
 *   packages, so changing any of them builds a new root instead of reusing a
 *   stale one. A concurrent builder writes its own temporary file and
 *   renames it into place, so readers never see half a tar.
 * - `debootstrap` not installed, or the archive unreachable, is a test
 *   failure with a message saying what to do; it is never a skip (CI runs as
 *   root with the archive reachable).
 * - Mounts: a command in the root gets `/proc` (Node's single executable
 *   finds its own blob through /proc/self/exe) in a mount namespace of its
 *   own (`unshare --mount-proc`), so the mount never exists outside that
 *   command and cannot outlive it, even if the test process crashes. No pid
 *   namespace: a daemon a maintainer script started would stay visible.
 *   `remove` still refuses to delete a root that has a mount in it.
 */
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { sh, type ExecResult } from './netns.ts';
import { tmpDir } from './tmp.ts';

export const CLEAN_ROOT_RELEASE = 'bookworm';
/** What the .deb depends on; installed into the cached root by debootstrap. */
export const CLEAN_ROOT_INCLUDE = ['openvpn', 'iproute2'] as const;

export interface CleanRootOptions {
  readonly release?: string;
  /** Directory of the cached root tars; default MVPN_TEST_CACHE or /var/cache/mvpn-test. */
  readonly cacheDir?: string;
  /** Debian mirror; default MVPN_DEBOOTSTRAP_MIRROR, else debootstrap's own default. */
  readonly mirror?: string;
  /** Packages debootstrap adds to minbase (part of the cache key); default CLEAN_ROOT_INCLUDE. */
  readonly include?: readonly string[];
}

export interface CleanRoot {
  readonly path: string;
  /** Run a command inside the root (`chroot ROOT cmd...`, /proc mounted for it alone) with a clean environment. */
  run(cmd: string, args: readonly string[], opts?: { allowFail?: boolean; timeoutMs?: number }): Promise<ExecResult>;
  remove(): Promise<void>;
}

function arch(): string {
  return process.arch === 'x64' ? 'amd64' : process.arch === 'arm64' ? 'arm64' : process.arch;
}

function cacheDir(opts: CleanRootOptions): string {
  return opts.cacheDir ?? process.env['MVPN_TEST_CACHE'] ?? '/var/cache/mvpn-test';
}

/** Path of the cached root tar for these options (it may not exist yet). */
export function cachedRootPath(opts: CleanRootOptions = {}): string {
  const release = opts.release ?? CLEAN_ROOT_RELEASE;
  return join(cacheDir(opts), `rootfs-${release}-${arch()}-minbase+${(opts.include ?? CLEAN_ROOT_INCLUDE).join(',')}.tar`);
}

export async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** The cached root tar, built with debootstrap first if it is missing (minutes, once). */
export async function ensureCachedRoot(opts: CleanRootOptions = {}): Promise<string> {
  const tarPath = cachedRootPath(opts);
  if (await exists(tarPath)) return tarPath;
  const release = opts.release ?? CLEAN_ROOT_RELEASE;
  if (process.getuid?.() !== 0) throw new Error('building a clean Debian root needs root (debootstrap, chroot); run the packaging tests as root');
  const which = await sh('sh', ['-c', 'command -v debootstrap'], { allowFail: true });
  if (which.code !== 0) {
    throw new Error('debootstrap is not installed, so no clean Debian root can be built for the packaging test: apt-get install debootstrap (build.sh does this)');
  }
  const dir = cacheDir(opts);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const work = join(dir, `.build-${process.pid}-${Date.now()}`);
  const mirror = opts.mirror ?? process.env['MVPN_DEBOOTSTRAP_MIRROR'];
  try {
    const r = await sh(
      'debootstrap',
      ['--variant=minbase', `--arch=${arch()}`, `--include=${(opts.include ?? CLEAN_ROOT_INCLUDE).join(',')}`, release, work, ...(mirror ? [mirror] : [])],
      { allowFail: true, timeoutMs: 30 * 60_000 },
    );
    if (r.code !== 0) {
      const log = await sh('tail', ['-n', '20', join(work, 'debootstrap/debootstrap.log')], { allowFail: true });
      throw new Error(
        `debootstrap --variant=minbase ${release} failed (exit ${r.code}); is Debian's archive reachable (set MVPN_DEBOOTSTRAP_MIRROR to use another mirror)?\n` +
          `${(r.stdout + r.stderr).trim().split('\n').slice(-10).join('\n')}\n${log.stdout}`,
      );
    }
    // Keep the cache small: downloaded .debs and apt lists are not needed.
    await sh('sh', ['-c', `rm -rf "${work}"/var/cache/apt/archives/*.deb "${work}"/var/lib/apt/lists/*`]);
    const tmpTar = `${tarPath}.${process.pid}.tmp`;
    await sh('tar', ['--numeric-owner', '--xattrs', '-C', work, '-cf', tmpTar, '.'], { timeoutMs: 10 * 60_000 });
    await rename(tmpTar, tarPath);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return tarPath;
}

/** A fresh copy of the cached clean root in this run's temp area. */
export async function cleanRoot(label = 'root', opts: CleanRootOptions = {}): Promise<CleanRoot> {
  const tarPath = await ensureCachedRoot(opts);
  const dir = await tmpDir(label);
  try {
    await sh('tar', ['--numeric-owner', '--xattrs', '-C', dir.path, '-xpf', tarPath], { timeoutMs: 10 * 60_000 });
  } catch (err) {
    await dir.remove();
    throw err;
  }
  const path = dir.path;
  return {
    path,
    run: (cmd, args, runOpts = {}) =>
      sh('env', ['-i', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'LC_ALL=C', 'unshare', '--mount', `--mount-proc=${join(path, 'proc')}`, 'chroot', path, cmd, ...args], runOpts),
    remove: async () => {
      // Never delete through a mount that is still there.
      const mounted = await sh('findmnt', ['-rn', '-o', 'TARGET', '--submounts', '--target', path], { allowFail: true });
      const inside = mounted.stdout.split('\n').filter((m) => m.startsWith(path + '/'));
      if (inside.length > 0) throw new Error(`clean root ${path} still has mounts: ${inside.join(', ')}`);
      await dir.remove();
    },
  };
}

