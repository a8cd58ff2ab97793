/**
 * Automatic renewal end to end (issue 19): a real `server run` (HTTPS API,
 * openvpn server) and a real agent in namespaces. The node enrolls through
 * the server's own enrollment operation with an injected server clock set
 * back, so its certificates are old enough to cross two thirds of their
 * lifetime about 40 s after the agent connects: the agent's renewal timer
 * fires on its own, with real time, real TLS and real openvpn. Afterwards
 * the node has a new key, new identity and network certificates, its
 * network stayed up (a 5/s ping stream keeps being answered across the
 * one restart of its openvpn; the loss is printed), and the old
 * network certificate is on the CRL only once the new one is in use.
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
import { ServerWorld, allConnected, openvpnPids, type AgentProcess } from '../helpers/agent-fixtures.ts';
import { openContext } from '../helpers/server-fixtures.ts';
import { withLab } from '../helpers/netns.ts';

const CERT_DAYS = 2;
const BACKDATE = 5 * 60_000;
/** How long after enrollment the certificates reach their two-thirds point. */
const DUE_AFTER_MS = 45_000;

const serial = (pem: string): string => new X509Certificate(pem).serialNumber.toLowerCase().replace(/^0+(?=.)/, '');

describe('automatic renewal of node credentials', () => {
  it('crosses two thirds of its certificate lifetime, renews key, identity and network certificate while a 5/s ping stream keeps flowing; the old certificate is revoked only after', async () => {
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
        if (Date.now() > dueAt - 3_000) throw new Error(`the agent connected too late (${Date.now() - dueAt} ms after the due time) to watch the renewal; the machine is overloaded`);

        // 5 pings a second to the server's tunnel address, across the renewal.
        const target = await w.serverTunnelIp('alpha');
        let out = '';
        ping = w.node.spawn('ping', ['-n', '-i', '0.2', '-W', '1', target]);
        ping.stdout?.on('data', (d: Buffer) => (out += d.toString()));

        const renewed = await w.waitStatus((st) => st.renewal?.last_renewed_at != null && st.renewal.state === 'idle' && allConnected(st, ['alpha']), 120_000);
        // a few more seconds of pings after the confirmation
        await new Promise((r) => setTimeout(r, 3_000));
        ping.kill('SIGINT');
        await new Promise((r) => ping!.once('exit', r));
        ping = undefined;

        const seqs = [...out.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1]));
        expect(seqs.length).toBeGreaterThan(20);
        const first = Math.min(...seqs);
        const last = Math.max(...seqs);
        const got = new Set(seqs);
        const lost = Array.from({ length: last - first + 1 }, (_, i) => first + i).filter((s) => !got.has(s));
        // The network restarts once with the new certificate (a new openvpn process: openvpn keeps its key
        // in memory, persist-key); measured: 1-2 pings of this 5/s stream lost (a 250-400 ms gap) on a quiet
        // machine, 4-6 (up to 1.2 s) with the 2 cores loaded. The bound (5 s) is against a torn-down network
        // (a ping-restart would lose 60 s), not a timing; ARCHITECTURE.md says what a hitless switch needs.
        console.log(`renewal: lost ${lost.length} of ${last - first + 1} pings at 5/s (${lost.join(', ') || 'none'})`);
        expect(lost.length, `lost pings ${lost.join(', ')} of ${first}..${last}`).toBeLessThanOrEqual(25);
        expect(seqs.filter((q) => q > Math.max(...lost, first)).length).toBeGreaterThan(10);
        expect(Date.parse(renewed.renewal!.last_renewed_at!)).toBeGreaterThanOrEqual(dueAt);

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
        expect(serial(installedCert)).toBe(after.cert);
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
