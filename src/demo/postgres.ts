/**
 * A PostgreSQL cluster of our own (Debian's `postgresql` package), for
 * `demo --ha` and the tests' stores: initdb in a directory we own, run as
 * Debian's `postgres` system user (initdb and postgres refuse root),
 * listening only on a unix socket in that directory (no TCP at all), SCRAM
 * password login for its superuser. The postmaster logs to a file there and
 * is stopped by its pid; a system instance is never touched.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { MvpnError } from '../errors.ts';
import { waitFor } from '../netns/lab.ts';

const PG_ROOT = '/usr/lib/postgresql';
const PG_ENV = { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' };

/** The newest installed PostgreSQL's bin directory; a clear error naming the package when there is none. */
export function pgBinDir(root = PG_ROOT): string {
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, 'bin', 'postgres'))).sort((a, b) => Number(b) - Number(a)) : [];
  if (versions.length === 0) {
    throw new MvpnError('MVPN_DEPENDENCY_MISSING', `PostgreSQL is not installed (no ${root}/<version>/bin/postgres)`, {
      hint: 'install Debian\'s package: apt-get install postgresql (./build.sh does it too)',
    });
  }
  return join(root, versions[0]!, 'bin');
}

function postgresUser(): { uid: number; gid: number } {
  const f = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'))
    ?.split(':');
  if (!f) throw new MvpnError('MVPN_DEPENDENCY_MISSING', 'no postgres system user', { hint: 'the postgresql package creates it: apt-get install postgresql' });
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

function runAs(user: { uid: number; gid: number }, cmd: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { uid: user.uid, gid: user.gid, stdio: ['ignore', 'ignore', 'pipe'], env: PG_ENV });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}: ${err}`))));
  });
}

export interface PgCluster {
  /** Directory of the socket. */
  readonly socketDir: string;
  readonly password: string;
  /** The postmaster's log file. */
  readonly log: string;
  /** The postmaster's pid (changes on restart; 0 while down). */
  pid(): number;
  /** URL of database `db` as the superuser; `password` overrides the right one. */
  url(db: string, opts?: { password?: string }): string;
  /** A new empty database named `name`; its URL. */
  createDatabase(name: string): Promise<string>;
  /** Fast shutdown (SIGINT by pid), keeping the data. */
  down(): Promise<void>;
  /** Starts the postmaster on the data (nothing if it runs). */
  up(): Promise<void>;
}

export interface PgOptions {
  /** Detached (own session, unref'd): it outlives the process that started it (`demo --keep`). */
  readonly detached?: boolean;
  readonly maxConnections?: number;
}

/** A new cluster in `dir` (created; `sock/`, `data/`, `postgres.log` inside), started. */
export async function startPostgres(dir: string, opts: PgOptions = {}): Promise<PgCluster> {
  const bin = pgBinDir();
  const user = postgresUser();
  const socketDir = join(dir, 'sock');
  const data = join(dir, 'data');
  const log = join(dir, 'postgres.log');
  const password = randomBytes(12).toString('hex');
  const pwfile = join(dir, 'pw');
  await mkdir(dir, { recursive: true, mode: 0o711 });
  await mkdir(socketDir, { mode: 0o700 });
  await mkdir(data, { mode: 0o700 });
  await writeFile(pwfile, password + '\n', { mode: 0o600 });
  for (const p of [socketDir, data, pwfile]) await chown(p, user.uid, user.gid);
  await runAs(user, join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync']);

  let child: ChildProcess | undefined;
  const running = (): boolean => child !== undefined && child.exitCode === null && child.signalCode === null;
  const start = async (): Promise<void> => {
    const from = await readFile(log, 'utf8').then((s) => s.length, () => 0);
    const fd = openSync(log, 'a', 0o600);
    let c: ChildProcess;
    try {
      // No TCP at all (listen_addresses empty): the socket in our directory is the only way in.
      c = spawn(join(bin, 'postgres'), ['-D', data, '-k', socketDir, '-c', 'listen_addresses=', '-c', 'fsync=off', '-c', `max_connections=${opts.maxConnections ?? 40}`, '-c', 'shared_buffers=16MB'], {
        uid: user.uid,
        gid: user.gid,
        stdio: ['ignore', 'ignore', fd],
        env: PG_ENV,
        detached: opts.detached === true,
      });
    } finally {
      closeSync(fd);
    }
    if (opts.detached) c.unref();
    child = c;
    const text = async (): Promise<string> => (await readFile(log, 'utf8').catch(() => '')).slice(from);
    const ready = await waitFor(async () => !running() || (await text()).includes('ready to accept connections'), 60_000, 100);
    if (!running() || !ready) {
      await halt();
      throw new Error(`postgres did not start: ${(await text()).slice(-2000)}`);
    }
  };
  const halt = async (): Promise<void> => {
    const c = child;
    if (!c || !running()) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGINT'); // fast shutdown: ends sessions, rolls back their transactions
    const timer = setTimeout(() => c.kill('SIGKILL'), 30_000);
    // an unref'd child's exit alone does not hold the event loop
    const hold = setInterval(() => undefined, 1000);
    await exited;
    clearTimeout(timer);
    clearInterval(hold);
  };
  await start();

  const url = (db: string, o: { password?: string } = {}): string =>
    `postgresql://postgres:${encodeURIComponent(o.password ?? password)}@localhost/${db}?host=${encodeURIComponent(socketDir)}`;
  return {
    socketDir,
    password,
    log,
    pid: () => (running() ? (child?.pid ?? 0) : 0),
    url,
    async createDatabase(name: string) {
      const admin = new pg.Client({ connectionString: url('postgres') });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
      } finally {
        await admin.end();
      }
      return url(name);
    },
    down: halt,
    async up() {
      if (!running()) await start();
    },
  };
}
