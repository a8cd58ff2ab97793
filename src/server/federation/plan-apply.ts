/**
 * `server plan --apply`: the part of a plan that belongs to one server (the
 * testbed it runs on). For every LAN this server hosts: the network (created
 * if missing, with the planned subnet and this server's public address as
 * its remote, tap for Layer 2 and tun for Layer 3) and every member with its planned address and remote (added,
 * or its remotes set if already a member) — idempotent, so a script can
 * re-run it. With `linksDir`, also the link bundles for the LAN's peers.
 *
 * Left to the operator or a script (the plan says which): `link add` on
 * each peer server, and getting node bundles to nodes (export or enrollment).
 * `plan --apply --servers FILE` (apply-servers.ts) does the links too.
 */
import { join } from 'node:path';
import { isMvpnError } from '../../errors.ts';
import type { SigningKey } from '../../bundle/sign.ts';
import type { CaMaterial } from '../../pki/ca.ts';
import type { ServerContext } from '../ops/context.ts';
import { createNetwork, setNetworkState } from '../ops/networks.ts';
import { addNode, setNodeRemotes } from '../ops/nodes.ts';
import { exportLink } from './links.ts';
import type { Plan } from './plan.ts';

export interface ApplyStep {
  readonly action: 'network-created' | 'network-exists' | 'network-up' | 'node-added' | 'node-remotes-set' | 'link-exported' | 'link-exists';
  readonly lan: string;
  readonly node?: string;
  readonly peer?: string;
  readonly detail: string;
}

export async function applyPlan(
  ctx: ServerContext,
  plan: Plan,
  server: string,
  opts: { linksDir?: string | undefined; signingKey?: SigningKey; apiCa?: CaMaterial; apiUrl?: string | undefined } = {},
): Promise<ApplyStep[]> {
  const steps: ApplyStep[] = [];
  const me = plan.servers.find((s) => s.testbed === server);
  for (const lan of plan.lans.filter((l) => l.hub === server)) {
    const exists = ctx.store.read((tx) => tx.getNetwork(lan.name));
    if (exists) {
      steps.push({ action: 'network-exists', lan: lan.name, detail: `${exists.subnet}, port ${exists.port}` });
    } else {
      const net = await createNetwork(ctx, { id: lan.name, subnet: lan.subnet ?? undefined, devType: lan.layer === 3 ? 'tun' : 'tap', remotes: me ? [me.public] : undefined });
      steps.push({ action: 'network-created', lan: lan.name, detail: `${net.subnet}, port ${net.port}` });
    }
    if (ctx.store.read((tx) => tx.getNetwork(lan.name))?.state !== 'up') {
      setNetworkState(ctx, lan.name, 'up');
      steps.push({ action: 'network-up', lan: lan.name, detail: 'the running daemon starts its openvpn server' });
    }
    for (const m of lan.members) {
      const remotes = [m.remote];
      try {
        const r = await addNode(ctx, { node: m.node, network: lan.name, address: m.address ?? undefined, remotes });
        steps.push({ action: 'node-added', lan: lan.name, node: m.node, detail: `${r.address} via ${m.remote}` });
      } catch (err) {
        const have = ctx.store.read((tx) => tx.getMembership(lan.name, m.node));
        if (!isMvpnError(err) || err.code !== 'MVPN_ALREADY_EXISTS' || !have) throw err;
        // A node behind a peer: its port is the peer's openvpn server's, set once the link exists (apply-servers.ts); keep it.
        const sameHost = have.remotes?.length === 1 && have.remotes[0]!.host === m.remote;
        if (m.server !== server && sameHost) {
          steps.push({ action: 'node-remotes-set', lan: lan.name, node: m.node, detail: `${have.address} via ${m.remote}${have.remotes![0]!.port ? `:${have.remotes![0]!.port}` : ''} (unchanged)` });
          continue;
        }
        const r = setNodeRemotes(ctx, m.node, lan.name, remotes);
        steps.push({ action: 'node-remotes-set', lan: lan.name, node: m.node, detail: `${r.membership.address} via ${m.remote}${r.changed ? '' : ' (unchanged)'}` });
      }
    }
    if (opts.linksDir !== undefined && opts.signingKey && opts.apiCa) {
      for (const peer of lan.peers) {
        const file = join(opts.linksDir, `link-${lan.name}-${peer}.json`);
        try {
          const r = await exportLink(ctx, opts.signingKey, opts.apiCa, { network: lan.name, peer, out: file, apiUrl: opts.apiUrl });
          steps.push({ action: 'link-exported', lan: lan.name, peer, detail: `${r.file} (peer address ${r.address})` });
        } catch (err) {
          if (!isMvpnError(err) || err.code !== 'MVPN_ALREADY_EXISTS') throw err;
          steps.push({ action: 'link-exists', lan: lan.name, peer, detail: 'already linked; remove it first to export a new bundle' });
        }
      }
    }
  }
  return steps;
}
