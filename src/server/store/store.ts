/**
 * The server's state, behind a narrow interface: the records the operations
 * read and write, and one way to change them — `write(fn)`, which runs `fn`
 * in a single IMMEDIATE transaction (all of it or none of it, and no other
 * writer in between, also across processes).
 *
 * Design note: every operation that needs crypto (a CA, a certificate, a
 * CRL) does that asynchronous work first and then commits in one synchronous
 * transaction that re-checks its preconditions (for example "the CRL number
 * is still N"). If they no longer hold, the transaction throws
 * MVPN_STORE_CONFLICT and the operation prepares again. So a transaction
 * never spans an `await`, which keeps the embedded implementation simple and
 * correct with one connection per process.
 *
 * The interface is synchronous because the embedded store (node:sqlite) is;
 * a networked database would put the same methods behind a driver that can
 * run a transaction synchronously from the caller's view, or this interface
 * grows an async twin. Nothing outside src/server/store knows about SQL.
 */
import type { NetworkOptions } from '../../bundle/schema.ts';

export type NetworkState = 'up' | 'down' | 'deleted';
export type DevType = 'tap' | 'tun';
/** `own`: this server's network (it holds the CA key); `mirror`: a peer's copy of a hub's network (src/server/federation), nothing issuable here. */
export type NetworkKind = 'own' | 'mirror';
export type Proto = 'udp' | 'tcp';
export type KeyOrigin = 'node' | 'central';
export type RevocationReason = 'removed' | 'revoked' | 'superseded';

export interface Remote {
  readonly host: string;
  /** Defaults to the network's port. */
  readonly port?: number | undefined;
}

