/**
 * The PostgreSQL store: the same Store/StoreTx as the embedded one (the
 * StoreTx and its SQL are shared, makeSqlTx in sqlite.ts), on a database
 * several server hosts can share.
 *
 * Synchronous facade. The store interface is synchronous (a transaction
 * never spans an await; see store.ts), and PostgreSQL clients are not. The
 * connection lives in a worker thread (pg-worker.ts); each statement is one
 * request: post it, block on Atomics.wait until the worker has the reply,
 * take it with receiveMessageOnPort. A statement costs one thread hop on top
 * of the database round trip; BEGIN, a read's COMMIT and ROLLBACK are posted
 * without waiting (the worker runs requests in order, and a failed BEGIN
 * answers the next one), so a one-statement read is one hop
 * (docs/ARCHITECTURE.md has the figures).
 *
 * Transactions keep SQLite's rules:
 *  - write(fn): BEGIN (READ COMMITTED), then a transaction-scoped advisory
 *    lock that every writer takes first — one writer at a time across all
 *    connections and hosts, as BEGIN IMMEDIATE is for SQLite. Since no
 *    other writer can commit while it is held, every statement of `fn` sees
 *    the same data, and no serialization failure (and no re-running `fn`)
 *    can happen. A writer waits at most `lockTimeoutMs` for the lock.
 *  - read(fn): REPEATABLE READ READ ONLY, one snapshot.
 *  - A write's COMMIT carries NOTIFY on one channel; every other connection
 *    LISTENs there, so dataVersion() changes within milliseconds of another
 *    connection's commit (and after a reconnection, when some may have been
 *    missed), with no query: it reads a counter the worker bumps. watch()
 *    hears the same as an event, so the daemon need not poll.
 *
 * Outages: the worker reconnects by itself (pg-worker.ts) and reports
 * `lost` / `back`; meanwhile every call fails with MVPN_STORE_UNREACHABLE,
 * at once when the server refuses connections, after `requestTimeoutMs` when
 * it does not answer at all. A caller never waits longer than that.
 *
 * Schema: the same MIGRATIONS as SQLite, translated (postgresDdl); a
 * schema_version table holds how many are applied. Each migration runs in
 * its own transaction under the writers' lock, re-checked inside it, so
 * concurrent opens upgrade once.
 */
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { StoreError } from '../../errors.ts';
import { MIGRATIONS } from './sqlite.ts';
import { makeSqlTx, type Row, type SqlConn } from './sql-tx.ts';
import type { Store, StoreEvent, StoreTx, WriteOptions } from './store.ts';
import type { TxStep, WorkerError, WorkerInit, WorkerReply, WorkerRequest } from './pg-worker.ts';

/** The bundled executable defines this as pg-worker.ts bundled with `pg` (scripts/bundle.mjs); from source it is absent. */
declare const MVPN_PG_WORKER_SOURCE: string | undefined;

/** pg_advisory_xact_lock key of the writers' lock ("mvpn" in ASCII). */
const WRITE_LOCK = 0x6d76706e;
const CHANNEL = 'mvpn_store';
/**
 * How long the caller waits for one request before declaring the database
 * unresponsive (a hung server, a cut network): well below the daemon's
 * systemd watchdog (60 s), since the caller's thread is blocked meanwhile.
 */
const REQUEST_TIMEOUT_MS = 20_000;
/** How often a blocked request runs the whileBlocked hook. */
const BLOCKED_HOOK_MS = 100;

/**
 * A SQLite migration in PostgreSQL's dialect: INTEGER columns become BIGINT
 * (milliseconds overflow 32 bits), TEXT compares bytewise (COLLATE "C", as
 * SQLite orders), and STRICT (SQLite's type checking) goes; the rest of the
 * DDL is written in the subset both read alike.
 */
export function postgresDdl(sqlite: string): string {
  return sqlite
    .replace(/\)\s*STRICT\s*;/g, ');')
    .replace(/\bINTEGER\b/g, 'BIGINT')
    .replace(/\bTEXT\b/g, 'TEXT COLLATE "C"');
}

