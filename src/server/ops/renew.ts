/**
 * Automatic renewal (ARCHITECTURE.md "Credential renewal"): an enrolled node
 * sends a CSR for a NEW key it made itself, authenticated by its current API
 * identity (mTLS), and gets a new identity certificate; in the same
 * transaction every network certificate of its node-keyed memberships is
 * reissued for the new key and those bundles (and its document) get new
 * versions.
 *
 * Two phases, so a node never holds only credentials that do not work:
 * 1. `renew`: the replaced identity serial and network certificate serials
 *    are kept as `prev*` — still accepted on the API, not on any CRL — so a
 *    node that crashes before it stored or installed the new ones keeps
 *    working with the old ones and simply renews again.
 * 2. `confirmRenewal`: the node, authenticated with the NEW identity, says
 *    its networks run the new certificates; only then do the old network
 *    certificates go on their CRLs (reason superseded) and the old identity
 *    stops being accepted.
 *
 * A renewal authenticated with the previous identity (the node lost the
 * unconfirmed new one) replaces the unconfirmed certificates: they were
 * never in use, so they go on the CRL at once and `prev*` stays. Centrally
 * keyed memberships (export) are not touched: their key was never on the
 * node's side of the API, so they cannot renew online (export again).
 */
import { MvpnError } from '../../errors.ts';
import type { CaMaterial } from '../../pki/ca.ts';
import { parseCsr } from '../../pki/csr.ts';
import { issueIdentityCert, issueNodeCert } from '../pki-service.ts';
import type { MembershipRecord, NetworkRecord, NodeRecord, RevocationRecord, StoreTx } from '../store/store.ts';
import { isMirror } from '../federation/mirror.ts';
import { applyCrl, Bumps, conflict, nowOf, planCrl, withRetry, type CrlPlan, type ServerContext } from './context.ts';
import { checkNodeId } from './nodes.ts';

export interface RenewRequest {
  readonly node: string;
  /** Serial of the identity certificate the request was authenticated with (lower-case hex). */
  readonly authSerial: string;
  readonly csr: string;
}

export interface RenewResult {
  readonly node: string;
  readonly identityCertPem: string;
  readonly identitySerial: string;
  readonly networks: readonly string[];
}

const strip = (s: string | null | undefined): string | undefined => (s == null ? undefined : s.toLowerCase().replace(/^0+(?=.)/, ''));

/** Which of the node's identities `serial` is: the current one, the one an unconfirmed renewal replaced, or neither. */
export function identityRole(node: Pick<NodeRecord, 'identitySerial' | 'prevIdentitySerial'> | undefined, serial: string): 'current' | 'previous' | undefined {
  if (!node) return undefined;
  const s = strip(serial);
  if (s === undefined) return undefined;
  if (strip(node.identitySerial) === s) return 'current';
  if (strip(node.prevIdentitySerial) === s) return 'previous';
  return undefined;
}

/** Memberships whose certificate is for the node's own key: the ones a renewal reissues. */
function renewable(tx: StoreTx, node: string): { m: MembershipRecord; net: NetworkRecord }[] {
  const out: { m: MembershipRecord; net: NetworkRecord }[] = [];
  for (const m of tx.listMemberships({ node })) {
    const net = tx.getNetwork(m.network);
    if (!net || m.revoked || net.state === 'deleted' || isMirror(net) || m.keyOrigin !== 'node' || m.certSerial === null) continue;
    out.push({ m, net });
  }
  return out;
}

function superseded(m: MembershipRecord, serial: string, now: number): RevocationRecord {
  return { network: m.network, serial, node: m.node, address: m.address, reason: 'superseded', revokedAt: now };
}

async function crlPlans(ctx: ServerContext, byNet: Map<string, { net: NetworkRecord; recs: RevocationRecord[] }>, now: number): Promise<CrlPlan[]> {
  const plans: CrlPlan[] = [];
  for (const { net, recs } of byNet.values()) {
    if (recs.length === 0) continue;
    const recorded = ctx.store.read((tx) => tx.listRevocations(net.id));
    plans.push(await planCrl(net, recorded, recs, now, ctx.config.crl_days));
  }
  return plans;
}

const stateKey = (n: NodeRecord | undefined, ms: readonly MembershipRecord[]): string =>
  JSON.stringify([n?.identitySerial ?? null, n?.prevIdentitySerial ?? null, ms.map((m) => [m.network, m.certSerial, m.prevCertSerial ?? null, m.keyOrigin, m.revoked]).sort()]);

