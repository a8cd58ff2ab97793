/**
 * Nodes and memberships: add (with a given or allocated address), remove,
 * revoke, enrollment tokens.
 *
 * remove vs revoke: `remove` takes a node out of a network (its certificate
 * goes on the CRL, its address is free again, adding it later gives it the
 * same address if still free). `revoke` keeps the membership but marks it
 * revoked (certificate on the CRL, address stays reserved, no bundle); to
 * let the node back in, remove it and add it again. Revoking without a
 * network revokes every membership and the node's API identity and drops its
 * unused tokens, so it must enroll again with a new token.
 *
 * The running daemon sees every change within about a second (it polls the
 * store's data_version), rewrites the CRL and ccd files and kills the
 * affected sessions (`client-kill ID RESTART`, so the client reconnects at
 * once; `kill CN` only where openvpn reports no client id).
 */
import { createHash, randomBytes } from 'node:crypto';
import { isMvpnError, MvpnError, StoreError, UsageError } from '../../errors.ts';
import { NODE_ID_RE } from '../../bundle/schema.ts';
import { wrapTlsCryptV2ClientKey } from '../../pki/tls-crypt-v2.ts';
import { allocateAddress, intToIp, ipToInt, parseCidr } from '../alloc.ts';
import { issueNodeCert } from '../pki-service.ts';
import type { MembershipRecord, NetworkRecord, NodeRecord, Remote, RevocationRecord, StoreTx } from '../store/store.ts';
import { applyCrl, Bumps, conflict, DAY, nowOf, planCrl, withRetry, type CrlPlan, type ServerContext } from './context.ts';
import { checkNetworkId, parseRemote } from './networks.ts';
import { mapLimit } from '../../util/concurrency.ts';
import { isMirror, isPeerNode, mirrorRefusal } from '../federation/mirror.ts';

/** Internal callers (links) may use the reserved `mvpn-peer-` node ids. */
export interface ReservedOk {
  readonly allowReserved?: boolean;
}

function checkNotReserved(node: string, opts: ReservedOk): void {
  if (isPeerNode(node) && !opts.allowReserved) {
    throw new UsageError(`node id ${JSON.stringify(node)} is reserved for server-to-server links`, { hint: 'use `mvpn-client server link …`' });
  }
}

/** CNs, file names in client-config-dir, agent node ids: at most 63 characters (X.509 CN limit is 64). */
export function checkNodeId(id: string): void {
  if (!NODE_ID_RE.test(id) || id.length > 63) {
    throw new UsageError(`node id ${JSON.stringify(id)} is not valid: a letter or digit, then up to 62 letters, digits, ".", "_" or "-"`, {
      context: { node: id },
    });
  }
}

function notFound(what: string, context: Record<string, string>): StoreError {
  return new StoreError('MVPN_NOT_FOUND', what, { context });
}

function liveNetwork(tx: StoreTx, id: string): NetworkRecord {
  const net = tx.getNetwork(id);
  if (!net) throw notFound(`no network ${id}`, { network: id });
  if (isMirror(net)) throw mirrorRefusal(id);
  if (net.state === 'deleted') throw new StoreError('MVPN_STORE_CONFLICT', `network ${id} is deleted`, { context: { network: id } });
  return net;
}

/** A network that may be deleted but is not a mirror (removal and revocation need the CA key). */
function liveOrDeleted(tx: StoreTx, id: string): void {
  const net = tx.getNetwork(id);
  if (net && isMirror(net)) throw mirrorRefusal(id);
}

export interface AddNodeInput {
  readonly node: string;
  readonly network: string;
  readonly address?: string | undefined;
  /** This node's own remotes ("HOST[:PORT]", in order), replacing the network's in its bundle. */
  readonly remotes?: readonly string[] | undefined;
}

/** Parses and checks a per-node remotes list the way network remotes are checked (1 to 8, HOST[:PORT]). */
export function parseNodeRemotes(texts: readonly string[], network: string, node: string): Remote[] {
  if (texts.length === 0) throw new UsageError(`node ${node} in ${network}: give at least one --remote, or --clear to use the network's`);
  if (texts.length > 8) throw new UsageError(`node ${node} in ${network}: at most 8 remotes`);
  return texts.map(parseRemote);
}

