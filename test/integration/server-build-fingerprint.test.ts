/**
 * The build fingerprint (src/server/build-fingerprint.ts) on a real state
 * directory: the canary is deterministic; a first start or a changed build
 * moves every node's document to a new serial before the new fingerprint is
 * recorded; an unchanged build moves nothing. What it protects: an upgraded
 * server must never sign a different document under a serial nodes hold.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildFingerprint, checkBuildFingerprint, FINGERPRINT_FILE } from '../../src/server/build-fingerprint.ts';
import { makeServer, openContext } from '../helpers/server-fixtures.ts';

describe('build fingerprint', () => {
  it('is the same for the same build', async () => {
    const a = await buildFingerprint();
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(await buildFingerprint()).toBe(a);
  });

  it('moves every document to a new serial on a first start and on a changed build, and nothing otherwise', async () => {
    const srv = await makeServer({ label: 'fingerprint' });
    try {
      await srv.run(['network', 'create', 'lan', '--subnet', '198.19.7.0/24']);
      await srv.run(['node', 'add', 'n1', 'n2', '--network', 'lan']);
      const ctx = await openContext(srv.stateDir);
      try {
        const serials = () => new Map(ctx.store.read((tx) => tx.listNodes()).map((n) => [n.id, n.docSerial]));
        const file = join(srv.stateDir, FINGERPRINT_FILE);
        const s0 = serials();

        const first = await checkBuildFingerprint(ctx);
        expect(first).toMatchObject({ previous: null, bumped: 2 });
        expect((await readFile(file, 'utf8')).trim()).toBe(first.fingerprint);
        expect((await stat(file)).mode & 0o777).toBe(0o600);
        const s1 = serials();
        for (const [n, v] of s0) expect(s1.get(n)!, n).toBeGreaterThan(v);

        const same = await checkBuildFingerprint(ctx);
        expect(same).toMatchObject({ previous: first.fingerprint, bumped: 0 });
        expect(serials()).toEqual(s1);

        // what an upgrade from a build that made documents differently looks like
        await writeFile(file, `${'0'.repeat(64)}\n`);
        const changed = await checkBuildFingerprint(ctx);
        expect(changed).toMatchObject({ previous: '0'.repeat(64), bumped: 2, fingerprint: first.fingerprint });
        const s2 = serials();
        for (const [n, v] of s1) expect(s2.get(n)!, n).toBeGreaterThan(v);
        expect((await readFile(file, 'utf8')).trim()).toBe(first.fingerprint);
      } finally {
        ctx.close();
      }
    } finally {
      await srv.remove();
    }
  });
});
