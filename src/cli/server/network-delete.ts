import type { Argv } from 'yargs';
import { deleteNetwork, networkView } from '../../server/ops/networks.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { serverAction, serverOptions, type ServerArgs } from './common.ts';

export interface IdArgs extends ServerArgs {
  id: string;
}

/** `server network delete ID`: a down network leaves every node's document; its records stay as history. */
export const networkDeleteCommand: CliCommand<IdArgs> = {
  command: 'delete <id>',
  describe: 'delete a network that is down (records kept as history; port and subnet freed)',
  builder: (y: Argv) => serverOptions(y.positional('id', { type: 'string', demandOption: true, describe: 'network id' })) as unknown as Argv<IdArgs>,
  run: (args: IdArgs, io: Io) =>
    serverAction(args, io, (ctx) => {
      const net = deleteNetwork(ctx, String(args.id));
      return { json: networkView(net), text: `network ${net.id} deleted (\`network purge ${net.id}\` removes its records and keys)` };
    }),
};

