/**
 * The embedded store: one SQLite file (node:sqlite), WAL so the daemon reads
 * while a CLI call writes, `busy_timeout` so concurrent writers wait instead
 * of failing, foreign keys on, and versioned schema migrations applied each
 * in its own transaction.
 *
 * Writers always take the write lock up front (BEGIN IMMEDIATE): a deferred
 * transaction that upgrades from read to write can fail with SQLITE_BUSY
 * without waiting, which is exactly the two-CLI-calls-at-once case.
 *
 * Keys at rest: CA keys, server keys and tls-crypt-v2 keys are stored in
 * this file. It is created 0600 inside the 0700 state directory (SQLite gives
 * its -wal and -shm files the database file's mode).
 */
import { closeSync, existsSync, openSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { StoreError } from '../../errors.ts';
import { makeSqlTx, type Row, type SqlConn } from './sql-tx.ts';
import type { Store, StoreTx } from './store.ts';

/** Schema versions, in order; `PRAGMA user_version` is how many are applied. Never edit one that shipped; append. */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
  INSERT INTO meta (key, value) VALUES ('seq', 0);

  CREATE TABLE networks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    dev_type TEXT NOT NULL CHECK (dev_type IN ('tap', 'tun')),
    proto TEXT NOT NULL CHECK (proto IN ('udp', 'tcp')),
    port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    subnet TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('up', 'down', 'deleted')),
    remotes TEXT NOT NULL,
    key_alg TEXT NOT NULL,
    ca_cert TEXT NOT NULL,
    ca_key TEXT NOT NULL,
    server_cert TEXT NOT NULL,
    server_key TEXT NOT NULL,
    tls_crypt_v2_server_key TEXT NOT NULL,
    crl TEXT NOT NULL,
    crl_number INTEGER NOT NULL,
    crl_next_update INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  ) STRICT;
  -- a deleted network keeps its row (history) but gives its port back
  CREATE UNIQUE INDEX networks_live_port ON networks (port) WHERE state <> 'deleted';

  CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    public_key TEXT,
    key_alg TEXT,
    identity_cert TEXT,
    identity_serial TEXT,
    enrolled_at INTEGER,
    doc_serial INTEGER NOT NULL,
    doc_issued_at INTEGER NOT NULL,
    doc_expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE memberships (
    network TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    node TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    cert TEXT,
    cert_serial TEXT,
    key_origin TEXT CHECK (key_origin IN ('node', 'central')),
    tls_crypt_v2_client_key TEXT NOT NULL,
    revoked INTEGER NOT NULL CHECK (revoked IN (0, 1)),
    bundle_version INTEGER NOT NULL,
    bundle_created_at INTEGER NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (network, node)
  ) STRICT;
  CREATE UNIQUE INDEX memberships_address ON memberships (network, address);
  CREATE INDEX memberships_node ON memberships (node);

  CREATE TABLE address_history (
    network TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    node TEXT NOT NULL,
    address TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (network, address, node)
  ) STRICT;

  CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    node TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
  ) STRICT;
  CREATE INDEX tokens_node ON tokens (node);

  CREATE TABLE revocations (
    network TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    serial TEXT NOT NULL,
    node TEXT NOT NULL,
    address TEXT,
    reason TEXT NOT NULL CHECK (reason IN ('removed', 'revoked', 'superseded')),
    revoked_at INTEGER NOT NULL,
    PRIMARY KEY (network, serial)
  ) STRICT;
  `,
  // 2: O(1) address allocation (a hint per network, an index for a node's previous address)
  `
  ALTER TABLE networks ADD COLUMN alloc_hint INTEGER NOT NULL DEFAULT 0;
  CREATE INDEX address_history_node ON address_history (network, node, at);
  `,
  // 3: per-node remotes (JSON list, NULL = the network's remotes)
  `
  ALTER TABLE memberships ADD COLUMN remotes TEXT;
  `,
  // 4: server-to-server links held by a peer (one per mirrored network)
  `
  CREATE TABLE links (
    network TEXT PRIMARY KEY REFERENCES networks (id) ON DELETE CASCADE,
    data TEXT NOT NULL,
    hub_anchor TEXT NOT NULL,
    synced_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT;
  `,
  // 5: a peer's API relay for the nodes behind it (ADDR:PORT it listens on, NULL = none)
  `
  ALTER TABLE links ADD COLUMN relay_listen TEXT;
  `,
  // 6: automatic renewal: the identity serial and network certificate serials a renewal replaced, kept valid until the node confirms the new ones
  `
  ALTER TABLE nodes ADD COLUMN prev_identity_serial TEXT;
  ALTER TABLE memberships ADD COLUMN prev_cert_serial TEXT;
  `,
  // 7: prefixes a network pushes routes for (JSON list, NULL = no pushed routes)
  `
  ALTER TABLE networks ADD COLUMN pushed_routes TEXT;
  `,
  // 8: a network CA roll (JSON, NULL = the network never rolled its CA)
  `
  ALTER TABLE networks ADD COLUMN ca_roll TEXT;
  `,
  // 9: agentless members (standalone openvpn profile: central key, no signed updates)
  `
  ALTER TABLE memberships ADD COLUMN agentless INTEGER NOT NULL DEFAULT 0 CHECK (agentless IN (0, 1));
  `,
  // 10: what a network is: this server's own, or a peer's mirror of a hub's network (until now: an empty ca_key)
  `
  ALTER TABLE networks ADD COLUMN kind TEXT NOT NULL DEFAULT 'own' CHECK (kind IN ('own', 'mirror'));
  UPDATE networks SET kind = 'mirror' WHERE ca_key = '';
  `,
  // 11: network.json fields copied as they are into every node's spec (JSON object, NULL = none); a new one needs no migration
  `
  ALTER TABLE networks ADD COLUMN options TEXT;
  `,
  // 12: several server hosts on one store (issue 21): the hosts, and which one runs each network (a lease on the database's clock, epoch = fencing token)
  `
  CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    remotes TEXT NOT NULL,
    joined_at INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE leases (
    network TEXT PRIMARY KEY REFERENCES networks (id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  ) STRICT;
  ALTER TABLE networks ADD COLUMN failover INTEGER NOT NULL DEFAULT 0 CHECK (failover IN (0, 1));
  `,
];

export interface SqliteStoreOptions {
  /** How long a writer waits for another's lock before MVPN_STORE_ERROR. */
  readonly busyTimeoutMs?: number;
  /** Create the file if missing (server init); otherwise it must exist. */
  readonly create?: boolean;
}

function wrap(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const e = err as { message?: string; errcode?: number };
  const busy = e.errcode === 5 || e.errcode === 6; // SQLITE_BUSY, SQLITE_LOCKED
  return new StoreError('MVPN_STORE_ERROR', `state store: ${what} failed: ${e.message ?? String(err)}`, {
    cause: err,
    ...(busy ? { hint: 'another mvpn-client call held the store for too long; try again' } : {}),
  });
}

export class SqliteStore implements Store {
  private readonly db: DatabaseSync;
  private inTx = false;
  private readonly tx: StoreTx;
  private readonly stmts = new Map<string, ReturnType<DatabaseSync['prepare']>>();

  private constructor(db: DatabaseSync) {
    this.db = db;
    const conn: SqlConn = {
      all: (sql, params = {}) => this.stmt(sql).all(params) as Row[],
      get: (sql, params = {}) => this.stmt(sql).get(params) as Row | undefined,
      run: (sql, params = {}) => Number(this.stmt(sql).run(params).changes),
    };
    this.tx = makeSqlTx(conn, () => this.inTx, "CAST(unixepoch('subsec') * 1000 AS INTEGER)");
  }

  /** Opens (or with `create`, creates) the store and brings its schema up to date. */
  static open(path: string, opts: SqliteStoreOptions = {}): SqliteStore {
    if (opts.create) {
      // Create the file 0600 ourselves: SQLite would use the umask.
      closeSync(openSync(path, 'a', 0o600));
    } else if (!existsSync(path)) {
      throw new StoreError('MVPN_CONFIG_MISSING', `the state store ${path} does not exist`, { hint: 'run `mvpn-client server init` first' });
    }
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path, {
        open: true,
        enableForeignKeyConstraints: true,
        timeout: opts.busyTimeoutMs ?? 10_000,
      });
    } catch (err) {
      throw wrap(err, `opening ${path}`);
    }
    const store = new SqliteStore(db);
    try {
      db.exec('PRAGMA journal_mode = WAL');
      db.exec('PRAGMA synchronous = FULL');
      db.exec('PRAGMA foreign_keys = ON');
      store.migrate();
    } catch (err) {
      db.close();
      throw wrap(err, `preparing ${path}`);
    }
    return store;
  }

  private migrate(): void {
    for (;;) {
      const version = Number((this.db.prepare('PRAGMA user_version').get() as Row)['user_version']);
      if (version > MIGRATIONS.length) {
        throw new StoreError('MVPN_STORE_TOO_NEW', `the state store has schema version ${version}, newer than this program knows (${MIGRATIONS.length})`, {
          hint: 'run a newer mvpn-client, or restore the state directory from a backup made with this version',
        });
      }
      if (version === MIGRATIONS.length) return;
      this.db.exec('BEGIN IMMEDIATE');
      try {
        // Re-read inside the lock: another process may have migrated meanwhile.
        const now = Number((this.db.prepare('PRAGMA user_version').get() as Row)['user_version']);
        if (now === version) {
          this.db.exec(MIGRATIONS[version]!);
          this.db.exec(`PRAGMA user_version = ${version + 1}`);
        }
        this.db.exec('COMMIT');
      } catch (err) {
        this.db.exec('ROLLBACK');
        throw err;
      }
    }
  }

  private stmt(sql: string): ReturnType<DatabaseSync['prepare']> {
    let s = this.stmts.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }

  private run<T>(mode: 'IMMEDIATE' | 'DEFERRED', fn: (tx: StoreTx) => T): T {
    if (this.inTx) throw new StoreError('MVPN_INTERNAL', 'state store transactions do not nest');
    try {
      this.db.exec(`BEGIN ${mode}`);
    } catch (err) {
      throw wrap(err, 'starting a transaction');
    }
    this.inTx = true;
    try {
      const result = fn(this.tx);
      if (result instanceof Promise) throw new StoreError('MVPN_INTERNAL', 'a state store transaction must not be async');
      this.db.exec('COMMIT');
      return result;
    } catch (err) {
      try {
        this.db.exec('ROLLBACK');
      } catch {
        // the transaction is already gone (SQLite rolled it back itself)
      }
      throw err instanceof StoreError || (err as { code?: unknown }).code !== 'ERR_SQLITE_ERROR' ? err : wrap(err, 'a transaction');
    } finally {
      this.inTx = false;
    }
  }

  write<T>(fn: (tx: StoreTx) => T): T {
    return this.run('IMMEDIATE', fn);
  }

  read<T>(fn: (tx: StoreTx) => T): T {
    return this.run('DEFERRED', fn);
  }

  dataVersion(): number {
    return Number((this.stmt('PRAGMA data_version').get() as Row)['data_version']);
  }

  close(): void {
    this.stmts.clear();
    if (this.db.isOpen) this.db.close();
  }
}
