/**
 * What every server operation works with, and the three rules they share:
 *
 * 1. Prepare, then commit: crypto happens before the transaction, the
 *    transaction re-checks what the preparation assumed and throws
 *    MVPN_STORE_CONFLICT if it changed; `withRetry` prepares again.
 * 2. Versions: any change to what a node's bundle for a network contains
 *    gives that membership a new bundle version, and any change to a node's
 *    membership document gives the node a new document serial. Both come
 *    from one store-wide sequence, so they only ever increase (`Bumps`).
 * 3. CRLs: a revocation is recorded together with the CRL that lists it, in
 *    the same transaction, and only if the CRL number is still the one the
 *    new CRL was built on (`planCrl` / `applyCrl`).
 */
import { StoreError, isMvpnError } from '../../errors.ts';
import type { Clock } from '../../util/clock.ts';
import type { ServerConfig, ServerPaths } from '../config.ts';
import { buildNetworkCrl, type BuiltCrl } from '../pki-service.ts';
import type { NetworkRecord, RevocationRecord, Store, StoreTx } from '../store/store.ts';

export interface ServerContext {
  readonly paths: ServerPaths;
  readonly config: ServerConfig;
  readonly store: Store;
  readonly clock: Pick<Clock, 'now'>;
}

export const DAY = 86_400_000;

/** Now, to the second: timestamps end up in signed documents as RFC 3339 without fractions. */
export function nowOf(ctx: Pick<ServerContext, 'clock'>): number {
  return Math.floor(ctx.clock.now() / 1000) * 1000;
}

export function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function conflict(what: string): StoreError {
  return new StoreError('MVPN_STORE_CONFLICT', `${what} changed while this operation was being prepared`);
}

/** Runs prepare-and-commit `op` again when its commit found the state changed underneath. */
export async function withRetry<T>(op: () => Promise<T>, attempts = 8): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await op();
    } catch (err) {
      if (!isMvpnError(err) || err.code !== 'MVPN_STORE_CONFLICT' || i >= attempts) throw err;
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 20 * i)));
    }
  }
}

/**
 * Version bumps collected during one transaction and applied once at its
 * end with one sequence number.
 */
export class Bumps {
  private readonly networks = new Set<string>();
  private readonly memberships: [string, string][] = [];
  private readonly docs = new Set<string>();

  /** Every active membership of the network (its CRL, remotes or CA changed). */
  network(id: string): this {
    this.networks.add(id);
    return this;
  }

  /** One membership's bundle (its certificate or key changed). */
  membership(network: string, node: string): this {
    this.memberships.push([network, node]);
    return this;
  }

  /** A node's document (its list of networks changed). */
  doc(node: string): this {
    this.docs.add(node);
    return this;
  }

  apply(tx: StoreTx, now: number, membershipDays: number): void {
    if (this.networks.size === 0 && this.memberships.length === 0 && this.docs.size === 0) return;
    const seq = tx.nextSeq();
    const docs = new Set(this.docs);
    const touch = (network: string, node: string) => {
      tx.updateMembership(network, node, { bundleVersion: seq, bundleCreatedAt: now });
      docs.add(node);
    };
    for (const id of this.networks) for (const m of tx.memberAddresses(id)) if (!m.revoked) touch(id, m.node);
    for (const [network, node] of this.memberships) if (tx.getMembership(network, node)) touch(network, node);
    for (const node of docs) {
      if (tx.getNode(node)) tx.updateNode(node, { docSerial: seq, docIssuedAt: now, docExpiresAt: now + membershipDays * DAY });
    }
  }
}

export interface CrlPlan {
  readonly network: string;
  readonly expectNumber: number;
  readonly crl: BuiltCrl;
  readonly add: readonly RevocationRecord[];
}

/** A CRL with the network's recorded revocations plus `add`, numbered one past the current. */
export async function planCrl(net: NetworkRecord, recorded: readonly RevocationRecord[], add: readonly RevocationRecord[], now: number, crlDays: number): Promise<CrlPlan> {
  const known = new Set(recorded.map((r) => r.serial));
  const fresh = add.filter((r) => !known.has(r.serial));
  const crl = await buildNetworkCrl(net, [...recorded, ...fresh], net.crlNumber + 1, now, crlDays);
  return { network: net.id, expectNumber: net.crlNumber, crl, add: fresh };
}

/** Records the revocations and the CRL; throws MVPN_STORE_CONFLICT if another CRL was issued meanwhile. */
export function applyCrl(tx: StoreTx, plan: CrlPlan, bumps: Bumps, now: number): void {
  const net = tx.getNetwork(plan.network);
  if (!net || net.crlNumber !== plan.expectNumber) throw conflict(`the CRL of network ${plan.network}`);
  for (const r of plan.add) tx.insertRevocation(r);
  tx.updateNetwork(plan.network, { crlPem: plan.crl.crlPem, crlNumber: plan.crl.crlNumber, crlNextUpdate: plan.crl.nextUpdate, updatedAt: now });
  tx.count('crl.published');
  bumps.network(plan.network);
}