export interface NetworkRecord {
  readonly id: string;
  readonly name: string;
  readonly kind: NetworkKind;
  readonly devType: DevType;
  readonly proto: Proto;
  readonly port: number;
  /** "a.b.c.d/len" */
  readonly subnet: string;
  readonly state: NetworkState;
  readonly remotes: readonly Remote[];
  readonly keyAlg: string;
  readonly caCertPem: string;
  readonly caKeyPem: string;
  readonly serverCertPem: string;
  readonly serverKeyPem: string;
  readonly tlsCryptV2ServerKey: string;
  readonly crlPem: string;
  readonly crlNumber: number;
  /** ms since the epoch */
  readonly crlNextUpdate: number;
  /** Allocation hint: every address below it has been used (see alloc.ts). */
  readonly allocHint: number;
  /** Prefixes the server pushes routes for and nodes accept (network.json `pushed_routes`); undefined: none, nodes pull no routes. */
  readonly pushedRoutes?: readonly string[] | undefined;
  /** The network's last CA roll (src/server/ops/ca-roll.ts); null/absent: never rolled. */
  readonly caRoll?: CaRollRecord | null | undefined;
  /** network.json fields copied as they are into every node's spec (bundle/schema.ts NetworkOptionsSchema); absent: none set. */
  readonly options?: NetworkOptions | undefined;
  /**
   * The network may run on any of several hosts sharing the store (whichever
   * holds its lease, src/server/lease.ts): its remotes list every host and
   * it gets the failover keepalive (documents.ts). Absent: false.
   */
  readonly failover?: boolean | undefined;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** What a new network is made of; the rest has its default (newNetworkRecord). */
export type NewNetwork = Omit<NetworkRecord, 'kind' | 'state' | 'allocHint' | 'caRoll' | 'createdAt' | 'updatedAt'> & {
  readonly kind?: NetworkRecord['kind'];
  readonly state?: NetworkState;
};

/**
 * The one constructor of a NetworkRecord (a created network, a peer's
 * mirror, the build canary): defaults in one place, so a new field with a
 * default touches no caller. Optional fields left undefined stay absent.
 */
export function newNetworkRecord(init: NewNetwork, now: number): NetworkRecord {
  const { pushedRoutes, options, ...rest } = init;
  return {
    kind: 'own',
    state: 'down',
    ...rest,
    allocHint: 0,
    ...(pushedRoutes === undefined ? {} : { pushedRoutes }),
    ...(options === undefined || Object.keys(options).length === 0 ? {} : { options }),
    createdAt: now,
    updatedAt: now,
  };
}

/**
 * A network CA roll. `caCertPem`/`caKeyPem` of the network are always the
 * CA that issues; during the overlap `prev` is the CA being replaced, which
 * nodes and the openvpn server still trust (and whose server certificate
 * the server keeps presenting), and `crlPem` holds both CAs' CRLs.
 */
export interface CaRollRecord {
  readonly prev: { readonly certPem: string; readonly keyPem: string } | null;
  /** ca-roll.crt for bundles: the cross-certificate (new CA by the old key) and the old CA. Kept after the overlap for nodes that were offline. */
  readonly proofPem: string;
  readonly startedAt: number;
  /** When the overlap ends: the server certificate moves to the new CA and the old CA is dropped. */
  readonly overlapUntil: number;
}

export interface NodeRecord {
  readonly id: string;
  /** SPKI PEM of the key the node enrolled with (made on the node). */
  readonly publicKeyPem: string | null;
  readonly keyAlg: string | null;
  /** API identity certificate (mTLS on the HTTPS API). */
  readonly identityCertPem: string | null;
  readonly identitySerial: string | null;
  /**
   * The identity serial a renewal replaced, still accepted on the API until
   * the node confirms the new one (POST /v1/renew/confirm); null otherwise.
   */
  readonly prevIdentitySerial?: string | null | undefined;
  readonly enrolledAt: number | null;
  /** Membership document: serial, and the issue/expiry times signed into it. */
  readonly docSerial: number;
  readonly docIssuedAt: number;
  readonly docExpiresAt: number;
  readonly createdAt: number;
}

export interface MembershipRecord {
  readonly network: string;
  readonly node: string;
  readonly address: string;
  /** null until the node has a key (enrollment or export). */
  readonly certPem: string | null;
  readonly certSerial: string | null;
  /** The certificate a renewal replaced: not on the CRL until the node confirms the new one (then revoked as superseded). */
  readonly prevCertSerial?: string | null | undefined;
  readonly keyOrigin: KeyOrigin | null;
  /**
   * The node runs a stock openvpn from a standalone profile (`server export
   * --format ovpn`): a central key and no signed updates. Absent: false.
   */
  readonly agentless?: boolean | undefined;
  readonly tlsCryptV2ClientKey: string;
  readonly revoked: boolean;
  /**
   * This node's own ordered remotes for this network, replacing the
   * network's in its bundle (e.g. the ops host's private address for nodes
   * of its own testbed). null/absent: the network's remotes.
   */
  readonly remotes?: readonly Remote[] | null | undefined;
  /** Increases whenever the content of this node's bundle for this network changes. */
  readonly bundleVersion: number;
  readonly bundleCreatedAt: number;
  readonly addedAt: number;
}

export interface TokenRecord {
  /** sha256 (hex) of the token; the token itself is never stored. */
  readonly hash: string;
  readonly node: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly usedAt: number | null;
}

export interface RevocationRecord {
  readonly network: string;
  readonly serial: string;
  readonly node: string;
  readonly address: string | null;
  readonly reason: RevocationReason;
  readonly revokedAt: number;
}

export interface AddressHistoryRecord {
  readonly network: string;
  readonly node: string;
  readonly address: string;
  readonly at: number;
}

/**
 * A server-to-server link as the peer holds it: the network it mirrors (a
 * networks row with the hub's subnet and CA, no CA key) and the link
 * bundle's material (JSON, see src/server/federation/link-bundle.ts).
 */
export interface LinkRecord {
  readonly network: string;
  /** The verified link bundle payload (JSON text). */
  readonly data: string;
  /** The hub's trust anchor: the one the bundle was verified with, then each one its rotation statements led to (followHubAnchor). */
  readonly hubAnchor: string;
  /** Last successful state sync from the hub (ms), 0 if never. */
  readonly syncedAt: number;
  readonly createdAt: number;
  /** ADDR:PORT where the peer relays TCP to the hub's API for the nodes behind it; null = no relay. */
  readonly relayListen: string | null;
}

/** A server host on this store (several on one PostgreSQL, issue 21; SQLite: the one host). */
export interface HostRecord {
  readonly id: string;
  /** Where nodes reach this host's openvpn servers (its config's host names and addresses); a port defaults to the network's. */
  readonly remotes: readonly Remote[];
  readonly joinedAt: number;
}

/**
 * Which host runs a network's openvpn server (src/server/lease.ts). Expiry is
 * on the database's clock; `epoch` grows by one with every new owner and is
 * the fencing token the owner's writes check.
 */
export interface LeaseRecord {
  readonly network: string;
  readonly owner: string;
  readonly epoch: number;
  readonly expiresAt: number;
}

type Patch<T, K extends keyof T> = Partial<Pick<{ -readonly [P in keyof T]: T[P] }, K>>;

export type NetworkPatch = Patch<
  NetworkRecord,
  'name' | 'state' | 'remotes' | 'failover' | 'options' | 'crlPem' | 'crlNumber' | 'crlNextUpdate' | 'allocHint' | 'updatedAt' | 'caCertPem' | 'caKeyPem' | 'serverCertPem' | 'serverKeyPem' | 'caRoll'
>;
export type NodePatch = Patch<
  NodeRecord,
  'publicKeyPem' | 'keyAlg' | 'identityCertPem' | 'identitySerial' | 'prevIdentitySerial' | 'enrolledAt' | 'docSerial' | 'docIssuedAt' | 'docExpiresAt'
>;
export type MembershipPatch = Patch<
  MembershipRecord,
  'certPem' | 'certSerial' | 'prevCertSerial' | 'keyOrigin' | 'agentless' | 'revoked' | 'remotes' | 'bundleVersion' | 'bundleCreatedAt'
>;

export type MemberSummary = Pick<MembershipRecord, 'node' | 'address' | 'revoked' | 'certSerial' | 'prevCertSerial'>;

/**
 * Why client certificates were issued (metrics label `kind`; a fixed set, so
 * the label's cardinality is bounded): enrollment, renewal, a central-key
 * export, a node added to a network after it enrolled (`membership`), a CA
 * roll's re-issue, and a federation link's certificates.
 */
export const ISSUANCE_KINDS = ['enroll', 'renew', 'export', 'membership', 'ca_roll', 'link'] as const;
export type IssuanceKind = (typeof ISSUANCE_KINDS)[number];
/** Monotonic counters kept in the store with the change they count, so CLI operations and the daemon's count alike and survive restarts. */
export type StoreCounter = `issued.${IssuanceKind}` | 'crl.published';

/** What a transaction may do. Reads see the transaction's own writes. */
export interface StoreTx {
  /** The next value of the store-wide sequence (bundle versions, document serials). */
  nextSeq(): number;
  /** Adds `n` (default 1) to a counter; committed or rolled back with the transaction. */
  count(counter: StoreCounter, n?: number): void;
  /** The counters counted so far (one never counted is absent). */
  counters(): Partial<Record<StoreCounter, number>>;