/** Adds a node to a network (creating the node record if new). */
export async function addNode(ctx: ServerContext, input: AddNodeInput, opts: ReservedOk = {}): Promise<MembershipRecord> {
  return (await addNodes(ctx, [input], opts))[0]!;
}

/** Most memberships one `addNodes` / `exportNodes` call takes (one transaction; a testbed swap-in is a few thousand at most). */
export const MAX_BATCH = 10_000;

/** Checks a batch's size and that no (node, network) pair appears twice; `what` names the operation. */
export function checkBatch(items: readonly { node: string; network: string }[], what: string): void {
  if (items.length === 0) throw new UsageError(`${what}: no nodes given`);
  if (items.length > MAX_BATCH) throw new UsageError(`${what}: ${items.length} nodes in one call; at most ${MAX_BATCH}, split the list`);
  const seen = new Set<string>();
  for (const it of items) {
    const k = `${it.network}\0${it.node}`;
    if (seen.has(k)) throw new UsageError(`${what}: node ${it.node} is given twice for network ${it.network}`, { context: { node: it.node, network: it.network } });
    seen.add(k);
  }
}

/**
 * An error from one node of a batch, with that node and network in its
 * message and context; the same code, so scripts branch the same way.
 * Single-node calls keep the original error.
 */
export function inBatch(err: unknown, size: number, node: string, network: string): unknown {
  if (size <= 1 || !isMvpnError(err) || err.context['batchNode'] !== undefined) return err;
  return new MvpnError(err.code, `node ${node} in ${network}: ${err.message}`, {
    context: { ...err.context, node, network, batchNode: node },
    cause: err,
    ...(err.hint === undefined ? {} : { hint: err.hint }),
  });
}

/**
 * Adds several nodes (each to its network) in ONE transaction: all of them
 * or none. Every input is checked before anything is prepared, so a bad id
 * or address fails the whole call with an error naming that node, and the
 * transaction re-checks everything the preparation read (a concurrent CLI
 * call that added one of the nodes meanwhile makes it prepare again, then
 * fail with MVPN_ALREADY_EXISTS naming the node). Addresses are allocated
 * in input order inside the transaction, so a batch gives the same
 * addresses as the same adds one after the other. One version bump for the
 * whole batch (one sequence number), one fsync'd commit.
 */
export async function addNodes(ctx: ServerContext, inputs: readonly AddNodeInput[], opts: ReservedOk = {}): Promise<MembershipRecord[]> {
  const n = inputs.length;
  checkBatch(inputs, 'node add');
  const checked = inputs.map((input) => {
    try {
      checkNodeId(input.node);
      checkNotReserved(input.node, opts);
      checkNetworkId(input.network);
      const requested = input.address === undefined ? undefined : ipToInt(input.address);
      const remotes = input.remotes?.length ? parseNodeRemotes(input.remotes, input.network, input.node) : null;
      return { input, requested, remotes };
    } catch (err) {
      throw inBatch(err, n, input.node, input.network);
    }
  });
  return withRetry(async () => {
    const { nets, nodes } = ctx.store.read((tx) => {
      const ns = new Map<string, NetworkRecord>();
      const nodeRecs = new Map<string, NodeRecord | undefined>();
      for (const { input } of checked) {
        try {
          if (!ns.has(input.network)) ns.set(input.network, liveNetwork(tx, input.network));
          const m = tx.getMembership(input.network, input.node);
          if (m) throw membershipExists(m);
        } catch (err) {
          throw inBatch(err, n, input.node, input.network);
        }
        if (!nodeRecs.has(input.node)) nodeRecs.set(input.node, tx.getNode(input.node));
      }
      return { nets: ns, nodes: nodeRecs };
    });
    const now = nowOf(ctx);
    const prepared = await mapLimit(checked, 8, async (c) => {
      const net = nets.get(c.input.network)!;
      const node = nodes.get(c.input.node);
      const tlsCryptV2ClientKey = wrapTlsCryptV2ClientKey(net.tlsCryptV2ServerKey, undefined, { now: new Date(now) });
      const cert = node?.publicKeyPem ? await issueNodeCert(net, c.input.node, node.publicKeyPem, now, ctx.config.cert_days) : undefined;
      return { ...c, net, node, tlsCryptV2ClientKey, cert };
    });
    return ctx.store.write((tx) => {
      const bumps = new Bumps();
      for (const p of prepared) {
        try {
          insertMembership(tx, ctx, p, now);
        } catch (err) {
          throw inBatch(err, n, p.input.node, p.input.network);
        }
        bumps.membership(p.input.network, p.input.node);
      }
      bumps.apply(tx, now, ctx.config.membership_days);
      tx.count('issued.membership', prepared.filter((p) => p.cert !== undefined).length);
      return prepared.map((p) => tx.getMembership(p.input.network, p.input.node)!);
    });
  });
}

