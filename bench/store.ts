/**
 * Store: what a state-store transaction costs on each engine, and how fast
 * another connection's commit reaches a daemon.
 *
 * - SQLite (store.db, WAL, synchronous=FULL) and PostgreSQL through the
 *   synchronous facade (src/server/store/postgres.ts: a worker thread that
 *   owns the connection, the caller blocked on Atomics.wait) — the same
 *   transactions: a read (getNode on a snapshot) and a write (insertNode +
 *   nextSeq under the writers' lock, NOTIFY on commit).
 * - Anchor in the same run: the same PostgreSQL statements with the `pg`
 *   client straight from the event loop (async, no worker), which is what
 *   the facade adds its thread hops to.
 * - Change notification: a write on one connection until another store's
 *   dataVersion() changes (LISTEN/NOTIFY; SQLite's data_version for
 *   comparison). Target: within 1 s (issue 21); the daemon polls the
 *   version every second on top of this.
 *
 * PostgreSQL is a cluster of its own in a temp directory on a unix socket
 * (test/helpers/postgres.ts) with fsync off (a throwaway cluster), while
 * SQLite keeps synchronous=FULL: PostgreSQL's figures are its protocol and
 * facade cost, not a disk's.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { PostgresStore } from '../src/server/store/postgres.ts';
import { SqliteStore } from '../src/server/store/sqlite.ts';
import type { Store } from '../src/server/store/store.ts';
import { startPostgres } from '../test/helpers/postgres.ts';
import { fmtRange, summarize, type Summary } from './lib/stats.ts';
import type { Benchmark, SectionResult } from './lib/types.ts';
import { bareNode as node } from '../test/helpers/store-fixtures.ts';


/** Per-transaction ms of `n` reads and `n` writes. */
function measure(store: Store, n: number, tag: string): { read: Summary; write: Summary } {
  const reads: number[] = [];
  const writes: number[] = [];
  store.write((tx) => tx.insertNode(node(`${tag}-seed`)));
  for (let i = 0; i < n; i++) {
    let t = performance.now();
    store.read((tx) => tx.getNode(`${tag}-seed`));
    reads.push(performance.now() - t);
    t = performance.now();
    store.write((tx) => {
      tx.insertNode(node(`${tag}-${i}`));
      tx.nextSeq();
    });
    writes.push(performance.now() - t);
  }
  return { read: summarize(reads), write: summarize(writes) };
}

async function untilChanged(store: Store, v0: number, timeoutMs: number): Promise<number> {
  const start = performance.now();
  while (store.dataVersion() === v0) {
    if (performance.now() - start > timeoutMs) return Infinity;
    await new Promise((r) => setImmediate(r));
  }
  return performance.now() - start;
}

async function notifyLatency(a: Store, b: Store, n: number, tag: string): Promise<Summary> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const v0 = a.dataVersion();
    const t = performance.now();
    b.write((tx) => tx.insertNode(node(`${tag}-n${i}`)));
    const commit = performance.now() - t;
    samples.push(commit + (await untilChanged(a, v0, 5_000)));
    await new Promise((r) => setTimeout(r, 20));
  }
  return summarize(samples);
}

export const storeBench: Benchmark = {
  name: 'store',
  describe: 'state store transactions on SQLite and PostgreSQL (sync facade), and change notification between connections',
  async run(ctx) {
    const n = ctx.quick ? 50 : 500;
    const dir = await ctx.env.tmpDir('store');
    const cluster = await startPostgres('benchpg');
    ctx.env.defer('postgres cluster', () => cluster.stop());
    try {
      ctx.log(`store: ${n} read and ${n} write transactions per engine`);
      const sqlite = SqliteStore.open(join(dir, 'bench.db'), { create: true });
      const sqlite2 = SqliteStore.open(join(dir, 'bench.db'));
      const url = await cluster.createDatabase('bench');
      const pgStore = PostgresStore.open(url, { create: true });
      const pgStore2 = PostgresStore.open(url);
      const result: Record<string, unknown> = {};
      try {
        result['sqlite'] = measure(sqlite, n, 's');
        result['postgres'] = measure(pgStore, n, 'p');
        result['sqliteNotify'] = await notifyLatency(sqlite, sqlite2, ctx.quick ? 10 : 40, 's');
        result['postgresNotify'] = await notifyLatency(pgStore, pgStore2, ctx.quick ? 10 : 40, 'p');
      } finally {
        sqlite.close();
        sqlite2.close();
        pgStore.close();
        pgStore2.close();
      }
      // Anchor: the same statements, async, straight from the event loop.
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        const reads: number[] = [];
        const writes: number[] = [];
        for (let i = 0; i < n; i++) {
          let t = performance.now();
          await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
          await c.query('SELECT * FROM nodes WHERE id = $1', ['p-seed']);
          await c.query('COMMIT');
          reads.push(performance.now() - t);
          t = performance.now();
          await c.query('BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(1836478574)');
          await c.query(
            'INSERT INTO nodes (id, public_key, key_alg, identity_cert, identity_serial, enrolled_at, doc_serial, doc_issued_at, doc_expires_at, created_at) VALUES ($1, NULL, NULL, NULL, NULL, NULL, 1, 0, 0, 0)',
            [`a-${i}`],
          );
          await c.query("UPDATE meta SET value = value + 1 WHERE key = 'seq'");
          await c.query("SELECT value FROM meta WHERE key = 'seq'");
          await c.query('NOTIFY mvpn_store; COMMIT');
          writes.push(performance.now() - t);
        }
        result['postgresDirect'] = { read: summarize(reads), write: summarize(writes) };
      } finally {
        await c.end();
      }
      const notify = result['postgresNotify'] as Summary;
      return {
        targets: [
          {
            what: 'another connection’s commit seen (PostgreSQL, LISTEN/NOTIFY)',
            goal: '≤ 1000 ms',
            measured: `${notify.median.toFixed(1)} ms median, ${notify.max.toFixed(1)} ms max`,
            met: notify.max <= 1000,
          },
        ],
        data: result,
      };
    } finally {
      await cluster.stop();
    }
  },
  render(r: SectionResult): string {
    const d = r.data as Record<string, { read: Summary; write: Summary } | Summary>;
    const rw = (k: string) => d[k] as { read: Summary; write: Summary } | undefined;
    const row = (label: string, k: string) => `| ${label} | ${fmtRange(rw(k)?.read, ' ms', 3)} | ${fmtRange(rw(k)?.write, ' ms', 3)} |`;
    return [
      '| engine | read transaction (getNode) | write transaction (insertNode + nextSeq) |',
      '|---|---|---|',
      row('SQLite (store.db, WAL, synchronous=FULL)', 'sqlite'),
      row('PostgreSQL through the synchronous facade (worker thread + Atomics.wait)', 'postgres'),
      row('anchor: the same statements with `pg`, async on the event loop', 'postgresDirect'),
      '',
      '| change notification (commit on one connection until the other’s dataVersion() changes) | median (min–max) |',
      '|---|---|',
      `| SQLite data_version | ${fmtRange(d['sqliteNotify'] as Summary, ' ms', 2)} |`,
      `| PostgreSQL LISTEN/NOTIFY | ${fmtRange(d['postgresNotify'] as Summary, ' ms', 2)} |`,
      '',
      'PostgreSQL: a throwaway cluster on a unix socket with fsync off. The daemon is woken by the same notification (Store.watch), not by its 1 s poll: see the analysis "Change notification".',
    ].join('\n');
  },
};
