/**
 * A clean Debian root booted with its own systemd as PID 1 (`systemd-nspawn
 * -b`), so the shipped units can be started, restarted, crashed and stopped
 * under a live service manager — this machine's PID 1 is not systemd.
 *
 * Design notes:
 * - The root is test/helpers/clean-root.ts's cached debootstrap minbase with
 *   systemd and dbus added (a cache tar of its own), a fresh copy per boot.
 * - `--private-network`: the container has only its own loopback, so nothing
 *   it does can reach the host's networks; tests give `lo` test-range
 *   addresses (198.18.0.0/15) when they need a "remote".
 * - Not registered with systemd-machined (there is no host systemd to own it:
 *   `--register=no --keep-unit`). nspawn then makes `payload/` and
 *   `supervisor/` cgroups below its own cgroup; started from the test worker
 *   that would be the hierarchy's root, shared by every concurrent boot and
 *   left behind afterwards. So nspawn first moves itself into a cgroup named
 *   after the machine (`mvt-<run>-…`, in every hierarchy systemd uses), and
 *   `stop` removes that tree. On a host whose PID 1 is systemd the same
 *   happens through `systemd-run --scope -p Delegate=yes` instead, so the
 *   host's manager keeps owning its cgroups.
 * - Commands run inside with `nsenter -a` on the container's PID 1 (every
 *   namespace, its root and cwd), with a clean environment.
 * - Processes are read from the host's /proc: every process in the
 *   container's pid namespace, with its pid there, argv and cgroup relative
 *   to the container. Nothing is ever killed by name; `stop` signals only the
 *   nspawn process this helper started (SIGTERM: a clean container shutdown)
 *   and, if that hangs, SIGKILLs nspawn and the container's PID 1, which
 *   ends the whole pid namespace.
 * - The nspawn command line names the run id (machine name, root path), so
 *   the suite's leak check finds it if a test worker dies before `stop`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, readdir, readlink, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanRoot, exists, type CleanRoot } from './clean-root.ts';
import { sh, waitFor, type ExecResult } from './netns.ts';
import { runId } from './run-id.ts';

/** The clean root plus what booting it needs; its own cache tar (clean-root keys the cache by this list). */
export const SYSTEMD_ROOT_INCLUDE = ['systemd', 'dbus', 'openvpn', 'iproute2', 'iputils-ping'] as const;

const PATH = 'PATH=/usr/sbin:/usr/bin:/sbin:/bin';
const CGROUP = '/sys/fs/cgroup';

export interface ContainerProcess {
  /** pid on the host (what /proc here names). */
  readonly hostPid: number;
  /** pid inside the container (what systemctl's MainPID names). */
  readonly pid: number;
  readonly comm: string;
  readonly argv: readonly string[];
  /** cgroup relative to the container's root cgroup, e.g. `/system.slice/mvpn-client.service`. */
  readonly cgroup: string;
}

export interface SystemdContainer {
  readonly machine: string;
  readonly root: CleanRoot;
  /** Host pid of the systemd-nspawn process this helper started. */
  readonly nspawnPid: number;
  /** Host pid of the container's PID 1 (systemd). */
  readonly leaderPid: number;
  /** Run a command inside the container and wait for it (clean environment). */
  exec(cmd: string, args?: readonly string[], opts?: { allowFail?: boolean; timeoutMs?: number }): Promise<ExecResult>;
  /** `systemctl ARGS` inside; throws on a non-zero exit unless allowFail. */
  systemctl(args: readonly string[], opts?: { allowFail?: boolean; timeoutMs?: number }): Promise<ExecResult>;
  /** One unit property (`systemctl show -p NAME --value`). */
  show(unit: string, property: string): Promise<string>;
  /** Every process in the container's pid namespace, read from the host's /proc. */
  processes(): Promise<ContainerProcess[]>;
  /** What nspawn and the container's console printed (the boot log), for failure messages. */
  log(): string;
  /** Shut the container down, remove its cgroups and its root. Safe to call twice. */
  stop(opts?: { keepRoot?: boolean }): Promise<void>;
}


/** The cgroup directories (one per hierarchy systemd uses) a non-systemd host gets for `name`. */
async function cgroupDirs(name: string): Promise<string[]> {
  if (await exists(join(CGROUP, 'cgroup.controllers'))) return [join(CGROUP, name)]; // unified (v2) only
  const dirs: string[] = [];
  if (await exists(join(CGROUP, 'systemd', 'cgroup.procs'))) dirs.push(join(CGROUP, 'systemd', name)); // legacy/hybrid name=systemd
  if (await exists(join(CGROUP, 'unified', 'cgroup.procs'))) dirs.push(join(CGROUP, 'unified', name)); // hybrid's v2 part
  if (dirs.length === 0) throw new Error(`no cgroup hierarchy systemd could use under ${CGROUP}; systemd-nspawn cannot boot a container here`);
  return dirs;
}

