/**
 * A compromised server against the real agent (issue 22): documents signed
 * with the node's real anchor key that name local files as bundles, roll a
 * network's bundle back, or are forged. The agent runs as a child in its
 * namespace with a `file` source, as in agent-daemon.test.ts; its one real
 * network must keep running through all of it.
 */
import { createHash } from 'node:crypto';
import { readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildMembership } from '../../src/bundle/build.ts';
import type { MembershipDoc } from '../../src/bundle/schema.ts';
import { generateSigningKey } from '../../src/bundle/sign.ts';
import { ExitCode } from '../../src/errors.ts';
import { AgentWorld, net, runCli, type AgentProcess } from '../helpers/agent-fixtures.ts';
import { sh, withLab } from '../helpers/netns.ts';

const DAY = 86_400_000;
const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** A signed membership document, as the world's server would make it, with `extra` networks appended. */
function hostileDoc(w: AgentWorld, serial: number, extra: MembershipDoc['networks'], base: MembershipDoc): Buffer {
  const now = Date.now();
  const doc: MembershipDoc = { ...base, serial, issued_at: iso(now - 60_000), expires_at: iso(now + DAY), networks: [...base.networks, ...extra] };
  return buildMembership(doc, w.signingKey);
}

/** `mvpn-client reload` must come back; a reload stuck on a read would hang here (generous anti-hang bound). */
async function reloadBounded(w: AgentWorld, boundMs = 60_000): Promise<{ code: number | null; stderr: string }> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_r, reject) => {
    timer = setTimeout(() => reject(new Error(`reload did not return within ${boundMs} ms: the agent is stuck`)), boundMs);
  });
  try {
    return await Promise.race([runCli(['reload', '--runtime-dir', w.runtimeDir]), hung]);
  } finally {
    clearTimeout(timer);
  }
}

async function stopWithin(agent: AgentProcess, boundMs: number): Promise<number> {
  const t0 = Date.now();
  await agent.stop();
  return Date.now() - t0 < boundMs ? 0 : Date.now() - t0;
}

