/**
 * The one StoreTx implementation, for both engines: every statement the
 * store runs, written once in the SQL subset SQLite and PostgreSQL read
 * alike, over an engine's SqlConn (sqlite.ts, postgres.ts), and the row
 * mappers between table rows and records.
 */
import type { SQLInputValue } from 'node:sqlite';
import type { NetworkOptions } from '../../bundle/schema.ts';
import { StoreError } from '../../errors.ts';
import type {
  CaRollRecord,
  MembershipPatch,
  MembershipRecord,
  NetworkPatch,
  NetworkRecord,
  NodePatch,
  NodeRecord,
  HostRecord,
  LeaseRecord,
  LinkRecord,
  RevocationRecord,
  StoreTx,
  TokenRecord,
} from './store.ts';
export type Row = Record<string, SQLInputValue>;

/**
 * What the shared StoreTx implementation (makeSqlTx) needs from an engine:
 * run one statement with `$name` parameters. The SQL below is written once,
 * in the subset SQLite and PostgreSQL read alike; src/server/store/postgres.ts
 * runs the same text there.
 */
export interface SqlConn {
  all(sql: string, params?: Row): Row[];
  get(sql: string, params?: Row): Row | undefined;
  /** Returns how many rows changed. */
  run(sql: string, params?: Row): number;
}

const str = (v: unknown): string => v as string;
const num = (v: unknown): number => v as number;
const strOrNull = (v: unknown): string | null => (v === null ? null : (v as string));
const numOrNull = (v: unknown): number | null => (v === null ? null : (v as number));

