/**
 * Automatic renewal end to end (issue 19): a real `server run` (HTTPS API,
 * openvpn server) and a real agent in namespaces. The node enrolls through
 * the server's own enrollment operation with an injected server clock set
 * back, so its certificates are old enough to cross two thirds of their
 * lifetime about a minute after enrollment: the agent's renewal timer
 * fires on its own, with real time, real TLS and real openvpn. Afterwards
 * the node has a new key, new identity and network certificates; its
 * openvpn took them by a reload (SIGUSR1, same process, same tap device:
 * same ifindex and address), so a 1/s ping stream with at least 10 s on
 * either side of the switch loses at most one ping; and the old network
 * certificate is on the CRL only once the new one is in use.
 */
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createCsr } from '../../src/pki/csr.ts';
import { generateKeyPairPem } from '../../src/pki/keys.ts';
import { loadIdentity, saveIdentity, identityPaths } from '../../src/agent/identity.ts';
import { renewAt } from '../../src/agent/renew.ts';
import { enroll } from '../../src/server/ops/enroll.ts';
import { DAY } from '../../src/server/ops/context.ts';
import { ServerWorld, allConnected, net, openvpnPids, type AgentProcess } from '../helpers/agent-fixtures.ts';
import { openContext } from '../helpers/server-fixtures.ts';
import { withLab } from '../helpers/netns.ts';

const CERT_DAYS = 2;
const BACKDATE = 5 * 60_000;
/** How long after enrollment the certificates reach their two-thirds point (server and agent start, connect, then >= 10 s of pings). */
const DUE_AFTER_MS = 55_000;
/** Pings wanted on each side of the switch. */
const SIDE_S = 10;

const serial = (pem: string): string => new X509Certificate(pem).serialNumber.toLowerCase().replace(/^0+(?=.)/, '');

