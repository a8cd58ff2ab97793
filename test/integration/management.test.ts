/**
 * ManagementClient against real openvpn 2.6 (server and client in
 * namespaces, started by hand here so the client is tested without the
 * supervisor): the hold handshake, state and bytecount notifications,
 * status 3 with a connected client, kill CN, errors, and signal.
 */
import type { ChildProcess } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { isMvpnError } from '../../src/errors.ts';
import { ManagementClient, type StateInfo } from '../../src/openvpn/management.ts';
import { runtimePaths } from '../../src/openvpn/process.ts';
import { waitFor, type Netns } from '../helpers/netns.ts';
import { CLIENT_TUNNEL, CLIENT_UNDERLAY, SERVER_UNDERLAY, withTunnelLab } from '../helpers/supervisor-lab.ts';

function startHeld(ns: Netns, config: string, files: { mgmtSocket: string; pidFile: string }): { child: ChildProcess; log: () => string } {
  const child = ns.spawn('openvpn', ['--config', config, '--management', files.mgmtSocket, 'unix', '--management-hold', '--writepid', files.pidFile]);
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  return { child, log: () => out };
}

async function connectWhenReady(path: string): Promise<ManagementClient> {
  let last: unknown;
  for (let i = 0; i < 100; i++) {
    try {
      return await ManagementClient.connect(path, { timeoutMs: 2_000 });
    } catch (e) {
      last = e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw last;
}

describe('ManagementClient on real openvpn', () => {
  it('hold, state on, bytecount, status 3, kill CN, ERROR replies and signal', async () => {
    await withTunnelLab('mgmt', async (t) => {
    const sFiles = runtimePaths(t.runtimeDir, 'srv');
    const cFiles = runtimePaths(t.runtimeDir, 'node1');
    const server = startHeld(t.srv, t.serverConfig, sFiles);
    const srv = await connectWhenReady(sFiles.mgmtSocket);
    const states: StateInfo[] = [];
    const holds: string[] = [];
    srv.on('state', (s) => states.push(s));
    srv.on('hold', (h) => holds.push(h.text));
    await srv.stateOn();
    await srv.bytecount(1);
    await srv.holdRelease();
    expect(await waitFor(() => states.some((s) => s.name === 'CONNECTED'), 30_000), server.log()).toBe(true);
    // A server reports CONNECTED too, with its own tunnel address.
    expect((await srv.state()).name).toBe('CONNECTED');
    expect(await srv.pid()).toBe(server.child.pid);
    expect(holds.length).toBeLessThanOrEqual(1);
    expect((await srv.status3()).clients).toEqual([]);

    const client = startHeld(t.cli, t.clientConfig['node1']!, cFiles);
    const cli = await connectWhenReady(cFiles.mgmtSocket);
    const cStates: string[] = [];
    const cHolds: string[] = [];
    const counts: { bytesIn: number; bytesOut: number }[] = [];
    cli.on('state', (s) => cStates.push(s.name));
    cli.on('hold', (h) => cHolds.push(h.text));
    cli.on('bytecount', (b) => counts.push(b));
    await cli.stateOn();
    await cli.bytecount(1);
    await cli.holdRelease();
    expect(await waitFor(() => cStates.includes('CONNECTED'), 60_000), client.log()).toBe(true);
    const cs = await cli.state();
    expect(cs).toMatchObject({ name: 'CONNECTED', localIp: CLIENT_TUNNEL, remoteIp: SERVER_UNDERLAY, remotePort: 1194 });
    expect(await waitFor(() => counts.some((c) => c.bytesIn > 0 && c.bytesOut > 0), 10_000)).toBe(true);

    const st = await srv.status3();
    expect(st.clients).toHaveLength(1);
    const row = st.clients[0]!;
    expect(row).toMatchObject({ cn: 'node1', virtualAddress: CLIENT_TUNNEL, cipher: 'AES-256-GCM' });
    expect(row.realAddress.startsWith(`${CLIENT_UNDERLAY}:`)).toBe(true);
    expect(row.clientId).toBeTypeOf('number');
    expect(Math.abs(row.connectedSince.getTime() - Date.now())).toBeLessThan(5 * 60_000);
    expect(st.routes.some((r) => r.cn === 'node1')).toBe(true);

    // kill CN ends the session: the client notices...
    const holdsBefore = cHolds.length;
    await srv.kill('node1');
    expect(await waitFor(() => cStates.includes('RECONNECTING'), 30_000), client.log()).toBe(true);
    // ...and, because --management-hold holds after every restart, parks in
    // a hold (why the supervisor sends `hold off` before its first release).
    expect(await waitFor(() => cHolds.length > holdsBefore, 30_000), client.log()).toBe(true);
    await cli.holdOff();
    await cli.holdRelease();
    // Released, it reconnects as a new client id.
    expect(
      await waitFor(async () => {
        const again = (await srv.status3()).clients;
        return again.length === 1 && again[0]!.clientId !== row.clientId;
      }, 60_000),
    ).toBe(true);

    // Unknown CN: ERROR reply as MVPN_MGMT_ERROR; the connection stays usable.
    const err = await srv.kill('nobody').catch((e: unknown) => e);
    expect(isMvpnError(err) && err.code).toBe('MVPN_MGMT_ERROR');
    expect((await srv.state()).name).toBe('CONNECTED');

    // signal SIGTERM through management: openvpn exits, the connection closes.
    const closed = new Promise<void>((r) => cli.once('close', () => r()));
    const exited = new Promise<void>((r) => client.child.once('exit', () => r()));
    await cli.signal('SIGTERM');
    await closed;
    await exited;
    srv.close();
    const sExit = new Promise<void>((r) => server.child.once('exit', () => r()));
    process.kill(server.child.pid!, 'SIGTERM');
    await sExit;
    });
  });

  it('many commands in a row are answered in order (serialized over one connection)', async () => {
    await withTunnelLab('mgmt', async (t) => {
    const files = runtimePaths(t.runtimeDir, 'srv');
    const server = startHeld(t.srv, t.serverConfig, files);
    const m = await connectWhenReady(files.mgmtSocket);
    await m.holdRelease();
    const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? m.command('pid') : m.command('state'))));
    replies.forEach((r, i) => {
      if (i % 2 === 0) expect(r).toEqual([`pid=${server.child.pid}`]);
      else expect(r[r.length - 1]).toMatch(/^\d+,[A-Z_]+,/);
    });
    m.close();
    const exited = new Promise<void>((r) => server.child.once('exit', () => r()));
    process.kill(server.child.pid!, 'SIGTERM');
    await exited;
    });
  });
});