  getNetwork(id: string): NetworkRecord | undefined;
  listNetworks(): NetworkRecord[];
  insertNetwork(rec: NetworkRecord): void;
  updateNetwork(id: string, patch: NetworkPatch): void;
  /** Removes the network and, through foreign keys, its memberships, history and revocations. */
  deleteNetwork(id: string): void;

  getNode(id: string): NodeRecord | undefined;
  listNodes(): NodeRecord[];
  insertNode(rec: NodeRecord): void;
  updateNode(id: string, patch: NodePatch): void;

  getMembership(network: string, node: string): MembershipRecord | undefined;
  listMemberships(filter?: { network?: string; node?: string }): MembershipRecord[];
  insertMembership(rec: MembershipRecord): void;
  updateMembership(network: string, node: string, patch: MembershipPatch): void;
  deleteMembership(network: string, node: string): void;

  /** Members of a network without their key material (cheap for network-wide changes and the daemon's passes). */
  memberAddresses(network: string): MemberSummary[];
  /** Allocation lookups, each one indexed query. */
  isAddressTaken(network: string, address: string): boolean;
  wasAddressUsed(network: string, address: string): boolean;
  previousAddress(network: string, node: string): string | undefined;
  recordAddress(rec: AddressHistoryRecord): void;

  getToken(hash: string): TokenRecord | undefined;
  insertToken(rec: TokenRecord): void;
  markTokenUsed(hash: string, at: number): void;
  /** Drops a node's unused tokens (revocation); returns how many. */
  dropUnusedTokens(node: string): number;

