/**
 * Trust-anchor rotation end to end: `mvpn-client server run` (real HTTPS API,
 * real openvpn server) in a server namespace, the agent (`mvpn-client run`)
 * in a node namespace, `server anchor rotate` run as an operator would.
 *
 * One world, in the order a real incident goes: the signing key leaks and
 * the attacker pushes this node's serial to 2^53-1 (every legitimate
 * document is refused from then on); the operator rotates while the agent
 * runs, which recovers the node; the agent is then stopped, the anchor
 * rotated twice more, and the restarted agent follows both links — while a
 * relay serves it a document signed by the retired key and another serves a
 * forged rotation statement, each refused with its own code.
 */
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildMembership } from '../../src/bundle/build.ts';
import { sealEnvelope } from '../../src/bundle/envelope.ts';
import type { MembershipDoc } from '../../src/bundle/schema.ts';
import { anchorToString, generateSigningKey, parseAnchor, signingKeyFromPem } from '../../src/bundle/sign.ts';
import { openEnvelope } from '../../src/bundle/envelope.ts';
import { ExitCode } from '../../src/errors.ts';
import { allConnected, net, openvpnPids, ServerWorld, type AgentProcess } from '../helpers/agent-fixtures.ts';
import { waitFor, withLab } from '../helpers/netns.ts';

const NETS = ['alpha'];

interface Rotated {
  trust_anchor: string;
  key_id: string;
  version: number;
  serial_floor: number;
  nodes: number;
}

