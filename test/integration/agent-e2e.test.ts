/**
 * The agent against the real server mode, end to end: `mvpn-client server
 * run` in a server namespace (HTTPS API v1 with mTLS, one real openvpn
 * server per network), the agent (`mvpn-client run`) in a node namespace,
 * enrolling with a one-time token (key made on the node), then fetching its
 * signed membership and bundles and running one openvpn per network.
 * Changes are made with the server CLI, as an operator would.
 */
import { readFile, readFileSync, stat, writeFile } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildMembership } from '../../src/bundle/build.ts';
import { openEnvelope } from '../../src/bundle/envelope.ts';
import type { MembershipDoc } from '../../src/bundle/schema.ts';
import { parseAnchor, signingKeyFromPem } from '../../src/bundle/sign.ts';
import { ExitCode } from '../../src/errors.ts';
import { allConnected, hostileBundleFrom, net, openvpnPids, runCli, ServerWorld, startStaticHttps, type AgentProcess } from '../helpers/agent-fixtures.ts';
import { waitFor, withLab } from '../helpers/netns.ts';

const readFileP = promisify(readFile);
const statP = promisify(stat);
const writeFileP = promisify(writeFile);

const NETS = ['alpha', 'beta', 'gamma'];
const t0 = Date.now();
const step = (what: string): void => {
  if (process.env['AGENT_TEST_LOG']) console.log(`[${Date.now() - t0} ms] ${what}`);
};

/** The CLI as a child; `ns` runs it inside a namespace (anything that talks to the server must: the underlay exists only there). */
const cli = (args: string[], ns?: string) => runCli(args, { ns });

/**
 * Enroll with the `enroll` command, then make one more change from the CLI
 * so the server daemon writes the node's ccd files at once. (The daemon
 * notices store changes by SQLite data_version, which does not move for its
 * own connection's commits — an enrollment through its API is picked up only
 * by its periodic pass, up to 30 s later; reported to the server engineer.
 * The first test shows `run` enrolling by itself and living with that.)
 */
async function enrollFirst(w: ServerWorld): Promise<void> {
  await w.newToken();
  const r = await cli(['enroll', '--config', join(w.dir, 'config.json')], w.node.name);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toContain('enrolled node pc1');
  // an explicit re-enrollment without --force is refused
  await w.newToken();
  const again = await cli(['enroll', '--config', join(w.dir, 'config.json')], w.node.name);
  expect(again.code).toBe(ExitCode.failure);
  expect(again.stderr).toContain('already enrolled');
}

/** Stops the agent and the world; `resumeDaemon`: first SIGCONT the server daemon in case the test stopped it. */
async function finish(w: ServerWorld, agent: AgentProcess | undefined, opts: { resumeDaemon?: boolean } = {}): Promise<void> {
  if (opts.resumeDaemon && w.daemon?.pid) {
    try {
      process.kill(w.daemon.pid, 'SIGCONT');
    } catch {
      // gone
    }
  }
  const code = await agent?.stop();
  if (process.env['AGENT_TEST_LOG']) console.log(agent?.log(), '\n---- server\n', w.daemonLog);
  await w.cleanup();
  expect(code ?? ExitCode.ok).toBe(ExitCode.ok);
  expect(await openvpnPids(w)).toEqual([]);
}

