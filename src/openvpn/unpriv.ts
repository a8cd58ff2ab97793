/**
 * openvpn without root (DESIGN.md §3, least privilege).
 *
 * Every openvpn the agent or the server starts is started as root only for
 * what needs root — opening the tun/tap device, binding the management unix
 * socket, reading the keys — and then drops to the dedicated system user and
 * group `mvpn-openvpn` (`--user`/`--group`, given on the command line by the
 * supervisor). `persist-key`/`persist-tun` (in every template) keep the keys
 * and the device across a SIGUSR1/ping-restart, so nothing root-only is ever
 * opened again. Debian's openvpn (2.6, built with libcap-ng) keeps
 * CAP_NET_ADMIN after the drop, so it can still reconfigure its own device
 * (a ping-restart that is pushed a changed address) but can do nothing else
 * as root: no file it could not read before, no signal to other processes.
 *
 * What the dropped openvpn still reads, and so must reach by path as that
 * user: the CRL (`crl-verify`, re-read whenever its mtime changes, at each
 * new TLS session) and, on a server, `client-config-dir` (one file per
 * connecting client). Those files are root:mvpn-openvpn 0640; the
 * directories on their path are root:mvpn-openvpn 0710 (enter, not list).
 * Keys, configs and certificates stay root-only (0600): openvpn read them
 * before the drop and keeps them.
 *
 * The user is created by the packages' maintainer scripts; when it is
 * missing (a tarball install, a development checkout) the agent and the
 * server create it at start with `useradd --system`. Under the systemd
 * units /etc is read-only, so there a missing user is a clear error.
 * A daemon that does not run as root cannot drop anything: its openvpn runs
 * as the daemon's own user, as before.
 */
import { chmod, chown, readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { OpenvpnError } from '../errors.ts';
import { execCommand, type ExecFn } from '../util/exec.ts';

/** The system user and group every openvpn drops to. */
export const OPENVPN_USER = 'mvpn-openvpn';

export interface OpenvpnUser {
  readonly user: string;
  readonly group: string;
  readonly uid: number;
  readonly gid: number;
}

/** Mode of a file the dropped openvpn re-reads (CRL, ccd entries). */
export const SHARED_FILE_MODE = 0o640;
/** Mode of a directory on the path to such a file: its group may enter, not list. */
export const SHARED_DIR_MODE = 0o710;

/** Field `index` of a `getent` or files line (`name:x:id:...`) as an id, or undefined. */
function idField(line: string, index: number): number | undefined {
  const f = line.trim().split(':')[index];
  return f !== undefined && /^\d{1,10}$/.test(f) ? Number(f) : undefined;
}

/** The `name:` line of a files database (/etc/passwd, /etc/group), or undefined. */
async function filesEntry(path: string, name: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).split('\n').find((l) => l.startsWith(`${name}:`));
  } catch {
    return undefined;
  }
}

/**
 * The user and its group as the system resolves them, or undefined when
 * either is missing: /etc/passwd and /etc/group first (NSS "files", where
 * the package and useradd --system put it), then NSS through getent. The
 * files first save two process spawns on every daemon start (~55 ms of
 * CPU: forking a process of our size; issue 14). With an injected `exec`
 * (tests) only getent answers.
 */
export async function lookupOpenvpnUser(name = OPENVPN_USER, exec: ExecFn = execCommand): Promise<OpenvpnUser | undefined> {
  if (exec === execCommand) {
    const [pwLine, grLine] = await Promise.all([filesEntry('/etc/passwd', name), filesEntry('/etc/group', name)]);
    const uid = pwLine === undefined ? undefined : idField(pwLine, 2);
    const gid = grLine === undefined ? undefined : idField(grLine, 2);
    if (uid !== undefined && gid !== undefined) return { user: name, group: name, uid, gid };
  }
  const [pw, gr] = await Promise.all([exec('getent', ['passwd', name]), exec('getent', ['group', name])]);
  if (pw.code !== 0 || gr.code !== 0) return undefined;
  const uid = idField(pw.stdout, 2);
  const gid = idField(gr.stdout, 2);
  if (uid === undefined || gid === undefined) return undefined;
  return { user: name, group: name, uid, gid };
}