/** Remove a cgroup tree bottom-up; a cgroup that still has processes stays and is reported. */
async function removeCgroupTree(dir: string): Promise<string[]> {
  const left: string[] = [];
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return left;
  }
  for (const e of entries) {
    try {
      if ((await stat(join(dir, e))).isDirectory()) left.push(...(await removeCgroupTree(join(dir, e))));
    } catch {
      // gone meanwhile
    }
  }
  try {
    await rmdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') left.push(dir);
  }
  return left;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

/** The container's PID 1 as the host sees it: nspawn's child that is pid 1 in a pid namespace of its own. */
async function findLeader(nspawnPid: number): Promise<number | undefined> {
  const ownNs = await readlink('/proc/self/ns/pid');
  let children: number[];
  try {
    children = (await readFile(`/proc/${nspawnPid}/task/${nspawnPid}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return undefined;
  }
  for (const pid of children) {
    try {
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      const nspid = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/);
      if (nspid && nspid.length > 1 && nspid[nspid.length - 1] === '1' && (await readlink(`/proc/${pid}/ns/pid`)) !== ownNs) return pid;
    } catch {
      // exited meanwhile
    }
  }
  return undefined;
}

/** The line of /proc/PID/cgroup systemd goes by: name=systemd on legacy/hybrid hosts, else the unified one. */
function systemdCgroup(text: string): string {
  const lines = text.trim().split('\n');
  const named = lines.find((l) => /^\d+:name=systemd:/.test(l));
  const line = named ?? lines.find((l) => l.startsWith('0::')) ?? '';
  return line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1);
}

/**
 * Boot a fresh copy of the systemd root as machine `mvt-<run>-<label>`,
 * and wait until its systemd reports `running` (or `degraded`, with the
 * failed units in the error if that is all it reaches).
 */
/**
 * Boots a fresh root, or with `root` an existing one (a reboot: the first
 * container was stopped with `keepRoot`; the caller then owns that root
 * until the new container's stop() removes it).
 */
export async function bootSystemdContainer(label: string, opts: { bootTimeoutMs?: number; root?: CleanRoot } = {}): Promise<SystemdContainer> {
  const machine = `mvt-${runId()}-${label}`;
  if (machine.length > 64) throw new Error(`machine name ${machine} is longer than 64 characters`);
  const which = await sh('sh', ['-c', 'command -v systemd-nspawn'], { allowFail: true });
  if (which.code !== 0) throw new Error('systemd-nspawn is not installed: apt-get install systemd-container (build.sh does this)');

  const root = opts.root ?? (await cleanRoot(label, { include: SYSTEMD_ROOT_INCLUDE }));
  const hostHasSystemd = await exists('/run/systemd/system');
  const cgroups = hostHasSystemd ? [] : await cgroupDirs(machine);
  let output = '';
  let child: ChildProcess | undefined;
  let leader: number | undefined;

  const nspawnArgs = ['-b', '-D', root.path, '-M', machine, '--private-network', '--register=no', '--keep-unit', '--console=read-only'];
  try {
    for (const d of cgroups) await mkdir(d);
    const env = { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', SYSTEMD_NSPAWN_LOCK: '0', SYSTEMD_COLORS: '0' };
    if (hostHasSystemd) {
      child = spawn('systemd-run', ['--scope', '--quiet', `--unit=${machine}`, '-p', 'Delegate=yes', '--', 'systemd-nspawn', ...nspawnArgs], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    } else {
      // Join our own cgroups first, then become nspawn (same pid): nspawn reads its cgroup at start.
      const join_ = cgroups.map((d) => `echo $$ > ${d}/cgroup.procs`).join(' && ');
      child = spawn('sh', ['-c', `${join_} && exec systemd-nspawn "$@"`, 'sh', ...nspawnArgs], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    }
    const keep = (b: Buffer): void => {
      output = (output + b.toString()).slice(-64 * 1024);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const nspawnPid = child.pid!;
    const bootTimeout = opts.bootTimeoutMs ?? 120_000;

    const found = await waitFor(async () => {
      if (child!.exitCode !== null || child!.signalCode !== null) return true;
      leader = await findLeader(nspawnPid);
      return leader !== undefined;
    }, bootTimeout);
    if (!found || leader === undefined) throw new Error(`systemd-nspawn did not start the container's PID 1 (exit ${child.exitCode ?? child.signalCode ?? 'none'})`);
    const leaderPid = leader;

    const exec = (cmd: string, args: readonly string[] = [], o: { allowFail?: boolean; timeoutMs?: number } = {}): Promise<ExecResult> =>
      sh('nsenter', ['-t', String(leaderPid), '-a', 'env', '-i', PATH, 'LC_ALL=C', 'SYSTEMD_COLORS=0', cmd, ...args], o);

    // The private bus socket appears during boot; until then systemctl cannot connect at all.
    let state = '';
    await waitFor(async () => {
      const r = await exec('systemctl', ['is-system-running', '--wait'], { allowFail: true, timeoutMs: bootTimeout });
      state = r.stdout.trim();
      return ['running', 'degraded', 'maintenance', 'stopping'].includes(state) || child!.exitCode !== null;
    }, bootTimeout, 200);
    if (state !== 'running') {
      const failed = await exec('systemctl', ['--failed', '--no-legend', '--plain'], { allowFail: true });
      // "degraded" is tolerable only for units the tests do not need; name them so a failure is explained.
      if (state !== 'degraded') throw new Error(`the container's systemd did not reach running (state "${state}"); failed units: ${failed.stdout.trim()}`);
      process.stderr.write(`${machine}: systemd is degraded; failed units: ${failed.stdout.trim()}\n`);
    }

    const ownCgroup = systemdCgroup(await readFile(`/proc/${leaderPid}/cgroup`, 'utf8'));
    // The leader sits in <container root>/init.scope; everything else of the container lies below that root.
    const cgroupRoot = ownCgroup.replace(/\/init\.scope$/, '');
    const pidNs = await readlink(`/proc/${leaderPid}/ns/pid`);

    let stopped = false;
    const c: SystemdContainer = {
      machine,
      root,
      nspawnPid,
      leaderPid,
      exec,
      systemctl: (args, o = {}) => exec('systemctl', ['--no-pager', ...args], o),
      show: async (unit, property) => (await exec('systemctl', ['show', '-p', property, '--value', unit])).stdout.trim(),
      log: () => output,
      processes: async () => {
        const found: ContainerProcess[] = [];
        for (const entry of await readdir('/proc')) {
          if (!/^\d+$/.test(entry)) continue;
          try {
            if ((await readlink(`/proc/${entry}/ns/pid`)) !== pidNs) continue;
            const [status, cmdline, cg] = await Promise.all([
              readFile(`/proc/${entry}/status`, 'utf8'),
              readFile(`/proc/${entry}/cmdline`, 'utf8'),
              readFile(`/proc/${entry}/cgroup`, 'utf8'),
            ]);
            const nspid = /^NSpid:\s+(.*)$/m.exec(status)![1]!.trim().split(/\s+/);
            const full = systemdCgroup(cg);
            found.push({
              hostPid: Number(entry),
              pid: Number(nspid[nspid.length - 1]),
              comm: /^Name:\s+(.*)$/m.exec(status)![1]!,
              argv: cmdline.split('\0').filter((a, i, all) => a !== '' || i < all.length - 1),
              cgroup: full === cgroupRoot ? '/' : full.startsWith(cgroupRoot + '/') ? full.slice(cgroupRoot.length) : `(outside the container) ${full}`,
            });
          } catch {
            // exited meanwhile, or a kernel thread
          }
        }
        return found;
      },
      stop: async (o = {}) => {
        if (stopped) return;
        stopped = true;
        await shutdown(o.keepRoot === true);
      },
    };
    return c;
  } catch (err) {
    await shutdown().catch((e: unknown) => process.stderr.write(`${machine}: cleanup after a failed boot: ${String(e)}\n`));
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n--- systemd-nspawn output (last lines) ---\n${output.split('\n').slice(-40).join('\n')}`, { cause: err });
  }

  /** Shut down by the pid we started, then remove cgroups and root; reports what it could not remove. */
  async function shutdown(keepRoot = false): Promise<void> {
    const problems: string[] = [];
    if (child && child.exitCode === null && child.signalCode === null) {
      // SIGTERM to nspawn = a clean shutdown of the container (SIGRTMIN+3 to its systemd).
      child.kill('SIGTERM');
      const done = await Promise.race([exited(child).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 60_000))]);
      if (!done) {
        problems.push('the container did not shut down within 60 s of SIGTERM; killed');
        child.kill('SIGKILL');
        if (leader !== undefined && alive(leader)) process.kill(leader, 'SIGKILL');
        await exited(child);
      }
    }
    if (leader !== undefined) {
      const pid = leader;
      await waitFor(() => !alive(pid), 30_000);
    }
    for (const d of cgroups) problems.push(...(await removeCgroupTree(d)).map((p) => `cgroup ${p} still in use`));
    // nspawn keeps a per-machine directory for mount propagation; it may fail to remove it on a host without a tmpfs /run.
    await rm(`/run/systemd/nspawn/propagate/${machine}`, { recursive: true, force: true });
    if (!keepRoot) await root.remove();
    if (problems.length > 0) throw new Error(`${machine}: ${problems.join('; ')}`);
  }
}

/** Write a file into the container's root (as root, mode 0644 unless given). */
export async function writeInto(c: SystemdContainer, path: string, text: string, mode = 0o644): Promise<void> {
  await mkdir(join(c.root.path, path, '..'), { recursive: true });
  await writeFile(join(c.root.path, path), text, { mode });
}
