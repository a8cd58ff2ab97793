import type { Argv } from 'yargs';
import { purgeNetwork } from '../../server/ops/networks.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { serverAction, serverOptions } from './common.ts';
import type { IdArgs } from './network-delete.ts';

/** `server network purge ID`: removes a network that is not up, with its keys, records and files. */
export const networkPurgeCommand: CliCommand<IdArgs> = {
  command: 'purge <id>',
  describe: 'remove a network that is not up and everything it had (keys, nodes, history, files)',
  builder: (y: Argv) => serverOptions(y.positional('id', { type: 'string', demandOption: true, describe: 'network id' })) as unknown as Argv<IdArgs>,
  run: (args: IdArgs, io: Io) =>
    serverAction(args, io, async (ctx) => {
      const net = await purgeNetwork(ctx, String(args.id));
      return { json: { id: net.id, purged: true }, text: `network ${net.id} purged` };
    }),
};
