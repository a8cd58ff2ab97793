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
import { DatabaseSync, type SQLInputValue } from 'node:sqlite';
import { StoreError } from '../../errors.ts';
import type {
  CaRollRecord,
  MembershipPatch,
  MembershipRecord,
  NetworkPatch,
  NetworkRecord,
  NodePatch,
  NodeRecord,
  LinkRecord,
  RevocationRecord,
  Store,
  StoreTx,
  TokenRecord,
} from './store.ts';

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
  // 10: the LAN's MTU (NULL = a network made before it existed: no tun-mtu, no fragmentation)
  `
  ALTER TABLE networks ADD COLUMN mtu INTEGER;
  `,
];

export interface SqliteStoreOptions {
  /** How long a writer waits for another's lock before MVPN_STORE_ERROR. */
  readonly busyTimeoutMs?: number;
  /** Create the file if missing (server init); otherwise it must exist. */
  readonly create?: boolean;
}

type Row = Record<string, SQLInputValue>;

function wrap(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const e = err as { message?: string; errcode?: number };
  const busy = e.errcode === 5 || e.errcode === 6; // SQLITE_BUSY, SQLITE_LOCKED
  return new StoreError('MVPN_STORE_ERROR', `state store: ${what} failed: ${e.message ?? String(err)}`, {
    cause: err,
    ...(busy ? { hint: 'another mvpn-client call held the store for too long; try again' } : {}),
  });
}

const str = (v: unknown): string => v as string;
const num = (v: unknown): number => v as number;
const strOrNull = (v: unknown): string | null => (v === null ? null : (v as string));
const numOrNull = (v: unknown): number | null => (v === null ? null : (v as number));

function toNetwork(r: Row): NetworkRecord {
  return {
    id: str(r['id']),
    name: str(r['name']),
    devType: str(r['dev_type']) as NetworkRecord['devType'],
    proto: str(r['proto']) as NetworkRecord['proto'],
    port: num(r['port']),
    subnet: str(r['subnet']),
    state: str(r['state']) as NetworkRecord['state'],
    remotes: JSON.parse(str(r['remotes'])) as NetworkRecord['remotes'],
    keyAlg: str(r['key_alg']),
    caCertPem: str(r['ca_cert']),
    caKeyPem: str(r['ca_key']),
    serverCertPem: str(r['server_cert']),
    serverKeyPem: str(r['server_key']),
    tlsCryptV2ServerKey: str(r['tls_crypt_v2_server_key']),
    crlPem: str(r['crl']),
    crlNumber: num(r['crl_number']),
    crlNextUpdate: num(r['crl_next_update']),
    allocHint: num(r['alloc_hint']),
    ...(r['pushed_routes'] === null || r['pushed_routes'] === undefined ? {} : { pushedRoutes: JSON.parse(str(r['pushed_routes'])) as string[] }),
    ...(r['mtu'] === null || r['mtu'] === undefined ? {} : { mtu: num(r['mtu']) }),
    caRoll: r['ca_roll'] === null || r['ca_roll'] === undefined ? null : (JSON.parse(str(r['ca_roll'])) as CaRollRecord),
    createdAt: num(r['created_at']),
    updatedAt: num(r['updated_at']),
  };
}

function toNode(r: Row): NodeRecord {
  return {
    id: str(r['id']),
    publicKeyPem: strOrNull(r['public_key']),
    keyAlg: strOrNull(r['key_alg']),
    identityCertPem: strOrNull(r['identity_cert']),
    identitySerial: strOrNull(r['identity_serial']),
    prevIdentitySerial: strOrNull(r['prev_identity_serial'] ?? null),
    enrolledAt: numOrNull(r['enrolled_at']),
    docSerial: num(r['doc_serial']),
    docIssuedAt: num(r['doc_issued_at']),
    docExpiresAt: num(r['doc_expires_at']),
    createdAt: num(r['created_at']),
  };
}

function toMembership(r: Row): MembershipRecord {
  return {
    network: str(r['network']),
    node: str(r['node']),
    address: str(r['address']),
    certPem: strOrNull(r['cert']),
    certSerial: strOrNull(r['cert_serial']),
    prevCertSerial: strOrNull(r['prev_cert_serial'] ?? null),
    keyOrigin: strOrNull(r['key_origin']) as MembershipRecord['keyOrigin'],
    agentless: r['agentless'] === 1,
    tlsCryptV2ClientKey: str(r['tls_crypt_v2_client_key']),
    revoked: r['revoked'] === 1,
    remotes: r['remotes'] == null ? null : (JSON.parse(str(r['remotes'])) as MembershipRecord['remotes']),
    bundleVersion: num(r['bundle_version']),
    bundleCreatedAt: num(r['bundle_created_at']),
    addedAt: num(r['added_at']),
  };
}

