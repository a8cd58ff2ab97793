/**
 * The Supervisor on real openvpn in network namespaces: a server-role and a
 * client-role instance, brought up, broken (kill -9, SIGSTOP) and stopped.
 */
import { access, chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ManagementClient } from '../../src/openvpn/management.ts';
import { Supervisor } from '../../src/openvpn/supervisor.ts';
import { issueCert } from '../../src/pki/cert.ts';
import { createCrl } from '../../src/pki/crl.ts';
import { generateKeyPairPem } from '../../src/pki/keys.ts';
import {
  CLIENT_TUNNEL,
  CLIENT_UNDERLAY,
  clientSpec,
  fastDeps,
  pidAlive,
  recordingLogger,
  SERVER_TUNNEL,
  SERVER_UNDERLAY,
  serverSpec,
  withTunnelLab,
  until,
  untilState,
  type TunnelLab,
} from '../helpers/supervisor-lab.ts';

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** A lab with a connected server and client supervisor (`beforeStart` may change the lab's files first); both stopped afterwards, pass or fail. */
async function withTunnel(
  fn: (t: TunnelLab, server: Supervisor, client: Supervisor, events: ReturnType<typeof recordingLogger>['events']) => Promise<void>,
  beforeStart?: (t: TunnelLab) => Promise<void>,
): Promise<void> {
  await withTunnelLab('sup', async (t) => {
    await beforeStart?.(t);
    const logger = recordingLogger();
    const server = new Supervisor(serverSpec(t), fastDeps(t.srv, logger));
    const client = new Supervisor(clientSpec(t), fastDeps(t.cli, logger));
    try {
      server.start();
      await untilState(server, 'connected', logger.events);
      client.start();
      await untilState(client, 'connected', logger.events);
      await fn(t, server, client, logger.events);
    } finally {
      await client.stop();
      await server.stop();
    }
  });
}

describe('Supervisor on real openvpn', () => {
  it('brings a client to connected, reports tunnel address, server and bytes; the server lists it in status 3', async () => {
    await withTunnel(async (t, server, client, events) => {
      // The tunnel carries traffic.
      expect(await t.cli.ping(SERVER_TUNNEL, { count: 3, timeoutS: 2 })).toBe(true);
      await until(() => client.status().tunnelAddress === `${CLIENT_TUNNEL}/24` && client.status().bytesIn > 0, 'address and bytes', events);
      const s = client.status();
      expect(s).toMatchObject({ id: 'node1', role: 'client', state: 'connected', remote: `${SERVER_UNDERLAY}:1194`, restarts: 0 });
      expect(s.pid).toBeGreaterThan(1);
      expect(s.connectedSince).toBeTypeOf('number');
      expect(s.bytesOut).toBeGreaterThan(0);

      // Server role: connected, and its management interface lists the client.
      expect(server.status()).toMatchObject({ role: 'server', state: 'connected', restarts: 0 });
      const mgmt = server.management();
      expect(mgmt).toBeDefined();
      const st = await mgmt!.status3();
      expect(st.clients).toHaveLength(1);
      expect(st.clients[0]).toMatchObject({ cn: 'node1', virtualAddress: CLIENT_TUNNEL });
      expect(st.clients[0]!.realAddress.startsWith(`${CLIENT_UNDERLAY}:`)).toBe(true);
      expect(st.clients[0]!.bytesIn).toBeGreaterThan(0);
      // The health check counts the server's clients too.
      await until(() => server.status().clients === 1, 'server to count 1 client', events);
      expect(server.status().tunnelAddress).toBe(`${SERVER_TUNNEL}/24`);
    });
  });

  it('kill -9 of the client openvpn: back to connected by itself with restarts=1, a new pid', async () => {
    await withTunnel(async (t, _server, client, events) => {
      const oldPid = client.status().pid!;
      process.kill(oldPid, 'SIGKILL');
      await until(() => client.status().restarts === 1 && client.status().state === 'connected', 'reconnect after kill -9', events);
      const s = client.status();
      expect(s.pid).not.toBe(oldPid);
      expect(await pidAlive(oldPid)).toBe(false);
      expect(s.lastError?.code).toBe('MVPN_OPENVPN_EXITED');
      expect(s.lastError?.message).toMatch(/signal SIGKILL/);
      const path = events.filter((e) => e.kind === 'openvpn.transition' && e.id === 'node1').map((e) => (e.kind === 'openvpn.transition' ? e.to : ''));
      expect(path.slice(-4)).toEqual(['backoff', 'starting', 'connecting', 'connected']);
      expect(await t.cli.ping(SERVER_TUNNEL, { count: 2, timeoutS: 2 })).toBe(true);
      // Only one openvpn for this network in the namespace.
      expect(await t.cli.pids()).toEqual([s.pid]);
    });
  });

  it('SIGSTOP (hung openvpn): detected through the management interface, killed by pid and restarted', async () => {
    await withTunnel(async (t, _server, client, events) => {
      const oldPid = client.status().pid!;
      process.kill(oldPid, 'SIGSTOP');
      try {
        await until(() => client.status().restarts === 1 && client.status().state === 'connected', 'restart of the hung openvpn', events);
      } finally {
        // Never leave a stopped process behind if the test fails.
        if (await pidAlive(oldPid)) process.kill(oldPid, 'SIGCONT');
      }
      expect(client.status().lastError?.code).toBe('MVPN_OPENVPN_HUNG');
      expect(events.some((e) => e.kind === 'openvpn.transition' && e.id === 'node1' && e.from === 'connected' && e.to === 'degraded')).toBe(true);
      expect(await pidAlive(oldPid)).toBe(false);
      expect(await t.cli.pids()).toEqual([client.status().pid]);
    });
  });

  it('kill CN via the server management ends the client session; openvpn reconnects on its own (no hold parks it, no process restart)', async () => {
    await withTunnel(async (t, server, client, events) => {
      const pid = client.status().pid!;
      const before = (await server.management()!.status3()).clients[0]!;
      const mark = events.length;
      await server.management()!.kill('node1');
      // openvpn 2.6 drops the session without telling the client; the client
      // notices by ping-restart (10 s here) and reconnects inside the same process.
      // On the way it may pass through degraded (the tap goes away during the restart).
      await until(
        () => events.slice(mark).some((e) => e.kind === 'openvpn.transition' && e.id === 'node1' && e.from === 'connected'),
        'the client to notice the kill',
        events,
      );
      await untilState(client, 'connected', events);
      await until(
        async () => {
          const rows = (await server.management()!.status3()).clients;
          return rows.length === 1 && rows[0]!.clientId !== before.clientId;
        },
        'a new session on the server',
        events,
      );
      expect(client.status()).toMatchObject({ pid, restarts: 0 });
      expect(await t.cli.ping(SERVER_TUNNEL, { count: 2, timeoutS: 2 })).toBe(true);
    });
  });

  it('reload(): new certificate and key at the same paths, the old certificate revoked: the same process reconnects with them on the same tap device', async () => {
    // The agent's template: persist-tun without persist-key (so SIGUSR1 reads the files again), no restart pause.
    const agentTemplate = async (t: TunnelLab): Promise<void> => {
      const confPath = t.clientConfig['node1']!;
      const conf = await readFile(confPath, 'utf8');
      await writeFile(confPath, conf.replace('persist-key\n', 'persist-tun\n').replace('connect-retry 1 2\n', 'connect-retry 0\n'));
    };
    await withTunnel(async (t, server, client, events) => {
      expect(await t.cli.ping(SERVER_TUNNEL, { count: 1, timeoutS: 5 })).toBe(true);
      const ifindex = async (): Promise<string> => (await t.cli.exec('cat', ['/sys/class/net/mv-t/ifindex'])).stdout.trim();
      const before = { pid: client.status().pid, ifindex: await ifindex(), since: client.status().connectedSince };

      // Renewal: a new key and a certificate for it, written over the files the config names; the old certificate
      // goes on the CRL (the server reads it at each handshake), so only the new pair can connect again.
      const m = t.material;
      const kp = await generateKeyPairPem(m.alg);
      const renewed = await issueCert({ ca: m.ca, publicKeyPem: kp.publicKeyPem, cn: 'node1', usage: 'client', notBefore: m.notBefore, notAfter: m.notAfter });
      const files = t.pki.clients['node1']!;
      await writeFile(files.cert, renewed.certPem);
      await writeFile(files.key, kp.privateKeyPem);
      const crl = await createCrl({ ca: m.ca, revoked: [{ serialHex: m.clients['node1']!.serialHex, revokedAt: new Date() }], thisUpdate: m.notBefore, nextUpdate: m.notAfter, crlNumber: 2 });
      await writeFile(t.pki.crl, crl);

      client.reload();
      expect(client.status().state).toBe('reloading');
      await until(() => client.status().state === 'connected' && client.status().connectedSince !== before.since, 'connected again after the reload', events);
      expect(await t.cli.ping(SERVER_TUNNEL, { count: 1, timeoutS: 5 })).toBe(true);
      expect({ pid: client.status().pid, ifindex: await ifindex(), restarts: client.status().restarts }).toEqual({ pid: before.pid, ifindex: before.ifindex, restarts: 0 });
      const out = events.filter((e) => e.kind === 'openvpn.output' && e.id === 'node1').map((e) => (e.kind === 'openvpn.output' ? e.line : ''));
      expect(out.some((l) => l.includes('SIGUSR1'))).toBe(true);
      expect(out.some((l) => l.includes('Preserving previous TUN/TAP instance'))).toBe(true);
      // the server holds one session for node1: the new one replaced the old
      const st = await server.management()!.status3();
      expect(st.clients.filter((c) => c.cn === 'node1')).toHaveLength(1);
    }, agentTemplate);
  });

  it('stop() leaves no process (by pid and ip netns pids) and no socket or pid file', async () => {
    await withTunnel(async (t, server, client) => {
      const cpid = client.status().pid!;
      const spid = server.status().pid!;
      await client.stop();
      await server.stop();
      expect(client.status().state).toBe('stopped');
      expect(server.status().state).toBe('stopped');
      expect(await pidAlive(cpid)).toBe(false);
      expect(await pidAlive(spid)).toBe(false);
      expect(await t.cli.pids()).toEqual([]);
      expect(await t.srv.pids()).toEqual([]);
      for (const f of [clientSpec(t).mgmtSocket, clientSpec(t).pidFile, serverSpec(t).mgmtSocket, serverSpec(t).pidFile]) {
        expect(await exists(f), f).toBe(false);
      }
      // And it can start again afterwards.
      client.start();
      server.start();
      await untilState(server, 'connected', []);
      await untilState(client, 'connected', []);
    });
  });

  it('an openvpn slow to open its management socket (started 1.5 s late) is still connected to and released from its hold', async () => {
    await withTunnelLab('supslow', async (t, _lab, dir) => {
    // `ip netns exec` execs the script, the script execs openvpn: the pid stays the same.
    const slow = join(dir, 'openvpn');
    await writeFile(slow, '#!/bin/sh\nsleep 1.5\nexec /usr/sbin/openvpn "$@"\n');
    await chmod(slow, 0o755);
    const logger = recordingLogger();
    let attempts = 0;
    const server = new Supervisor(
      { ...serverSpec(t), openvpnPath: slow },
      {
        ...fastDeps(t.srv, logger),
        connectManagement: (path, opts) => {
          attempts++;
          return ManagementClient.connect(path, opts);
        },
      },
    );
    try {
      server.start();
      await untilState(server, 'connected', logger.events);
      // The first tries found no socket; it connected after them, within the timeout.
      expect(attempts).toBeGreaterThan(1);
      expect(logger.events.filter((e) => e.kind === 'openvpn.mgmt-failed')).toEqual([]);
      expect(server.status().restarts).toBe(0);
      expect(await t.srv.pids()).toEqual([server.status().pid]);
    } finally {
      await server.stop();
    }
    });
  });
});