export interface PostgresStoreOptions {
  /** Create the schema in an empty database (server init); refuse a database that already holds a store. */
  readonly create?: boolean;
  /** How long a writer waits for another's lock before MVPN_STORE_ERROR. */
  readonly lockTimeoutMs?: number;
  /** How long one request may take before MVPN_STORE_UNREACHABLE (and a new connection). */
  readonly requestTimeoutMs?: number;
  /** How often an idle connection is checked (SELECT 1), and how long it may take to answer before it counts as lost. */
  readonly heartbeatMs?: number;
  /** The connection's application_name (pg_stat_activity): which host and process it is. */
  readonly applicationName?: string;
}

/** The URL without its password, for messages. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'the configured PostgreSQL URL';
  }
}

function storeError(e: WorkerError, where: string): StoreError {
  const cause = new Error(e.message);
  if (e.code === '28P01' || e.code === '28000') {
    return new StoreError('MVPN_STORE_AUTH_FAILED', `PostgreSQL store ${where} refused the login: ${e.message}`, {
      cause,
      hint: 'check the user and password in the store URL or connection file',
    });
  }
  if (e.code === '3D000') {
    return new StoreError('MVPN_STORE_UNREACHABLE', `PostgreSQL store ${where}: ${e.message}`, { cause, hint: 'create the database first (createdb), or fix its name in the URL' });
  }
  if (e.connection) {
    return new StoreError('MVPN_STORE_UNREACHABLE', `cannot reach the PostgreSQL store ${where}: ${e.message}`, {
      cause,
      hint: 'is PostgreSQL running, and is the host/port/socket in the store URL right?',
    });
  }
  if (e.code === '55P03') {
    return new StoreError('MVPN_STORE_ERROR', `state store: ${e.message}`, { cause, hint: 'another mvpn-client call held the store for too long; try again' });
  }
  return new StoreError('MVPN_STORE_ERROR', `state store: ${e.message}${e.detail ? ` (${e.detail})` : ''}`, { cause, context: { sqlstate: e.code } });
}

export class PostgresStore implements Store {
  private worker!: Worker;
  private port!: MessagePort;
  private flag!: Int32Array;
  private readonly counterBuf = new SharedArrayBuffer(4);
  private readonly counter = new Int32Array(this.counterBuf);
  private readonly url: string;
  private readonly lockTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly heartbeatMs: number;
  private readonly applicationName: string;
  private blockedHook: (() => void) | undefined;
  private readonly where: string;
  private readonly tx: StoreTx;
  private inTx = false;
  private closed = false;
  private events!: MessagePort;
  private listener: ((e: StoreEvent) => void) | undefined;

  private constructor(url: string, opts: PostgresStoreOptions) {
    this.url = url;
    this.where = describeUrl(url);
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 10_000;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    this.heartbeatMs = opts.heartbeatMs ?? 10_000;
    this.applicationName = opts.applicationName ?? 'mvpn-server';
    this.spawn();
    const conn: SqlConn = {
      all: (sql, params = {}) => this.query(sql, params).rows as Row[],
      get: (sql, params = {}) => this.query(sql, params).rows[0] as Row | undefined,
      run: (sql, params = {}) => this.query(sql, params).rowCount,
    };
    this.tx = makeSqlTx(conn, () => this.inTx, 'CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)');
  }

  /** A worker with its own connection (and its own reply flag: a replaced worker's late reply cannot touch the new one's). */
  private spawn(replacing = false): void {
    const flag = new SharedArrayBuffer(4);
    this.flag = new Int32Array(flag);
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    const events = new MessageChannel();
    this.events = events.port1;
    this.events.on('message', (e: StoreEvent) => this.listener?.(e));
    // Events are for whoever watches; they do not keep the process alive.
    this.events.unref();
    const workerData: WorkerInit = {
      port: port2,
      events: events.port2,
      flag,
      counter: this.counterBuf,
      connectionString: this.url,
      channel: CHANNEL,
      lockTimeoutMs: this.lockTimeoutMs,
      replacing,
      heartbeatMs: this.heartbeatMs,
      applicationName: this.applicationName,
    };
    const opts = { workerData, transferList: [port2, events.port2] };
    this.worker =
      typeof MVPN_PG_WORKER_SOURCE === 'string'
        ? new Worker(MVPN_PG_WORKER_SOURCE, { ...opts, eval: true })
        : new Worker(new URL('./pg-worker.ts', import.meta.url), opts);
    // The store's own close() ends it; a forgotten store does not keep the process alive.
    this.worker.unref();
    // A worker that died (it should not) leaves its caller waiting: that request times out and a new worker takes over.
    this.worker.on('error', () => undefined);
  }

  /** Connects (MVPN_STORE_UNREACHABLE / MVPN_STORE_AUTH_FAILED when it cannot) and brings the schema up to date. */
  static open(url: string, opts: PostgresStoreOptions = {}): PostgresStore {
    const store = new PostgresStore(url, opts);
    try {
      store.request({ op: 'connect' });
      store.migrate(opts.create === true);
    } catch (err) {
      store.close();
      throw err;
    }
    return store;
  }

  /** Posts a request the worker answers nothing to (see pg-worker.ts). */
  private post(sql: string, tx: TxStep): void {
    if (this.closed) throw new StoreError('MVPN_INTERNAL', 'state store used after close');
    this.port.postMessage({ op: 'exec', sql, tx, reply: false } satisfies WorkerRequest);
  }

  /** Waits for the worker's reply up to requestTimeoutMs, running the whileBlocked hook every BLOCKED_HOOK_MS; false: timed out. */
  private waitForReply(): boolean {
    const started = performance.now();
    for (;;) {
      const left = this.requestTimeoutMs - (performance.now() - started);
      if (left <= 0) return false;
      if (Atomics.wait(this.flag, 0, 0, this.blockedHook ? Math.min(BLOCKED_HOOK_MS, left) : left) !== 'timed-out') return true;
      this.blockedHook?.();
    }
  }

  private request(req: WorkerRequest): Extract<WorkerReply, { ok: true }> {
    if (this.closed) throw new StoreError('MVPN_INTERNAL', 'state store used after close');
    Atomics.store(this.flag, 0, 0);
    this.port.postMessage(req);
    if (!this.waitForReply()) {
      // The connection is stuck (its transaction, if any, is lost with it): a new worker and connection take over.
      this.port.close();
      this.events.close();
      void this.worker.terminate();
      this.spawn(true);
      if (req.op !== 'close') this.port.postMessage({ op: 'connect', reply: false } satisfies WorkerRequest);
      const message = `no answer within ${this.requestTimeoutMs / 1000} s`;
      // After the caller has its error, not inside its (possibly open) transaction.
      setImmediate(() => this.listener?.({ kind: 'lost', message }));
      throw new StoreError('MVPN_STORE_UNREACHABLE', `the PostgreSQL store ${this.where} did not answer within ${this.requestTimeoutMs / 1000} s`, {
        hint: 'is the database host up and reachable? the store reconnects by itself',
      });
    }
    const reply = receiveMessageOnPort(this.port)?.message as WorkerReply | undefined;
    if (!reply) throw new StoreError('MVPN_INTERNAL', 'the PostgreSQL worker signalled without a reply');
    if (!reply.ok) throw storeError(reply.error, this.where);
    return reply;
  }

  private query(sql: string, params: Row): { rows: unknown[]; rowCount: number } {
    return this.request({ op: 'query', sql, params, ...(this.inTx ? { tx: 'in' as const } : {}) });
  }

  private exec(sql: string, tx?: TxStep): void {
    this.request({ op: 'exec', sql, ...(tx ? { tx } : this.inTx ? { tx: 'in' as const } : {}) });
  }

  private begin(write: boolean): void {
    this.post(write ? `BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(${WRITE_LOCK})` : 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', 'begin');
  }

  /** A write's COMMIT, with the NOTIFY the other connections wait for unless `quiet`; waits for the outcome. */
  private commitWrite(quiet = false): void {
    this.exec(quiet ? 'COMMIT' : `NOTIFY ${CHANNEL}; COMMIT`, 'end');
  }

  private rollback(): void {
    if (!this.closed) this.post('ROLLBACK', 'end');
  }

  private migrate(create: boolean): void {
    const version = (): number | undefined => {
      const t = this.query("SELECT to_regclass('schema_version') IS NOT NULL AS present", {}).rows[0] as { present: boolean };
      if (!t.present) return undefined;
      const r = this.query('SELECT version FROM schema_version', {}).rows[0] as { version: number } | undefined;
      return r?.version ?? 0;
    };
    const tooNew = (v: number) =>
      new StoreError('MVPN_STORE_TOO_NEW', `the state store has schema version ${v}, newer than this program knows (${MIGRATIONS.length})`, {
        hint: 'run a newer mvpn-client (every host on this database must run the same or a newer one)',
      });
    const before = version();
    if (before === undefined && !create) {
      throw new StoreError('MVPN_CONFIG_MISSING', `the PostgreSQL database ${this.where} holds no mvpn store`, { hint: 'run `mvpn-client server init --store-url …` first' });
    }
    if (before !== undefined && create) {
      throw new StoreError('MVPN_ALREADY_EXISTS', `the PostgreSQL database ${this.where} already holds an mvpn store (schema version ${before})`, {
        hint: 'give each server its own database; several hosts on one store are not supported yet',
      });
    }
    if (before !== undefined && before > MIGRATIONS.length) throw tooNew(before);
    for (;;) {
      this.begin(true);
      this.inTx = true;
      try {
        this.exec('CREATE TABLE IF NOT EXISTS schema_version (id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)');
        const now = version() ?? 0;
        if (now > MIGRATIONS.length) throw tooNew(now);
        if (now === MIGRATIONS.length) {
          this.exec('COMMIT', 'end');
          return;
        }
        this.exec(postgresDdl(MIGRATIONS[now]!));
        this.query('INSERT INTO schema_version (id, version) VALUES (1, $v) ON CONFLICT (id) DO UPDATE SET version = excluded.version', { v: now + 1 });
        this.commitWrite();
      } catch (err) {
        this.rollback();
        throw err;
      } finally {
        this.inTx = false;
      }
    }
  }

  private run<T>(write: boolean, fn: (tx: StoreTx) => T, quiet = false): T {
    if (this.inTx) throw new StoreError('MVPN_INTERNAL', 'state store transactions do not nest');
    this.begin(write);
    this.inTx = true;
    try {
      const result = fn(this.tx);
      if (result instanceof Promise) throw new StoreError('MVPN_INTERNAL', 'a state store transaction must not be async');
      // A read-only snapshot has nothing to commit that could fail: ending it needs no answer.
      if (write) this.commitWrite(quiet);
      else this.post('COMMIT', 'end');
      return result;
    } catch (err) {
      this.rollback();
      throw err;
    } finally {
      this.inTx = false;
    }
  }

  write<T>(fn: (tx: StoreTx) => T, opts: WriteOptions = {}): T {
    return this.run(true, fn, opts.quiet === true);
  }

  read<T>(fn: (tx: StoreTx) => T): T {
    return this.run(false, fn);
  }

  dataVersion(): number {
    return Atomics.load(this.counter, 0);
  }

  watch(listener: (e: StoreEvent) => void): void {
    this.listener = listener;
  }

  whileBlocked(hook: () => void): void {
    this.blockedHook = hook;
  }

  close(): void {
    if (this.closed) return;
    try {
      this.request({ op: 'close' });
    } catch {
      // closing anyway
    }
    this.closed = true;
    this.listener = undefined;
    this.port.close();
    this.events.close();
    void this.worker.terminate();
  }
}
