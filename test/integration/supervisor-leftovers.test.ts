/**
 * After a crash of the agent: real openvpn processes left behind in the
 * runtime directory are found, verified by /proc/<pid>/cmdline and stopped by
 * pid; stale files go; an unrelated process whose pid sits in a pid file is
 * left alone; and a supervisor refuses to start a network whose previous
 * openvpn still runs. Also: openvpn children cannot send sd_notify in our
 * name.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { access, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cleanupLeftovers, findRunning, runtimePaths } from '../../src/openvpn/process.ts';
import { Supervisor } from '../../src/openvpn/supervisor.ts';
import { openvpnEnv } from '../../src/openvpn/supervisor-deps.ts';
import { startNotifyListener } from '../helpers/notify-listener.ts';
import { waitFor, withLab, type Netns } from '../helpers/netns.ts';
import { clientSpec, fastDeps, pidAlive, recordingLogger, serverSpec, tunnelLab, untilState, withTunnelLab } from '../helpers/supervisor-lab.ts';
import { tmpDir } from '../helpers/tmp.ts';

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** An openvpn as a crashed agent would have left it: started with our runtime files, held, nobody attached. */
async function leftover(ns: Netns, config: string, files: { mgmtSocket: string; pidFile: string }): Promise<ChildProcess> {
  const child = ns.spawn('openvpn', ['--config', config, '--management', files.mgmtSocket, 'unix', '--management-hold', '--writepid', files.pidFile]);
  if (!(await waitFor(() => exists(files.pidFile), 15_000)) || !(await waitFor(() => exists(files.mgmtSocket), 15_000))) {
    throw new Error('leftover openvpn did not start');
  }
  return child;
}

describe('leftovers of a crashed previous run', () => {
  it('cleanupLeftovers stops our openvpns by pid (also a SIGSTOPped one), removes stale files, spares an unrelated pid', async () => {
    await withTunnelLab('left', async (t, _lab, dir) => {
    const a = runtimePaths(t.runtimeDir, 'a');
    const b = runtimePaths(t.runtimeDir, 'b');
    const procA = await leftover(t.cli, t.clientConfig['node1']!, a);
    const procB = await leftover(t.srv, t.serverConfig, b);
    process.kill(procB.pid!, 'SIGSTOP');
    // A pid file naming a process that is not our openvpn (pid reuse).
    const decoy = spawn('python3', ['-c', 'import time; time.sleep(600)', `${dir}/decoy`], { stdio: 'ignore' });
    const decoyPid = decoy.pid!;
    const decoyFile = join(t.runtimeDir, 'openvpn-decoy.pid');
    await writeFile(decoyFile, `${decoyPid}\n`);
    // A stale socket name without a process, and files that are not ours to touch.
    const staleSock = join(t.runtimeDir, 'openvpn-gone.sock');
    await writeFile(staleSock, '');
    const statusSock = join(t.runtimeDir, 'status.sock');
    await writeFile(statusSock, '');
    try {
      const r = await cleanupLeftovers(t.runtimeDir, { graceMs: 5_000 });
      expect(r.stopped.sort()).toEqual([procA.pid, procB.pid].sort());
      expect(await pidAlive(procA.pid!)).toBe(false);
      expect(await pidAlive(procB.pid!)).toBe(false);
      expect(await pidAlive(decoyPid)).toBe(true);
      for (const f of [a.pidFile, a.mgmtSocket, b.pidFile, b.mgmtSocket, decoyFile, staleSock]) expect(await exists(f), f).toBe(false);
      expect(await exists(statusSock)).toBe(true);
      expect(r.removed).toEqual(expect.arrayContaining([decoyFile, staleSock]));
      expect(await t.cli.pids()).toEqual([]);
      expect(await t.srv.pids()).toEqual([]);
      // Nothing left: a second run is a no-op.
      expect(await cleanupLeftovers(t.runtimeDir)).toEqual({ stopped: [], removed: [] });
    } finally {
      const gone = new Promise<void>((r) => (decoy.exitCode === null ? decoy.once('exit', () => r()) : r()));
      process.kill(decoyPid, 'SIGTERM');
      await gone;
    }
    });
  });

  it('a supervisor refuses to start a network whose openvpn still runs (no network runs twice), and starts once it is gone', async () => {
    await withTunnelLab('left', async (t) => {
    const spec = serverSpec(t);
    const old = await leftover(t.srv, t.serverConfig, spec);
    expect(await findRunning(spec)).toBe(old.pid);
    const logger = recordingLogger();
    const sup = new Supervisor(spec, fastDeps(t.srv, logger));
    try {
      sup.start();
      await untilState(sup, 'failed', logger.events);
      expect(sup.status().lastError?.code).toBe('MVPN_OPENVPN_ALREADY_RUNNING');
      expect(sup.status().lastError?.message).toContain(String(old.pid));
      expect(await pidAlive(old.pid!)).toBe(true);
      expect(await t.srv.pids()).toEqual([old.pid]);

      await cleanupLeftovers(t.runtimeDir);
      expect(await findRunning(spec)).toBeUndefined();
      sup.start();
      await untilState(sup, 'connected', logger.events);
      expect(await t.srv.pids()).toEqual([sup.status().pid]);
    } finally {
      await sup.stop();
    }
    });
  });
});

