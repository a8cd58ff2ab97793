/**
 * The server mode end to end on real parts: `mvpn-client server run` as a
 * child process inside a server namespace (Type=notify to a real datagram
 * socket), a real openvpn server per network under its supervision, and
 * real openvpn clients in other namespaces using exported bundles installed
 * and rendered with the agent's code. The CLI changes the store from this
 * process; the daemon picks changes up by itself.
 *
 * Underlay 198.18.0.0/24 on a switch namespace; tunnel subnet from the test
 * pool 198.19.0.0/16. Time bounds are generous hang guards only.
 */
import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor, type Netns } from '../helpers/netns.ts';
import { startNotifyListener, type NotifyListener } from '../helpers/notify-listener.ts';
import { makeServer, startVpnClient, type TestServer, type VpnClient } from '../helpers/server-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const A_ADDR = '198.19.0.2';
const B_ADDR = '198.19.0.3';
const SERVER_ADDR = '198.19.0.1';

interface Snapshot {
  pid: number;
  networks: Record<string, { state: string; pid?: number; restarts: number; clients: { cn: string }[] }>;
}

describe('server mode with real openvpn in namespaces', () => {
  const lab = new Lab();
  let s: TestServer;
  let srv: Netns;
  let nsA: Netns;
  let nsB: Netns;
  let notify: NotifyListener;
  let daemon: ChildProcess | undefined;
  let daemonLog = '';
  let clientA: VpnClient;
  let clientB: VpnClient;
  const l3Clients: VpnClient[] = [];
  const dirs: { remove: () => Promise<void> }[] = [];

  const snapshot = async (): Promise<Snapshot | undefined> => {
    try {
      return JSON.parse(await readFile(join(s.stateDir, 'run', 'status.json'), 'utf8')) as Snapshot;
    } catch {
      return undefined;
    }
  };

  const startDaemon = async (): Promise<void> => {
    const readyBefore = notify.messages().filter((m) => m.fields['READY'] === '1').length;
    daemon = srv.spawn(process.execPath, [join(ROOT, 'src/main.ts'), 'server', 'run', '--state-dir', s.stateDir], {
      env: { ...process.env, NOTIFY_SOCKET: notify.socket, WATCHDOG_USEC: '4000000' },
      cwd: ROOT,
    });
    daemon.stderr?.on('data', (d: Buffer) => (daemonLog += d.toString('utf8')));
    daemon.stdout?.on('data', (d: Buffer) => (daemonLog += d.toString('utf8')));
    const ready = await waitFor(() => notify.messages().filter((m) => m.fields['READY'] === '1').length > readyBefore, 60_000);
    if (!ready) throw new Error(`daemon never sent READY=1:\n${daemonLog}`);
  };

  const stopDaemon = async (): Promise<void> => {
    const d = daemon;
    if (!d || d.exitCode !== null || d.signalCode !== null) return;
    const exited = new Promise((r) => d.once('exit', r));
    d.kill('SIGTERM');
    await exited;
  };

  const serverPid = async (): Promise<number | undefined> => {
    const snap = await snapshot();
    const n = snap?.networks['lab'];
    return n?.state === 'connected' ? n.pid : undefined;
  };

  beforeAll(async () => {
    notify = await startNotifyListener();
    const sw = await lab.ns('sw');
    srv = await lab.ns('srv');
    nsA = await lab.ns('a');
    nsB = await lab.ns('b');
    const ports: string[] = [];
    for (const [ns, ip] of [
      [srv, '198.18.0.1/24'],
      [nsA, '198.18.0.2/24'],
      [nsB, '198.18.0.3/24'],
    ] as const) {
      const [, port] = await lab.link(ns, sw, { aName: 'eth0', aAddr: ip });
      ports.push(port);
    }
    await lab.bridge(sw, 'br0', ports);

    s = await makeServer({ label: 'ovpn', address: '198.18.0.1', extra: ['--vpn-listen', '198.18.0.1'] });
    await s.run(['network', 'create', 'lab', '--remote', '198.18.0.1']);
    await s.run(['node', 'add', 'pc1', '--network', 'lab']);
    await s.run(['node', 'add', 'pc2', '--network', 'lab']);
    await s.run(['network', 'up', 'lab']);
    for (const n of ['pc1', 'pc2']) await s.run(['export', n, '--network', 'lab', '--out', join(s.dir, `${n}.tar.gz`)]);
    await startDaemon();
  });

  afterAll(async () => {
    if (process.env['MVPN_DEBUG_LOG']) {
      const { writeFile } = await import('node:fs/promises');
      await writeFile(process.env['MVPN_DEBUG_LOG'], `${daemonLog}\n=== A\n${clientA?.output()}\n=== B\n${clientB?.output()}`);
    }
    await clientA?.stop().catch(() => undefined);
    await clientB?.stop().catch(() => undefined);
    for (const c of l3Clients) await c.stop().catch(() => undefined);
    await stopDaemon().catch(() => undefined);
    await lab.destroy();
    await notify?.stop();
    for (const d of dirs) await d.remove();
    await s?.remove();
  });

  const startClient = async (ns: Netns, node: string): Promise<VpnClient> => {
    const work = await tmpDir(`cl-${node}`);
    dirs.push(work);
    return startVpnClient(ns, { bundlePath: join(s.dir, `${node}.tar.gz`), anchorPath: join(s.stateDir, 'trust-anchor'), node, workDir: work.path });
  };

  it('runs a real openvpn server for a network that is up; two clients from exported bundles join one L2 segment', async () => {
    expect(await waitFor(async () => (await serverPid()) !== undefined, 30_000)).toBe(true);
    const addr = await srv.exec('ip', ['-4', '-br', 'addr', 'show', 'dev', 'ms-lab']);
    expect(addr.stdout).toContain(`${SERVER_ADDR}/24`);

    clientA = await startClient(nsA, 'pc1');
    clientB = await startClient(nsB, 'pc2');
    const joined = await waitFor(async () => (await nsA.ping(B_ADDR)) && (await nsB.ping(A_ADDR)), 60_000, 500);
    expect(joined, `A:\n${clientA.output()}\nB:\n${clientB.output()}\ndaemon:\n${daemonLog}`).toBe(true);
    expect(await nsA.ping(SERVER_ADDR)).toBe(true);
    // L2: A learned B's MAC address directly (an Ethernet neighbour on the tap), i.e. frames pass between clients.
    const neigh = await nsA.exec('ip', ['neigh', 'show', B_ADDR, 'dev', 'mv-lab']);
    expect(neigh.stdout).toMatch(/lladdr ([0-9a-f]{2}:){5}[0-9a-f]{2}/);
    const bMac = (await nsB.exec('cat', ['/sys/class/net/mv-lab/address'])).stdout.trim();
    expect(neigh.stdout).toContain(bMac);
    // Addresses are the ones the server allocated (ccd ifconfig-push).
    expect((await nsA.exec('ip', ['-4', '-br', 'addr', 'show', 'dev', 'mv-lab'])).stdout).toContain(`${A_ADDR}/24`);

    // `network show` lists both clients from the daemon's status snapshot.
    const shown = await waitFor(async () => {
      const v = await s.json<{ runtime: { state: string; clients: { cn: string }[] } | null }>(['network', 'show', 'lab']);
      return v.runtime?.state === 'connected' && v.runtime.clients.map((c) => c.cn).sort().join() === 'pc1,pc2';
    }, 30_000);
    expect(shown).toBe(true);
    expect(notify.messages().some((m) => /^1\/1 networks up/.test(m.fields['STATUS'] ?? ''))).toBe(true);
    expect(await waitFor(() => notify.messages().some((m) => m.fields['WATCHDOG'] === '1'), 10_000)).toBe(true);
  });

  it('runs an L3 (tun, topology subnet) network next to it, brought up while the daemon runs', { timeout: 180_000 }, async () => {
    const l3 = await s.json<{ subnet: string; server_address: string }>(['network', 'create', 'l3', '--dev', 'tun', '--remote', '198.18.0.1']);
    await s.run(['node', 'add', 'pc1', '--network', 'l3']);
    await s.run(['node', 'add', 'pc2', '--network', 'l3', '--address', l3.subnet.replace(/0\/24$/, '77')]);
    for (const n of ['pc1', 'pc2']) await s.run(['export', n, '--network', 'l3', '--out', join(s.dir, `${n}-l3.tar.gz`)]);
    await s.run(['network', 'up', 'l3']);
    const up = await waitFor(async () => (await snapshot())?.networks['l3']?.state === 'connected', 30_000);
    expect(up, daemonLog.slice(-3000)).toBe(true);
    expect((await srv.exec('ip', ['-d', 'link', 'show', 'ms-l3'])).stdout).toContain('tun type tun');

    const start = async (ns: Netns, node: string) => {
      const work = await tmpDir(`cl3-${node}`);
      dirs.push(work);
      return startVpnClient(ns, { bundlePath: join(s.dir, `${node}-l3.tar.gz`), anchorPath: join(s.stateDir, 'trust-anchor'), node, workDir: work.path });
    };
    const a3 = await start(nsA, 'pc1');
    const b3 = await start(nsB, 'pc2');
    l3Clients.push(a3, b3);
    const aAddr = l3.subnet.replace(/0\/24$/, '2');
    const bAddr = l3.subnet.replace(/0\/24$/, '77');
    const ok = await waitFor(async () => (await nsA.ping(bAddr)) && (await nsB.ping(aAddr)) && (await nsA.ping(l3.server_address)), 60_000, 500);
    expect(ok, `A:\n${a3.output().slice(-3000)}`).toBe(true);
    expect((await nsB.exec('ip', ['-4', '-br', 'addr', 'show', 'dev', 'mv-l3'])).stdout).toContain(`${bAddr}/24`);
  });

  it('brings the openvpn server back by itself after kill -9, and the clients reconnect', { timeout: 300_000 }, async () => {
    const pid = (await serverPid())!;
    expect(pid).toBeGreaterThan(0);
    process.kill(pid, 'SIGKILL');
    const back = await waitFor(async () => {
      const p = await serverPid();
      return p !== undefined && p !== pid;
    }, 60_000);
    expect(back, daemonLog).toBe(true);
    expect((await snapshot())!.networks['lab']!.restarts).toBeGreaterThanOrEqual(1);
    // Clients notice the lost server at their ping-restart (60 s) and come back on their own.
    const again = await waitFor(async () => (await nsA.ping(B_ADDR)) && (await nsB.ping(A_ADDR)), 180_000, 1_000);
    expect(again, `A:\n${clientA.output().slice(-3000)}`).toBe(true);
  });

  it('keeps every network, node, certificate and address exactly across a daemon restart', { timeout: 300_000 }, async () => {
    const view = async () => ({
      networks: await s.json<unknown[]>(['network', 'list']),
      nodes: await s.json<unknown[]>(['node', 'list']),
      // The lease is renewed all the time, and a restart takes it again at the next epoch (src/server/lease.ts): not state that must survive.
      show: { ...(await s.json<Record<string, unknown>>(['network', 'show', 'lab'])), runtime: undefined, lease: undefined },
      files: await Promise.all(['server.conf', 'ca.crt', 'server.crt', 'crl.pem', 'ccd/pc1', 'ccd/pc2'].map((f) => readFile(join(s.stateDir, 'networks', 'lab', f), 'utf8'))),
    });
    const before = await view();
    const oldServer = (await serverPid())!;

    const stoppingBefore = notify.messages().filter((m) => m.fields['STOPPING'] === '1').length;
    await stopDaemon();
    expect(notify.messages().filter((m) => m.fields['STOPPING'] === '1').length).toBeGreaterThan(stoppingBefore);
    // The daemon stopped its openvpn by pid on the way out.
    expect(await waitFor(async () => !(await srv.pids()).includes(oldServer), 10_000)).toBe(true);

    await startDaemon();
    expect(await waitFor(async () => (await serverPid()) !== undefined, 30_000)).toBe(true);
    expect(await view()).toEqual(before);
    const again = await waitFor(async () => (await nsA.ping(B_ADDR)) && (await nsB.ping(A_ADDR)), 180_000, 1_000);
    expect(again, `A:\n${clientA.output().slice(-3000)}\ndaemon:\n${daemonLog.slice(-3000)}`).toBe(true);
  });

  it('revoking a node ends its session within seconds; it cannot come back while the other keeps working', { timeout: 300_000 }, async () => {
    expect(await nsB.ping(A_ADDR)).toBe(true);
    const logBefore = daemonLog.length;
    await s.run(['node', 'revoke', 'pc2', '--network', 'lab']);
    const killed = await waitFor(() => daemonLog.slice(logBefore).includes('killed the session of pc2'), 30_000);
    expect(killed, daemonLog.slice(logBefore)).toBe(true);
    // The CRL the server reads lists it now (rewritten atomically by the daemon).
    const ended = await waitFor(async () => !(await nsB.ping(A_ADDR, { timeoutS: 1 })), 30_000, 500);
    expect(ended).toBe(true);

    // B's openvpn tries again (at its ping-restart) and the server refuses it: the CRL it re-read lists pc2.
    const refused = await waitFor(() => /VERIFY ERROR: depth=0, error=certificate revoked: CN=pc2/.test(daemonLog.slice(logBefore)), 150_000, 1_000);
    expect(refused, `B:\n${clientB.output().slice(-3000)}`).toBe(true);
    expect(await nsB.ping(A_ADDR, { timeoutS: 2 })).toBe(false);
    expect(await nsA.ping(B_ADDR, { timeoutS: 2 })).toBe(false);
    // The snapshot is refreshed every few seconds; the refusal can now come sooner than that
    // (client-kill tells the client to reconnect at once instead of after its ping-restart).
    expect(await waitFor(async () => !(await snapshot())!.networks['lab']!.clients.some((c) => c.cn === 'pc2'), 20_000, 500)).toBe(true);
    const snap = await snapshot();
    // A never lost its session.
    expect(await nsA.ping(SERVER_ADDR), `A:\n${clientA.output().slice(-4000)}\ndaemon:\n${daemonLog.slice(logBefore)}`).toBe(true);
    expect(snap!.networks['lab']!.clients.map((c) => c.cn)).toContain('pc1');
  });
});