export async function renew(ctx: ServerContext, apiCa: CaMaterial, req: RenewRequest): Promise<RenewResult> {
  checkNodeId(req.node);
  const csr = await parseCsr(req.csr, { expectCn: req.node, allowedAlgs: ctx.config.enroll_key_algs });
  return withRetry(async () => {
    const now = nowOf(ctx);
    const { node, targets, before } = ctx.store.read((tx) => {
      const n = tx.getNode(req.node);
      return { node: n, targets: renewable(tx, req.node), before: stateKey(n, tx.listMemberships({ node: req.node })) };
    });
    const role = identityRole(node, req.authSerial);
    if (role === undefined) throw new MvpnError('MVPN_API_FORBIDDEN', 'this node certificate is no longer valid (superseded or revoked); enroll again');
    const identity = await issueIdentityCert(apiCa, req.node, csr.publicKeyPem, now, ctx.config.cert_days);
    const certs = new Map<string, { certPem: string; serialHex: string }>();
    const revoke = new Map<string, { net: NetworkRecord; recs: RevocationRecord[] }>();
    for (const { m, net } of targets) {
      certs.set(m.network, await issueNodeCert(net, req.node, csr.publicKeyPem, now, ctx.config.cert_days));
      const recs: RevocationRecord[] = [];
      if (role === 'previous') {
        // The current certificate is for the key of a renewal the node never completed: it was never in use.
        recs.push(superseded(m, m.certSerial!, now));
      } else if (m.prevCertSerial != null) {
        // The node moved on to the current identity without confirming; two generations back is certainly unused.
        recs.push(superseded(m, m.prevCertSerial, now));
      }
      revoke.set(m.network, { net, recs });
    }
    const plans = await crlPlans(ctx, revoke, now);
    return ctx.store.write((tx) => {
      if (stateKey(tx.getNode(req.node), tx.listMemberships({ node: req.node })) !== before) throw conflict(`the credentials of ${req.node}`);
      const bumps = new Bumps().doc(req.node);
      for (const p of plans) applyCrl(tx, p, bumps, now);
      const serial = identity.serialHex.toLowerCase();
      tx.updateNode(req.node, {
        publicKeyPem: csr.publicKeyPem,
        keyAlg: csr.alg,
        identityCertPem: identity.certPem,
        identitySerial: serial,
        prevIdentitySerial: role === 'previous' ? node!.prevIdentitySerial! : node!.identitySerial,
      });
      for (const { m } of targets) {
        const c = certs.get(m.network)!;
        const prev = role === 'previous' ? (m.prevCertSerial ?? null) : m.certSerial;
        tx.updateMembership(m.network, req.node, { certPem: c.certPem, certSerial: c.serialHex, prevCertSerial: prev });
        bumps.membership(m.network, req.node);
      }
      bumps.apply(tx, now, ctx.config.membership_days);
      tx.count('issued.renew', 1 + targets.length);
      return { node: req.node, identityCertPem: identity.certPem, identitySerial: serial, networks: targets.map((t) => t.m.network) };
    });
  });
}

export interface ConfirmResult {
  readonly node: string;
  /** Old network certificate serials now on their CRLs, per network. */
  readonly revoked: Readonly<Record<string, string>>;
  /** True when an old identity stopped being accepted. */
  readonly identity: boolean;
}

/**
 * The node runs its new certificates: revoke what the renewal replaced.
 * Only the current identity may confirm (the request proves the node holds
 * the new key). Idempotent: nothing pending → nothing changes.
 */
export async function confirmRenewal(ctx: ServerContext, node: string, authSerial: string): Promise<ConfirmResult> {
  checkNodeId(node);
  return withRetry(async () => {
    const now = nowOf(ctx);
    const { rec, pending, before } = ctx.store.read((tx) => {
      const n = tx.getNode(node);
      const ms = tx.listMemberships({ node });
      const p = ms.filter((m) => m.prevCertSerial != null).map((m) => ({ m, net: tx.getNetwork(m.network)! }));
      return { rec: n, pending: p, before: stateKey(n, ms) };
    });
    const role = identityRole(rec, authSerial);
    if (role !== 'current') {
      throw new MvpnError('MVPN_RENEW_NOT_CURRENT', 'only the renewed identity can confirm a renewal; this request used an older one', {
        hint: 'the agent stores the new identity before it confirms; renew again',
      });
    }
    if (pending.length === 0 && rec!.prevIdentitySerial == null) return { node, revoked: {}, identity: false };
    const revoke = new Map(
      pending.filter(({ net }) => !isMirror(net)).map(({ m, net }) => [m.network, { net, recs: m.revoked ? [] : [superseded(m, m.prevCertSerial!, now)] }]),
    );
    const plans = await crlPlans(ctx, revoke, now);
    return ctx.store.write((tx) => {
      const ms = tx.listMemberships({ node });
      if (stateKey(tx.getNode(node), ms) !== before) throw conflict(`the credentials of ${node}`);
      const bumps = new Bumps();
      for (const p of plans) applyCrl(tx, p, bumps, now);
      for (const { m } of pending) tx.updateMembership(m.network, node, { prevCertSerial: null });
      tx.updateNode(node, { prevIdentitySerial: null });
      bumps.apply(tx, now, ctx.config.membership_days);
      return {
        node,
        revoked: Object.fromEntries(pending.filter(({ m }) => !m.revoked).map(({ m }) => [m.network, m.prevCertSerial!])),
        identity: rec!.prevIdentitySerial != null,
      };
    });
  });
}