describe('trust-anchor rotation', () => {
  it('recovers a poisoned serial, is followed by an online agent and by one that missed two rotations; retired-key documents and forged statements are refused', async () => {
    await withLab(async (lab) => {
      const w = await ServerWorld.create(lab, { networks: NETS });
      let agent: AgentProcess | undefined;
      try {
        await w.startServer();
        await w.newToken();
        // The node's copy of the anchor, as a startup tarball carries it (the server's own file changes with each rotation).
        const anchorCopy = join(w.dir, 'trust-anchor');
        await writeFile(anchorCopy, await readFile(w.anchorPath));
        const configPath = await w.writeConfig({ anchor: anchorCopy });
        agent = w.startAgent();
        const s0 = await w.waitStatus((st) => st.ready && allConnected(st, NETS), 180_000);
        const k1 = signingKeyFromPem(await readFile(join(w.server.stateDir, 'signing.key'), 'utf8'));
        expect(s0.trust_anchor).toEqual({ key_id: k1.keyId, chain_version: null, serial_floor: 0 });

        // 1. The attacker holding K1 pushed this node's serial to the top.
        const storedPath = join(w.stateDir, 'membership.json');
        const stored = JSON.parse(await readFile(storedPath, 'utf8')) as { envelope_b64: string; etag?: string };
        const real = JSON.parse(openEnvelope(Buffer.from(stored.envelope_b64, 'base64'), 'membership', parseAnchor(anchorToString(k1))).toString()) as MembershipDoc;
        const poisoned = buildMembership({ ...real, serial: Number.MAX_SAFE_INTEGER }, k1);
        expect(await agent.stop()).toBe(ExitCode.ok);
        // As if accepted from a relay: no ETag of the server's goes with it.
        delete stored.etag;
        await writeFile(storedPath, JSON.stringify({ ...stored, envelope_b64: poisoned.toString('base64') }));
        agent = w.startAgent();
        const s1 = await w.waitStatus((st) => st.ready && st.reconcile.last_error !== null && allConnected(st, NETS), 120_000);
        expect(s1.membership?.serial).toBe(Number.MAX_SAFE_INTEGER);
        expect(JSON.stringify(s1.reconcile.last_error)).toContain('MVPN_MEMBERSHIP_ROLLBACK');
        const pid1 = net(s1, 'alpha')?.pid;

        // 2. Rotation while the agent runs: it follows at its next reconcile and the poisoned serial is gone.
        const r2 = await w.server.json<Rotated>(['anchor', 'rotate']);
        expect(r2).toMatchObject({ version: 2, nodes: 1 });
        expect(r2.serial_floor).toBeGreaterThan(real.serial);
        expect((await readFile(w.anchorPath, 'utf8')).trim()).toBe(r2.trust_anchor);
        // A reload that races the rotation (chain written, key not yet renamed) is refused like before; the next one follows.
        expect(await waitFor(async () => ((await w.control('/v1/reload')) as { ok: boolean }).ok, 60_000, 1_000)).toBe(true);
        const s2 = await w.waitStatus((st) => st.trust_anchor?.key_id === r2.key_id && st.reconcile.last_error === null && allConnected(st, NETS), 60_000);
        expect(s2.trust_anchor).toEqual({ key_id: r2.key_id, chain_version: 2, serial_floor: r2.serial_floor });
        expect(s2.membership!.serial).toBeGreaterThanOrEqual(r2.serial_floor);
        expect(s2.membership!.serial).toBeLessThan(Number.MAX_SAFE_INTEGER);
        // The re-signed bundle differs only in its signature: swapped under the running openvpn, no restart.
        expect(net(s2, 'alpha')?.pid).toBe(pid1);
        expect(agent.log()).toContain(`trust anchor rotated: key ${k1.keyId} -> ${r2.key_id}`);
        const pinned = await stat(join(w.stateDir, 'anchor.json'));
        expect(pinned.mode & 0o777).toBe(0o600);

        // 3. Offline: the agent is stopped, the anchor rotates twice, relays serve hostile copies.
        expect(await agent.stop()).toBe(ExitCode.ok);
        const r3 = await w.server.json<Rotated>(['anchor', 'rotate']);
        const r4 = await w.server.json<Rotated>(['anchor', 'rotate']);
        expect([r3.version, r4.version]).toEqual([3, 4]);

        // A relay with a document signed by the retired K1 (serial above anything real).
        const stale = join(w.dir, 'relay-stale');
        await mkdir(stale);
        await writeFile(join(stale, 'membership.json'), buildMembership({ ...real, serial: r4.serial_floor + 1_000 }, k1));
        // A relay with a document by an attacker's key and a forged statement claiming K2 handed trust to it.
        const kx = generateSigningKey();
        const forgedDir = join(w.dir, 'relay-forged');
        await mkdir(forgedDir);
        await writeFile(join(forgedDir, 'membership.json'), buildMembership({ ...real, serial: r4.serial_floor + 1_000 }, kx));
        const forged = sealEnvelope(
          'anchor-rotation',
          Buffer.from(JSON.stringify({ version: 3, previous: r2.trust_anchor, anchor: anchorToString(kx), serial_floor: 0, issued_at: '2026-12-02T12:00:00Z' })),
          kx,
          [kx],
        );
        await writeFile(join(forgedDir, 'anchor-chain.json'), JSON.stringify({ format: 'mvpn-anchor-chain-v1', statements: [forged.toString('base64')] }));
        for (const d of [w.dir, stale, forgedDir]) await chmod(d, 0o755);
        const config = JSON.parse(await readFile(configPath, 'utf8')) as { sources: unknown[] };
        config.sources = [{ type: 'file', path: join(stale, 'membership.json') }, { type: 'file', path: join(forgedDir, 'membership.json') }, ...config.sources];
        await writeFile(configPath, JSON.stringify(config, null, 2));

        agent = w.startAgent();
        const s4 = await w.waitStatus((st) => st.ready && st.trust_anchor?.key_id === r4.key_id && allConnected(st, NETS), 120_000);
        expect(s4.trust_anchor).toEqual({ key_id: r4.key_id, chain_version: 4, serial_floor: r4.serial_floor });
        expect(s4.membership?.source).toBe(w.apiUrl + 'v1/membership');
        expect(s4.membership!.serial).toBeGreaterThanOrEqual(r4.serial_floor);
        const log = agent.log();
        expect(log).toContain('[MVPN_ANCHOR_RETIRED]');
        expect(log).toContain('[MVPN_ANCHOR_STATEMENT_INVALID]');
        expect(log).toContain(`trust anchor rotated: key ${r2.key_id} -> ${r4.key_id} (chain version 4`);

        // 4. The pinned chain survives a restart with the config still naming K1: no rollback to it, nothing fetched again.
        expect(await agent.stop()).toBe(ExitCode.ok);
        config.sources = config.sources.slice(2);
        await writeFile(configPath, JSON.stringify(config, null, 2));
        agent = w.startAgent();
        const s5 = await w.waitStatus((st) => st.ready && allConnected(st, NETS), 120_000);
        expect(s5.trust_anchor).toEqual({ key_id: r4.key_id, chain_version: 4, serial_floor: r4.serial_floor });
        expect(s5.reconcile.last_error).toBeNull();
        expect(agent.log()).not.toContain('trust anchor rotated');
      } finally {
        const code = await agent?.stop();
        if (process.env['AGENT_TEST_LOG']) console.log(agent?.log(), '\n---- server\n', w.daemonLog);
        await w.cleanup();
        expect(code ?? ExitCode.ok).toBe(ExitCode.ok);
        expect(await openvpnPids(w)).toEqual([]);
      }
    });
  }, 600_000);
});