/** One membership of addNodes, inside its transaction, after re-checking what was prepared. */
function insertMembership(
  tx: StoreTx,
  ctx: ServerContext,
  p: {
    input: AddNodeInput;
    requested: number | undefined;
    remotes: Remote[] | null;
    net: NetworkRecord;
    node: NodeRecord | undefined;
    tlsCryptV2ClientKey: string;
    cert: { certPem: string; serialHex: string } | undefined;
  },
  now: number,
): void {
  const { input, net, node, cert, requested } = p;
  const n = liveNetwork(tx, input.network);
  if (n.tlsCryptV2ServerKey !== net.tlsCryptV2ServerKey || n.caCertPem !== net.caCertPem) throw conflict(`network ${input.network}`);
  const existing = tx.getMembership(input.network, input.node);
  if (existing) throw membershipExists(existing);
  const current = tx.getNode(input.node);
  if ((current?.publicKeyPem ?? null) !== (node?.publicKeyPem ?? null)) throw conflict(`node ${input.node}`);
  if (!current) {
    tx.insertNode({
      id: input.node,
      publicKeyPem: null,
      keyAlg: null,
      identityCertPem: null,
      identitySerial: null,
      enrolledAt: null,
      docSerial: 0,
      docIssuedAt: now,
      docExpiresAt: now,
      createdAt: now,
    });
  }
  const prev = tx.previousAddress(input.network, input.node);
  const alloc = allocateAddress(
    parseCidr(n.subnet),
    {
      taken: (ip) => tx.isAddressTaken(input.network, intToIp(ip)),
      everUsed: (ip) => tx.wasAddressUsed(input.network, intToIp(ip)),
      previous: prev === undefined ? undefined : ipToInt(prev),
      freshFrom: n.allocHint,
    },
    requested,
  );
  const address = alloc.address;
  if (alloc.fresh && requested === undefined) tx.updateNetwork(input.network, { allocHint: address + 1 });
  const rec: MembershipRecord = {
    network: input.network,
    node: input.node,
    address: intToIp(address),
    certPem: cert?.certPem ?? null,
    certSerial: cert?.serialHex ?? null,
    keyOrigin: cert ? 'node' : null,
    tlsCryptV2ClientKey: p.tlsCryptV2ClientKey,
    revoked: false,
    remotes: p.remotes,
    bundleVersion: 0,
    bundleCreatedAt: now,
    addedAt: now,
  };
  tx.insertMembership(rec);
  tx.recordAddress({ network: input.network, node: input.node, address: rec.address, at: now });
}

function membershipExists(m: MembershipRecord): StoreError {
  return new StoreError('MVPN_ALREADY_EXISTS', `node ${m.node} is already in network ${m.network}${m.revoked ? ' (revoked)' : ''}`, {
    context: { node: m.node, network: m.network, address: m.address },
    ...(m.revoked ? { hint: `remove it first: mvpn-client server node remove ${m.node} --network ${m.network}` } : {}),
  });
}

/** Revocation records and CRL plans for the certificates of `memberships`. */
async function planRevocations(
  ctx: ServerContext,
  memberships: readonly MembershipRecord[],
  reason: RevocationRecord['reason'],
  now: number,
): Promise<CrlPlan[]> {
  const plans: CrlPlan[] = [];
  for (const m of memberships) {
    if (m.revoked) continue; // nothing (new) to put on the CRL
    const serials = certSerialsOf(m);
    if (serials.length === 0) continue;
    const { net, recorded } = ctx.store.read((tx) => ({ net: tx.getNetwork(m.network)!, recorded: tx.listRevocations(m.network) }));
    const recs = serials.map((serial): RevocationRecord => ({ network: m.network, serial, node: m.node, address: m.address, reason, revokedAt: now }));
    plans.push(await planCrl(net, recorded, recs, now, ctx.config.crl_days));
  }
  return plans;
}

