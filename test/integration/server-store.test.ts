/**
 * The state store on both engines — SQLite files and a real PostgreSQL
 * cluster (test/helpers/postgres.ts): schema migrations, transactions, the
 * daemon's change signal (data_version / LISTEN-NOTIFY), and two processes
 * changing one store at once without losing or corrupting anything. Then
 * what only PostgreSQL has: refusing an unreachable database, a wrong
 * password and an exposed connection file; reconnecting after a restart.
 */
import { spawn } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { DatabaseSync } from 'node:sqlite';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isMvpnError } from '../../src/errors.ts';
import { memoryLogger } from '../../src/log.ts';
import { ServerDaemon } from '../../src/server/daemon.ts';
import { serverFormatters, type ServerEvent } from '../../src/server/events.ts';
import { overlaps, parseCidr } from '../../src/server/alloc.ts';
import { postgresUrl } from '../../src/server/store/open.ts';
import { PostgresStore, postgresDdl } from '../../src/server/store/postgres.ts';
import { MIGRATIONS, SqliteStore } from '../../src/server/store/sqlite.ts';
import type { Store, StoreEvent } from '../../src/server/store/store.ts';
import { waitFor } from '../helpers/netns.ts';
import { startPostgres, type PgCluster } from '../helpers/postgres.ts';
import { cli, makeServer, openContext, type CliResult, type TestServer } from '../helpers/server-fixtures.ts';
import { bareNode as node } from '../helpers/store-fixtures.ts';
import { runCli } from '../helpers/agent-fixtures.ts';
import { snapshotTree } from '../helpers/adversarial/snapshot.ts';
import { tmpDir } from '../helpers/tmp.ts';


/** One new store location of an engine, and raw access to it behind the store's back. */
interface Location {
  open(opts?: { create?: boolean }): Store;
  /** Applied schema versions, read directly. */
  version(): Promise<number>;
  /** Sets the applied schema version directly (as a newer or older release would have left it). */
  setVersion(v: number): Promise<void>;
  tables(): Promise<string[]>;
  /** Raw SQL (a version-1 store made by hand). */
  exec(sql: string): Promise<void>;
}

interface Engine {
  readonly name: 'sqlite' | 'postgres';
  setup(): Promise<void>;
  teardown(): Promise<void>;
  fresh(): Promise<Location>;
}

const sqliteEngine = (): Engine => {
  let dir: { path: string; remove: () => Promise<void> };
  let n = 0;
  const raw = <T>(path: string, fn: (db: DatabaseSync) => T): T => {
    const db = new DatabaseSync(path);
    try {
      return fn(db);
    } finally {
      db.close();
    }
  };
  return {
    name: 'sqlite',
    setup: async () => {
      dir = await tmpDir('store');
    },
    teardown: async () => dir.remove(),
    fresh: async () => {
      const path = join(dir.path, `s${++n}.db`);
      return {
        open: (opts = {}) => SqliteStore.open(path, opts),
        version: async () => raw(path, (db) => (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version),
        setVersion: async (v) => raw(path, (db) => db.exec(`PRAGMA user_version = ${v}`)),
        tables: async () =>
          raw(path, (db) => (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[]).map((r) => r.name)),
        exec: async (sql) => raw(path, (db) => db.exec(sql)),
      };
    },
  };
};

const postgresEngine = (): Engine => {
  let cluster: PgCluster;
  const raw = async <T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };
  return {
    name: 'postgres',
    setup: async () => {
      cluster = await startPostgres('storepg');
    },
    teardown: async () => cluster.stop(),
    fresh: async () => {
      const url = await cluster.createDatabase();
      return {
        open: (opts = {}) => PostgresStore.open(url, opts),
        version: async () => raw(url, async (c) => Number((await c.query('SELECT version FROM schema_version')).rows[0].version)),
        setVersion: async (v) =>
          raw(url, async (c) => {
            await c.query('CREATE TABLE IF NOT EXISTS schema_version (id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)');
            await c.query('INSERT INTO schema_version VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = excluded.version', [v]);
          }),
        tables: async () =>
          raw(url, async (c) =>
            (await c.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_version' ORDER BY tablename")).rows.map(
              (r: { tablename: string }) => r.tablename,
            ),
          ),
        exec: async (sql) => raw(url, async (c) => void (await c.query(postgresDdl(sql)))),
      };
    },
  };
};

