import { purgeNetwork } from '../../server/ops/networks.ts';
import { serverCommand, NETWORK_ARG } from './common.ts';
import type { IdArgs } from './network-delete.ts';

/** `server network purge ID`: removes a network that is not up, with its keys, records and files. */
export const networkPurgeCommand = serverCommand<IdArgs>({
  command: 'purge <id>',
  describe: 'remove a network that is not up and everything it had (keys, nodes, history, files)',
  options: (y) => y.positional('id', NETWORK_ARG),
  action: async (ctx, args) => {
    const net = await purgeNetwork(ctx, String(args.id));
    return { json: { id: net.id, purged: true }, text: `network ${net.id} purged` };
  },
});
