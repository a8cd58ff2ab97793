/**
 * The agent daemon on real parts, with signed documents and bundles made by
 * the real building code and published as files (a `file` source): real
 * openvpn servers and the agent's openvpn clients in namespaces, the agent
 * as a child process (`node src/main.ts run`) in the node's namespace.
 * Server-mode end-to-end tests (HTTPS API, enrollment) are in agent-e2e.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createCrl } from '../../src/pki/crl.ts';
import { ExitCode } from '../../src/errors.ts';
import { AgentWorld, allConnected, net, openvpnPids, runCli } from '../helpers/agent-fixtures.ts';
import { waitFor, withLab } from '../helpers/netns.ts';
import { startNotifyListener } from '../helpers/notify-listener.ts';

const cli = (args: string[], opts: { asNobody?: boolean } = {}) => runCli(args, opts);

async function world(lab: Parameters<Parameters<typeof withLab>[0]>[0], ids: string[]): Promise<AgentWorld> {
  const w = await AgentWorld.create(lab);
  for (const id of ids) await w.addNetwork(id);
  await w.publish();
  await w.writeConfig();
  return w;
}

describe('agent daemon (file source)', () => {
  it('joins three networks at once: all connected, a ping over each, status shows three and exits 0; a non-root user can read status but not take a network down; root can down, up and restart one network', async () => {
    await withLab(async (lab) => {
      const w = await world(lab, ['alpha', 'beta', 'gamma']);
      const agent = w.startAgent();
      try {
        const s = await w.waitStatus((st) => st.ready && allConnected(st, ['alpha', 'beta', 'gamma']));
        for (const id of ['alpha', 'beta', 'gamma']) {
          const n = w.nets.get(id)!;
          expect(await waitFor(() => w.node.ping(n.serverIp), 30_000), `no ping over ${id}`).toBe(true);
          expect(net(s, id)).toMatchObject({ tunnel_address: expect.stringContaining(n.nodeIp), server: `198.18.0.1:${n.port}`, bundle_version: 1, last_error: null });
        }
        expect(s.membership?.serial).toBe(1);

        const table = await cli(['status', '--runtime-dir', w.runtimeDir]);
        expect(table.code).toBe(ExitCode.ok);
        expect(table.stdout.trim().split('\n')).toHaveLength(4);
        for (const id of ['alpha', 'beta', 'gamma']) expect(table.stdout).toMatch(new RegExp(`^${id}\\s+connected\\s+198\\.19\\.`, 'm'));

        const asNobody = await cli(['status', '--json', '--runtime-dir', w.runtimeDir], { asNobody: true });
        expect(asNobody.code).toBe(ExitCode.ok);
        expect((JSON.parse(asNobody.stdout) as { networks: unknown[] }).networks).toHaveLength(3);
        const down = await cli(['down', 'beta', '--runtime-dir', w.runtimeDir], { asNobody: true });
        expect(down.code).toBe(ExitCode.permissionDenied);
        expect(down.stderr).toContain('permission denied: down beta needs root (try sudo)');
        expect(net(await w.status(), 'beta')?.state).toBe('connected');

        // as root: down keeps a network down (also across reconciles), up brings it back, restart restarts only it
        const s1 = await w.status();
        expect((await cli(['down', 'beta', '--runtime-dir', w.runtimeDir])).code).toBe(0);
        const s2 = await w.waitStatus((st) => net(st, 'beta')?.state === 'stopped');
        expect(net(s2, 'beta')).toMatchObject({ admin_down: true, pid: null });
        expect((await w.node.exec('ip', ['link', 'show', 'mv-beta'], { allowFail: true })).code).not.toBe(0);
        expect((await cli(['status', '--runtime-dir', w.runtimeDir])).code).toBe(ExitCode.notAllConnected);
        expect((await cli(['reload', '--runtime-dir', w.runtimeDir])).code).toBe(0);
        expect(net(await w.status(), 'beta')).toMatchObject({ state: 'stopped', admin_down: true });
        expect((await cli(['up', 'beta', '--runtime-dir', w.runtimeDir])).code).toBe(0);
        await w.waitStatus((st) => net(st, 'beta')?.state === 'connected' && !net(st, 'beta')!.admin_down);
        expect((await cli(['restart', 'alpha', '--runtime-dir', w.runtimeDir])).code).toBe(0);
        const s3 = await w.waitStatus((st) => net(st, 'alpha')?.state === 'connected' && net(st, 'alpha')!.pid !== net(s1, 'alpha')!.pid);
        expect(net(s3, 'gamma')).toMatchObject({ pid: net(s1, 'gamma')!.pid, connected_since: net(s1, 'gamma')!.connected_since });
        const unknown = await cli(['down', 'delta', '--runtime-dir', w.runtimeDir]);
        expect(unknown.stderr).toContain('MVPN_NETWORK_UNKNOWN');
      } finally {
        expect(await agent.stop()).toBe(0);
        if (process.env['AGENT_TEST_LOG']) console.log(agent.log());
        await w.cleanup();
      }
      expect(await openvpnPids(w)).toEqual([]);
    });
  });
  it('kill -9 of one openvpn restarts only that network; a version bump restarts only its network; a CRL-only change restarts nothing', async () => {
    await withLab(async (lab) => {
      const w = await world(lab, ['alpha', 'beta', 'gamma']);
      const agent = w.startAgent();
      try {
        const s0 = await w.waitStatus((st) => st.ready && allConnected(st, ['alpha', 'beta', 'gamma']));
        const before = (id: string) => net(s0, id)!;

        // kill -9 beta's openvpn: beta comes back with a new pid, the others never notice
        process.kill(before('beta').pid!, 'SIGKILL');
        const s1 = await w.waitStatus((st) => net(st, 'beta')?.state === 'connected' && net(st, 'beta')!.pid !== before('beta').pid);
        expect(net(s1, 'beta')!.restarts).toBe(1);
        for (const id of ['alpha', 'gamma']) {
          expect(net(s1, id)).toMatchObject({ pid: before(id).pid, connected_since: before(id).connected_since, restarts: 0, state: 'connected' });
        }
        expect(await waitFor(() => w.node.ping(w.nets.get('beta')!.serverIp), 30_000)).toBe(true);

        // version bump for gamma (a new spec: another mtu): only gamma restarts
        w.nets.get('gamma')!.version = 2;
        w.nets.get('gamma')!.specOverrides = { mtu: 1400 };
        await w.publish();
        await w.control('/v1/reload');
        const s2 = await w.waitStatus((st) => net(st, 'gamma')?.bundle_version === 2 && net(st, 'gamma')?.state === 'connected');
        expect(net(s2, 'gamma')!.pid).not.toBe(before('gamma').pid);
        expect(net(s2, 'alpha')).toMatchObject({ pid: before('alpha').pid, connected_since: before('alpha').connected_since });
        expect(net(s2, 'beta')).toMatchObject({ pid: net(s1, 'beta')!.pid, connected_since: net(s1, 'beta')!.connected_since });
        expect(s2.membership?.serial).toBe(2);
        expect(await readFile(join(w.stateDir, 'networks', 'gamma', 'openvpn.conf'), 'utf8')).toContain('tun-mtu 1400');
        expect(await waitFor(() => w.node.ping(w.nets.get('gamma')!.serverIp), 30_000)).toBe(true);

        // a CRL refresh for alpha (new version, only crl.pem differs): files swapped, openvpn untouched
        const a = w.nets.get('alpha')!;
        a.crlPem = await createCrl({ ca: a.pki.ca, revoked: [], thisUpdate: new Date(Date.now() - 60_000), nextUpdate: new Date(Date.now() + 86_400_000), crlNumber: 2 });
        a.version = 2;
        await w.publish();
        await w.control('/v1/reload');
        const s3 = await w.waitStatus((st) => net(st, 'alpha')?.bundle_version === 2);
        expect(net(s3, 'alpha')).toMatchObject({ pid: before('alpha').pid, connected_since: before('alpha').connected_since, state: 'connected' });
        expect(agent.log()).toContain('alpha: swap-crl');
      } finally {
        await agent.stop();
        await w.cleanup();
      }
    });
  });

  it('a removed network is stopped, its interface gone and its files removed; a tampered or policy-violating bundle is rejected while the old one keeps running', async () => {
    await withLab(async (lab) => {
      const w = await world(lab, ['alpha', 'beta', 'gamma']);
      const agent = w.startAgent();
      try {
        const s0 = await w.waitStatus((st) => st.ready && allConnected(st, ['alpha', 'beta', 'gamma']));
        expect((await w.node.exec('ip', ['link', 'show', 'mv-beta'], { allowFail: true })).code).toBe(0);

        w.member.delete('beta');
        await w.publish();
        await w.control('/v1/reload');
        const s1 = await w.waitStatus((st) => !st.networks.some((n) => n.id === 'beta'));
        expect(s1.networks.map((n) => n.id)).toEqual(['alpha', 'gamma']);
        expect((await w.node.exec('ip', ['link', 'show', 'mv-beta'], { allowFail: true })).code).not.toBe(0);
        expect((await readdir(join(w.stateDir, 'networks'))).filter((f) => f.includes('beta'))).toEqual([]);
        expect((await openvpnPids(w)).length).toBe(2);

        // tampered in transit: the bytes do not match the signed membership
        w.nets.get('alpha')!.version = 2;
        await w.publish({ tamper: 'alpha' });
        await w.control('/v1/reload');
        const s2 = await w.waitStatus((st) => net(st, 'alpha')?.last_error !== null);
        expect(net(s2, 'alpha')).toMatchObject({
          state: 'connected',
          bundle_version: 1,
          pid: net(s0, 'alpha')!.pid,
          last_error: { code: 'MVPN_BUNDLE_HASH_MISMATCH' },
        });
        expect(await w.node.ping(w.nets.get('alpha')!.serverIp, { timeoutS: 5 })).toBe(true);

        // validly signed, but asks openvpn to run a script: refused by the allow-list
        w.nets.get('gamma')!.version = 2;
        await w.publish({ hostile: { id: 'gamma', spec: { extra_options: [['up', '/bin/sh']] } } });
        await w.control('/v1/reload');
        const s3 = await w.waitStatus((st) => net(st, 'gamma')?.last_error !== null);
        expect(net(s3, 'gamma')).toMatchObject({ state: 'connected', bundle_version: 1, pid: net(s0, 'gamma')!.pid, last_error: { code: 'MVPN_OPTION_FORBIDDEN' } });
        expect(net(s3, 'gamma')!.last_error!.message).toContain('up');
        const table = await cli(['status', '--runtime-dir', w.runtimeDir]);
        expect(table.code).toBe(ExitCode.ok); // still connected, on the old bundle
        expect(table.stdout).toMatch(/^gamma\s+connected\s+.*MVPN_OPTION_FORBIDDEN/m);
        // nothing of the hostile bundle reached the disk
        const dirs = (await readdir(join(w.stateDir, 'networks'))).filter((f) => f.startsWith('.gamma.'));
        expect(dirs).toEqual([expect.stringMatching(/^\.gamma\.1\./)]);
      } finally {
        await agent.stop();
        await w.cleanup();
      }
    });
  });
  it('keeps everything running while no source answers, boots from the cache when the source is gone, and resumes when it is back', async () => {
    await withLab(async (lab) => {
      const w = await world(lab, ['alpha', 'beta']);
      let agent = w.startAgent();
      try {
        const s0 = await w.waitStatus((st) => st.ready && allConnected(st, ['alpha', 'beta']));

        // the source disappears mid-run: a reconcile fails, nothing is torn down
        await rm(join(w.pubDir, 'membership.json'));
        expect(await w.control('/v1/reload')).toMatchObject({ ok: false, error: { code: 'MVPN_SOURCES_UNREACHABLE' } });
        const s1 = await w.status();
        expect(s1.reconcile.last_error?.code).toBe('MVPN_SOURCES_UNREACHABLE');
        for (const id of ['alpha', 'beta']) expect(net(s1, id)).toMatchObject({ state: 'connected', pid: net(s0, id)!.pid, last_error: null });
        expect(await w.node.ping(w.nets.get('alpha')!.serverIp, { timeoutS: 5 })).toBe(true);

        // reboot while the source is still gone: the networks come up from the installed bundles
        expect(await agent.stop()).toBe(0);
        expect(await openvpnPids(w)).toEqual([]);
        agent = w.startAgent();
        const s2 = await w.waitStatus((st) => st.ready && allConnected(st, ['alpha', 'beta']));
        expect(s2.reconcile.last_error?.code).toBe('MVPN_SOURCES_UNREACHABLE');
        expect(s2.membership?.serial).toBe(1); // the stored document, rollback protection kept
        expect(agent.log()).toContain('alpha: start (installed bundle, before discovery)');
        for (const id of ['alpha', 'beta']) expect(await waitFor(() => w.node.ping(w.nets.get(id)!.serverIp), 30_000)).toBe(true);

        // the source is back with a change: reconcile resumes
        w.member.delete('beta');
        await w.publish();
        expect(await w.control('/v1/reload')).toMatchObject({ ok: true });
        const s3 = await w.waitStatus((st) => st.networks.length === 1);
        expect(s3.membership?.serial).toBe(2);
        expect(s3.reconcile.last_error).toBeNull();
        expect(net(s3, 'alpha')).toMatchObject({ state: 'connected', pid: net(s2, 'alpha')!.pid });
      } finally {
        await agent.stop();
        await w.cleanup();
      }
    });
  });

  it('after kill -9 of the agent, a restarted agent cleans up the leftovers and never runs a network twice', async () => {
    await withLab(async (lab) => {
      const w = await world(lab, ['alpha', 'beta']);
      let agent = w.startAgent();
      try {
        await w.waitStatus((st) => st.ready && allConnected(st, ['alpha', 'beta']));
        const old = (await openvpnPids(w)).sort();
        expect(old).toHaveLength(2);
        process.kill(agent.pid, 'SIGKILL');
        await agent.exited();
        // the orphans are still there, holding their pid files and sockets
        expect((await openvpnPids(w)).sort()).toEqual(old);

        agent = w.startAgent();
        const s = await w.waitStatus((st) => st.ready && allConnected(st, ['alpha', 'beta']));
        const now = (await openvpnPids(w)).sort();
        expect(now).toHaveLength(2);
        for (const pid of old) expect(now).not.toContain(pid);
        expect(now).toEqual([net(s, 'alpha')!.pid, net(s, 'beta')!.pid].sort());
        expect(agent.log()).toMatch(/previous run left 2 openvpn process\(es\)/);
        for (const id of ['alpha', 'beta']) expect(await waitFor(() => w.node.ping(w.nets.get(id)!.serverIp), 30_000)).toBe(true);
      } finally {
        await agent.stop();
        await w.cleanup();
      }
      expect(await openvpnPids(w)).toEqual([]);
    });
  });

  it('tells systemd READY=1 only after the networks are up, then STATUS, WATCHDOG=1, RELOADING=1 on SIGHUP, STOPPING=1', async () => {
    await withLab(async (lab) => {
      const w = await world(lab, ['alpha', 'beta']);
      const listener = await startNotifyListener();
      const agent = w.startAgent({ env: { NOTIFY_SOCKET: listener.socket, WATCHDOG_USEC: '1000000' } });
      try {
        const ready = await listener.waitFor((d) => d.fields['READY'] === '1', 90_000);
        // at the moment READY=1 arrived, both networks were connected
        const s = await w.status();
        expect(allConnected(s, ['alpha', 'beta'])).toBe(true);
        expect(ready.fields['STATUS']).toBe('2/2 networks connected');
        expect(ready.pid).toBe(agent.pid);
        // nothing said READY before
        const beforeReady = listener.messages().slice(0, listener.messages().indexOf(ready));
        expect(beforeReady.some((d) => d.fields['READY'] === '1')).toBe(false);

        const dogs = () => listener.messages().filter((d) => d.fields['WATCHDOG'] === '1').length;
        const n0 = dogs();
        expect(await waitFor(() => dogs() >= n0 + 3, 20_000)).toBe(true); // every 500 ms; bound only catches a hang

        process.kill(agent.pid, 'SIGHUP');
        await listener.waitFor((d) => d.fields['RELOADING'] === '1');
        await listener.waitFor((d) => d.fields['READY'] === '1' && d !== ready);

        // a network going down is reported
        process.kill(net(s, 'beta')!.pid!, 'SIGKILL');
        await listener.waitFor((d) => d.fields['STATUS'] === '1/2 networks connected');

        expect(await agent.stop()).toBe(0);
        await listener.waitFor((d) => d.fields['STOPPING'] === '1');
      } finally {
        await agent.stop();
        await listener.stop();
        await w.cleanup();
      }
    });
  });

  it('refuses to start with a config it cannot use, naming the field, and touches nothing', async () => {
    await withLab(async (lab) => {
      const w = await world(lab, []);
      try {
        await w.writeConfig({ sources: [{ type: 'https', url: 'http://198.18.0.1/' }] });
        const r = await cli(['run', '--config', join(w.dir, 'config.json')]);
        expect(r.code).toBe(ExitCode.failure);
        expect(r.stderr).toContain('sources[0].url');
        expect(r.stderr).toContain('MVPN_CONFIG_INVALID');
        await w.writeConfig({ anchor: 'ed25519:not-a-key' });
        const r2 = await cli(['run', '--config', join(w.dir, 'config.json')]);
        expect(r2.stderr).toMatch(/config anchor: .*MVPN_CONFIG_INVALID/);
        await expect(readdir(w.stateDir)).rejects.toMatchObject({ code: 'ENOENT' });
      } finally {
        await w.cleanup();
      }
    });
  });
  it('metrics_listen serves the metrics on the namespace loopback; a port already taken is logged and the networks run on', async () => {
    await withLab(async (lab) => {
      const w = await world(lab, ['alpha']);
      try {
        await w.node.up('lo');
        await w.writeConfig({ metrics_listen: '127.0.0.1:9475' });
        const agent = w.startAgent();
        try {
          await w.waitStatus((st) => st.ready && allConnected(st, ['alpha']));
          expect(agent.log()).toContain('Prometheus metrics on http://127.0.0.1:9475/metrics');
          const text = (await w.node.exec('curl', ['-sf', '--max-time', '5', 'http://127.0.0.1:9475/metrics'])).stdout;
          expect(text).toContain('mvpn_agent_network_up{network="alpha"} 1');
          expect(text).toContain('mvpn_agent_network_certificate_expiry_timestamp_seconds{network="alpha"}');
        } finally {
          await agent.stop();
        }
        // Something else holds the port: the agent says so and joins its networks anyway.
        const holder = w.node.spawn('python3', ['-c', 'import socket,time\ns=socket.socket()\ns.bind(("127.0.0.1",9475))\ns.listen()\nprint("bound",flush=True)\ntime.sleep(600)']);
        let held = '';
        holder.stdout?.on('data', (d: Buffer) => (held += d.toString()));
        expect(await waitFor(() => held.includes('bound'), 30_000)).toBe(true);
        const second = w.startAgent();
        try {
          const s = await w.waitStatus((st) => st.ready && allConnected(st, ['alpha']));
          expect(net(s, 'alpha')?.state).toBe('connected');
          expect(second.log()).toMatch(/no metrics listener on 127\.0\.0\.1:9475: .*\[MVPN_METRICS_LISTEN_FAILED\]/);
          // The status socket still serves them.
          const printed = await cli(['status', '--prometheus', '--runtime-dir', w.runtimeDir]);
          expect(printed.stdout).toContain('mvpn_agent_network_up{network="alpha"} 1');
        } finally {
          await second.stop();
          holder.kill('SIGTERM');
        }
      } finally {
        await w.cleanup();
      }
    });
  });

  it('READY=1 waits for a definite answer from every network, at most ready_timeout: a rejected bundle does not hold it up, a silent server does until the timeout', async () => {
    await withLab(async (lab) => {
      const w = await AgentWorld.create(lab);
      await w.addNetwork('alpha');
      await w.addNetwork('beta', { server: false });
      await w.addNetwork('gamma');
      await w.publish({ hostile: { id: 'gamma', spec: { extra_options: [['up', '/bin/sh']] } } });
      await w.writeConfig({ ready_timeout_s: 15 });
      const listener = await startNotifyListener();
      const agent = w.startAgent({ env: { NOTIFY_SOCKET: listener.socket } });
      try {
        const s0 = await w.waitStatus((st) => net(st, 'alpha')?.state === 'connected' && net(st, 'gamma')?.state === 'failed');
        // alpha is up and gamma has definitely failed, but beta is still trying: not ready yet
        expect(net(s0, 'beta')?.state).toBe('connecting');
        expect(s0.ready).toBe(false);
        expect(listener.messages().some((d) => d.fields['READY'] === '1')).toBe(false);
        const ready = await listener.waitFor((d) => d.fields['READY'] === '1', 60_000);
        expect(ready.fields['STATUS']).toBe('1/3 networks connected');
        const s1 = await w.status();
        expect(s1.ready).toBe(true);
        expect(net(s1, 'gamma')).toMatchObject({ state: 'failed', bundle_version: null, last_error: { code: 'MVPN_OPTION_FORBIDDEN' } });
        expect(agent.log()).toContain('ready: 1/3 networks connected (stopped waiting for the rest)');
        expect((await cli(['status', '--runtime-dir', w.runtimeDir])).code).toBe(ExitCode.notAllConnected);
      } finally {
        await agent.stop();
        await listener.stop();
        await w.cleanup();
      }
    });
  });
});