function toToken(r: Row): TokenRecord {
  return {
    hash: str(r['hash']),
    node: str(r['node']),
    createdAt: num(r['created_at']),
    expiresAt: num(r['expires_at']),
    usedAt: numOrNull(r['used_at']),
  };
}

function toLink(r: Row): LinkRecord {
  return {
    network: str(r['network']),
    data: str(r['data']),
    hubAnchor: str(r['hub_anchor']),
    syncedAt: num(r['synced_at']),
    createdAt: num(r['created_at']),
    relayListen: strOrNull(r['relay_listen']),
  };
}

function toRevocation(r: Row): RevocationRecord {
  return {
    network: str(r['network']),
    serial: str(r['serial']),
    node: str(r['node']),
    address: strOrNull(r['address']),
    reason: str(r['reason']) as RevocationRecord['reason'],
    revokedAt: num(r['revoked_at']),
  };
}

/** Column names of each record field that a patch may set. */
const NETWORK_COLUMNS: Record<keyof NetworkPatch, string> = {
  name: 'name',
  state: 'state',
  remotes: 'remotes',
  crlPem: 'crl',
  crlNumber: 'crl_number',
  caCertPem: 'ca_cert',
  caKeyPem: 'ca_key',
  serverCertPem: 'server_cert',
  serverKeyPem: 'server_key',
  caRoll: 'ca_roll',
  crlNextUpdate: 'crl_next_update',
  allocHint: 'alloc_hint',
  updatedAt: 'updated_at',
};
const NODE_COLUMNS: Record<keyof NodePatch, string> = {
  publicKeyPem: 'public_key',
  keyAlg: 'key_alg',
  identityCertPem: 'identity_cert',
  identitySerial: 'identity_serial',
  prevIdentitySerial: 'prev_identity_serial',
  enrolledAt: 'enrolled_at',
  docSerial: 'doc_serial',
  docIssuedAt: 'doc_issued_at',
  docExpiresAt: 'doc_expires_at',
};
const MEMBERSHIP_COLUMNS: Record<keyof MembershipPatch, string> = {
  certPem: 'cert',
  certSerial: 'cert_serial',
  prevCertSerial: 'prev_cert_serial',
  keyOrigin: 'key_origin',
  agentless: 'agentless',
  revoked: 'revoked',
  remotes: 'remotes',
  bundleVersion: 'bundle_version',
  bundleCreatedAt: 'bundle_created_at',
};

function sqlValue(v: unknown): SQLInputValue {
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (Array.isArray(v) || (v !== null && typeof v === 'object')) return JSON.stringify(v);
  return v as SQLInputValue;
}

export class SqliteStore implements Store {
  private readonly db: DatabaseSync;
  private inTx = false;
  private readonly tx: StoreTx;
  private readonly stmts = new Map<string, ReturnType<DatabaseSync['prepare']>>();