describe('agent against the server mode', () => {
  it('enrolls with a one-time token, joins three networks and pings over each; CRL-only change, removal and re-adding reach only their network', async () => {
    await withLab(async (lab) => {
      const w = await ServerWorld.create(lab, { networks: NETS });
      let agent: AgentProcess | undefined;
      try {
        await w.startServer();
        const token = await w.newToken();
        await w.writeConfig();
        agent = w.startAgent();
        const s0 = await w.waitStatus((st) => st.ready && allConnected(st, NETS), 180_000);
        step('connected');
        // issue 13: status --json carries the LAN MTU, the fragment size of a network made now, and the frame probe's verdict.
        const framed = await w.waitStatus((st) => NETS.every((id) => net(st, id)?.full_frames === 'ok'), 60_000);
        for (const id of NETS) expect(net(framed, id), id).toMatchObject({ mtu: 1500, fragment: 1280, full_frames: 'ok' });

        // enrollment: identity stored, key 0600 and made here, token consumed and not reusable
        const key = await statP(join(w.stateDir, 'identity', 'node.key'));
        expect(key.mode & 0o777).toBe(0o600);
        await expect(statP(w.tokenFile)).rejects.toMatchObject({ code: 'ENOENT' });
        expect(agent.log()).toContain('enrolled node pc1');
        await writeFileP(w.tokenFile, token);
        const reuse = await cli(['enroll', '--force', '--config', join(w.dir, 'config.json')], w.node.name);
        expect(reuse.code).toBe(ExitCode.failure);
        expect(reuse.stderr).toMatch(/the enrollment token in .* was already used.*\[MVPN_TOKEN_USED\]/);

        for (const id of NETS) {
          expect(net(s0, id)!.tunnel_address).toContain(await w.nodeAddress(id));
          const srvIp = await w.serverTunnelIp(id);
          // network.json's server_tunnel_ip reaches the node's status: what a script pings.
          expect(net(s0, id)!.server_tunnel_ip).toBe(srvIp);
          expect(await waitFor(() => w.node.ping(srvIp), 30_000), `no ping over ${id}`).toBe(true);
        }
        expect(s0.membership?.source).toBe(`${w.apiUrl}v1/membership`);
        const table = await cli(['status', '--runtime-dir', w.runtimeDir]);
        expect(table.code).toBe(ExitCode.ok);

        // a CRL-only change in beta (another node of beta revoked): new version, no restart anywhere
        await w.server.run(['node', 'add', 'pc9', '--network', 'beta']);
        await w.server.run(['export', 'pc9', '--network', 'beta', '--out', join(w.dir, 'pc9.tar.gz')]);
        await w.server.run(['node', 'revoke', 'pc9', '--network', 'beta']);
        await w.control('/v1/reload');
        const s1 = await w.waitStatus((st) => (net(st, 'beta')?.bundle_version ?? 0) > net(s0, 'beta')!.bundle_version!);
        for (const id of NETS) expect(net(s1, id)).toMatchObject({ pid: net(s0, id)!.pid, connected_since: net(s0, id)!.connected_since });
        expect(agent.log()).toContain('beta: swap-crl');
        expect(await readFileP(join(w.stateDir, 'networks', 'beta', 'crl.pem'), 'utf8')).not.toBe('');
        step('crl-only');

        // pc1 removed from alpha: stopped, interface gone, files removed; the others untouched
        await w.server.run(['node', 'remove', 'pc1', '--network', 'alpha']);
        await w.control('/v1/reload');
        const s2 = await w.waitStatus((st) => !st.networks.some((n) => n.id === 'alpha'));
        expect(s2.networks.map((n) => n.id)).toEqual(['beta', 'gamma']);
        expect((await w.node.exec('ip', ['link', 'show', 'mv-alpha'], { allowFail: true })).code).not.toBe(0);
        await expect(statP(join(w.stateDir, 'networks', 'alpha'))).rejects.toMatchObject({ code: 'ENOENT' });
        for (const id of ['beta', 'gamma']) expect(net(s2, id)!.pid).toBe(net(s0, id)!.pid);
        expect((await openvpnPids(w)).length).toBe(2);
        step('removed');

        // added again: installed and started without touching the others
        await w.server.run(['node', 'add', 'pc1', '--network', 'alpha']);
        await w.control('/v1/reload');
        const s3 = await w.waitStatus((st) => net(st, 'alpha')?.state === 'connected', 120_000);
        for (const id of ['beta', 'gamma']) expect(net(s3, id)!.pid).toBe(net(s0, id)!.pid);
        expect(await waitFor(async () => w.node.ping(await w.serverTunnelIp('alpha')), 30_000)).toBe(true);
      } finally {
        await finish(w, agent);
      }
    });
  }, 400_000);

  it('server down mid-run: nothing is torn down; back: reconcile resumes; down at boot: networks come up from the cache; kill -9 of one openvpn or of the agent never duplicates anything', async () => {
    await withLab(async (lab) => {
      const w = await ServerWorld.create(lab, { networks: ['alpha', 'beta'] });
      let agent: AgentProcess | undefined;
      try {
        await w.startServer();
        await w.writeConfig();
        await enrollFirst(w);
        agent = w.startAgent();
        const s0 = await w.waitStatus((st) => st.ready && allConnected(st, ['alpha', 'beta']), 180_000);
        step('connected');

        // kill -9 of alpha's openvpn: only alpha restarts
        process.kill(net(s0, 'alpha')!.pid!, 'SIGKILL');
        const s1 = await w.waitStatus((st) => net(st, 'alpha')?.state === 'connected' && net(st, 'alpha')!.pid !== net(s0, 'alpha')!.pid);
        expect(net(s1, 'beta')).toMatchObject({ pid: net(s0, 'beta')!.pid, connected_since: net(s0, 'beta')!.connected_since, restarts: 0 });

        // the API stops answering (daemon frozen; its openvpn servers keep running)
        process.kill(w.daemon!.pid!, 'SIGSTOP');
        expect(await w.control('/v1/reload')).toMatchObject({ ok: false, error: { code: 'MVPN_SOURCES_UNREACHABLE' } });
        const s2 = await w.status();
        expect(s2.reconcile.last_error?.message).toContain('timed out');
        for (const id of ['alpha', 'beta']) expect(net(s2, id)).toMatchObject({ state: 'connected', pid: net(s1, id)!.pid });
        expect(await w.node.ping(await w.serverTunnelIp('beta'), { timeoutS: 5 })).toBe(true);
        step('api down: nothing torn down');

        // boot while the API is down: networks come up from the installed bundles
        expect(await agent.stop()).toBe(0);
        expect(await openvpnPids(w)).toEqual([]);
        agent = w.startAgent();
        const s3 = await w.waitStatus((st) => allConnected(st, ['alpha', 'beta']), 120_000);
        for (const id of ['alpha', 'beta']) expect(await waitFor(async () => w.node.ping(await w.serverTunnelIp(id)), 30_000)).toBe(true);
        expect(agent.log()).toContain('alpha: start (installed bundle, before discovery)');
        step('booted from cache');

        // kill -9 of the agent, restart: leftovers cleaned, no duplicate openvpn
        const before = (await openvpnPids(w)).sort();
        process.kill(agent.pid, 'SIGKILL');
        await agent.exited();
        agent = w.startAgent();
        const s4 = await w.waitStatus((st) => allConnected(st, ['alpha', 'beta']) && st.networks.every((n) => !before.includes(n.pid!)), 120_000);
        expect((await openvpnPids(w)).sort()).toEqual([net(s4, 'alpha')!.pid, net(s4, 'beta')!.pid].sort());
        void s3;
        step('agent kill -9');

        // the API is back, with a change made meanwhile: reconcile resumes
        await w.server.run(['node', 'remove', 'pc1', '--network', 'beta']);
        process.kill(w.daemon!.pid!, 'SIGCONT');
        expect(await w.control('/v1/reload')).toMatchObject({ ok: true });
        const s5 = await w.waitStatus((st) => st.networks.length === 1 && st.reconcile.last_error === null);
        expect(net(s5, 'alpha')).toMatchObject({ state: 'connected', pid: net(s4, 'alpha')!.pid });
        expect((await w.node.exec('ip', ['link', 'show', 'mv-beta'], { allowFail: true })).code).not.toBe(0);
      } finally {
        await finish(w, agent, { resumeDaemon: true });
      }
    });
  }, 400_000);

  it('the server turns malicious (its key and TLS certificate, a hostile bundle): rejected, the old bundle keeps running, status says why; a later rollback is refused too', async () => {
    await withLab(async (lab) => {
      const w = await ServerWorld.create(lab, { networks: ['alpha', 'beta'] });
      let agent: AgentProcess | undefined;
      let evil: { stop: () => Promise<void> } | undefined;
      try {
        await w.startServer();
        // the real API first, then a relay URL (like a boss/CM) serving "the same" documents
        await w.writeConfig({ sources: [{ type: 'https', url: w.apiUrl }, { type: 'https', url: 'https://198.18.0.1:8444/' }] });
        await enrollFirst(w);
        agent = w.startAgent();
        const s0 = await w.waitStatus((st) => st.ready && allConnected(st, ['alpha', 'beta']), 180_000);
        step('connected');

        // what the malicious side serves: the current document, re-signed with a newer serial, beta pointing at a bundle that runs a script
        const key = signingKeyFromPem(await readFileP(join(w.server.stateDir, 'signing.key'), 'utf8'));
        const anchor = parseAnchor(await readFileP(w.anchorPath, 'utf8'));
        const stored = JSON.parse(await readFileP(join(w.stateDir, 'membership.json'), 'utf8')) as { envelope_b64: string };
        const doc = JSON.parse(openEnvelope(Buffer.from(stored.envelope_b64, 'base64'), 'membership', anchor).toString('utf8')) as MembershipDoc;
        const betaEntry = doc.networks.find((n) => n.id === 'beta')!;
        const version = betaEntry.bundle.version + 1;
        const spec = JSON.parse(await readFileP(join(w.stateDir, 'networks', 'beta', 'network.json'), 'utf8')) as Record<string, unknown>;
        const now = Date.now();
        const iso = (t: number) => new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
        const hostile = hostileBundleFrom(
          join(w.stateDir, 'networks', 'beta'),
          { node: 'pc1', network: 'beta', version, created: iso(now - 60_000), expires: iso(now + 86_400_000) },
          { ...spec, extra_options: [['up', '/bin/sh -c id']] },
          key,
          readFileSync,
        );
        const evilDoc = (serial: number, entry: { sha256: string; size: number }): Buffer =>
          buildMembership(
            {
              ...doc,
              serial,
              issued_at: iso(now - 60_000),
              networks: doc.networks.map((n) => (n.id === 'beta' ? { ...n, bundle: { version, sha256: entry.sha256, size: entry.size, url: `bundles/beta/${version}` } } : n)),
            },
            key,
          );
        await writeFileP(join(w.dir, 'evil-membership.json'), evilDoc(doc.serial + 100, hostile));
        await writeFileP(join(w.dir, 'evil-beta.tar.gz'), hostile.bytes);
        evil = await startStaticHttps(lab, w.srv, {
          dir: w.dir,
          host: '198.18.0.1',
          port: 8444,
          cert: join(w.server.stateDir, 'api', 'server.crt'),
          key: join(w.server.stateDir, 'api', 'server.key'),
          routes: { '/v1/membership': join(w.dir, 'evil-membership.json'), [`/v1/bundles/beta/${version}`]: join(w.dir, 'evil-beta.tar.gz') },
        });

        // the real API stops answering; the agent falls through to the relay
        process.kill(w.daemon!.pid!, 'SIGSTOP');
        await w.control('/v1/reload');
        const s1 = await w.waitStatus((st) => net(st, 'beta')?.last_error !== null);
        expect(s1.membership?.serial).toBe(doc.serial); // a document whose bundle failed does not become last-good
        expect(net(s1, 'beta')).toMatchObject({ state: 'connected', pid: net(s0, 'beta')!.pid, bundle_version: betaEntry.bundle.version });
        expect(net(s1, 'beta')!.last_error).toMatchObject({ code: 'MVPN_OPTION_FORBIDDEN' });
        expect(net(s1, 'alpha')).toMatchObject({ state: 'connected', pid: net(s0, 'alpha')!.pid, last_error: null });
        const table = await cli(['status', '--runtime-dir', w.runtimeDir]);
        expect(table.stdout).toMatch(/^beta\s+connected\s+.*MVPN_OPTION_FORBIDDEN/m);
        expect(await w.node.ping(await w.serverTunnelIp('beta'), { timeoutS: 5 })).toBe(true);
        step('forbidden option rejected');

        // tampered in transit: the bytes are not the ones the document names
        const tampered = Buffer.from(hostile.bytes);
        tampered[100]! ^= 0x55;
        await writeFileP(join(w.dir, 'evil-beta.tar.gz'), tampered);
        await writeFileP(join(w.dir, 'evil-membership.json'), evilDoc(doc.serial + 101, hostile));
        await w.control('/v1/reload');
        const s2 = await w.waitStatus((st) => net(st, 'beta')?.last_error?.code === 'MVPN_BUNDLE_HASH_MISMATCH');
        expect(net(s2, 'beta')).toMatchObject({ state: 'connected', pid: net(s0, 'beta')!.pid, bundle_version: betaEntry.bundle.version });
        step('tampered rejected');

        // a newer document whose bundles are all in place does become last-good
        await writeFileP(join(w.dir, 'evil-membership.json'), buildMembership({ ...doc, serial: doc.serial + 102, issued_at: iso(now - 60_000) }, key));
        expect(await w.control('/v1/reload')).toMatchObject({ ok: true });
        expect((await w.status()).membership?.serial).toBe(doc.serial + 102);

        // the relay is gone and the real API is back: its older serial is a rollback now, refused with its own code; nothing is torn down
        await evil.stop();
        process.kill(w.daemon!.pid!, 'SIGCONT');
        const r = (await w.control('/v1/reload')) as { ok: boolean; error?: { code: string; message: string } };
        expect(r.ok).toBe(false);
        expect(r.error?.code).toBe('MVPN_MEMBERSHIP_ROLLBACK');
        const s3 = await w.status();
        for (const id of ['alpha', 'beta']) expect(net(s3, id)).toMatchObject({ state: 'connected', pid: net(s0, id)!.pid });
      } finally {
        await evil?.stop();
        await finish(w, agent, { resumeDaemon: true });
      }
    });
  }, 400_000);
});
