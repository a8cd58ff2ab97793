import { listNodes, membershipView } from '../../server/ops/nodes.ts';
import { serverCommand, table, type ServerArgs } from './common.ts';

interface ListArgs extends ServerArgs {
  network?: string;
}

/** `server node list [--network ID]`: nodes with their memberships, addresses and enrollment. */
export const nodeListCommand = serverCommand<ListArgs>({
  command: 'list',
  describe: 'list nodes and their memberships',
  options: (y) => y.option('network', { type: 'string', describe: 'only members of this network' }),
  action: (ctx, args) => {
    const entries = listNodes(ctx, args.network);
    const json = entries.map(({ node, memberships }) => ({
      node: node.id,
      enrolled: node.identitySerial !== null,
      key_alg: node.keyAlg,
      enrolled_at: node.enrolledAt === null ? null : new Date(node.enrolledAt).toISOString(),
      memberships: memberships.map(membershipView),
    }));
    const rows = entries.flatMap(({ node, memberships }) =>
      memberships.length === 0
        ? [[node.id, '-', '-', '-', node.identitySerial !== null ? 'yes' : 'no', '-']]
        : memberships.map((m) => [
            node.id,
            m.network,
            m.address,
            String(membershipView(m)['state']),
            node.identitySerial !== null ? 'yes' : 'no',
            // agentless: a stock openvpn from an exported profile, no signed updates
            m.agentless === true ? 'agentless' : 'agent',
          ]),
    );
    return { json, text: entries.length === 0 ? 'no nodes' : table([['NODE', 'NETWORK', 'ADDRESS', 'STATE', 'ENROLLED', 'RUNS'], ...rows]) };
  },
});
