import { UsageError } from '../../errors.ts';
import { addNodes, membershipView } from '../../server/ops/nodes.ts';
import { serverCommand, NETWORK_ARG, table, type ServerArgs } from './common.ts';

interface AddArgs extends ServerArgs {
  nodes: string[];
  network: string;
  address?: string;
  remote?: string[];
}

/**
 * `server node add NODE… --network ID [--address IP] [--remote HOST[:PORT]]…`:
 * makes each NODE a member with a stable address (given and validated, or
 * allocated), and optionally its own ordered remotes (for example the ops
 * host's private address for nodes of its own testbed; with several nodes
 * every one gets the same list). An enrolled node gets its certificate for
 * the network at once; otherwise at enrollment (`node token`) or export.
 *
 * Several nodes (a testbed swapping in) are added in one transaction: all
 * of them or, if any is refused (bad id, already a member, no address
 * left), none, with an error naming that node. One node: the output is the
 * membership object as before; several: a JSON array in the order given.
 */
export const nodeAddCommand = serverCommand<AddArgs>({
  command: 'add <nodes..>',
  describe: 'add one or more nodes to a network (several: all or none)',
  options: (y) =>
    y
      .positional('nodes', { type: 'string', array: true, demandOption: true, describe: 'node ids (their certificate CNs)' })
      .option('network', NETWORK_ARG)
      .option('address', { type: 'string', describe: "the node's tunnel address (default: allocated; only with one node)" })
      .option('remote', {
        type: 'string',
        array: true,
        describe: "HOST[:PORT] the nodes connect to, in order (repeatable); replaces the network's remotes for these nodes only",
      }),
  action: async (ctx, args) => {
    const nodes = args.nodes.map(String);
    if (nodes.length > 1 && args.address !== undefined) {
      throw new UsageError('--address gives one node its address; add nodes with given addresses one at a time', { context: { nodes: nodes.length } });
    }
    const remotes = args.remote?.map(String);
    const added = await addNodes(
      ctx,
      nodes.map((node) => ({ node, network: args.network, address: args.address, remotes })),
    );
    if (added.length === 1) {
      const m = added[0]!;
      const enrolled = m.certPem !== null;
      return {
        json: membershipView(m),
        text: `added ${m.node} to ${m.network} with address ${m.address}${
          enrolled ? '' : `; next: \`mvpn-client server node token ${m.node}\` (enrollment) or \`mvpn-client server export ${m.node} --network ${m.network}\``
        }`,
      };
    }
    return {
      json: added.map(membershipView),
      text:
        table([['NODE', 'ADDRESS', 'STATE'], ...added.map((m) => [m.node, m.address, m.certPem === null ? 'pending' : 'active'])]) +
        `added ${added.length} nodes to ${args.network}`,
    };
  },
});
