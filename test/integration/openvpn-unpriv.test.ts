/**
 * openvpn without root (src/openvpn/unpriv.ts) and the operator's persistent
 * `down`, on real parts: `mvpn-client server run` in a server namespace and
 * the agent (`mvpn-client run`, enrolling with a token) in a node namespace,
 * as in agent-e2e.
 *
 * What it proves:
 * - the server's and the node's openvpn run as mvpn-openvpn (effective uid
 *   from /proc/PID/status), keeping only CAP_NET_ADMIN;
 * - that user can read the CRL and ccd files and, on the node, the
 *   network's own key files (the install's copy of the node key and its
 *   tls-crypt-v2 key: a soft restart reads them again), and no other key
 *   (not the node's identity key, no server key, not the signing key);
 * - a real soft restart (SIGUSR1, what ping-restart and a renewal's reload
 *   do) of either side reconnects in the same process: the node re-reads
 *   its keys as mvpn-openvpn, the server keeps them (persist-key);
 * - `down` is recorded: after an agent restart the network stays down
 *   ("down (admin)" in the table, admin_down/admin_down_since in --json),
 *   until `up`.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.ts';
import { lookupOpenvpnUser } from '../../src/openvpn/unpriv.ts';
import { net, openvpnPids, runCli, ServerWorld, type AgentProcess } from '../helpers/agent-fixtures.ts';
import { sh, waitFor, withLab } from '../helpers/netns.ts';

const CAP_NET_ADMIN = 1n << 12n;

/** Effective uid and effective capabilities of a live process. */
async function identityOf(pid: number): Promise<{ euid: number; egid: number; capEff: bigint }> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): string => text.match(new RegExp(`^${name}:\\s*(.*)$`, 'm'))![1]!;
  return { euid: Number(field('Uid').split(/\s+/)[1]), egid: Number(field('Gid').split(/\s+/)[1]), capEff: BigInt(`0x${field('CapEff')}`) };
}

/** `cat FILE` as the openvpn user (no supplementary groups but its own): exit code. */
async function readAsOpenvpn(file: string): Promise<number> {
  const r = await sh('setpriv', ['--reuid=mvpn-openvpn', '--regid=mvpn-openvpn', '--init-groups', 'cat', file], { allowFail: true });
  return r.code;
}

async function serverPid(w: ServerWorld, id: string): Promise<number | undefined> {
  try {
    const snap = JSON.parse(await readFile(join(w.server.stateDir, 'run', 'status.json'), 'utf8')) as { networks: Record<string, { state: string; pid?: number }> };
    const n = snap.networks[id];
    return n?.state === 'connected' || n?.state === 'connecting' ? n.pid : undefined;
  } catch {
    return undefined;
  }
}

