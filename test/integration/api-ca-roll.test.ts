/**
 * An API CA roll end to end (issue 19): `mvpn-client server run` with its
 * HTTPS API (mTLS) and a real openvpn server in a server namespace, the
 * agent with a real openvpn client in a node namespace, a ping stream over
 * the tunnel while the roll starts (the agent pins both API CAs through the
 * cross-certificate and renews its identity onto the new CA with a new key)
 * and finishes (the listener moves to the new CA, the old one is dropped).
 * Then: the identity the node held before the roll is refused with
 * MVPN_API_CA_RETIRED; a second roll that starts while the agent is down
 * is followed when it comes back, across one more restart in the overlap;
 * and a new API CA that no pinned CA certified is refused while everything
 * keeps running; an unreadable API CA pin stops the agent at start.
 */
import { X509Certificate } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { apiCaCn } from '../../src/bundle/names.ts';
import { createCa, crossCertify } from '../../src/pki/ca.ts';
import { allConnected, net, pingStream, SERVER_UNDERLAY, withConnectedWorld, type ServerWorld } from '../helpers/agent-fixtures.ts';
import { waitFor } from '../helpers/netns.ts';
import { cli } from '../helpers/server-fixtures.ts';
import type { AgentStatus } from '../../src/agent/status.ts';

const NET = 'alpha';

async function apiPins(w: ServerWorld): Promise<string[]> {
  return (JSON.parse(await readFile(join(w.stateDir, 'ca-pins', '_api.json'), 'utf8')) as { pins: string[] }).pins;
}

async function identityIssuer(w: ServerWorld): Promise<string> {
  return new X509Certificate(await readFile(join(w.stateDir, 'identity', 'identity.crt'), 'utf8')).issuer;
}

/** The API CAs the running daemon serves (`GET /v1/api-ca.json`, from the node), by name. */
async function servedCas(w: ServerWorld): Promise<string> {
  const r = await w.node.exec('curl', ['-sSk', '--max-time', '5', `https://${SERVER_UNDERLAY}:8443/v1/api-ca.json`], { allowFail: true });
  try {
    return (JSON.parse(r.stdout) as { cas: string[] }).cas.map((p) => new X509Certificate(p).subject.replace(/^CN=/, '')).join(',');
  } catch {
    return '';
  }
}

/** Waits until the server daemon (it polls its API CA files every second) serves `expected`. */
async function daemonServes(w: ServerWorld, expected: string): Promise<void> {
  expect(await waitFor(async () => (await servedCas(w)) === expected, 30_000), `the daemon does not serve ${expected}:\n${w.daemonLog}`).toBe(true);
}

function cas(st: AgentStatus): string {
  return (st.api_ca?.cas ?? []).join(',');
}

