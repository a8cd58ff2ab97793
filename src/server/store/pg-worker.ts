/**
 * The PostgreSQL store's connection, in a worker thread of its own (see
 * postgres.ts): the main thread posts one request, blocks on Atomics.wait,
 * and reads the reply with receiveMessageOnPort. Between requests this
 * thread's event loop is free, so LISTEN notifications from other
 * connections arrive here at any time and bump the shared change counter,
 * which the main thread reads without a round trip (Store.dataVersion).
 *
 * One connection, reconnected by itself when lost (PostgreSQL restarted,
 * network cut): after 250 ms, doubling up to 2 s between tries (a refused
 * connection costs next to nothing; a longer wait would only delay hearing
 * changes again), until it is back, then LISTEN again and bump the counter,
 * since changes may have been missed meanwhile. A request meanwhile tries to connect once and fails at
 * once if it cannot (no waiting for the next try). A transaction never
 * survives a reconnection: a request inside one is refused on another
 * connection than its BEGIN's.
 *
 * An idle connection is checked every `heartbeatMs` with `SELECT 1`
 * (between requests): one that does not answer within as long (a hung or
 * cut-off database host, which TCP would take hours to notice while we only
 * LISTEN) counts as lost, so notifications are never silently gone.
 *
 * Besides replies, the worker posts StoreEvents on a port of their own
 * (`events`): another connection's commit (the NOTIFY), the connection lost,
 * and back. The main thread hears them on its event loop, between requests.
 *
 * Requests run one after the other, in order. Some need no reply (`reply:
 * false`: BEGIN, a read's COMMIT, ROLLBACK), which saves the caller a thread
 * hop; if such a BEGIN fails, the next request answers with its error.
 *
 * Imports only node built-ins and `pg`: scripts/bundle.mjs bundles this file
 * on its own into a string the executable evaluates as a worker.
 */
import { workerData, type MessagePort } from 'node:worker_threads';
import pg from 'pg';
import type { StoreEvent } from './store.ts';

export interface WorkerInit {
  readonly port: MessagePort;
  /** StoreEvents for the main thread's event loop. */
  readonly events: MessagePort;
  /** Int32 [0]: reply ready (0/1); this worker's alone. */
  readonly flag: SharedArrayBuffer;
  /** Int32 [0]: change counter; the store's, kept across workers. */
  readonly counter: SharedArrayBuffer;
  readonly connectionString: string;
  readonly channel: string;
  readonly lockTimeoutMs: number;
  /** This worker replaces one whose request timed out: the connection counts as lost until this one connects. */
  readonly replacing: boolean;
  /** How often an idle connection is checked, and how long its answer may take. */
  readonly heartbeatMs: number;
  readonly applicationName: string;
}

export type WorkerRequest =
  | { readonly op: 'connect'; readonly reply?: false }
  /** Simple-protocol text (several statements allowed, no parameters). */
  | { readonly op: 'exec'; readonly sql: string; readonly tx?: TxStep; readonly reply?: false }
  /** One statement with `$name` parameters. */
  | { readonly op: 'query'; readonly sql: string; readonly params: Record<string, unknown>; readonly tx?: 'in' }
  | { readonly op: 'close' };

/** Where a request stands in a transaction: its BEGIN, inside it, its COMMIT or ROLLBACK. */
export type TxStep = 'begin' | 'in' | 'end';

export interface WorkerError {
  readonly message: string;
  /** SQLSTATE (PostgreSQL) or errno code (ECONNREFUSED, ENOENT, …). */
  readonly code?: string | undefined;
  readonly detail?: string | undefined;
  /** The connection was lost (or never made). */
  readonly connection: boolean;
}

export type WorkerReply =
  | { readonly ok: true; readonly rows: Record<string, unknown>[]; readonly rowCount: number }
  | { readonly ok: false; readonly error: WorkerError };

// Integers: the store's BIGINT columns hold milliseconds and counters, all below 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (v: string) => Number(v));

const init = workerData as WorkerInit;
const flag = new Int32Array(init.flag);
const counter = new Int32Array(init.counter);
let client: pg.Client | null = null;
let epoch = 0;
let closing = false;
let retry: NodeJS.Timeout | null = null;
/** Failed reconnection tries in a row (the backoff's exponent). */
let tries = 0;
/** When the connection was lost (undefined: connected, or never connected yet). */
let downSince: number | undefined = init.replacing ? Date.now() : undefined;
/** The connection the open transaction began on. */
let txEpoch: number | undefined;
/** The error of a request that had no reply, for the next one. */
let deferred: WorkerError | undefined;
const positional = new Map<string, { text: string; names: string[] }>();

/** `$name` parameters → `$1…` and the names in order (cached per statement text). */
function toPositional(sql: string): { text: string; names: string[] } {
  let p = positional.get(sql);
  if (!p) {
    const names: string[] = [];
    const text = sql.replace(/\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, name: string) => {
      let i = names.indexOf(name);
      if (i < 0) i = names.push(name) - 1;
      return `$${i + 1}`;
    });
    p = { text, names };
    positional.set(sql, p);
  }
  return p;
}

function emit(e: StoreEvent): void {
  init.events.postMessage(e);
}

/** The connection is gone (or a replacement could not make one): say so once, then keep trying. */
function down(message: string): void {
  if (closing) return;
  if (downSince === undefined) {
    downSince = Date.now();
    emit({ kind: 'lost', message });
  }
  scheduleReconnect();
}

function lost(c: pg.Client, err?: Error): void {
  if (client !== c) return;
  client = null;
  c.removeAllListeners('notification');
  void c.end().catch(() => undefined);
  down(err?.message ?? 'the server closed the connection');
}