describe('automatic renewal of node credentials', () => {
  it('crosses two thirds of its certificate lifetime, renews key, identity and network certificate by a reload of the same openvpn on the same device; a 1/s ping stream loses at most one ping; the old certificate is revoked only after', async () => {
    await withLab(async (lab) => {
      const w = await ServerWorld.create(lab, { networks: ['alpha'] });
      let agent: AgentProcess | undefined;
      let ping: ReturnType<typeof w.node.spawn> | undefined;
      try {
        // Short certificates: 2 days (the server's cert_days).
        const cfgPath = join(w.server.stateDir, 'config.json');
        const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as Record<string, unknown>;
        await writeFile(cfgPath, JSON.stringify({ ...cfg, cert_days: CERT_DAYS }, null, 2));

        // Enroll as the agent would (key made here, CSR), but through the server's operation with its clock set back.
        const lifetime = CERT_DAYS * DAY + BACKDATE;
        const shift = Math.floor((lifetime * 2) / 3) - BACKDATE - DUE_AFTER_MS;
        const token = await w.newToken();
        const keyPair = await generateKeyPairPem('ec-p256');
        const csr = await createCsr({ keyPair, cn: w.nodeId });
        const ctx = await openContext(w.server.stateDir, () => Date.now() - shift);
        let enrolledIdentity: string;
        try {
          const apiCa = { alg: 'ec-p256' as const, certPem: await readFile(w.apiCaPath, 'utf8'), keyPem: await readFile(join(w.server.stateDir, 'api', 'ca.key'), 'utf8') };
          const r = await enroll(ctx, apiCa, { node: w.nodeId, token, csr });
          enrolledIdentity = r.identityCertPem;
          await saveIdentity(w.stateDir, { keyPem: keyPair.privateKeyPem, certPem: r.identityCertPem, caPem: apiCa.certPem });
        } finally {
          ctx.close();
        }
        const dueAt = renewAt({ notBefore: Date.parse(new X509Certificate(enrolledIdentity).validFrom), notAfter: Date.parse(new X509Certificate(enrolledIdentity).validTo) });
        const storeSerial = async (): Promise<{ cert: string | null; prev: string | null; revoked: string[] }> => {
          const c = await openContext(w.server.stateDir);
          try {
            return c.store.read((tx) => {
              const m = tx.getMembership('alpha', w.nodeId)!;
              return { cert: m.certSerial, prev: m.prevCertSerial ?? null, revoked: tx.listRevocations('alpha').map((x) => x.serial) };
            });
          } finally {
            c.close();
          }
        };
        const before = await storeSerial();
        expect(before.cert).not.toBeNull();

        await w.startServer();
        await w.writeConfig({ reconcile_interval_s: 3600 });
        agent = w.startAgent();
        await w.waitStatus((st) => allConnected(st, ['alpha']), 120_000);
        const s0 = await w.status();
        expect(s0.renewal?.state).toBe('idle');
        expect(Date.parse(s0.renewal!.due_at!)).toBe(dueAt);
        const link = async (): Promise<{ ifindex: string; addr: string }> => ({
          ifindex: (await w.node.exec('cat', ['/sys/class/net/mv-alpha/ifindex'])).stdout.trim(),
          addr: (await w.node.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'mv-alpha'])).stdout.trim().split(/\s+/)[3] ?? '',
        });
        const link0 = await link();
        const pid0 = net(s0, 'alpha')!.pid;

        // A normal ping stream (1/s) to the server's tunnel address, across the renewal; -D stamps each reply.
        const target = await w.serverTunnelIp('alpha');
        let out = '';
        ping = w.node.spawn('ping', ['-n', '-D', '-i', '1', target]);
        ping.stdout?.on('data', (d: Buffer) => (out += d.toString()));
        if (Date.now() > dueAt - SIDE_S * 1_000) {
          throw new Error(`the agent connected too late (${Date.now() - dueAt + SIDE_S * 1_000} ms short of ${SIDE_S} s of pings before the due time); the machine is overloaded`);
        }

        const renewed = await w.waitStatus((st) => st.renewal?.last_renewed_at != null && st.renewal.state === 'idle' && allConnected(st, ['alpha']), 180_000);
        const switchedBy = Date.now();
        // at least SIDE_S more seconds of pings after the new certificate is confirmed in use
        await new Promise((r) => setTimeout(r, (SIDE_S + 2) * 1_000));
        ping.kill('SIGINT');
        await new Promise((r) => ping!.once('exit', r));
        ping = undefined;

        const replies = [...out.matchAll(/^\[(\d+\.\d+)\].*icmp_seq=(\d+)/gm)].map((m) => ({ at: Number(m[1]) * 1_000, seq: Number(m[2]) }));
        const got = new Set(replies.map((r) => r.seq));
        const first = Math.min(...got);
        const last = Math.max(...got);
        const lost = Array.from({ length: last - first + 1 }, (_, i) => first + i).filter((q) => !got.has(q));
        const repliesBefore = replies.filter((r) => r.at < dueAt).length;
        const repliesAfter = replies.filter((r) => r.at > switchedBy).length;
        console.log(`renewal: lost ${lost.length} of ${last - first + 1} pings at 1/s (${lost.join(', ') || 'none'}); ${repliesBefore} replies before the due time, ${repliesAfter} after the switch`);
        // The reload keeps the device and reconnects in well under a second: one ping may fall into that gap.
        expect(lost.length, `lost pings ${lost.join(', ')} of ${first}..${last}`).toBeLessThanOrEqual(1);
        expect(repliesBefore, `replies in the ${SIDE_S} s before the renewal`).toBeGreaterThanOrEqual(SIDE_S);
        expect(repliesAfter, `replies in the ${SIDE_S} s after the switch`).toBeGreaterThanOrEqual(SIDE_S);
        expect(Date.parse(renewed.renewal!.last_renewed_at!)).toBeGreaterThanOrEqual(dueAt);

        // the same openvpn process on the same tap device (not torn down and recreated), with its address
        expect(await link(), 'tap device ifindex and address').toEqual(link0);
        expect(net(renewed, 'alpha')!.pid, 'the openvpn was reloaded, not replaced').toBe(pid0);
        expect(agent.log()).toMatch(/alpha: \w+ -> reloading/);

        // new key on the node, new identity certificate for it
        const id = (await loadIdentity(w.stateDir))!;
        expect(id.keyPem).not.toBe(keyPair.privateKeyPem);
        expect(id.paths.key).not.toBe(identityPaths(w.stateDir).key);
        expect(serial(id.certPem)).not.toBe(serial(enrolledIdentity));
        // the old enrollment key is gone once nothing uses it
        await expect(readFile(identityPaths(w.stateDir).key, 'utf8')).rejects.toThrow();

        // the network runs a new certificate for the new key; the old one is on the CRL, the new one is not
        const after = await storeSerial();
        expect(after.cert).not.toBe(before.cert);
        expect(after.prev).toBeNull();
        expect(after.revoked).toContain(before.cert);
        expect(after.revoked).not.toContain(after.cert);
        const installedCert = await readFile(join(w.stateDir, 'networks', 'alpha', 'node.crt'), 'utf8');
        expect(serial(installedCert)).toBe(after.cert!.replace(/^0+(?=.)/, ''));
      } finally {
        ping?.kill('SIGINT');
        const code = await agent?.stop();
        if (process.env['AGENT_TEST_LOG']) console.log(agent?.log(), '\n---- server\n', w.daemonLog);
        await w.cleanup();
        expect(code ?? 0).toBe(0);
        expect(await openvpnPids(w)).toEqual([]);
      }
    });
  }, 300_000);
});