export interface EnsureUserDeps {
  readonly exec?: ExecFn;
  /** The daemon's uid (process.getuid by default); only root drops privileges. */
  readonly uid?: number;
}

/**
 * The user every openvpn drops to, created when missing; undefined when this
 * process is not root (then nothing can be dropped). Throws OpenvpnError
 * MVPN_OPENVPN_USER_MISSING when the user neither exists nor can be made.
 */
export async function ensureOpenvpnUser(deps: EnsureUserDeps = {}): Promise<OpenvpnUser | undefined> {
  const exec = deps.exec ?? execCommand;
  if ((deps.uid ?? process.getuid?.()) !== 0) return undefined;
  const found = await lookupOpenvpnUser(OPENVPN_USER, exec);
  if (found !== undefined) return found;
  const r = await exec('useradd', [
    '--system',
    '--user-group',
    '--no-create-home',
    '--home-dir',
    '/nonexistent',
    '--shell',
    '/usr/sbin/nologin',
    '--comment',
    'mvpn-client openvpn after dropping root',
    OPENVPN_USER,
  ]).catch((err: unknown) => ({ code: -1, stdout: '', stderr: (err as Error).message }));
  // A concurrent start (another daemon, the package) may have made it meanwhile: look again either way.
  const made = await lookupOpenvpnUser(OPENVPN_USER, exec);
  if (made !== undefined) return made;
  throw new OpenvpnError('MVPN_OPENVPN_USER_MISSING', `the system user ${OPENVPN_USER} that openvpn drops to does not exist and could not be created: ${r.stderr.trim() || `useradd exited with ${r.code}`}`, {
    context: { user: OPENVPN_USER },
    hint: `install the mvpn-client package (its scripts create the user), or create it as root: useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ${OPENVPN_USER}`,
  });
}

/** The `--user`/`--group` arguments for openvpn. */
export function dropArgs(who: OpenvpnUser | undefined): string[] {
  return who === undefined ? [] : ['--user', who.user, '--group', who.group];
}

/**
 * Makes `path` (a file the dropped openvpn re-reads, or a directory on the
 * way to one) root:<openvpn group> with `mode`. Without `who` (not root)
 * only the mode is set.
 */
export async function shareWithOpenvpn(path: string, who: OpenvpnUser | undefined, mode: number): Promise<void> {
  const st = await stat(path);
  if (who !== undefined && (st.uid !== 0 || st.gid !== who.gid)) await chown(path, 0, who.gid);
  if ((st.mode & 0o7777) !== mode) await chmod(path, mode);
}

/**
 * The first directory above `path` (the path itself included) that the
 * openvpn user cannot enter, or undefined when it can reach `path`. Daemons
 * check their state directory at start: a parent that only root may enter
 * would leave a dropped openvpn unable to see a new CRL (it keeps the old one
 * and says so only in its log) or, on a server, any ccd file (every client
 * refused).
 */
export async function unreachableDir(path: string, who: OpenvpnUser): Promise<string | undefined> {
  const chain: string[] = [];
  for (let d = resolve(path); ; d = dirname(d)) {
    chain.unshift(d);
    if (dirname(d) === d) break;
  }
  for (const d of chain) {
    const st = await stat(d);
    const bit = st.uid === who.uid ? 0o100 : st.gid === who.gid ? 0o010 : 0o001;
    if ((st.mode & bit) === 0) return d;
  }
  return undefined;
}

/** Throws MVPN_OPENVPN_USER_NO_ACCESS when the openvpn user cannot reach `stateDir`. */
export async function checkReachable(stateDir: string, who: OpenvpnUser | undefined): Promise<void> {
  if (who === undefined) return;
  const blocked = await unreachableDir(stateDir, who);
  if (blocked === undefined) return;
  throw new OpenvpnError('MVPN_OPENVPN_USER_NO_ACCESS', `openvpn runs as ${who.user} after start-up and must reach ${stateDir} to re-read CRLs and ccd files, but ${blocked} does not let it enter`, {
    context: { path: stateDir, blocked, user: who.user },
    hint: `let others enter that directory (chmod o+x ${blocked}) or move the state directory below one they can enter, such as /var/lib`,
  });
}