describe('API CA roll', () => {
  it('rolls with a ping stream running: the node pins both CAs, renews onto the new one, keeps fetching after the finish; an old-CA identity, an agent down at the start, and a forged CA', async () => {
    await withConnectedWorld(NET, async (c) => {
      const { lab, w, s0, srvIp } = c;
      expect(s0.api_ca).toMatchObject({ pinned: false, cas: [apiCaCn()], last_error: null });
      // The identity as enrolled, for the check after the finish.
      const oldCert = join(w.dir, 'old-identity.crt');
      const oldKey = join(w.dir, 'old-identity.key');
      await writeFile(oldCert, await readFile(join(w.stateDir, 'identity', 'identity.crt')));
      await writeFile(oldKey, await readFile(join(w.stateDir, 'identity', 'node.key')), { mode: 0o600 });
      expect(await identityIssuer(w)).toBe(`CN=${apiCaCn()}`);

      // A ping stream for the whole roll, replies counted by sequence number.
      const pings = pingStream(lab, w.node, srvIp);

      // 1. start: the node renews onto the new CA through the existing renewal path.
      const roll = await w.server.json<{ ca: string; previous: string; nodes: number }>(['api', 'roll-ca', '--overlap', '1h']);
      expect(roll).toMatchObject({ ca: apiCaCn(2), previous: apiCaCn(), nodes: 1 });
      await daemonServes(w, `${apiCaCn()},${apiCaCn(2)}`);
      // While the node still holds an old-CA identity, finishing is refused (it would lock the node out).
      const early = await cli(['server', 'api', 'roll-ca', '--finish', '--state-dir', w.server.stateDir]);
      expect(early.code).not.toBe(0);
      expect(early.err).toContain('MVPN_CA_ROLL_REFUSED');
      expect(early.err).toContain(w.nodeId);
      await w.control('/v1/reload');
      const s1 = await w.waitStatus(
        (st) => cas(st) === `${apiCaCn()},${apiCaCn(2)}` && st.renewal?.last_renewed_at != null && st.renewal.state === 'idle' && allConnected(st, [NET]),
        120_000,
      );
      expect(s1.api_ca).toMatchObject({ pinned: true, last_error: null });
      expect(await apiPins(w)).toHaveLength(2);
      expect(await identityIssuer(w)).toBe(`CN=${apiCaCn(2)}`);
      expect(net(s1, NET)?.bundle_version).toBeGreaterThan(net(s0, NET)!.bundle_version!);
      const afterStart = pings.received();

      // 2. finish: the listener moves to the new CA, the old CA leaves.
      const fin = await w.server.json<{ ca: string; dropped: string[] }>(['api', 'roll-ca', '--finish']);
      expect(fin).toMatchObject({ ca: apiCaCn(2), dropped: [] });
      await daemonServes(w, apiCaCn(2));
      await w.control('/v1/reload');
      const s2 = await w.waitStatus((st) => cas(st) === apiCaCn(2) && allConnected(st, [NET]), 60_000);
      expect(s2.api_ca?.last_error).toBeNull();
      expect(await apiPins(w)).toHaveLength(1);
      // Membership and bundles still come over mTLS with the new CA alone: a per-node remote list gives the node a new bundle.
      await w.server.run(['node', 'set-remotes', w.nodeId, '--network', NET, '--remote', SERVER_UNDERLAY]);
      await w.control('/v1/reload');
      const s3 = await w.waitStatus((st) => (net(st, NET)?.bundle_version ?? 0) > net(s2, NET)!.bundle_version! && allConnected(st, [NET]), 60_000);
      expect(s3.reconcile.last_error).toBeNull();
      expect(net(s3, NET)?.last_error).toBeNull();
      expect((s3.membership?.serial ?? 0) > (s1.membership?.serial ?? 0)).toBe(true);
      expect(await waitFor(() => w.node.ping(srvIp), 30_000)).toBe(true);

      const p = await pings.stop();
      console.log(`api ca roll: ${p.sent} pings (0.2 s apart) over the roll, ${p.lost} lost, longest gap ${p.longestGap}`);
      // Replies kept coming in every phase up to the last ping; the loss is the one openvpn restart of the renewal
      // (new key). The bound only catches a node that lost its network (30 s of silence), not a timing.
      expect(afterStart).toBeGreaterThan(0);
      expect(p.sent - p.lost).toBeGreaterThan(afterStart);
      expect(p.lastAnswered).toBe(true);
      expect(p.longestGap).toBeLessThan(150);

      // 3. the identity from before the roll: refused, and the answer says why.
      const ca2 = join(w.dir, 'api-ca-2.crt');
      await writeFile(ca2, await readFile(w.apiCaPath));
      const refused = await w.node.exec('curl', ['-sS', '--max-time', '10', '--cacert', ca2, '--cert', oldCert, '--key', oldKey, `https://${SERVER_UNDERLAY}:8443/v1/membership`], { allowFail: true });
      const body = JSON.parse(refused.stdout) as { error: { code: string; message: string; hint?: string } };
      expect(body.error.code).toBe('MVPN_API_CA_RETIRED');
      expect(body.error.message).toContain(apiCaCn());
      expect(body.error.hint).toContain('enroll');

      // 4. a second roll starts while the agent is down; it follows when it comes back, and again after a restart in the overlap.
      await c.agent?.stop();
      c.agent = undefined;
      await w.server.run(['api', 'roll-ca', '--overlap', '1h']);
      await daemonServes(w, `${apiCaCn(2)},${apiCaCn(3)}`);
      c.agent = w.startAgent();
      await w.waitStatus((st) => cas(st) === `${apiCaCn(2)},${apiCaCn(3)}` && st.renewal?.last_renewed_at != null && allConnected(st, [NET]), 180_000);
      expect(await identityIssuer(w)).toBe(`CN=${apiCaCn(3)}`);
      await c.agent.stop();
      c.agent = w.startAgent();
      const s4 = await w.waitStatus((st) => st.ready && allConnected(st, [NET]), 180_000);
      expect(s4.api_ca).toMatchObject({ pinned: true, cas: [apiCaCn(2), apiCaCn(3)] });
      await w.server.run(['api', 'roll-ca', '--finish']);
      await daemonServes(w, apiCaCn(3));
      await w.control('/v1/reload');
      const s5 = await w.waitStatus((st) => cas(st) === apiCaCn(3) && allConnected(st, [NET]), 60_000);
      expect(s5.reconcile.last_error).toBeNull();
      expect(await waitFor(() => w.node.ping(srvIp), 30_000)).toBe(true);

      // 5. a forged new API CA: served by the real server, "certified" by a CA that merely has the pinned one's name.
      const api = join(w.server.stateDir, 'api');
      const now = Date.now();
      const validity = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 365 * 86_400_000) };
      const impostor = await createCa({ cn: apiCaCn(3), ...validity });
      const forged = await createCa({ cn: apiCaCn(4), ...validity });
      await writeFile(join(api, 'ca-prev.crt'), await readFile(join(api, 'ca.crt')));
      await writeFile(join(api, 'ca-roll.crt'), (await crossCertify(impostor, forged.certPem, validity.notBefore)) + impostor.certPem);
      await writeFile(join(api, 'ca.key'), forged.keyPem, { mode: 0o600 });
      await writeFile(join(api, 'ca.crt'), forged.certPem);
      await daemonServes(w, `${apiCaCn(3)},${apiCaCn(4)}`);
      const pinsBefore = await apiPins(w);
      await w.control('/v1/reload');
      const s6 = await w.waitStatus((st) => st.api_ca?.last_error != null, 60_000);
      expect(s6.api_ca?.last_error?.code).toBe('MVPN_CA_NOT_PINNED');
      expect(s6.api_ca?.cas).toEqual([apiCaCn(3)]);
      expect(await apiPins(w)).toEqual(pinsBefore);
      // No renewal onto the forged CA, and the node keeps its network and its documents.
      expect(await identityIssuer(w)).toBe(`CN=${apiCaCn(3)}`);
      expect(s6.reconcile.last_error).toBeNull();
      expect(net(s6, NET)?.state).toBe('connected');
      expect(await waitFor(() => w.node.ping(srvIp), 30_000)).toBe(true);
      await rm(join(api, 'ca-prev.crt'));

      // 6. an API CA pin the agent cannot read stops it at start (server_ca alone would trust a retired CA).
      await c.agent.stop();
      c.agent = undefined;
      const pinFile = join(w.stateDir, 'ca-pins', '_api.json');
      const good = await readFile(pinFile);
      await writeFile(pinFile, '{"schema":1}', { mode: 0o600 });
      const broken = w.startAgent();
      expect(await broken.exited()).not.toBe(0);
      expect(broken.log()).toContain('MVPN_CA_NOT_PINNED');
      await writeFile(pinFile, good, { mode: 0o600 });
      c.agent = w.startAgent();
      await w.waitStatus((st) => st.ready && allConnected(st, [NET]) && cas(st) === apiCaCn(3), 180_000);
    });
  }, 900_000);
});