function sameMembership(a: MembershipRecord | undefined, b: MembershipRecord): boolean {
  return a !== undefined && a.certSerial === b.certSerial && (a.prevCertSerial ?? null) === (b.prevCertSerial ?? null) && a.revoked === b.revoked;
}

/**
 * Every certificate of a membership that still opens the network: the
 * current one and, during an unconfirmed renewal (ops/renew.ts), the one it
 * replaced. Whatever revokes or supersedes a membership revokes both.
 */
export function certSerialsOf(m: Pick<MembershipRecord, 'certSerial' | 'prevCertSerial'>): string[] {
  return [m.certSerial, m.prevCertSerial ?? null].filter((s): s is string => s !== null);
}

function sameRemotes(a: readonly Remote[] | null | undefined, b: readonly Remote[] | null): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b);
}

/**
 * Sets (or with `null`, clears) a node's own remotes in a network. The
 * node's bundle gets a new version only when the list actually changes, so
 * repeating the same call (a script re-applying a plan) is a no-op.
 */
export function setNodeRemotes(ctx: ServerContext, node: string, network: string, texts: readonly string[] | null): { membership: MembershipRecord; changed: boolean } {
  checkNodeId(node);
  checkNetworkId(network);
  const remotes = texts === null ? null : parseNodeRemotes(texts, network, node);
  const now = nowOf(ctx);
  return ctx.store.write((tx) => {
    liveNetwork(tx, network);
    const m = tx.getMembership(network, node);
    if (!m) throw notFound(`node ${node} is not in network ${network}`, { node, network });
    if (sameRemotes(m.remotes, remotes)) return { membership: m, changed: false };
    tx.updateMembership(network, node, { remotes });
    new Bumps().membership(network, node).apply(tx, now, ctx.config.membership_days);
    return { membership: tx.getMembership(network, node)!, changed: true };
  });
}

/** Takes a node out of a network: certificate on the CRL, membership gone, address free. */
export async function removeNode(ctx: ServerContext, node: string, network: string, opts: ReservedOk = {}): Promise<MembershipRecord> {
  checkNodeId(node);
  checkNotReserved(node, opts);
  checkNetworkId(network);
  return withRetry(async () => {
    const m = ctx.store.read((tx) => {
      liveOrDeleted(tx, network);
      return tx.getMembership(network, node);
    });
    if (!m) throw notFound(`node ${node} is not in network ${network}`, { node, network });
    const now = nowOf(ctx);
    const plans = await planRevocations(ctx, [m], 'removed', now);
    return ctx.store.write((tx) => {
      if (!sameMembership(tx.getMembership(network, node), m)) throw conflict(`membership of ${node} in ${network}`);
      const bumps = new Bumps().doc(node);
      for (const p of plans) applyCrl(tx, p, bumps, now);
      tx.deleteMembership(network, node);
      bumps.apply(tx, now, ctx.config.membership_days);
      return m;
    });
  });
}

/**
 * Revokes a node in one network, or (network undefined) everywhere plus its
 * API identity. Returns the memberships that were revoked now.
 */
