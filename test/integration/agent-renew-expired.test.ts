/**
 * Renewal of a certificate that has already expired in the node's eyes while
 * the server still accepts it (the node's clock runs ahead: here the agent
 * daemon runs in this process with an injected clock two hours ahead). It
 * renews at its first reconcile, without waiting for any timer, and
 * confirms; the server then refuses the old identity. Real HTTPS API (the
 * server daemon in this process on 127.0.0.1), real files; the node is in
 * no network, so no openvpn runs and no traffic leaves this host.
 */
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAgentConfig } from '../../src/agent/config.ts';
import { AgentDaemon } from '../../src/agent/daemon.ts';
import type { AgentEvent } from '../../src/agent/events.ts';
import { loadIdentity, saveIdentity } from '../../src/agent/identity.ts';
import { memoryLogger } from '../../src/log.ts';
import { createCsr } from '../../src/pki/csr.ts';
import { generateKeyPairPem } from '../../src/pki/keys.ts';
import { ServerDaemon } from '../../src/server/daemon.ts';
import { DAY } from '../../src/server/ops/context.ts';
import { enroll } from '../../src/server/ops/enroll.ts';
import type { Clock } from '../../src/util/clock.ts';
import { https, makeServer, openContext } from '../helpers/server-fixtures.ts';
import { waitFor } from '../helpers/netns.ts';

const AHEAD = 2 * 3_600_000;

describe('renewal of a certificate that is expired but still accepted', () => {
  it('renews at once at start and confirms; the old identity is refused afterwards', async () => {
    const s = await makeServer({ label: 'renew-exp' });
    let server: ServerDaemon | undefined;
    let agent: AgentDaemon | undefined;
    try {
      // A node record with no network (added, then removed): no openvpn anywhere.
      await s.run(['network', 'create', 'lab', '--remote', '198.18.0.1']);
      await s.run(['node', 'add', 'pc7', '--network', 'lab']);
      await s.run(['node', 'remove', 'pc7', '--network', 'lab']);
      const { token } = await s.json<{ token: string }>(['node', 'token', 'pc7']);
      const certDays = (JSON.parse(await readFile(join(s.stateDir, 'config.json'), 'utf8')) as { cert_days: number }).cert_days;

      // Enrolled with the server's clock set back: the identity is valid for one more hour of real time.
      const keyPair = await generateKeyPairPem('ec-p256');
      const caPem = await readFile(join(s.stateDir, 'api', 'ca.crt'), 'utf8');
      const apiCa = { alg: 'ec-p256' as const, certPem: caPem, keyPem: await readFile(join(s.stateDir, 'api', 'ca.key'), 'utf8') };
      const ctx = await openContext(s.stateDir, () => Date.now() - (certDays * DAY - 3_600_000));
      const stateDir = join(s.dir, 'node-state');
      let oldCert: string;
      try {
        oldCert = (await enroll(ctx, apiCa, { node: 'pc7', token, csr: await createCsr({ keyPair, cn: 'pc7' }) })).identityCertPem;
      } finally {
        ctx.close();
      }
      await saveIdentity(stateDir, { keyPem: keyPair.privateKeyPem, certPem: oldCert, caPem });
      expect(Date.parse(new X509Certificate(oldCert).validTo)).toBeLessThan(Date.now() + AHEAD);

      server = await ServerDaemon.start({ stateDir: s.stateDir, pollMs: 100, periodicMs: 1_000 });
      const old = { ca: caPem, cert: oldCert, key: keyPair.privateKeyPem };
      expect((await https(server.port, '/v1/membership', old)).status).toBe(200);

      const configPath = join(s.dir, 'agent.json');
      await writeFile(
        configPath,
        JSON.stringify({
          node: { id: 'pc7' },
          sources: [{ type: 'https', url: `https://127.0.0.1:${server.port}/` }],
          anchor: join(s.stateDir, 'trust-anchor'),
          server_ca: join(s.stateDir, 'api', 'ca.crt'),
          state_dir: stateDir,
          runtime_dir: join(s.dir, 'node-run'),
          reconcile_interval_s: 3600,
          ready_timeout_s: 10,
        }),
      );
      const ahead: Clock = { now: () => Date.now() + AHEAD, setTimeout: (fn, ms) => {
        const t = setTimeout(fn, ms);
        return () => clearTimeout(t);
      } };
      const logger = memoryLogger<AgentEvent>();
      agent = await AgentDaemon.create(parseAgentConfig(JSON.parse(await readFile(configPath, 'utf8')), configPath), { clock: ahead, logger });
      await agent.start();

      const start = logger.events.find((e) => e.kind === 'renew.start');
      expect(start && 'reason' in start ? start.reason : '').toMatch(/^the identity certificate expired at /);
      const confirmed = await waitFor(() => logger.events.some((e) => e.kind === 'renew.confirmed'), 30_000, 100);
      expect(confirmed, JSON.stringify(logger.events.filter((e) => e.kind.startsWith('renew')))).toBe(true);

      const id = (await loadIdentity(stateDir))!;
      expect(id.keyPem).not.toBe(keyPair.privateKeyPem);
      expect(Date.parse(new X509Certificate(id.certPem).validTo)).toBeGreaterThan(Date.now() + AHEAD);
      expect(agent.status().renewal).toMatchObject({ state: 'idle', last_error: null });
      expect((await https(server.port, '/v1/membership', { ca: caPem, cert: id.certPem, key: id.keyPem })).status).toBe(200);
      expect((await https(server.port, '/v1/membership', old)).status).toBe(403);
    } finally {
      await agent?.stop('test end');
      await server?.stop();
      await s.remove();
    }
  }, 120_000);
});
