/**
 * The embedded store on real SQLite files: schema migrations, transactions,
 * data_version as the daemon's change signal, and two processes changing
 * one state directory at once without losing or corrupting anything.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { DatabaseSync } from 'node:sqlite';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isMvpnError } from '../../src/errors.ts';
import { overlaps, parseCidr } from '../../src/server/alloc.ts';
import { MIGRATIONS, SqliteStore } from '../../src/server/store/sqlite.ts';
import type { NodeRecord } from '../../src/server/store/store.ts';
import { makeServer, openContext, type TestServer } from '../helpers/server-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

const node = (id: string): NodeRecord => ({
  id,
  publicKeyPem: null,
  keyAlg: null,
  identityCertPem: null,
  identitySerial: null,
  enrolledAt: null,
  docSerial: 1,
  docIssuedAt: 0,
  docExpiresAt: 0,
  createdAt: 0,
});

describe('SqliteStore', () => {
  let dir: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    dir = await tmpDir('store');
  });
  afterAll(async () => dir.remove());

  it('migrates a new file to the current schema, in WAL mode with foreign keys', () => {
    const path = join(dir.path, 'a.db');
    SqliteStore.open(path, { create: true }).close();
    const db = new DatabaseSync(path);
    try {
      expect((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version).toBe(MIGRATIONS.length);
      expect((db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode).toBe('wal');
      const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[]).map((r) => r.name);
      expect(tables).toEqual(['address_history', 'links', 'memberships', 'meta', 'networks', 'nodes', 'revocations', 'tokens']);
    } finally {
      db.close();
    }
    // Opening again is a no-op migration.
    SqliteStore.open(path).close();
  });

  it('upgrades a version 1 store in place, keeping its rows', () => {
    const path = join(dir.path, 'v1.db');
    const db = new DatabaseSync(path);
    db.exec(MIGRATIONS[0]!);
    db.exec('PRAGMA user_version = 1');
    db.exec(`INSERT INTO networks VALUES ('old', 'old', 'tap', 'udp', 1194, '198.19.0.0/24', 'down', '[]', 'ec-p256', 'c', 'k', 'sc', 'sk', 't', 'crl', 1, 0, 0, 0)`);
    db.close();
    const s = SqliteStore.open(path);
    try {
      expect(s.read((tx) => tx.getNetwork('old'))).toMatchObject({ id: 'old', port: 1194, allocHint: 0 });
    } finally {
      s.close();
    }
    const again = new DatabaseSync(path);
    expect((again.prepare('PRAGMA user_version').get() as { user_version: number }).user_version).toBe(MIGRATIONS.length);
    again.close();
  });

  it('refuses a store written by a newer schema, and a missing file', () => {
    const path = join(dir.path, 'newer.db');
    SqliteStore.open(path, { create: true }).close();
    const db = new DatabaseSync(path);
    db.exec('PRAGMA user_version = 99');
    db.close();
    expect(() => SqliteStore.open(path)).toThrow(/newer than this program knows/);
    try {
      SqliteStore.open(join(dir.path, 'missing.db'));
      expect.unreachable();
    } catch (err) {
      expect(isMvpnError(err) && err.code).toBe('MVPN_CONFIG_MISSING');
    }
  });

  it('rolls a failed transaction back completely and refuses nesting and async bodies', () => {
    const s = SqliteStore.open(join(dir.path, 'tx.db'), { create: true });
    try {
      expect(() =>
        s.write((tx) => {
          tx.insertNode(node('n1'));
          tx.nextSeq();
          throw new Error('boom');
        }),
      ).toThrow('boom');
      expect(s.read((tx) => tx.getNode('n1'))).toBeUndefined();
      expect(s.write((tx) => tx.nextSeq())).toBe(1);
      expect(() => s.write(() => s.write(() => 1))).toThrow(/do not nest/);
      expect(() => s.write(async () => 1)).toThrow(/must not be async/);
      expect(s.read((tx) => tx.listNodes())).toEqual([]);
    } finally {
      s.close();
    }
  });

  it('keeps counters with their transaction: a rolled-back issuance is not counted, a committed one adds up', () => {
    const s = SqliteStore.open(join(dir.path, 'count.db'), { create: true });
    try {
      expect(s.read((tx) => tx.counters())).toEqual({});
      expect(() =>
        s.write((tx) => {
          tx.count('issued.enroll', 3);
          throw new Error('boom');
        }),
      ).toThrow('boom');
      expect(s.read((tx) => tx.counters())).toEqual({});
      s.write((tx) => tx.count('issued.enroll', 3));
      s.write((tx) => {
        tx.count('issued.enroll');
        tx.count('crl.published');
      });
      expect(s.read((tx) => tx.counters())).toEqual({ 'issued.enroll': 4, 'crl.published': 1 });
      // The sequence shares the meta table and is not a counter.
      expect(s.write((tx) => tx.nextSeq())).toBe(1);
    } finally {
      s.close();
    }
  });

  it('counts what the CLI issues, in its own process: export certificates and the CRL of a revocation', async () => {
    const srv = await makeServer({ label: 'count' });
    try {
      await srv.run(['network', 'create', 'red']);
      for (const n of ['pc1', 'pc2']) await srv.run(['node', 'add', n, '--network', 'red']);
      await srv.run(['export', '--all', '--network', 'red', '--out-dir', join(srv.dir, 'out')]);
      await srv.run(['node', 'revoke', 'pc1', '--network', 'red']);
      const ctx = await openContext(srv.stateDir);
      try {
        const c = ctx.store.read((tx) => tx.counters());
        expect(c['issued.export']).toBe(2);
        expect(c['issued.enroll']).toBeUndefined();
        expect(c['crl.published']).toBeGreaterThanOrEqual(1);
      } finally {
        ctx.close();
      }
    } finally {
      await srv.remove();
    }
  });

  it('enforces foreign keys and unique addresses per network', () => {
    const s = SqliteStore.open(join(dir.path, 'fk.db'), { create: true });
    try {
      expect(() =>
        s.write((tx) =>
          tx.insertMembership({
            network: 'nope',
            node: 'nope',
            address: '198.19.0.2',
            certPem: null,
            certSerial: null,
            keyOrigin: null,
            tlsCryptV2ClientKey: 'x',
            revoked: false,
            bundleVersion: 1,
            bundleCreatedAt: 0,
            addedAt: 0,
          }),
        ),
      ).toThrow(/FOREIGN KEY/);
    } finally {
      s.close();
    }
  });

  it('changes data_version when another connection commits, not on its own writes or reads', () => {
    const path = join(dir.path, 'dv.db');
    const daemon = SqliteStore.open(path, { create: true });
    const cli = SqliteStore.open(path);
    try {
      const v0 = daemon.dataVersion();
      daemon.write((tx) => tx.insertNode(node('own')));
      expect(daemon.dataVersion()).toBe(v0);
      cli.read((tx) => tx.listNodes());
      expect(daemon.dataVersion()).toBe(v0);
      cli.write((tx) => tx.insertNode(node('other')));
      const v1 = daemon.dataVersion();
      expect(v1).not.toBe(v0);
      expect(daemon.read((tx) => tx.getNode('other'))?.id).toBe('other');
    } finally {
      daemon.close();
      cli.close();
    }
  });
});

describe('two processes changing one state directory at once', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await makeServer({ label: 'conc' });
    await s.run(['network', 'create', 'shared', '--remote', '198.18.0.1', '--subnet', '198.19.255.0/24']);
  });
  afterAll(async () => s.remove());

  it('never loses, duplicates or corrupts anything', async () => {
    // Each worker runs the real CLI (main()) in a loop: networks (port and
    // subnet allocation) and nodes in one shared network (address allocation).
    const script = join(s.dir, 'worker.ts');
    const root = resolve(import.meta.dirname, '../..');
    await writeFile(
      script,
      `import { main } from ${JSON.stringify(join(root, 'src/cli/main.ts'))};
import { bufferIo } from ${JSON.stringify(join(root, 'src/cli/io.ts'))};
const [stateDir, tag] = process.argv.slice(2);
const failures = [];
for (let i = 0; i < 12; i++) {
  for (const args of [
    ['network', 'create', tag + i, '--remote', '198.18.0.1'],
    ['node', 'add', tag + 'n' + i, '--network', 'shared'],
    ['node', 'add', tag + 'm' + i, '--network', 'shared'],
  ]) {
    const io = bufferIo({});
    const code = await main(['server', ...args, '--state-dir', stateDir], io);
    if (code !== 0) failures.push(args.join(' ') + ': ' + io.err());
  }
}
process.stdout.write(JSON.stringify({ failures }));
`,
    );
    const runWorker = (tag: string) =>
      new Promise<{ failures: string[] }>((resolveRun, reject) => {
        const child = spawn(process.execPath, [script, s.stateDir, tag], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('exit', (code) => (code === 0 ? resolveRun(JSON.parse(out) as { failures: string[] }) : reject(new Error(`worker ${tag} exited ${code}: ${err}`))));
      });
    const results = await Promise.all([runWorker('wa'), runWorker('wb')]);
    expect(results.flatMap((r) => r.failures)).toEqual([]);

    const ctx = await openContext(s.stateDir);
    try {
      const { nets, members } = ctx.store.read((tx) => ({ nets: tx.listNetworks(), members: tx.listMemberships({ network: 'shared' }) }));
      expect(nets).toHaveLength(1 + 24);
      expect(new Set(nets.map((n) => n.port)).size).toBe(nets.length);
      for (const a of nets) for (const b of nets) if (a !== b) expect(overlaps(parseCidr(a.subnet), parseCidr(b.subnet)), `${a.id} ${b.id}`).toBe(false);
      expect(members).toHaveLength(48);
      expect(new Set(members.map((m) => m.address)).size).toBe(48);
      expect(new Set(members.map((m) => m.bundleVersion)).size).toBe(48); // every change got its own version
    } finally {
      ctx.close();
    }
    const db = new DatabaseSync(join(s.stateDir, 'store.db'));
    try {
      expect(db.prepare('PRAGMA integrity_check').get()).toEqual({ integrity_check: 'ok' });
      expect(db.prepare('PRAGMA foreign_key_check').all()).toEqual([]);
    } finally {
      db.close();
    }
  });
});