describe.each([sqliteEngine(), postgresEngine()])('the store on $name', (engine) => {
  beforeAll(async () => engine.setup());
  afterAll(async () => engine.teardown());

  it('migrates a new store to the current schema; opening again changes nothing', async () => {
    const loc = await engine.fresh();
    loc.open({ create: true }).close();
    expect(await loc.version()).toBe(MIGRATIONS.length);
    expect(await loc.tables()).toEqual(['address_history', 'hosts', 'leases', 'links', 'memberships', 'meta', 'networks', 'nodes', 'revocations', 'tokens']);
    loc.open().close();
    expect(await loc.version()).toBe(MIGRATIONS.length);
  });

  it('upgrades a version 1 store in place, keeping its rows', async () => {
    const loc = await engine.fresh();
    await loc.exec(MIGRATIONS[0]!);
    await loc.setVersion(1);
    await loc.exec(`INSERT INTO networks VALUES ('old', 'old', 'tap', 'udp', 1194, '198.19.0.0/24', 'down', '[]', 'ec-p256', 'c', 'k', 'sc', 'sk', 't', 'crl', 1, 0, 0, 0)`);
    const s = loc.open();
    try {
      expect(s.read((tx) => tx.getNetwork('old'))).toMatchObject({ id: 'old', port: 1194, allocHint: 0 });
    } finally {
      s.close();
    }
    expect(await loc.version()).toBe(MIGRATIONS.length);
  });

  it('refuses a store written by a newer schema, and a store that does not exist', async () => {
    const loc = await engine.fresh();
    loc.open({ create: true }).close();
    await loc.setVersion(99);
    expect(() => loc.open()).toThrow(expect.objectContaining({ code: 'MVPN_STORE_TOO_NEW', message: expect.stringMatching(/schema version 99, newer than this program knows/) }));
    const missing = await engine.fresh();
    try {
      missing.open();
      expect.unreachable();
    } catch (err) {
      expect(isMvpnError(err) && err.code).toBe('MVPN_CONFIG_MISSING');
    }
  });

  it('rolls a failed transaction back completely and refuses nesting and async bodies', async () => {
    const s = (await engine.fresh()).open({ create: true });
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

  it('keeps counters with their transaction: a rolled-back issuance is not counted, a committed one adds up', async () => {
    const s = (await engine.fresh()).open({ create: true });
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

  it('enforces foreign keys and unique addresses per network', async () => {
    const s = (await engine.fresh()).open({ create: true });
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
      ).toThrow(/FOREIGN KEY/i);
    } finally {
      s.close();
    }
  });

  it('orders ids bytewise, as SQLite does', async () => {
    const s = (await engine.fresh()).open({ create: true });
    try {
      s.write((tx) => ['b', 'B', 'a-1', 'a_1', 'A'].forEach((id) => tx.insertNode(node(id))));
      expect(s.read((tx) => tx.listNodes().map((n) => n.id))).toEqual(['A', 'B', 'a-1', 'a_1', 'b']);
    } finally {
      s.close();
    }
  });

  it('changes the data version when another connection commits, not on its own writes or reads', async () => {
    const loc = await engine.fresh();
    const daemon = loc.open({ create: true });
    const other = loc.open();
    try {
      const v0 = daemon.dataVersion();
      daemon.write((tx) => tx.insertNode(node('own')));
      expect(daemon.dataVersion()).toBe(v0);
      other.read((tx) => tx.listNodes());
      expect(daemon.dataVersion()).toBe(v0);
      const t0 = performance.now();
      other.write((tx) => tx.insertNode(node('other')));
      // Generous bound against a hang; the figure is printed (docs/ARCHITECTURE.md).
      expect(await waitFor(() => daemon.dataVersion() !== v0, 1_000, 1)).toBe(true);
      console.log(`${engine.name}: another connection's commit seen after ${(performance.now() - t0).toFixed(1)} ms`);
      // PostgreSQL counts notifications, in commit order: had our own write counted, it would show here too.
      if (engine.name === 'postgres') expect(daemon.dataVersion()).toBe(v0 + 1);
      expect(daemon.read((tx) => tx.getNode('other'))?.id).toBe('other');
    } finally {
      daemon.close();
      other.close();
    }
  });
});

describe.each(['sqlite', 'postgres'] as const)('two processes changing one %s store at once', (store) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await makeServer({ label: 'conc', store });
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
    if (store !== 'sqlite') return;
    const db = new DatabaseSync(join(s.stateDir, 'store.db'));
    try {
      expect(db.prepare('PRAGMA integrity_check').get()).toEqual({ integrity_check: 'ok' });
      expect(db.prepare('PRAGMA foreign_key_check').all()).toEqual([]);
    } finally {
      db.close();
    }
  });
});