describe('agent against a compromised server', () => {
  it('a signed document naming a FIFO, a device, a symlink out or ../ as bundles: refused at once with clear errors and no size or hash of the file; the agent stays responsive, reload returns, SIGTERM stops it within 2 s', async () => {
    await withLab(async (lab) => {
      const w = await AgentWorld.create(lab);
      let agent: AgentProcess | undefined;
      try {
        await w.addNetwork('alpha');
        const good = await w.publish();
        await w.writeConfig();
        agent = w.startAgent();
        const s0 = await w.waitStatus((st) => st.ready && net(st, 'alpha')?.state === 'connected');

        // What the server's signing key can name: files it hopes the node opens as root.
        const secret = Buffer.alloc(1234, 0x73);
        const secretSha = createHash('sha256').update(secret).digest('hex');
        await writeFile(join(w.dir, 'secret'), secret, { mode: 0o600 });
        await sh('mkfifo', [join(w.pubDir, 'fifo.tar.gz')]);
        await sh('mknod', [join(w.pubDir, 'zero.tar.gz'), 'c', '1', '5']); // a /dev/zero
        await symlink(join(w.dir, 'secret'), join(w.pubDir, 'link.tar.gz'));
        const entry = (id: string, url: string): MembershipDoc['networks'][number] => ({
          id,
          name: `hostile ${id}`,
          bundle: { version: 1, sha256: 'ab'.repeat(32), size: 4096, url },
        });
        await writeFile(
          join(w.pubDir, 'membership.json'),
          hostileDoc(w, good.serial + 1, [entry('fifo', 'fifo.tar.gz'), entry('dev', 'zero.tar.gz'), entry('link', 'link.tar.gz'), entry('dotdot', '../secret')], good),
        );

        const r = await reloadBounded(w);
        expect(r.code, r.stderr).toBe(0); // the document itself verified; its bundles are refused one by one
        const s1 = await w.waitStatus((st) => ['fifo', 'dev', 'link', 'dotdot'].every((id) => net(st, id)?.last_error), 30_000);
        expect(net(s1, 'fifo')!.last_error).toMatchObject({ code: 'MVPN_FETCH_FAILED', message: expect.stringContaining('is a FIFO') });
        expect(net(s1, 'dev')!.last_error).toMatchObject({ code: 'MVPN_FETCH_FAILED', message: expect.stringContaining('is a character device') });
        expect(net(s1, 'link')!.last_error).toMatchObject({ code: 'MVPN_FETCH_FAILED', message: expect.stringContaining('symbolic link') });
        expect(net(s1, 'dotdot')!.last_error).toMatchObject({ code: 'MVPN_BUNDLE_URL_INVALID' });
        for (const id of ['fifo', 'dev', 'link', 'dotdot']) {
          const msg = net(s1, id)!.last_error!.message;
          expect(msg).not.toContain('1234');
          expect(msg).not.toContain(secretSha);
          expect(net(s1, id)).toMatchObject({ state: 'failed', bundle_version: null });
        }
        // the real network never noticed
        expect(net(s1, 'alpha')).toMatchObject({ state: 'connected', pid: net(s0, 'alpha')!.pid, last_error: null });
        // a document whose bundles failed is not the last-good one
        expect(s1.membership?.serial).toBe(good.serial);

        // responsive: status (as nobody) and a second reload answer
        const table = await runCli(['status', '--runtime-dir', w.runtimeDir], { asNobody: true });
        expect(table.code).toBe(ExitCode.notAllConnected);
        expect(table.stdout).toMatch(/^fifo\s+failed\s+.*is a FIFO/m);
        expect((await reloadBounded(w)).code).toBe(0);

        expect(await stopWithin(agent, 2_000), 'SIGTERM took longer than 2 s').toBe(0);
        agent = undefined;
      } finally {
        await agent?.stop();
        await w.cleanup();
      }
    });
  });

  it('bundle versions never go back (also after a restart); a document whose bundle failed is not stored as last-good; forged and rolled-back documents get their own codes in reload and status', async () => {
    await withLab(async (lab) => {
      const w = await AgentWorld.create(lab);
      let agent: AgentProcess | undefined;
      try {
        const alpha = await w.addNetwork('alpha');
        alpha.version = 2;
        await w.publish();
        const v2 = await w.publish(); // serial 2, so that a lower serial exists
        await w.writeConfig();
        agent = w.startAgent();
        await w.waitStatus((st) => st.ready && net(st, 'alpha')?.state === 'connected' && net(st, 'alpha')?.bundle_version === 2);

        // a newer document, validly signed, rolling alpha back to a (freshly signed) version 1
        alpha.version = 1;
        const back = await w.publish();
        expect(back.serial).toBe(v2.serial + 1);
        expect((await reloadBounded(w)).code).toBe(0);
        const s1 = await w.waitStatus((st) => net(st, 'alpha')?.last_error?.code === 'MVPN_BUNDLE_ROLLBACK', 30_000);
        expect(net(s1, 'alpha')).toMatchObject({ state: 'connected', bundle_version: 2 });
        expect(s1.membership?.serial).toBe(v2.serial);
        const stored = JSON.parse(await readFile(join(w.stateDir, 'membership.json'), 'utf8')) as { envelope_b64: string };
        const storedDoc = JSON.parse(Buffer.from((JSON.parse(Buffer.from(stored.envelope_b64, 'base64').toString()) as { payload: string }).payload, 'base64').toString()) as MembershipDoc;
        expect(storedDoc.serial).toBe(v2.serial);

        // after a restart: alpha boots from its installed v2 before discovery, and v1 is still refused
        await agent.stop();
        agent = w.startAgent();
        const s2 = await w.waitStatus((st) => st.ready && net(st, 'alpha')?.last_error?.code === 'MVPN_BUNDLE_ROLLBACK');
        expect(agent.log()).toContain('alpha: start (installed bundle, before discovery)');
        await w.waitStatus((st) => net(st, 'alpha')?.state === 'connected');
        expect(net(s2, 'alpha')?.bundle_version).toBe(2);

        // forged: signed with another key
        await writeFile(join(w.pubDir, 'membership.json'), buildMembership({ ...back, serial: back.serial + 5 }, generateSigningKey()));
        const forged = await reloadBounded(w);
        expect(forged.code).toBe(ExitCode.failure);
        expect(forged.stderr).toContain('[MVPN_SIGNATURE_INVALID]');
        expect((await w.status()).reconcile.last_error?.code).toBe('MVPN_SIGNATURE_INVALID');

        // rolled back: a validly signed document with a serial below the stored one
        await writeFile(join(w.pubDir, 'membership.json'), buildMembership({ ...v2, serial: v2.serial - 1 }, w.signingKey));
        expect((await reloadBounded(w)).stderr).toContain('[MVPN_MEMBERSHIP_ROLLBACK]');
        const s3 = await w.status();
        expect(s3.reconcile.last_error?.code).toBe('MVPN_MEMBERSHIP_ROLLBACK');
        expect(net(s3, 'alpha')).toMatchObject({ state: 'connected', bundle_version: 2 });

        // the server back to normal: v3 goes forward, and that document becomes last-good
        alpha.version = 3;
        const fwd = await w.publish();
        expect((await reloadBounded(w)).code).toBe(0);
        const s4 = await w.waitStatus((st) => net(st, 'alpha')?.bundle_version === 3 && net(st, 'alpha')?.state === 'connected' && net(st, 'alpha')?.last_error === null);
        expect(s4.membership?.serial).toBe(fwd.serial);
        expect(s4.reconcile.last_error).toBeNull();
      } finally {
        await agent?.stop();
        await w.cleanup();
      }
    });
  });
});
