/**
 * A real PostgreSQL cluster per test file (Debian's `postgresql` package):
 * initdb in a tmpDir of its own, run as Debian's `postgres` system user
 * (initdb and postgres refuse root), listening only on a unix socket in that
 * directory (no TCP), password (SCRAM) login for its superuser. Stopped by
 * its pid and removed; a system instance is never touched.
 *
 * MVPN_TEST_STORE=postgres makes makeServer (server-fixtures.ts) put every
 * test server's store in a fresh database of this file's shared cluster,
 * stopped after the file (file-cleanup.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chown, mkdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { tmpDir } from './tmp.ts';

export interface PgCluster {
  /** Directory of the socket (and of the data directory). */
  readonly socketDir: string;
  readonly password: string;
  /** The postmaster's pid (changes on restart). */
  pid(): number;
  /** URL of database `db` as the superuser; `password` overrides the right one. */
  url(db: string, opts?: { password?: string }): string;
  /** A new empty database; its URL. */
  createDatabase(prefix?: string): Promise<string>;
  /** Fast shutdown and start again on the same data (a PostgreSQL restart under running clients). */
  restart(): Promise<void>;
  /** Fast shutdown only (by pid), keeping the data: the database is away until up(). */
  down(): Promise<void>;
  /** Starts a cluster that down() stopped, on the same data (nothing if it runs). */
  up(): Promise<void>;
  /** Stops the cluster (by pid) and removes its directory. */
  stop(): Promise<void>;
}

function pgBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  if (versions.length === 0) throw new Error('PostgreSQL is not installed (Debian package postgresql; build.sh installs it)');
  return join(root, versions[0]!, 'bin');
}

function postgresUser(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error('no postgres system user (the postgresql package creates it)');
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

function runAs(user: { uid: number; gid: number }, cmd: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { uid: user.uid, gid: user.gid, stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' } });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}: ${err}`))));
  });
}

export async function startPostgres(label = 'pg'): Promise<PgCluster> {
  const bin = pgBinDir();
  const user = postgresUser();
  const dir = await tmpDir(label);
  const socketDir = join(dir.path, 'sock');
  const data = join(dir.path, 'data');
  const password = randomBytes(12).toString('hex');
  const pwfile = join(dir.path, 'pw');
  await mkdir(socketDir, { mode: 0o700 });
  await mkdir(data, { mode: 0o700 });
  await writeFile(pwfile, password + '\n', { mode: 0o600 });
  for (const p of [socketDir, data, pwfile]) await chown(p, user.uid, user.gid);
  await runAs(user, join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync']);

  let child: ChildProcess | undefined;
  const start = () =>
    new Promise<void>((resolve, reject) => {
      // No TCP at all (listen_addresses empty): the socket in our directory is the only way in.
      const c = spawn(join(bin, 'postgres'), ['-D', data, '-k', socketDir, '-c', "listen_addresses=", '-c', 'fsync=off', '-c', 'max_connections=40', '-c', 'shared_buffers=16MB'], {
        uid: user.uid,
        gid: user.gid,
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
      });
      child = c;
      let log = '';
      const timer = setTimeout(() => reject(new Error(`postgres did not start in 60 s: ${log}`)), 60_000);
      c.stderr!.on('data', (d: Buffer) => {
        if (log.length < 20_000) log += d.toString();
        if (log.includes('ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      });
      c.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`postgres exited ${code}: ${log}`));
      });
    });
  const halt = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGINT'); // fast shutdown: ends sessions, rolls back their transactions
    const timer = setTimeout(() => c.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await start();
  } catch (err) {
    await halt();
    await dir.remove();
    throw err;
  }

  const url = (db: string, opts: { password?: string } = {}) =>
    `postgresql://postgres:${encodeURIComponent(opts.password ?? password)}@localhost/${db}?host=${encodeURIComponent(socketDir)}`;
  let n = 0;
  return {
    socketDir,
    password,
    pid: () => child?.pid ?? 0,
    url,
    async createDatabase(prefix = 'mvpn') {
      const name = `${prefix}_${process.pid}_${++n}`;
      const admin = new pg.Client({ connectionString: url('postgres') });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${name}`);
      } finally {
        await admin.end();
      }
      return url(name);
    },
    async restart() {
      await halt();
      await start();
    },
    down: halt,
    async up() {
      const c = child;
      if (c && c.exitCode === null && c.signalCode === null) return; // running: a second postmaster would only replace our handle on it
      await start();
    },
    async stop() {
      await halt();
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
