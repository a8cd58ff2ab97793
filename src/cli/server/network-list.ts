import { listNetworks, networkView } from '../../server/ops/networks.ts';
import { serverCommand, table, type ServerArgs } from './common.ts';

/** `server network list`: every network (deleted ones too, marked), with member counts. */
export const networkListCommand = serverCommand<ServerArgs>({
  command: 'list',
  describe: 'list networks',
  action: (ctx) => {
    const nets = listNetworks(ctx);
    const counts = ctx.store.read((tx) =>
      nets.map((n) => {
        const ms = tx.listMemberships({ network: n.id });
        return { active: ms.filter((m) => !m.revoked).length, revoked: ms.filter((m) => m.revoked).length };
      }),
    );
    const views = nets.map((n, i) => networkView(n, counts[i]));
    return {
      json: views,
      text:
        nets.length === 0
          ? 'no networks (create one with `mvpn-client server network create NAME`)'
          : table([
              ['NETWORK', 'STATE', 'DEV', 'PORT', 'SUBNET', 'NODES', 'REMOTES'],
              ...nets.map((n, i) => [
                n.id,
                n.state,
                n.devType,
                `${n.proto}/${n.port}`,
                n.subnet,
                String(counts[i]!.active),
                n.remotes.map((r) => `${r.host}:${r.port ?? n.port}`).join(','),
              ]),
            ]),
    };
  },
});
