import type { Argv } from 'yargs';
import { UsageError } from '../../errors.ts';
import { membershipView, setNodeRemotes } from '../../server/ops/nodes.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { serverAction, serverOptions, type ServerArgs } from './common.ts';

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
export const nodeSetRemotesCommand: CliCommand<SetRemotesArgs> = {
  command: 'set-remotes <node>',
  describe: "set or clear a node's own remotes in a network",
  builder: (y: Argv) =>
    serverOptions(
      y
        .positional('node', { type: 'string', demandOption: true, describe: 'node id' })
        .option('network', { type: 'string', demandOption: true, describe: 'network id' })
        .option('remote', { type: 'string', array: true, describe: 'HOST[:PORT], in order (repeatable)' })
        .option('clear', { type: 'boolean', default: false, describe: "use the network's remotes again" }),
    ) as unknown as Argv<SetRemotesArgs>,
  run: (args: SetRemotesArgs, io: Io) =>
    serverAction(args, io, (ctx) => {
      const given = args.remote?.map(String) ?? [];
      if (args.clear === (given.length > 0)) throw new UsageError('give either --remote HOST[:PORT] (one or more) or --clear');
      const { membership: m, changed } = setNodeRemotes(ctx, String(args.node), args.network, args.clear ? null : given);
      const list = m.remotes ? m.remotes.map((r) => (r.port === undefined ? r.host : `${r.host}:${r.port}`)).join(', ') : "the network's";
      return {
        json: { ...membershipView(m), changed },
        text: `${m.node} in ${m.network}: remotes ${list}${changed ? ` (bundle version ${m.bundleVersion})` : ' (unchanged)'}`,
      };
    }),
};
