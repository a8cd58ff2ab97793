import { membershipView, removeNode } from '../../server/ops/nodes.ts';
import { serverCommand, NODE_ARG, NETWORK_ARG, type ServerArgs } from './common.ts';

export interface NodeNetworkArgs extends ServerArgs {
  node: string;
  network: string;
}

/** `server node remove NODE --network ID`: out of the network; its certificate goes on the CRL and its session is killed. */
export const nodeRemoveCommand = serverCommand<NodeNetworkArgs>({
  command: 'remove <node>',
  describe: 'remove a node from a network (revokes its certificate there, frees its address)',
  options: (y) =>
    y
      .positional('node', NODE_ARG)
      .option('network', NETWORK_ARG),
  action: async (ctx, args) => {
    const m = await removeNode(ctx, String(args.node), args.network);
    return { json: { ...membershipView(m), state: 'removed' }, text: `removed ${m.node} from ${m.network} (address ${m.address} is free again)` };
  },
});