  private constructor(db: DatabaseSync) {
    this.db = db;
    this.tx = this.makeTx();
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
        throw new StoreError('MVPN_STORE_ERROR', `the state store has schema version ${version}, newer than this program knows (${MIGRATIONS.length})`, {
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

  private update(table: string, columns: Record<string, string>, where: Row, patch: Record<string, unknown>): void {
    const keys = Object.keys(patch).filter((k) => patch[k] !== undefined);
    if (keys.length === 0) return;
    const sets = keys.map((k) => {
      const col = columns[k];
      if (!col) throw new StoreError('MVPN_INTERNAL', `state store: ${table}.${k} cannot be patched`);
      return `${col} = $p_${k}`;
    });
    const params: Row = {};
    for (const k of keys) params[`p_${k}`] = sqlValue(patch[k]);
    const conds = Object.keys(where).map((k) => `${k} = $w_${k}`);
    for (const [k, v] of Object.entries(where)) params[`w_${k}`] = v;
    this.stmt(`UPDATE ${table} SET ${sets.join(', ')} WHERE ${conds.join(' AND ')}`).run(params);
  }

  private makeTx(): StoreTx {
    const all = (sql: string, params: Row = {}) => this.stmt(sql).all(params) as Row[];
    const get = (sql: string, params: Row = {}) => this.stmt(sql).get(params) as Row | undefined;
    const exec = (sql: string, params: Row = {}) => this.stmt(sql).run(params);
    const guard = () => {
      if (!this.inTx) throw new StoreError('MVPN_INTERNAL', 'state store used outside a transaction');
    };
    return {
      nextSeq: () => {
        guard();
        exec("UPDATE meta SET value = value + 1 WHERE key = 'seq'");
        return num(get("SELECT value FROM meta WHERE key = 'seq'")!['value']);
      },

      getNetwork: (id) => {
        const r = get('SELECT * FROM networks WHERE id = $id', { id });
        return r && toNetwork(r);
      },
      listNetworks: () => all('SELECT * FROM networks ORDER BY id').map(toNetwork),
      insertNetwork: (n) => {
        guard();
        exec(
          `INSERT INTO networks (id, name, dev_type, proto, port, subnet, state, remotes, key_alg, ca_cert, ca_key, server_cert, server_key,
             tls_crypt_v2_server_key, crl, crl_number, crl_next_update, alloc_hint, pushed_routes, mtu, created_at, updated_at)
           VALUES ($id, $name, $dev_type, $proto, $port, $subnet, $state, $remotes, $key_alg, $ca_cert, $ca_key, $server_cert, $server_key,
             $tc, $crl, $crl_number, $crl_next_update, $alloc_hint, $pushed_routes, $mtu, $created_at, $updated_at)`,
          {
            id: n.id,
            name: n.name,
            dev_type: n.devType,
            proto: n.proto,
            port: n.port,
            subnet: n.subnet,
            state: n.state,
            remotes: JSON.stringify(n.remotes),
            key_alg: n.keyAlg,
            ca_cert: n.caCertPem,
            ca_key: n.caKeyPem,
            server_cert: n.serverCertPem,
            server_key: n.serverKeyPem,
            tc: n.tlsCryptV2ServerKey,
            crl: n.crlPem,
            crl_number: n.crlNumber,
            crl_next_update: n.crlNextUpdate,
            alloc_hint: n.allocHint,
            pushed_routes: n.pushedRoutes === undefined ? null : JSON.stringify(n.pushedRoutes),
            mtu: n.mtu ?? null,
            created_at: n.createdAt,
            updated_at: n.updatedAt,
          },
        );
      },
      updateNetwork: (id, patch) => {
        guard();
        this.update('networks', NETWORK_COLUMNS, { id }, patch);
      },
      deleteNetwork: (id) => {
        guard();
        exec('DELETE FROM networks WHERE id = $id', { id });
      },

      getNode: (id) => {
        const r = get('SELECT * FROM nodes WHERE id = $id', { id });
        return r && toNode(r);
      },
      listNodes: () => all('SELECT * FROM nodes ORDER BY id').map(toNode),
      insertNode: (n) => {
        guard();
        exec(
          `INSERT INTO nodes (id, public_key, key_alg, identity_cert, identity_serial, enrolled_at, doc_serial, doc_issued_at, doc_expires_at, created_at)
           VALUES ($id, $pk, $alg, $ic, $is, $ea, $ds, $di, $de, $ca)`,
          {
            id: n.id,
            pk: n.publicKeyPem,
            alg: n.keyAlg,
            ic: n.identityCertPem,
            is: n.identitySerial,
            ea: n.enrolledAt,
            ds: n.docSerial,
            di: n.docIssuedAt,
            de: n.docExpiresAt,
            ca: n.createdAt,
          },
        );
      },
      updateNode: (id, patch) => {
        guard();
        this.update('nodes', NODE_COLUMNS, { id }, patch);
      },

      getMembership: (network, node) => {
        const r = get('SELECT * FROM memberships WHERE network = $network AND node = $node', { network, node });
        return r && toMembership(r);
      },
      listMemberships: (filter = {}) => {
        if (filter.network !== undefined && filter.node !== undefined) {
          return all('SELECT * FROM memberships WHERE network = $network AND node = $node', { network: filter.network, node: filter.node }).map(toMembership);
        }
        if (filter.network !== undefined) return all('SELECT * FROM memberships WHERE network = $network ORDER BY node', { network: filter.network }).map(toMembership);
        if (filter.node !== undefined) return all('SELECT * FROM memberships WHERE node = $node ORDER BY network', { node: filter.node }).map(toMembership);
        return all('SELECT * FROM memberships ORDER BY network, node').map(toMembership);
      },
      insertMembership: (m) => {
        guard();
        exec(
          `INSERT INTO memberships (network, node, address, cert, cert_serial, key_origin, agentless, tls_crypt_v2_client_key, revoked, remotes, bundle_version, bundle_created_at, added_at)
           VALUES ($network, $node, $address, $cert, $serial, $origin, $agentless, $tc, $revoked, $remotes, $bv, $bc, $added)`,
          {
            network: m.network,
            node: m.node,
            address: m.address,
            cert: m.certPem,
            serial: m.certSerial,
            origin: m.keyOrigin,
            agentless: m.agentless ? 1 : 0,
            tc: m.tlsCryptV2ClientKey,
            revoked: m.revoked ? 1 : 0,
            remotes: m.remotes ? JSON.stringify(m.remotes) : null,
            bv: m.bundleVersion,
            bc: m.bundleCreatedAt,
            added: m.addedAt,
          },
        );
      },
      updateMembership: (network, node, patch) => {
        guard();
        this.update('memberships', MEMBERSHIP_COLUMNS, { network, node }, patch);
      },
      deleteMembership: (network, node) => {
        guard();
        exec('DELETE FROM memberships WHERE network = $network AND node = $node', { network, node });
      },

      memberAddresses: (network) =>
        all('SELECT node, address, revoked, cert_serial, prev_cert_serial FROM memberships WHERE network = $network ORDER BY node', { network }).map((r) => ({
          node: str(r['node']),
          address: str(r['address']),
          revoked: r['revoked'] === 1,
          certSerial: strOrNull(r['cert_serial']),
          prevCertSerial: strOrNull(r['prev_cert_serial']),
        })),
      isAddressTaken: (network, address) => get('SELECT 1 AS x FROM memberships WHERE network = $network AND address = $address', { network, address }) !== undefined,
      wasAddressUsed: (network, address) =>
        get('SELECT 1 AS x FROM address_history WHERE network = $network AND address = $address LIMIT 1', { network, address }) !== undefined,
      previousAddress: (network, node) => {
        const r = get('SELECT address FROM address_history WHERE network = $network AND node = $node ORDER BY at DESC, address LIMIT 1', { network, node });
        return r === undefined ? undefined : str(r['address']);
      },
      recordAddress: (h) => {
        guard();
        exec(
          `INSERT INTO address_history (network, node, address, at) VALUES ($network, $node, $address, $at)
           ON CONFLICT (network, address, node) DO UPDATE SET at = excluded.at`,
          { network: h.network, node: h.node, address: h.address, at: h.at },
        );
      },

      getToken: (hash) => {
        const r = get('SELECT * FROM tokens WHERE hash = $hash', { hash });
        return r && toToken(r);
      },
      insertToken: (t) => {
        guard();
        exec('INSERT INTO tokens (hash, node, created_at, expires_at, used_at) VALUES ($hash, $node, $c, $e, $u)', {
          hash: t.hash,
          node: t.node,
          c: t.createdAt,
          e: t.expiresAt,
          u: t.usedAt,
        });
      },
      markTokenUsed: (hash, at) => {
        guard();
        exec('UPDATE tokens SET used_at = $at WHERE hash = $hash', { hash, at });
      },
      dropUnusedTokens: (node) => {
        guard();
        return Number(exec('DELETE FROM tokens WHERE node = $node AND used_at IS NULL', { node }).changes);
      },

      listRevocations: (network) => all('SELECT * FROM revocations WHERE network = $network ORDER BY revoked_at, serial', { network }).map(toRevocation),
      insertRevocation: (r) => {
        guard();
        exec(
          `INSERT INTO revocations (network, serial, node, address, reason, revoked_at) VALUES ($network, $serial, $node, $address, $reason, $at)
           ON CONFLICT (network, serial) DO NOTHING`,
          { network: r.network, serial: r.serial, node: r.node, address: r.address, reason: r.reason, at: r.revokedAt },
        );
      },

      getLink: (network) => {
        const r = get('SELECT * FROM links WHERE network = $network', { network });
        return r && toLink(r);
      },
      listLinks: () => all('SELECT * FROM links ORDER BY network').map(toLink),
      insertLink: (l) => {
        guard();
        exec('INSERT INTO links (network, data, hub_anchor, synced_at, created_at, relay_listen) VALUES ($network, $data, $anchor, $synced, $created, $relay)', {
          network: l.network,
          data: l.data,
          anchor: l.hubAnchor,
          synced: l.syncedAt,
          created: l.createdAt,
          relay: l.relayListen,
        });
      },
      setLinkSynced: (network, at) => {
        guard();
        exec('UPDATE links SET synced_at = $at WHERE network = $network', { network, at });
      },
      deleteLink: (network) => {
        guard();
        exec('DELETE FROM links WHERE network = $network', { network });
      },
    };
  }
}
