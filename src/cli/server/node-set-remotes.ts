import { UsageError } from '../../errors.ts';
import { membershipView, setNodeRemotes } from '../../server/ops/nodes.ts';
import { serverCommand, NODE_ARG, NETWORK_ARG, type ServerArgs } from './common.ts';

interface SetRemotesArgs extends ServerArgs {
  node: string;
  network: string;
  remote?: string[];
  clear: boolean;
}

/**
 * `server node set-remotes NODE --network ID (--remote HOST[:PORT]… | --clear)`:
 * changes the remotes this node's bundle lists for the network (`--clear`:
 * back to the network's). The node gets a new bundle version only when the
 * list changes, so a script may repeat it.
 */
export const nodeSetRemotesCommand = serverCommand<SetRemotesArgs>({
  command: 'set-remotes <node>',
  describe: "set or clear a node's own remotes in a network",
  options: (y) =>
    y
      .positional('node', NODE_ARG)
      .option('network', NETWORK_ARG)
      .option('remote', { type: 'string', array: true, describe: 'HOST[:PORT], in order (repeatable)' })
      .option('clear', { type: 'boolean', default: false, describe: "use the network's remotes again" }),
  action: (ctx, args) => {
    const given = args.remote?.map(String) ?? [];
    if (args.clear === (given.length > 0)) throw new UsageError('give either --remote HOST[:PORT] (one or more) or --clear');
    const { membership: m, changed } = setNodeRemotes(ctx, String(args.node), args.network, args.clear ? null : given);
    const list = m.remotes ? m.remotes.map((r) => (r.port === undefined ? r.host : `${r.host}:${r.port}`)).join(', ') : "the network's";
    return {
      json: { ...membershipView(m), changed },
      text: `${m.node} in ${m.network}: remotes ${list}${changed ? ` (bundle version ${m.bundleVersion})` : ' (unchanged)'}`,
    };
  },
});