function scheduleReconnect(): void {
  if (retry !== null || closing) return;
  const delay = Math.min(2_000, 250 * 2 ** tries);
  retry = setTimeout(() => {
    retry = null;
    if (client !== null) return; // a request connected meanwhile
    connect().catch((err: unknown) => {
      tries++;
      down((err as Error).message);
    });
  }, delay);
}

async function connect(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: init.connectionString, connectionTimeoutMillis: 10_000, keepAlive: true, application_name: init.applicationName });
  c.on('error', (err) => lost(c, err));
  c.on('end', () => lost(c));
  try {
    await c.connect();
    await c.query(`SET lock_timeout = ${Math.trunc(init.lockTimeoutMs)}; LISTEN ${init.channel}`);
  } catch (err) {
    c.removeAllListeners('end');
    await c.end().catch(() => undefined);
    throw err;
  }
  const own = (c as unknown as { processID: number }).processID;
  c.on('notification', (n) => {
    // Our own commits are not changes by "another connection" (as SQLite's data_version).
    if (n.processId !== own) changed();
  });
  client = c;
  epoch++;
  tries = 0;
  if (retry !== null) clearTimeout(retry);
  retry = null;
  if (downSince !== undefined) {
    emit({ kind: 'back', downMs: Date.now() - downSince });
    downSince = undefined;
    changed(); // changes made while we were away were not notified
  }
  return c;
}

function changed(): void {
  Atomics.add(counter, 0, 1);
  emit({ kind: 'changed' });
}

/** SQLSTATEs that mean the server went away, not that the statement was wrong: connection exceptions, shutdown, starting up. */
const CONNECTION_STATES = /^(08...|57P0[1-3])$/;

function toError(err: unknown, connection: boolean): WorkerError {
  const e = err as { message?: string; code?: string; detail?: string };
  return { message: e.message ?? String(err), code: e.code, detail: e.detail, connection: connection || CONNECTION_STATES.test(e.code ?? '') };
}

const LOST: WorkerError = { message: 'the connection to PostgreSQL was lost during the transaction', code: 'ECONNRESET', connection: true };
const done: WorkerReply = { ok: true, rows: [], rowCount: 0 };

async function handle(req: WorkerRequest): Promise<WorkerReply> {
  if (req.op === 'close') {
    closing = true;
    if (retry !== null) clearTimeout(retry);
    const c = client;
    client = null;
    await c?.end().catch(() => undefined);
    return done;
  }
  if (req.op === 'connect') {
    try {
      if (client === null) await connect();
      return done;
    } catch (err) {
      return { ok: false, error: toError(err, true) };
    }
  }
  const step = req.tx;
  if (deferred !== undefined) {
    const error = deferred;
    deferred = undefined;
    if (step === 'end' && client !== null && txEpoch === epoch) await client.query(req.sql).catch(() => undefined);
    if (step === 'end') txEpoch = undefined;
    return { ok: false, error };
  }
  if ((step === 'in' || step === 'end') && (client === null || txEpoch !== epoch)) {
    if (step === 'end') txEpoch = undefined;
    return { ok: false, error: LOST };
  }
  let c = client;
  if (c === null) {
    try {
      c = await connect();
    } catch (err) {
      return { ok: false, error: toError(err, true) };
    }
  }
  if (step === 'begin') txEpoch = epoch;
  try {
    if (req.op === 'exec') {
      await c.query(req.sql);
      return done;
    }
    const { text, names } = toPositional(req.sql);
    const values = names.map((n) => {
      if (!(n in req.params)) throw new Error(`statement parameter $${n} has no value`);
      return req.params[n];
    });
    const r = await c.query({ text, values });
    return { ok: true, rows: r.rows as Record<string, unknown>[], rowCount: r.rowCount ?? 0 };
  } catch (err) {
    return { ok: false, error: toError(err, client !== c) };
  } finally {
    if (step === 'end') txEpoch = undefined;
  }
}

let queue = Promise.resolve();
let busy = 0;

/** One `SELECT 1` on the idle connection; no answer within heartbeatMs: lost (and a new connection). */
async function heartbeat(): Promise<void> {
  const c = client;
  if (c === null || busy > 0 || txEpoch !== undefined) return;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), init.heartbeatMs)));
  const answered = c.query('SELECT 1').then(
    () => 'ok' as const,
    () => 'ok' as const, // a broken connection reports itself through 'error'/'end'
  );
  const r = await Promise.race([answered, timedOut]);
  clearTimeout(timer);
  if (r === 'timeout') {
    lost(c, new Error(`no answer to a keepalive query within ${init.heartbeatMs / 1000} s`));
    // end() waits for a peer that does not answer: drop the socket too.
    (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  }
}
setInterval(() => {
  queue = queue.then(heartbeat);
}, init.heartbeatMs).unref();

init.port.on('message', (req: WorkerRequest) => {
  busy++;
  queue = queue.then(async () => {
    const reply = await handle(req);
    if (req.op === 'connect' && req.reply === false) {
      // A replacement worker (postgres.ts): connect now, so LISTEN is back before anyone asks.
      if (!reply.ok) down(reply.error.message);
      else changed();
      return;
    }
    if (req.op === 'exec' && req.reply === false) {
      // A failed BEGIN answers the next request; a read's COMMIT or a ROLLBACK has nothing to tell.
      if (!reply.ok && req.tx === 'begin') deferred = reply.error;
      return;
    }
    init.port.postMessage(reply);
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
  }).finally(() => busy--);
});
