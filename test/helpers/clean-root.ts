/**
 * A clean Debian root to install the package and the startup tarball into:
 * `debootstrap --variant=minbase` (no Node.js, no systemd running), built
 * once and cached as a tar outside the repository, then unpacked afresh for
 * every test and removed afterwards.
 *
 * Design notes:
 * - The package's run-time dependencies (openvpn, iproute2, iputils-ping) are part of the
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
 * - Foreign roots (`arch: 'arm64'` on an x86-64 host): debootstrap `--foreign`
 *   unpacks the packages, then its second stage runs inside the root under
 *   qemu-user. A chroot executes the root's own /bin/sh, so the kernel has
 *   to hand arm64 ELF files to qemu: binfmt_misc with Debian's
 *   qemu-user-static handler (its F flag opens the interpreter at
 *   registration, so nothing has to be copied into the root).
 *   `ensureForeignBinfmt` registers that handler when it is missing
 *   (`update-binfmts --enable`, what binfmt-support does at boot on a normal
 *   Debian host) and says exactly what to do when it cannot.
 */
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { sh, type ExecResult } from './netns.ts';
import { tmpDir } from './tmp.ts';

export const CLEAN_ROOT_RELEASE = 'bookworm';
/** What the .deb depends on; installed into the cached root by debootstrap. */
export const CLEAN_ROOT_INCLUDE = ['openvpn', 'iproute2', 'iputils-ping'] as const;

export interface CleanRootOptions {
  readonly release?: string;
  /** Directory of the cached root tars; default MVPN_TEST_CACHE or /var/cache/mvpn-test. */
  readonly cacheDir?: string;
  /** Debian mirror; default MVPN_DEBOOTSTRAP_MIRROR, else debootstrap's own default. */
  readonly mirror?: string;
  /** Packages debootstrap adds to minbase (part of the cache key); default CLEAN_ROOT_INCLUDE. */
  readonly include?: readonly string[];
  /** Debian architecture of the root; default the host's. Another one is built with debootstrap --foreign under qemu-user. */
  readonly arch?: DebianArch;
}

export type DebianArch = 'amd64' | 'arm64';

/** qemu-user handler name (binfmt_misc) per foreign Debian architecture. */
const QEMU_HANDLER: Record<DebianArch, string> = { amd64: 'qemu-x86_64', arm64: 'qemu-aarch64' };

export interface CleanRoot {
  readonly path: string;
  /** Run a command inside the root (`chroot ROOT cmd...`, /proc mounted for it alone) with a clean environment. */
  run(cmd: string, args: readonly string[], opts?: { allowFail?: boolean; timeoutMs?: number }): Promise<ExecResult>;
  remove(): Promise<void>;
}

export function hostArch(): string {
  return process.arch === 'x64' ? 'amd64' : process.arch === 'arm64' ? 'arm64' : process.arch;
}

function arch(opts: CleanRootOptions): string {
  return opts.arch ?? hostArch();
}

/**
 * Make sure the kernel runs `arch` executables through qemu-user-static
 * (needed for a foreign root: chroot, dpkg and maintainer scripts run the
 * root's own binaries). Registers Debian's handler when it is not yet.
 */
export async function ensureForeignBinfmt(foreign: DebianArch): Promise<void> {
  const handler = QEMU_HANDLER[foreign];
  const entry = `/proc/sys/fs/binfmt_misc/${handler}`;
  const enabled = async (): Promise<boolean> => {
    try {
      return (await readFile(entry, 'utf8')).startsWith('enabled');
    } catch {
      return false;
    }
  };
  if (await enabled()) return;
  const hint = `apt-get install qemu-user-static binfmt-support (build.sh does this), then mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc and update-binfmts --enable ${handler}`;
  if (!(await exists('/usr/share/binfmts/' + handler))) throw new Error(`no ${handler} binfmt handler is installed, so a ${foreign} root cannot run here: ${hint}`);
  if (!(await exists('/proc/sys/fs/binfmt_misc/register'))) {
    await sh('mount', ['-t', 'binfmt_misc', 'binfmt_misc', '/proc/sys/fs/binfmt_misc'], { allowFail: true });
  }
  await sh('update-binfmts', ['--enable', handler], { allowFail: true });
  if (!(await enabled())) throw new Error(`the kernel does not run ${foreign} executables through qemu (binfmt_misc ${handler} is not enabled and could not be enabled here): ${hint}`);
}

function cacheDir(opts: CleanRootOptions): string {
  return opts.cacheDir ?? process.env['MVPN_TEST_CACHE'] ?? '/var/cache/mvpn-test';
}

/** Path of the cached root tar for these options (it may not exist yet). */
export function cachedRootPath(opts: CleanRootOptions = {}): string {
  const release = opts.release ?? CLEAN_ROOT_RELEASE;
  return join(cacheDir(opts), `rootfs-${release}-${arch(opts)}-minbase+${(opts.include ?? CLEAN_ROOT_INCLUDE).join(',')}.tar`);
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
  const foreign = opts.arch !== undefined && opts.arch !== hostArch();
  if (foreign) await ensureForeignBinfmt(opts.arch);
  try {
    // debootstrap mounts /proc and /sys (and may bind /dev) inside the root
    // while it installs; in a mount namespace of its own those mounts go away
    // with it, so a run killed half-way never leaves a mount under `work`
    // for the cleanup below to walk into.
    const r = await sh(
      'unshare',
      [
        '--mount',
        '--propagation',
        'private',
        'debootstrap',
        '--variant=minbase',
        `--arch=${arch(opts)}`,
        ...(foreign ? ['--foreign'] : []),
        `--include=${(opts.include ?? CLEAN_ROOT_INCLUDE).join(',')}`,
        release,
        work,
        ...(mirror ? [mirror] : []),
      ],
      { allowFail: true, timeoutMs: 30 * 60_000 },
    );
    if (r.code !== 0) {
      const log = await sh('tail', ['-n', '20', join(work, 'debootstrap/debootstrap.log')], { allowFail: true });
      throw new Error(
        `debootstrap --variant=minbase ${release} failed (exit ${r.code}); is Debian's archive reachable (set MVPN_DEBOOTSTRAP_MIRROR to use another mirror)?\n` +
          `${(r.stdout + r.stderr).trim().split('\n').slice(-10).join('\n')}\n${log.stdout}`,
      );
    }
    // A foreign root is only unpacked so far: configure it from inside, under
    // qemu (in a mount namespace of its own, as above).
    const r2 = foreign
      ? await sh('unshare', ['--mount', '--propagation', 'private', 'chroot', work, '/debootstrap/debootstrap', '--second-stage'], {
          allowFail: true,
          timeoutMs: 60 * 60_000,
        })
      : undefined;
    if (r2 && r2.code !== 0) {
      const log = await sh('tail', ['-n', '20', join(work, 'debootstrap/debootstrap.log')], { allowFail: true });
      throw new Error(
        `debootstrap --second-stage of the ${arch(opts)} root failed under qemu (exit ${r2.code})\n${(r2.stdout + r2.stderr).trim().split('\n').slice(-10).join('\n')}\n${log.stdout}`,
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

