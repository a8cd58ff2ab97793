import { getNetworkOrThrow, networkView } from '../../server/ops/networks.ts';
import { membershipView } from '../../server/ops/nodes.ts';
import { linkView } from '../../server/federation/links.ts';
import { readStatus } from '../../server/status.ts';
import { isMirror } from '../../server/federation/mirror.ts';
import { bridgeDev } from '../../server/devices.ts';
import { networkCaExpiry } from '../../server/ops/ca-roll.ts';
import { serverCommand, NETWORK_ARG, table } from './common.ts';
import type { IdArgs } from './network-delete.ts';

/**
 * `server network show ID`: the network, its members, and — from the running
 * daemon's status snapshot — its openvpn server and connected clients
 * (`status 3`). `runtime` is null when no daemon is running.
 */
export const networkShowCommand = serverCommand<IdArgs>({
  command: 'show <id>',
  describe: 'show a network, its nodes and its connected clients',
  options: (y) => y.positional('id', NETWORK_ARG),
  action: async (ctx, args) => {
    const net = getNetworkOrThrow(ctx, String(args.id));
    const members = ctx.store.read((tx) => tx.listMemberships({ network: net.id }));
    const status = await readStatus(ctx.config.runtime_dir);
    const runtime = status ? (status.networks[net.id] ?? { state: 'stopped', clients: [], restarts: 0 }) : null;
    const base = networkView(net, { active: members.filter((m) => !m.revoked).length, revoked: members.filter((m) => m.revoked).length });
    const link = ctx.store.read((tx) => tx.getLink(net.id));
    // Which host runs it (src/server/lease.ts): the lease holder, whether its lease is still running is the database's to say.
    const lease = ctx.store.read((tx) => tx.listLeases().find((l) => l.network === net.id));
    // An L3 network across servers (src/server/routing): this server's BIRD and the network's sessions and routes.
    const routed = status?.routing?.networks[net.id];
    const routing = routed && status?.routing ? { bird: status.routing.bird, ...routed } : undefined;
    const linkRuntime = link ? (status ? (status.links?.[net.id] ?? { state: 'stopped' }) : null) : undefined;
    const now = ctx.clock.now();
    const ca = isMirror(net) ? undefined : await networkCaExpiry(net, now);
    const roll = net.caRoll
      ? { overlap: net.caRoll.prev !== null, started_at: new Date(net.caRoll.startedAt).toISOString(), overlap_until: new Date(net.caRoll.overlapUntil).toISOString() }
      : undefined;
    const view = {
      ...base,
      ...(ca ? { ca: { cn: ca.cn, not_after: ca.notAfter, days_left: ca.daysLeft, ...(ca.warning ? { warning: ca.warning } : {}), ...(roll ? { roll } : {}) } } : {}),
      members: members.map(membershipView),
      lease: lease ? { owner: lease.owner, epoch: lease.epoch, expires_at: new Date(lease.expiresAt).toISOString() } : null,
      runtime,
      ...(routing ? { routing } : {}),
      // Peer side of a server-to-server link: the mirror's link to its hub and its health.
      ...(link ? { link: linkView(link, linkRuntime) } : {}),
    };
    const connected = new Map((runtime?.clients ?? []).map((c) => [c.cn, c]));
    const lines = [
      `network ${net.id} (${net.name}): ${net.state}, ${net.devType} ${net.proto}/${net.port}, subnet ${net.subnet}, server ${String(base['server_address'])}`,
      `remotes: ${net.remotes.map((r) => `${r.host}:${r.port ?? net.port}`).join(', ')}`,
      `crl: #${net.crlNumber}, next update ${new Date(net.crlNextUpdate).toISOString()}`,
      ...(lease ? [`lease: host ${lease.owner}, epoch ${lease.epoch}, until ${new Date(lease.expiresAt).toISOString()}${net.failover === true ? ' (failover network)' : ''}`] : []),
      ...(ca ? [`ca: ${ca.cn}, valid until ${ca.notAfter} (${ca.daysLeft} days)${roll?.overlap ? `; rolling: nodes trust the old CA too until ${roll.overlap_until}` : ''}`] : []),
      ...(ca?.warning ? [`WARNING: ${ca.warning}`] : []),
      runtime === null
        ? 'server: no daemon running (`mvpn-client server run`)'
        : `server: ${runtime.state}${'pid' in runtime && runtime.pid ? ` (pid ${runtime.pid})` : ''}, restarts ${runtime.restarts}, ${runtime.clients.length} client(s) connected`,
    ];
    if (link) {
      const lv = linkView(link) as { peer: string; address: string; hub: { api_url: string }; bridge: string | null; backbone?: string };
      const rt = linkRuntime as { state?: string; restarts?: number } | null | undefined;
      lines.push(`link: peer ${lv.peer} (address ${lv.address} on ${lv.bridge ?? lv.backbone ?? bridgeDev(net.id)}) to hub ${lv.hub.api_url}: ${rt ? `${rt.state ?? '?'}, restarts ${rt.restarts ?? 0}` : 'no daemon running'}`);
    }
    if (routing) {
      lines.push(`routing: BIRD ${routing.bird.pid === null ? 'not running' : `pid ${routing.bird.pid}`}, restarts ${routing.bird.restarts}${routing.bird.error ? ` (${routing.bird.error})` : ''}; table ${routing.table}; ${routing.clients.length} client route(s) announced`);
      for (const p of routing.peers) lines.push(`  peer ${p.name} ${p.address}: ${p.state}, ${p.routes.length} route(s)${p.routes.length ? `: ${p.routes.join(' ')}` : ''}`);
    }
    if (members.length > 0) {
      lines.push(
        table([
          ['NODE', 'ADDRESS', 'STATE', 'KEY', 'REMOTES', 'CONNECTED FROM'],
          ...members.map((m) => {
            const v = membershipView(m);
            const own = m.remotes ? m.remotes.map((r) => `${r.host}:${r.port ?? net.port}`).join(',') : '(network)';
            return [m.node, m.address, String(v['state']), m.keyOrigin ?? '-', own, connected.get(m.node)?.real_address ?? '-'];
          }),
        ]),
      );
    }
    return { json: view, text: lines.join('\n') };
  },
});