export async function revokeNode(ctx: ServerContext, node: string, network?: string): Promise<{ revoked: MembershipRecord[]; identity: boolean }> {
  checkNodeId(node);
  if (network !== undefined) checkNetworkId(network);
  return withRetry(async () => {
    const { n, targets } = ctx.store.read((tx) => {
      if (network !== undefined) liveOrDeleted(tx, network);
      const mirrors = new Set(tx.listNetworks().filter(isMirror).map((x) => x.id));
      // A mirror's copies are the hub's to revoke; revoking everywhere here leaves them alone.
      return { n: tx.getNode(node), targets: tx.listMemberships(network === undefined ? { node } : { node, network }).filter((m) => !mirrors.has(m.network)) };
    });
    if (!n) throw notFound(`no node ${node}`, { node });
    if (network !== undefined && targets.length === 0) throw notFound(`node ${node} is not in network ${network}`, { node, network });
    const now = nowOf(ctx);
    const plans = await planRevocations(ctx, targets, 'revoked', now);
    return ctx.store.write((tx) => {
      for (const t of targets) if (!sameMembership(tx.getMembership(t.network, t.node), t)) throw conflict(`membership of ${node} in ${t.network}`);
      const bumps = new Bumps().doc(node);
      for (const p of plans) applyCrl(tx, p, bumps, now);
      const revoked: MembershipRecord[] = [];
      for (const t of targets) {
        if (t.revoked) continue;
        tx.updateMembership(t.network, t.node, { revoked: true, prevCertSerial: null });
        revoked.push({ ...t, revoked: true });
      }
      let identity = false;
      if (network === undefined) {
        identity = tx.getNode(node)?.identitySerial != null;
        tx.updateNode(node, { publicKeyPem: null, keyAlg: null, identityCertPem: null, identitySerial: null, prevIdentitySerial: null });
        tx.dropUnusedTokens(node);
      }
      bumps.apply(tx, now, ctx.config.membership_days);
      return { revoked, identity };
    });
  });
}

export interface NodeListEntry {
  readonly node: NodeRecord;
  readonly memberships: readonly MembershipRecord[];
}

export function listNodes(ctx: ServerContext, network?: string): NodeListEntry[] {
  if (network !== undefined) checkNetworkId(network);
  return ctx.store.read((tx) => {
    if (network !== undefined && !tx.getNetwork(network)) throw notFound(`no network ${network}`, { network });
    const nodes = tx.listNodes();
    const memberships = tx.listMemberships(network === undefined ? {} : { network });
    const byNode = new Map<string, MembershipRecord[]>();
    for (const m of memberships) byNode.set(m.node, [...(byNode.get(m.node) ?? []), m]);
    return nodes
      .filter((n) => network === undefined || byNode.has(n.id))
      .map((n) => ({ node: n, memberships: byNode.get(n.id) ?? [] }));
  });
}

/** "30m", "24h", "7d", "3600s" → ms (1 minute to `maxDays`, 30 by default); `flag` names the option in the error. */
export function parseTtl(text: string, flag = '--ttl', maxDays = 30): number {
  const m = /^([0-9]{1,6})([smhd])$/.exec(text);
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: DAY } as const;
  const ms = m ? Number(m[1]) * unit[m[2] as keyof typeof unit] : NaN;
  if (!m || ms < 60_000 || ms > maxDays * DAY) {
    throw new UsageError(`${flag} ${JSON.stringify(text)}: expected a duration from 1m to ${maxDays}d, like 30m, 24h or 7d`);
  }
  return ms;
}

export function tokenHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Token text: a fixed prefix (so it is recognisable in a leak scan) and 256 random bits. */
export const TOKEN_RE = /^mvpn1_[A-Za-z0-9_-]{43}$/;

/** A one-time enrollment token for a known node. Only its sha256 is stored. */
export function createToken(ctx: ServerContext, node: string, ttlMs: number): { token: string; expiresAt: number } {
  checkNodeId(node);
  const token = `mvpn1_${randomBytes(32).toString('base64url')}`;
  const now = nowOf(ctx);
  const expiresAt = now + ttlMs;
  ctx.store.write((tx) => {
    if (!tx.getNode(node)) throw notFound(`no node ${node}`, { node });
    tx.insertToken({ hash: tokenHash(token), node, createdAt: now, expiresAt, usedAt: null });
  });
  return { token, expiresAt };
}

/** A remote as given (port only when the node's list names one; the network's port applies otherwise). */
function remoteView(r: Remote): Record<string, unknown> {
  return r.port === undefined ? { host: r.host } : { host: r.host, port: r.port };
}

export function membershipView(m: MembershipRecord): Record<string, unknown> {
  return {
    node: m.node,
    network: m.network,
    address: m.address,
    state: m.revoked ? 'revoked' : m.certPem === null ? 'pending' : 'active',
    key_origin: m.keyOrigin,
    agentless: m.agentless === true,
    cert_serial: m.certSerial,
    remotes: m.remotes ? m.remotes.map(remoteView) : null,
    bundle_version: m.bundleVersion,
    added_at: new Date(m.addedAt).toISOString(),
  };
}
