/**
 * One daemon per runtime directory: `server.pid` there names the running
 * one (checked against /proc/<pid>/cmdline), and a second `server run`
 * refuses with MVPN_DAEMON_RUNNING before it touches anything.
 */
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonError } from '../errors.ts';
import { isAlive, readCmdline } from '../openvpn/process.ts';

const PID_FILE = 'server.pid';

/**
 * Claims the runtime directory for this process, or throws MVPN_DAEMON_RUNNING
 * when a live `server run` (or another daemon in this process) holds it. A
 * pid file naming a dead process or something else is stale and replaced.
 */
export async function claimRuntimeDir(runtimeDir: string): Promise<void> {
  const path = join(runtimeDir, PID_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o644);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
    if (Number.isSafeInteger(pid) && pid > 0 && (await isAlive(pid))) {
      const argv = (await readCmdline(pid)) ?? [];
      if (pid === process.pid || (argv.includes('server') && argv.includes('run'))) {
        throw new DaemonError('MVPN_DAEMON_RUNNING', `a server daemon (pid ${pid}) is already running on ${runtimeDir}`, {
          context: { pid, runtimeDir },
          hint: 'stop it first (systemctl stop mvpn-server), or use another --state-dir',
        });
      }
    }
    await rm(path, { force: true });
  }
  throw new DaemonError('MVPN_DAEMON_RUNNING', `cannot claim ${path}: another daemon keeps recreating it`);
}

/** Gives the runtime directory up (only the daemon that claimed it). */
export async function releaseRuntimeDir(runtimeDir: string): Promise<void> {
  await rm(join(runtimeDir, PID_FILE), { force: true });
}
