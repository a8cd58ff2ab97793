/**
 * A real PostgreSQL cluster per test file: the one `demo --ha` starts
 * (src/demo/postgres.ts: Debian's package, run as its `postgres` user, a
 * unix socket only, SCRAM login) in a tmpDir of its own, stopped by its pid
 * and removed; a system instance is never touched.
 *
 * MVPN_TEST_STORE=postgres makes makeServer (server-fixtures.ts) put every
 * test server's store in a fresh database of this file's shared cluster,
 * stopped after the file (file-cleanup.ts).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pgBinDir, startPostgres as startCluster, type PgCluster as Cluster } from '../../src/demo/postgres.ts';
import { tmpDir } from './tmp.ts';

export interface PgCluster extends Omit<Cluster, 'createDatabase'> {
  /** A new empty database (named from `prefix`); its URL. */
  createDatabase(prefix?: string): Promise<string>;
  /** Fast shutdown and start again on the same data (a PostgreSQL restart under running clients). */
  restart(): Promise<void>;
  /** Stops the cluster (by pid) and removes its directory. */
  stop(): Promise<void>;
}

/** The product's cluster (src/demo/postgres.ts) in a tmpDir of this run. */
export async function startPostgres(label = 'pg'): Promise<PgCluster> {
  const dir = await tmpDir(label);
  let c: Cluster;
  try {
    c = await startCluster(join(dir.path, 'pg'));
  } catch (err) {
    await dir.remove();
    throw err;
  }
  let n = 0;
  return {
    ...c,
    createDatabase: (prefix = 'mvpn') => c.createDatabase(`${prefix}_${process.pid}_${++n}`),
    async restart() {
      await c.down();
      await c.up();
    },
    async stop() {
      await c.down();
      await dir.remove();
    },
  };
}

/** The whole database `url` names, as pg_dump prints it (schema and every row). */
export function pgDump(url: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(join(pgBinDir(), 'pg_dump'), ['--dbname', url], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`pg_dump exited ${code}: ${err}`))));
  });
}

let shared: Promise<PgCluster> | undefined;

/** The test store engine: MVPN_TEST_STORE=postgres, or SQLite (the default). */
export function testStoreEngine(): 'sqlite' | 'postgres' {
  const e = process.env['MVPN_TEST_STORE'] ?? 'sqlite';
  if (e !== 'sqlite' && e !== 'postgres') throw new Error(`MVPN_TEST_STORE=${e}: expected sqlite or postgres`);
  return e;
}

/** This test file's cluster, started on first use. */
export function sharedPostgres(): Promise<PgCluster> {
  shared ??= startPostgres('pgshared');
  return shared;
}

/** Stops this file's cluster if one was started (file-cleanup.ts). */
export async function stopSharedPostgres(): Promise<void> {
  const s = shared;
  shared = undefined;
  if (s) await (await s).stop();
}