describe('a server on PostgreSQL', () => {
  let cluster: PgCluster;
  let s: TestServer;
  beforeAll(async () => {
    cluster = await startPostgres('srvpg');
    s = await makeServer({ label: 'pgsrv', extra: ['--store-url', await cluster.createDatabase()] });
    await s.run(['network', 'create', 'n1', '--remote', '198.18.0.1']);
  });
  afterAll(async () => {
    await s?.remove();
    await cluster?.stop();
  });

  /** Runs `fn` (default: `server network list`) with config.json's store replaced by `store`; restores it. */
  const withStore = async <T = CliResult>(store: unknown, fn: () => Promise<T> = () => cli(['server', 'network', 'list', '--json', '--state-dir', s.stateDir]) as Promise<T>) => {
    const path = join(s.stateDir, 'config.json');
    const saved = await readFile(path, 'utf8');
    await writeFile(path, JSON.stringify({ ...JSON.parse(saved), store }));
    try {
      return await fn();
    } finally {
      await writeFile(path, saved);
    }
  };
  const errorOf = (r: { json<T>(): T }) => r.json<{ error: { code: string; message: string } }>().error;

  it('keeps its state there: no store.db, and a second process sees the network', async () => {
    expect(await s.json<{ id: string }[]>(['network', 'list'])).toMatchObject([{ id: 'n1' }]);
    const ctx = await openContext(s.stateDir);
    try {
      expect(ctx.store).toBeInstanceOf(PostgresStore);
    } finally {
      ctx.close();
    }
    expect(await readFile(join(s.stateDir, 'store.db')).catch(() => null)).toBeNull();
  });

  it('refuses an unreachable database, a wrong password and a missing database, saying which', async () => {
    const unreachable = await withStore({ postgres: { url: `postgresql://postgres@localhost/x?host=${encodeURIComponent(join(s.dir, 'no-such-dir'))}` } });
    expect(unreachable.code).not.toBe(0);
    expect(errorOf(unreachable)).toMatchObject({ code: 'MVPN_STORE_UNREACHABLE', message: expect.stringMatching(/cannot reach the PostgreSQL store/) });

    const wrong = await withStore({ postgres: { url: cluster.url('postgres', { password: 'not-the-password' }) } });
    expect(errorOf(wrong)).toMatchObject({ code: 'MVPN_STORE_AUTH_FAILED', message: expect.stringMatching(/password authentication failed/) });
    expect(errorOf(wrong).message).not.toContain('not-the-password');

    const nodb = await withStore({ postgres: { url: cluster.url('no_such_db') } });
    expect(errorOf(nodb)).toMatchObject({ code: 'MVPN_STORE_UNREACHABLE', message: expect.stringMatching(/does not exist/) });

    const empty = await withStore({ postgres: { url: await cluster.createDatabase() } });
    expect(errorOf(empty)).toMatchObject({ code: 'MVPN_CONFIG_MISSING', message: expect.stringMatching(/holds no mvpn store/) });

    // `server run` opens the store the same way, before its listener: it does not start.
    const daemon = await withStore({ postgres: { url: cluster.url('postgres', { password: 'not-the-password' }) } }, () =>
      ServerDaemon.start({ stateDir: s.stateDir }).then(
        (d) => d.stop().then(() => 'started'),
        (err: unknown) => err,
      ),
    );
    expect(isMvpnError(daemon) && daemon.code).toBe('MVPN_STORE_AUTH_FAILED');
  });

  it('`server run` refuses an unreachable database, a wrong password, a newer schema and an exposed connection file, saying which; the state directory is untouched', async () => {
    const tooNew = await cluster.createDatabase();
    PostgresStore.open(tooNew, { create: true }).close();
    const admin = new pg.Client({ connectionString: tooNew });
    await admin.connect();
    await admin.query('UPDATE schema_version SET version = version + 1');
    await admin.end();
    const exposed = join(s.dir, 'exposed.url');
    await writeFile(exposed, `${cluster.url('postgres')}\n`);
    await chmod(exposed, 0o644);
    const cases: [unknown, string, RegExp][] = [
      [{ postgres: { url: `postgresql://postgres@localhost/x?host=${encodeURIComponent(join(s.dir, 'no-such-dir'))}` } }, 'MVPN_STORE_UNREACHABLE', /cannot reach the PostgreSQL store/],
      [{ postgres: { url: cluster.url('postgres', { password: 'not-the-password' }) } }, 'MVPN_STORE_AUTH_FAILED', /refused the login: password authentication failed/],
      [{ postgres: { url: tooNew } }, 'MVPN_STORE_TOO_NEW', new RegExp(`schema version ${MIGRATIONS.length + 1}, newer than this program knows`)],
      [{ postgres: { connection_file: exposed } }, 'MVPN_CONFIG_INVALID', /mode 644, readable by others/],
    ];
    for (const [store, code, message] of cases) {
      await withStore(store, async () => {
        const before = await snapshotTree(s.stateDir);
        const r = await runCli(['server', 'run', '--state-dir', s.stateDir]);
        expect(r.code, r.stderr).not.toBe(0);
        expect(r.stderr).toMatch(message);
        expect(r.stderr).toContain(`[${code}]`);
        expect(r.stderr).not.toContain('not-the-password');
        expect(await snapshotTree(s.stateDir)).toEqual(before);
      });
    }
  });

  it('reads the URL from a connection file readable only by its owner, and refuses an exposed one', async () => {
    const file = join(s.dir, 'store.url');
    const ctx = await openContext(s.stateDir);
    const url = ctx.config.store !== undefined && 'url' in ctx.config.store.postgres ? ctx.config.store.postgres.url : '';
    ctx.close();
    await writeFile(file, url + '\n', { mode: 0o600 });
    expect(await postgresUrl({ postgres: { connection_file: file } })).toBe(url);
    expect((await withStore({ postgres: { connection_file: file } })).json<{ id: string }[]>()).toMatchObject([{ id: 'n1' }]);
    await chmod(file, 0o640);
    const exposed = await withStore({ postgres: { connection_file: file } });
    expect(errorOf(exposed)).toMatchObject({ code: 'MVPN_CONFIG_INVALID', message: expect.stringMatching(/mode 640, readable by others/) });
  });

  it('refuses to init a second server on a database that already holds a store', async () => {
    const ctx = await openContext(s.stateDir);
    const url = ctx.config.store !== undefined && 'url' in ctx.config.store.postgres ? ctx.config.store.postgres.url : '';
    ctx.close();
    const dir = await tmpDir('pginit');
    try {
      const r = await cli(['server', 'init', '--json', '--state-dir', join(dir.path, 'state'), '--address', '127.0.0.1', '--store-url', url]);
      expect(errorOf(r)).toMatchObject({ code: 'MVPN_ALREADY_EXISTS' });
    } finally {
      await dir.remove();
    }
  });

  /** A store on a new database with `opts`, and a plain `pg` client on the same database beside it. */
  const storeAndClient = async (opts: Parameters<typeof PostgresStore.open>[1]) => {
    const url = await cluster.createDatabase();
    PostgresStore.open(url, { create: true }).close();
    const store = PostgresStore.open(url, opts);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    return { store, client, close: async () => (store.close(), await client.end()) };
  };

  it('makes a writer wait for the writers’ lock, and gives up after its lock timeout without harm', async () => {
    const { store, client: holder, close } = await storeAndClient({ lockTimeoutMs: 300 });
    try {
      // Another writer (as another host would) holds the lock every write() takes first.
      await holder.query('BEGIN');
      await holder.query('SELECT pg_advisory_xact_lock(1836478574)');
      try {
        store.write((tx) => tx.insertNode(node('blocked')));
        expect.unreachable();
      } catch (err) {
        expect(isMvpnError(err) && err.code).toBe('MVPN_STORE_ERROR');
        expect((err as Error).message).toMatch(/lock timeout/);
      }
      expect(store.read((tx) => tx.getNode('blocked'))).toBeUndefined();
      await holder.query('COMMIT');
      store.write((tx) => tx.insertNode(node('after')));
      expect(store.read((tx) => tx.listNodes().map((n) => n.id))).toEqual(['after']);
    } finally {
      await close();
    }
  });

  it('gives up on a hung connection after its request timeout and carries on with a new one', async () => {
    const { store, client: admin, close } = await storeAndClient({ requestTimeoutMs: 1_000 });
    let backend = 0;
    try {
      store.write((tx) => tx.insertNode(node('before')));
      const r = await admin.query("SELECT pid FROM pg_stat_activity WHERE application_name = 'mvpn-server' AND datname = current_database()");
      expect(r.rows).toHaveLength(1);
      backend = (r.rows[0] as { pid: number }).pid;
      // The server process behind the store's connection stops answering (as a hung host or a cut network would).
      process.kill(backend, 'SIGSTOP');
      const v0 = store.dataVersion();
      try {
        store.read((tx) => tx.listNodes());
        expect.unreachable();
      } catch (err) {
        expect(isMvpnError(err) && err.code).toBe('MVPN_STORE_UNREACHABLE');
        expect((err as Error).message).toMatch(/did not answer within 1 s/);
      }
      expect(store.read((tx) => tx.listNodes().map((n) => n.id))).toEqual(['before']);
      // The new connection counts as a change (what happened meanwhile was not heard).
      expect(await waitFor(() => store.dataVersion() !== v0, 5_000, 10)).toBe(true);
    } finally {
      if (backend) process.kill(backend, 'SIGCONT');
      await close();
    }
  });

  it('notices by itself that its idle connection hangs (the heartbeat), reports lost and back, and hears other connections on the new one', async () => {
    const { store, client: admin, close } = await storeAndClient({ heartbeatMs: 500 });
    const events: StoreEvent[] = [];
    store.watch((e) => events.push(e));
    let backend = 0;
    try {
      const ours = async () => (await admin.query("SELECT pid FROM pg_stat_activity WHERE application_name = 'mvpn-server' AND datname = current_database()")).rows as { pid: number }[];
      expect(await waitFor(async () => (await ours()).length === 1, 5_000, 50)).toBe(true);
      backend = (await ours())[0]!.pid;
      // Its backend stops answering while the store is idle (a hung host; a cut network looks the same): no call is made.
      process.kill(backend, 'SIGSTOP');
      expect(await waitFor(() => events.some((e) => e.kind === 'back'), 15_000, 20)).toBe(true);
      expect(events.filter((e) => e.kind !== 'changed')).toEqual([
        { kind: 'lost', message: 'no answer to a keepalive query within 0.5 s' },
        { kind: 'back', downMs: expect.any(Number) },
      ]);
      const seen = events.length;
      await admin.query('NOTIFY mvpn_store');
      expect(await waitFor(() => events.slice(seen).some((e) => e.kind === 'changed'), 5_000, 10)).toBe(true);
      expect(store.read((tx) => tx.listNodes())).toEqual([]);
    } finally {
      if (backend) process.kill(backend, 'SIGCONT');
      await close();
    }
  });

  it('reconnects by itself after PostgreSQL restarts, and hears other connections again', async () => {
    const a = await openContext(s.stateDir);
    const b = await openContext(s.stateDir);
    try {
      const v0 = a.store.dataVersion();
      await cluster.restart();
      // The reconnection bumps the version (changes may have been missed while away).
      expect(await waitFor(() => a.store.dataVersion() !== v0, 30_000, 50)).toBe(true);
      expect(a.store.read((tx) => tx.listNetworks().map((n) => n.id))).toEqual(['n1']);
      await waitFor(() => b.store.dataVersion() !== v0, 30_000, 50);
      const v1 = a.store.dataVersion();
      b.store.write((tx) => tx.insertNode(node('after-restart')));
      expect(await waitFor(() => a.store.dataVersion() !== v1, 5_000, 5)).toBe(true);
      expect(a.store.read((tx) => tx.getNode('after-restart'))?.id).toBe('after-restart');
    } finally {
      a.close();
      b.close();
    }
  });

  it('logs an outage once: no reconcile failure per pass while the store is away, and says at its return how many passes it cost', async () => {
    const logger = memoryLogger<ServerEvent>();
    // A pass every 300 ms: over the outage below, a line per pass would be a dozen.
    const daemon = await ServerDaemon.start({ stateDir: s.stateDir, logger, pollMs: 100, periodicMs: 300 });
    try {
      const seen = logger.events.length;
      await cluster.down();
      try {
        expect(await waitFor(() => logger.events.some((e) => e.kind === 'server.store-lost'), 20_000, 50)).toBe(true);
        const lostAt = logger.events.length;
        await sleep(3_000);
        const failed = logger.events.slice(lostAt).filter((e) => e.kind === 'server.reconcile-failed');
        expect(failed, JSON.stringify(failed)).toEqual([]);
      } finally {
        await cluster.up();
      }
      expect(await waitFor(() => logger.events.some((e) => e.kind === 'server.store-back'), 30_000, 50)).toBe(true);
      const back = logger.events.find((e) => e.kind === 'server.store-back');
      expect(back).toMatchObject({ missedPasses: expect.any(Number) });
      expect((back as { missedPasses: number }).missedPasses).toBeGreaterThanOrEqual(5);
      const text = serverFormatters['server.store-back'](back as Extract<ServerEvent, { kind: 'server.store-back' }>).text;
      expect(text).toMatch(/could not read it meanwhile/);
      // Every event of the outage, from the store's loss to its return: one line that it went, one that it came back.
      const outage = logger.events.slice(seen).filter((e) => e.kind === 'server.store-lost' || e.kind === 'server.store-back' || e.kind === 'server.reconcile-failed');
      expect(outage.map((e) => e.kind)).toEqual(['server.store-lost', 'server.store-back']);
      // And passes succeed again (whatever woke them: a pass asked for while one runs takes the newest cause).
      const backAt = logger.events.indexOf(back!);
      expect(await waitFor(() => logger.events.slice(backAt).some((e) => e.kind === 'server.reconcile'), 10_000, 50)).toBe(true);
    } finally {
      await daemon.stop();
    }
  });

  it('wakes the daemon with each commit of another connection at once: no poll needed (its poll is set to an hour here)', async () => {
    const logger = memoryLogger<ServerEvent>();
    const daemon = await ServerDaemon.start({ stateDir: s.stateDir, logger, pollMs: 3_600_000, periodicMs: 3_600_000 });
    // Another connection (as another process or host would have); the daemon's own commits are not notified to it.
    const other = await openContext(s.stateDir);
    const ms: number[] = [];
    try {
      const notifiedSince = (seen: number) => () => logger.events.slice(seen).some((e) => e.kind === 'server.reconcile' && e.cause === 'store notified');
      // `node add` in a process of its own.
      const seen = logger.events.length;
      const r = await runCli(['server', 'node', 'add', 'wake', '--network', 'n1', '--state-dir', s.stateDir]);
      expect(r.code, r.stderr).toBe(0);
      expect(await waitFor(notifiedSince(seen), 10_000, 1)).toBe(true);
      for (let i = 0; i < 10; i++) {
        const before = logger.events.length;
        other.store.write((tx) => tx.insertNode(node(`wake${i}`)));
        const committed = performance.now();
        expect(await waitFor(notifiedSince(before), 10_000, 1)).toBe(true);
        ms.push(performance.now() - committed);
      }
    } finally {
      other.close();
      await daemon.stop();
    }
    ms.sort((x, y) => x - y);
    console.log(`commit on another connection -> daemon reconciled: median ${((ms[4]! + ms[5]!) / 2).toFixed(1)} ms, min ${ms[0]!.toFixed(1)}, max ${ms[9]!.toFixed(1)} ms (10 commits)`);
  });
});
