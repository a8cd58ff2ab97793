import type { Argv } from 'yargs';
import { membershipView, removeNode } from '../../server/ops/nodes.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { serverAction, serverOptions, type ServerArgs } from './common.ts';

export interface NodeNetworkArgs extends ServerArgs {
  node: string;
  network: string;
}

/** `server node remove NODE --network ID`: out of the network; its certificate goes on the CRL and its session is killed. */
export const nodeRemoveCommand: CliCommand<NodeNetworkArgs> = {
  command: 'remove <node>',
  describe: 'remove a node from a network (revokes its certificate there, frees its address)',
  builder: (y: Argv) =>
    serverOptions(
      y
        .positional('node', { type: 'string', demandOption: true, describe: 'node id' })
        .option('network', { type: 'string', demandOption: true, describe: 'network id' }),
    ) as unknown as Argv<NodeNetworkArgs>,
  run: (args: NodeNetworkArgs, io: Io) =>
    serverAction(args, io, async (ctx) => {
      const m = await removeNode(ctx, String(args.node), args.network);
      return { json: { ...membershipView(m), state: 'removed' }, text: `removed ${m.node} from ${m.network} (address ${m.address} is free again)` };
    }),
};