function toNetwork(r: Row): NetworkRecord {
  return {
    id: str(r['id']),
    name: str(r['name']),
    kind: str(r['kind']) as NetworkRecord['kind'],
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
    caRoll: r['ca_roll'] === null || r['ca_roll'] === undefined ? null : (JSON.parse(str(r['ca_roll'])) as CaRollRecord),
    ...(r['options'] === null || r['options'] === undefined ? {} : { options: JSON.parse(str(r['options'])) as NetworkOptions }),
    ...(r['failover'] === 1 ? { failover: true } : {}),
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
  failover: 'failover',
  options: 'options',
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

function updateRow(conn: SqlConn, table: string, columns: Record<string, string>, where: Row, patch: Record<string, unknown>): void {
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
  conn.run(`UPDATE ${table} SET ${sets.join(', ')} WHERE ${conds.join(' AND ')}`, params);
}

/** The StoreTx of either engine over `conn`; `inTx` says whether a transaction is open (writes outside one are refused). */
/**
 * `nowSql`: the engine's expression for the database's clock in ms since the
 * epoch; leases expire on it, never on a host's clock.
 */
export function makeSqlTx(conn: SqlConn, inTx: () => boolean, nowSql: string): StoreTx {
  const all = (sql: string, params: Row = {}) => conn.all(sql, params);
  const get = (sql: string, params: Row = {}) => conn.get(sql, params);
  const exec = (sql: string, params: Row = {}) => conn.run(sql, params);
  const guard = () => {
    if (!inTx()) throw new StoreError('MVPN_INTERNAL', 'state store used outside a transaction');
  };
  return {
    nextSeq: () => {
      guard();
      exec("UPDATE meta SET value = value + 1 WHERE key = 'seq'");
      return num(get("SELECT value FROM meta WHERE key = 'seq'")!['value']);
    },
    // Counters share the meta table (key "count:<counter>"): no migration, and a store without them reads as zero.
    count: (counter, n = 1) => {
      guard();
      exec('INSERT INTO meta (key, value) VALUES ($key, $n) ON CONFLICT (key) DO UPDATE SET value = meta.value + $n', { key: `count:${counter}`, n });
    },
    counters: () =>
      Object.fromEntries(all("SELECT key, value FROM meta WHERE key LIKE 'count:%'").map((r) => [String(r['key']).slice('count:'.length), num(r['value'])])),

    getNetwork: (id) => {
      const r = get('SELECT * FROM networks WHERE id = $id', { id });
      return r && toNetwork(r);
    },
    listNetworks: () => all('SELECT * FROM networks ORDER BY id').map(toNetwork),
    insertNetwork: (n) => {
      guard();
      exec(
        `INSERT INTO networks (id, name, kind, dev_type, proto, port, subnet, state, remotes, key_alg, ca_cert, ca_key, server_cert, server_key,
           tls_crypt_v2_server_key, crl, crl_number, crl_next_update, alloc_hint, pushed_routes, options, failover, created_at, updated_at)
         VALUES ($id, $name, $kind, $dev_type, $proto, $port, $subnet, $state, $remotes, $key_alg, $ca_cert, $ca_key, $server_cert, $server_key,
           $tc, $crl, $crl_number, $crl_next_update, $alloc_hint, $pushed_routes, $options, $failover, $created_at, $updated_at)`,
        {
          id: n.id,
          name: n.name,
          kind: n.kind,
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
          options: n.options === undefined || Object.keys(n.options).length === 0 ? null : JSON.stringify(n.options),
          failover: n.failover === true ? 1 : 0,
          created_at: n.createdAt,
          updated_at: n.updatedAt,
        },
      );
    },
    updateNetwork: (id, patch) => {
      guard();
      updateRow(conn, 'networks', NETWORK_COLUMNS, { id }, patch);
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
      updateRow(conn, 'nodes', NODE_COLUMNS, { id }, patch);
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
      updateRow(conn, 'memberships', MEMBERSHIP_COLUMNS, { network, node }, patch);
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
      return exec('DELETE FROM tokens WHERE node = $node AND used_at IS NULL', { node });
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
    setLinkAnchor: (network, hubAnchor) => {
      guard();
      exec('UPDATE links SET hub_anchor = $anchor WHERE network = $network', { network, anchor: hubAnchor });
    },
    deleteLink: (network) => {
      guard();
      exec('DELETE FROM links WHERE network = $network', { network });
    },

    listHosts: () => all('SELECT * FROM hosts ORDER BY joined_at, id').map(toHost),
    putHost: (h) => {
      guard();
      exec('INSERT INTO hosts (id, remotes, joined_at) VALUES ($id, $remotes, $at) ON CONFLICT (id) DO UPDATE SET remotes = excluded.remotes', {
        id: h.id,
        remotes: JSON.stringify(h.remotes),
        at: h.joinedAt,
      });
    },
    listLeases: () => all('SELECT * FROM leases ORDER BY network').map(toLease),
    claimLease: (network, host, ttlMs) => {
      guard();
      const p = { network, host, ttl: ttlMs };
      // Writers are serialised (store.ts), so these three cannot interleave with another host's.
      if (exec(`INSERT INTO leases (network, owner, epoch, expires_at) VALUES ($network, $host, 1, ${nowSql} + $ttl) ON CONFLICT (network) DO NOTHING`, p) === 1) return 1;
      const renewed = exec(`UPDATE leases SET expires_at = ${nowSql} + $ttl WHERE network = $network AND owner = $host AND expires_at > ${nowSql}`, p) === 1;
      const taken = !renewed && exec(`UPDATE leases SET owner = $host, epoch = epoch + 1, expires_at = ${nowSql} + $ttl WHERE network = $network AND expires_at <= ${nowSql}`, p) === 1;
      if (!renewed && !taken) return undefined;
      return num(get('SELECT epoch FROM leases WHERE network = $network', { network })!['epoch']);
    },
    holdsLease: (network, host, epoch) =>
      get(`SELECT 1 AS held FROM leases WHERE network = $network AND owner = $host AND epoch = $epoch AND expires_at > ${nowSql}`, { network, host, epoch }) !== undefined,
    releaseLease: (network, host) => {
      guard();
      exec(`UPDATE leases SET expires_at = ${nowSql} WHERE network = $network AND owner = $host AND expires_at > ${nowSql}`, { network, host });
    },
  };
}

function toHost(r: Row): HostRecord {
  return { id: str(r['id']), remotes: JSON.parse(str(r['remotes'])) as HostRecord['remotes'], joinedAt: num(r['joined_at']) };
}

function toLease(r: Row): LeaseRecord {
  return { network: str(r['network']), owner: str(r['owner']), epoch: num(r['epoch']), expiresAt: num(r['expires_at']) };
}
