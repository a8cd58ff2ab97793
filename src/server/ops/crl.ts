/**
 * CRL re-issue before expiry. openvpn (through OpenSSL) refuses every peer
 * once the CRL it was given has passed its nextUpdate, and agents refuse
 * bundles with an expired CRL, so the daemon re-issues each network's CRL at
 * half-life. The new CRL gets the next CRL number, and every member gets a
 * new bundle version (a change that touches only crl.pem, which agents apply
 * without restarting openvpn).
 */
import { isMirror } from '../federation/mirror.ts';
import { crlDue } from '../pki-service.ts';
import { isMvpnError } from '../../errors.ts';
import type { Leases } from '../lease.ts';
import { applyCrl, Bumps, nowOf, planCrl, withRetry, type ServerContext } from './context.ts';

/** What refreshDueCrls needs of the daemon's leases. */
export type LeaseOwner = Pick<Leases, 'epoch' | 'fence'>;

/**
 * Re-issues the CRLs that are due; returns the networks whose CRL changed.
 * `owner`: the daemon's leases (src/server/lease.ts). A network that is up
 * then gets its CRL from the host that runs it, and the write is fenced: it
 * commits only while this host still holds the lease at the epoch it acted
 * on. A network that is down runs nowhere: any host re-issues its CRL (the
 * CRL-number check keeps that to one).
 */
export async function refreshDueCrls(ctx: ServerContext, owner?: LeaseOwner): Promise<{ network: string; number: number; nextUpdate: number }[]> {
  const done: { network: string; number: number; nextUpdate: number }[] = [];
  const due = ctx.store
    .read((tx) => tx.listNetworks())
    .filter((n) => n.state !== 'deleted' && !isMirror(n) && crlDue(n, nowOf(ctx), ctx.config.crl_days) && (owner === undefined || n.state !== 'up' || owner.epoch(n.id) !== undefined));
  for (const n of due) {
    const r = await withRetry(async () => {
      // The epoch this host acts on: the write below commits only if it still holds the lease at it.
      const epoch = owner?.epoch(n.id);
      const now = nowOf(ctx);
      const { net, recorded } = ctx.store.read((tx) => ({ net: tx.getNetwork(n.id), recorded: tx.listRevocations(n.id) }));
      if (!net || net.state === 'deleted' || !crlDue(net, now, ctx.config.crl_days)) return undefined;
      if (owner !== undefined && net.state === 'up' && epoch === undefined) return undefined;
      const plan = await planCrl(net, recorded, [], now, ctx.config.crl_days);
      ctx.store.write((tx) => {
        if (owner !== undefined && tx.getNetwork(n.id)?.state === 'up') owner.fence(tx, n.id, epoch);
        const bumps = new Bumps();
        applyCrl(tx, plan, bumps, now);
        bumps.apply(tx, now, ctx.config.membership_days);
      });
      return { network: n.id, number: plan.crl.crlNumber, nextUpdate: plan.crl.nextUpdate };
    }).catch((err: unknown) => {
      // Another host took the network over meanwhile: the CRL is its job now.
      if (isMvpnError(err) && err.code === 'MVPN_LEASE_LOST') return undefined;
      throw err;
    });
    if (r) done.push(r);
  }
  return done;
}
