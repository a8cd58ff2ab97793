import type { Argv } from 'yargs';
import { addNode, membershipView } from '../../server/ops/nodes.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { serverAction, serverOptions, type ServerArgs } from './common.ts';

interface AddArgs extends ServerArgs {
  node: string;
  network: string;
  address?: string;
  remote?: string[];
}

/**
 * `server node add NODE --network ID [--address IP] [--remote HOST[:PORT]]…`:
 * makes NODE a member with a stable address (given and validated, or
 * allocated), and optionally its own ordered remotes (for example the ops
 * host's private address for nodes of its own testbed). An enrolled
 * node gets its certificate for the network at once; otherwise at enrollment
 * (`node token`) or export.
 */
export const nodeAddCommand: CliCommand<AddArgs> = {
  command: 'add <node>',
  describe: 'add a node to a network',
  builder: (y: Argv) =>
    serverOptions(
      y
        .positional('node', { type: 'string', demandOption: true, describe: 'node id (its certificate CN)' })
        .option('network', { type: 'string', demandOption: true, describe: 'network id' })
        .option('address', { type: 'string', describe: "the node's tunnel address (default: allocated)" })
        .option('remote', {
          type: 'string',
          array: true,
          describe: "HOST[:PORT] this node connects to, in order (repeatable); replaces the network's remotes for this node only",
        }),
    ) as unknown as Argv<AddArgs>,
  run: (args: AddArgs, io: Io) =>
    serverAction(args, io, async (ctx) => {
      const m = await addNode(ctx, { node: String(args.node), network: args.network, address: args.address, remotes: args.remote?.map(String) });
      const enrolled = m.certPem !== null;
      return {
        json: membershipView(m),
        text: `added ${m.node} to ${m.network} with address ${m.address}${
          enrolled ? '' : `; next: \`mvpn-client server node token ${m.node}\` (enrollment) or \`mvpn-client server export ${m.node} --network ${m.network}\``
        }`,
      };
    }),
};