describe("the agent's check before each spawn (findRunning scan 'when-files-exist', after cleanupLeftovers at start)", () => {
  it('finds a leftover by its pid file, or by a /proc scan while its pid file or socket exists; a supervisor refuses it; cleanupLeftovers stops it before a new spawn', async () => {
    await withTunnelLab('left', async (t) => {
    const spec = serverSpec(t);
    const fast = { scan: 'when-files-exist' } as const;
    const old = await leftover(t.srv, t.serverConfig, spec);
    try {
      // Its own pid file names it.
      expect(await findRunning(spec, fast)).toBe(old.pid);
      const logger = recordingLogger();
      const sup = new Supervisor(spec, { ...fastDeps(t.srv, logger), findRunning: (files) => findRunning(files, fast) });
      try {
        sup.start();
        await untilState(sup, 'failed', logger.events);
        expect(sup.status().lastError?.code).toBe('MVPN_OPENVPN_ALREADY_RUNNING');
        expect(await t.srv.pids()).toEqual([old.pid]);

        // A pid file that names something else (pid reuse, garbage): the scan still finds it.
        await writeFile(spec.pidFile, `${process.pid}\n`);
        expect(await findRunning(spec, fast)).toBe(old.pid);
        // No pid file, only the socket left: found by the scan too.
        await rm(spec.pidFile);
        expect(await findRunning(spec, fast)).toBe(old.pid);
        // Neither file: the one case the quick check cannot see, and why the agent scans everything once at start.
        await rm(spec.mgmtSocket);
        expect(await findRunning(spec, fast)).toBeUndefined();
        expect(await findRunning(spec)).toBe(old.pid);

        const r = await cleanupLeftovers(t.runtimeDir);
        expect(r.stopped).toEqual([old.pid]);
        expect(await pidAlive(old.pid!)).toBe(false);
        sup.start();
        await untilState(sup, 'connected', logger.events);
        expect(await t.srv.pids()).toEqual([sup.status().pid]);
        // Our own running openvpn is found the quick way as well.
        expect(await findRunning(spec, fast)).toBe(sup.status().pid);
      } finally {
        await sup.stop();
      }
      expect(await findRunning(spec, fast)).toBeUndefined();
    } finally {
      if (await pidAlive(old.pid!)) {
        const gone = new Promise<void>((r) => (old.exitCode === null && old.signalCode === null ? old.once('exit', () => r()) : r()));
        process.kill(old.pid!, 'SIGKILL');
        await gone;
      }
    }
    });
  });
});

describe('sd_notify and openvpn children', () => {
  it('openvpn (linked with libsystemd) would send READY=1 on NOTIFY_SOCKET; supervised ones never do', async () => {
    const tmp = await tmpDir('notifyenv');
    const listener = await startNotifyListener();
    const saved = process.env['NOTIFY_SOCKET'];
    try {
      await withLab(async (lab) => {
        const t = await tunnelLab(lab, tmp.path);
        // Control: a bare openvpn server with NOTIFY_SOCKET in its environment notifies.
        const bare = t.srv.spawn('openvpn', ['--config', t.serverConfig], { env: { ...process.env, NOTIFY_SOCKET: listener.socket } });
        const ready = await listener.waitFor((d) => d.fields['READY'] === '1' && d.pid === bare.pid, 30_000);
        expect(ready.pid).toBe(bare.pid);
        // SIGKILL: openvpn may still be initialising and a SIGTERM then can go unheeded.
        const exited = new Promise<void>((r) => bare.once('exit', () => r()));
        process.kill(bare.pid!, 'SIGKILL');
        await exited;
        const before = listener.messages().length;

        // Supervised with NOTIFY_SOCKET set in our own environment (as under systemd).
        process.env['NOTIFY_SOCKET'] = listener.socket;
        expect(openvpnEnv(process.env)['NOTIFY_SOCKET']).toBeUndefined();
        const logger = recordingLogger();
        const server = new Supervisor(serverSpec(t), fastDeps(t.srv, logger));
        const client = new Supervisor(clientSpec(t), fastDeps(t.cli, logger));
        try {
          server.start();
          client.start();
          await untilState(server, 'connected', logger.events);
          await untilState(client, 'connected', logger.events);
          await new Promise((r) => setTimeout(r, 1_000));
          expect(listener.messages().slice(before)).toEqual([]);
        } finally {
          await client.stop();
          await server.stop();
        }
      });
    } finally {
      if (saved === undefined) delete process.env['NOTIFY_SOCKET'];
      else process.env['NOTIFY_SOCKET'] = saved;
      await listener.stop();
      await tmp.remove();
    }
  });
});
