/**
 * Enrollment: a node proves it holds a one-time token (bound to its id,
 * expiring) and sends a CSR for a key it made itself. It gets an API
 * identity certificate (mTLS for the HTTPS API) and, in the same
 * transaction, a certificate from each network's CA it is a member of.
 * Certificates it held before (an earlier enrollment, a central key from an
 * export) are superseded: they go on their networks' CRLs.
 *
 * A bad CSR does not use up the token (the agent can fix and retry); the
 * token is marked used in the transaction that records the certificates,
 * so two concurrent enrollments with one token cannot both succeed.
 */
import { MvpnError } from '../../errors.ts';
import type { CaMaterial } from '../../pki/ca.ts';
import { parseCsr } from '../../pki/csr.ts';
import type { MembershipRecord, RevocationRecord, TokenRecord } from '../store/store.ts';
import { issueIdentityCert, issueNodeCert } from '../pki-service.ts';
import { applyCrl, Bumps, conflict, nowOf, planCrl, withRetry, type CrlPlan, type ServerContext } from './context.ts';
import { certSerialsOf, checkNodeId, TOKEN_RE, tokenHash } from './nodes.ts';

export interface EnrollRequest {
  readonly node: string;
  readonly token: string;
  readonly csr: string;
}

export interface EnrollResult {
  readonly node: string;
  readonly identityCertPem: string;
  readonly identitySerial: string;
  readonly networks: readonly string[];
}

function tokenError(code: 'MVPN_TOKEN_INVALID' | 'MVPN_TOKEN_EXPIRED' | 'MVPN_TOKEN_USED', node: string): MvpnError {
  const message = {
    MVPN_TOKEN_INVALID: 'the enrollment token is not valid for this node',
    MVPN_TOKEN_EXPIRED: 'the enrollment token has expired',
    MVPN_TOKEN_USED: 'the enrollment token has already been used',
  }[code];
  return new MvpnError(code, message, { context: { node }, hint: `ask the operator for a new one: mvpn-client server node token ${node}` });
}

/** Throws the token's problem, if it has one, at `now`. */
export function checkToken(t: TokenRecord | undefined, node: string, now: number): void {
  // Unknown and "someone else's" look the same, so a token holder learns nothing about other nodes.
  if (!t || t.node !== node) throw tokenError('MVPN_TOKEN_INVALID', node);
  if (t.usedAt !== null) throw tokenError('MVPN_TOKEN_USED', node);
  if (t.expiresAt <= now) throw tokenError('MVPN_TOKEN_EXPIRED', node);
}

export async function enroll(ctx: ServerContext, apiCa: CaMaterial, req: EnrollRequest): Promise<EnrollResult> {
  checkNodeId(req.node);
  if (!TOKEN_RE.test(req.token)) throw tokenError('MVPN_TOKEN_INVALID', req.node);
  const hash = tokenHash(req.token);
  checkToken(
    ctx.store.read((tx) => tx.getToken(hash)),
    req.node,
    nowOf(ctx),
  );
  const csr = await parseCsr(req.csr, { expectCn: req.node, allowedAlgs: ctx.config.enroll_key_algs });

  return withRetry(async () => {
    const now = nowOf(ctx);
    const { targets, nets } = ctx.store.read((tx) => {
      const ms = tx.listMemberships({ node: req.node }).filter((m) => !m.revoked);
      const ns = new Map(ms.map((m) => [m.network, tx.getNetwork(m.network)!]));
      return { targets: ms.filter((m) => ns.get(m.network)!.state !== 'deleted'), nets: ns };
    });
    const identity = await issueIdentityCert(apiCa, req.node, csr.publicKeyPem, now, ctx.config.cert_days);
    const certs = new Map<string, { certPem: string; serialHex: string }>();
    const plans: CrlPlan[] = [];
    for (const m of targets) {
      const net = nets.get(m.network)!;
      certs.set(m.network, await issueNodeCert(net, req.node, csr.publicKeyPem, now, ctx.config.cert_days));
      const serials = certSerialsOf(m);
      if (serials.length > 0) {
        const recorded = ctx.store.read((tx) => tx.listRevocations(m.network));
        const recs = serials.map((serial): RevocationRecord => ({ network: m.network, serial, node: req.node, address: m.address, reason: 'superseded', revokedAt: now }));
        plans.push(await planCrl(net, recorded, recs, now, ctx.config.crl_days));
      }
    }
    return ctx.store.write((tx) => {
      checkToken(tx.getToken(hash), req.node, now);
      const current = tx.listMemberships({ node: req.node }).filter((m) => !m.revoked && tx.getNetwork(m.network)?.state !== 'deleted');
      if (!sameTargets(current, targets)) throw conflict(`memberships of ${req.node}`);
      tx.markTokenUsed(hash, now);
      tx.updateNode(req.node, {
        publicKeyPem: csr.publicKeyPem,
        keyAlg: csr.alg,
        identityCertPem: identity.certPem,
        identitySerial: identity.serialHex.toLowerCase(),
        prevIdentitySerial: null,
        enrolledAt: now,
      });
      const bumps = new Bumps().doc(req.node);
      for (const p of plans) applyCrl(tx, p, bumps, now);
      for (const m of targets) {
        const c = certs.get(m.network)!;
        tx.updateMembership(m.network, req.node, { certPem: c.certPem, certSerial: c.serialHex, prevCertSerial: null, keyOrigin: 'node', agentless: false });
        bumps.membership(m.network, req.node);
      }
      bumps.apply(tx, now, ctx.config.membership_days);
      tx.count('issued.enroll', 1 + targets.length);
      return { node: req.node, identityCertPem: identity.certPem, identitySerial: identity.serialHex.toLowerCase(), networks: targets.map((m) => m.network) };
    });
  });
}

function sameTargets(a: readonly MembershipRecord[], b: readonly MembershipRecord[]): boolean {
  const key = (m: MembershipRecord) => `${m.network}\0${certSerialsOf(m).join(',')}`;
  const sa = a.map(key).sort();
  const sb = b.map(key).sort();
  return sa.length === sb.length && sa.every((x, i) => x === sb[i]);
}