  listRevocations(network: string): RevocationRecord[];
  insertRevocation(rec: RevocationRecord): void;

  getLink(network: string): LinkRecord | undefined;
  listLinks(): LinkRecord[];
  insertLink(rec: LinkRecord): void;
  setLinkSynced(network: string, at: number): void;
  setLinkAnchor(network: string, hubAnchor: string): void;
  deleteLink(network: string): void;

  listHosts(): HostRecord[];
  /** Adds the host, or updates its remotes. */
  putHost(rec: HostRecord): void;
  listLeases(): LeaseRecord[];
  /**
   * Renews `host`'s unexpired lease on `network`, or takes the lease when it
   * has none or it expired (the epoch then grows by one), until the
   * database's now + `ttlMs`. Returns the epoch held, or undefined while
   * another host's lease has not expired.
   */
  claimLease(network: string, host: string, ttlMs: number): number | undefined;
  /** `host` holds `network`'s lease at `epoch` and it has not expired (the database's clock): the fencing check. */
  holdsLease(network: string, host: string, epoch: number): boolean;
  /** Ends `host`'s lease on `network` now, so another host need not wait for it to expire. */
  releaseLease(network: string, host: string): void;
}

export interface WriteOptions {
  /**
   * Commit without telling the other connections (PostgreSQL's NOTIFY, the
   * dataVersion they poll): for a write no other host reacts to. Only the
   * lease pass (lease.ts) is one — every host renews its leases every 2 s and
   * each host runs its own pass on its own timer, so a notice would only make
   * every other daemon reconcile every 2 s for nothing. SQLite: no effect.
   */
  readonly quiet?: boolean;
}

export interface Store {
  /** Runs `fn` in one IMMEDIATE transaction; commits if it returns, rolls back if it throws. Not reentrant. */
  write<T>(fn: (tx: StoreTx) => T, opts?: WriteOptions): T;
  /** Runs `fn` on one consistent snapshot (read-only use of `tx`). */
  read<T>(fn: (tx: StoreTx) => T): T;
  /**
   * A number that changes when another connection (a CLI call, another
   * process) commits. Cheap; the daemon polls it about once a second.
   */
  dataVersion(): number;
  /**
   * A store on a database server (PostgreSQL) tells when another connection
   * committed (at once, not at the next dataVersion poll) and when its
   * connection is lost and back. Listeners run on the event loop; there is
   * one (the daemon's). SQLite has no such thing: a file is never away.
   */
  watch?(listener: (e: StoreEvent) => void): void;
  /**
   * A store on a database server blocks the thread while a request is out
   * (up to its request timeout, 20 s). `hook` runs about every 100 ms
   * meanwhile, synchronously: the daemon stops there, by pid, a network
   * whose local lease deadline passed (daemon.ts fenceOverdue), which its
   * event loop cannot do while blocked. Requests are never cut short for it.
   */
  whileBlocked?(hook: () => void): void;
  close(): void;
}

export type StoreEvent =
  | { readonly kind: 'changed' }
  /** The connection broke; calls fail with MVPN_STORE_UNREACHABLE until it is back (reconnecting with backoff). */
  | { readonly kind: 'lost'; readonly message: string }
  | { readonly kind: 'back'; readonly downMs: number };
