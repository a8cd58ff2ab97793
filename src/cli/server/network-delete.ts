import { deleteNetwork, networkView } from '../../server/ops/networks.ts';
import { serverCommand, NETWORK_ARG, type ServerArgs } from './common.ts';

export interface IdArgs extends ServerArgs {
  id: string;
}

/** `server network delete ID`: a down network leaves every node's document; its records stay as history. */
export const networkDeleteCommand = serverCommand<IdArgs>({
  command: 'delete <id>',
  describe: 'delete a network that is down (records kept as history; port and subnet freed)',
  options: (y) => y.positional('id', NETWORK_ARG),
  action: (ctx, args) => {
    const net = deleteNetwork(ctx, String(args.id));
    return { json: networkView(net), text: `network ${net.id} deleted (\`network purge ${net.id}\` removes its records and keys)` };
  },
});