describe('openvpn drops root; down is persistent', () => {
  it('server and node openvpn run as mvpn-openvpn with only CAP_NET_ADMIN, read CRL, ccd and on the node only the network keys, survive a SIGUSR1 restart; a down network stays down across an agent restart until up', async () => {
    await withLab(async (lab) => {
      const w = await ServerWorld.create(lab, { networks: ['alpha', 'beta'] });
      let agent: AgentProcess | undefined;
      try {
        await w.startServer();
        await w.newToken();
        await w.writeConfig();
        agent = w.startAgent();
        const s0 = await w.waitStatus((st) => st.ready && ['alpha', 'beta'].every((id) => net(st, id)?.state === 'connected'), 180_000);
        const who = await lookupOpenvpnUser();
        expect(who, 'the daemons made the mvpn-openvpn user').toBeDefined();

        // ---- effective uid of every openvpn, node and server
        const nodePids = ['alpha', 'beta'].map((id) => net(s0, id)!.pid!);
        expect(await waitFor(async () => (await serverPid(w, 'alpha')) !== undefined && (await serverPid(w, 'beta')) !== undefined, 60_000)).toBe(true);
        const srvPids = [(await serverPid(w, 'alpha'))!, (await serverPid(w, 'beta'))!];
        for (const pid of [...nodePids, ...srvPids]) {
          const id = await identityOf(pid);
          expect(id.euid, `openvpn pid ${pid}`).toBe(who!.uid);
          expect(id.egid, `openvpn pid ${pid}`).toBe(who!.gid);
          expect(id.capEff, `openvpn pid ${pid} keeps only CAP_NET_ADMIN`).toBe(CAP_NET_ADMIN);
        }

        // ---- what that user can read: the CRLs and ccd files, the node network's own keys, no other key
        const nodeNet = join(w.stateDir, 'networks', 'alpha');
        const srvNet = join(w.server.stateDir, 'networks', 'alpha');
        for (const f of [join(nodeNet, 'crl.pem'), join(nodeNet, 'node.key'), join(nodeNet, 'tls-crypt-v2.key'), join(srvNet, 'crl.pem'), join(srvNet, 'ccd', w.nodeId)]) {
          const st = await stat(f);
          expect({ f, uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 }).toEqual({ f, uid: 0, gid: who!.gid, mode: 0o640 });
          expect(await readAsOpenvpn(f), `mvpn-openvpn reads ${f}`).toBe(0);
        }
        const identityKey = (await readFile(join(nodeNet, 'install.json'), 'utf8')).match(/"key_path": "([^"]+)"/)![1]!;
        for (const f of [identityKey, join(srvNet, 'server.key'), join(srvNet, 'tls-crypt-v2-server.key'), join(w.server.stateDir, 'signing.key')]) {
          expect((await stat(f)).mode & 0o077, `${f} is root-only`).toBe(0);
          expect(await readAsOpenvpn(f), `mvpn-openvpn must not read ${f}`).not.toBe(0);
        }

        // ---- a soft restart (SIGUSR1, as ping-restart does) on each side: same process, reconnected with its persisted keys
        const alphaIp = await w.serverTunnelIp('alpha');
        process.kill(nodePids[0]!, 'SIGUSR1');
        expect(await waitFor(() => agent!.log().includes('SIGUSR1[hard,] received') || agent!.log().includes('SIGUSR1[soft'), 30_000)).toBe(true);
        await w.waitStatus((st) => net(st, 'alpha')?.state === 'connected', 120_000);
        expect(await waitFor(() => w.node.ping(alphaIp), 60_000), 'ping after the node openvpn restarted itself').toBe(true);
        process.kill(srvPids[0]!, 'SIGUSR1');
        expect(await waitFor(() => w.daemonLog.includes('SIGUSR1'), 30_000)).toBe(true);
        expect(await waitFor(() => w.node.ping(alphaIp), 120_000), 'ping after the server openvpn restarted itself').toBe(true);
        const s1 = await w.status();
        expect(net(s1, 'alpha')!.pid, 'the node openvpn was not replaced').toBe(nodePids[0]);
        expect(await serverPid(w, 'alpha'), 'the server openvpn was not replaced').toBe(srvPids[0]);
        expect(agent.log()).not.toMatch(/alpha\[\d+\]: .*(Permission denied|cannot (read|open|load))/i);

        // ---- down survives an agent restart, until up
        const down = await runCli(['down', 'beta', '--runtime-dir', w.runtimeDir]);
        expect(down.code, down.stderr).toBe(0);
        await w.waitStatus((st) => net(st, 'beta')?.state === 'stopped');
        expect(await agent.stop()).toBe(ExitCode.ok);
        expect(JSON.parse(await readFile(join(w.stateDir, 'admin.json'), 'utf8'))).toMatchObject({ schema: 1, down: { beta: expect.any(String) } });
        agent = w.startAgent();
        const s2 = await w.waitStatus((st) => st.ready && net(st, 'alpha')?.state === 'connected', 180_000);
        expect(net(s2, 'beta')).toMatchObject({ state: 'stopped', admin_down: true, admin_down_since: expect.stringMatching(/^\d{4}-\d\d-\d\dT/), pid: null });
        const table = await runCli(['status', '--runtime-dir', w.runtimeDir]);
        expect(table.stdout).toMatch(/^beta\s+down \(admin\)\s/m);
        expect(table.code).toBe(ExitCode.notAllConnected);
        // a reconcile does not bring it back either
        expect((await runCli(['reload', '--runtime-dir', w.runtimeDir])).code).toBe(0);
        expect(net(await w.status(), 'beta')).toMatchObject({ state: 'stopped', admin_down: true });
        expect((await runCli(['up', 'beta', '--runtime-dir', w.runtimeDir])).code).toBe(0);
        const s3 = await w.waitStatus((st) => net(st, 'beta')?.state === 'connected');
        expect(net(s3, 'beta')).toMatchObject({ admin_down: false, admin_down_since: null });
        expect(JSON.parse(await readFile(join(w.stateDir, 'admin.json'), 'utf8'))).toEqual({ schema: 1, down: {} });
        expect((await identityOf(net(s3, 'beta')!.pid!)).euid).toBe(who!.uid);
      } finally {
        const code = await agent?.stop();
        if (process.env['AGENT_TEST_LOG']) console.log(agent?.log(), '\n---- server\n', w.daemonLog);
        await w.cleanup();
        expect(code ?? ExitCode.ok).toBe(ExitCode.ok);
      }
      expect(await openvpnPids(w)).toEqual([]);
    });
  });
});
