import type { Argv } from 'yargs';
import { listNetworks, networkView } from '../../server/ops/networks.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { serverAction, serverOptions, table, type ServerArgs } from './common.ts';

/** `server network list`: every network (deleted ones too, marked), with member counts. */
export const networkListCommand: CliCommand<ServerArgs> = {
  command: 'list',
  describe: 'list networks',
  builder: (y: Argv) => serverOptions(y) as unknown as Argv<ServerArgs>,
  run: (args: ServerArgs, io: Io) =>
    serverAction(args, io, (ctx) => {
      const nets = listNetworks(ctx);
      const counts = ctx.store.read((tx) =>
        nets.map((n) => {
          const ms = tx.listMemberships({ network: n.id });
          return { active: ms.filter((m) => !m.revoked).length, revoked: ms.filter((m) => m.revoked).length };
        }),
      );
      const views = nets.map((n, i) => networkView(n, counts[i]));
      return {
        json: views,
        text:
          nets.length === 0
            ? 'no networks (create one with `mvpn-client server network create NAME`)'
            : table([
                ['NETWORK', 'STATE', 'DEV', 'PORT', 'SUBNET', 'NODES', 'REMOTES'],
                ...nets.map((n, i) => [
                  n.id,
                  n.state,
                  n.devType,
                  `${n.proto}/${n.port}`,
                  n.subnet,
                  String(counts[i]!.active),
                  n.remotes.map((r) => `${r.host}:${r.port ?? n.port}`).join(','),
                ]),
              ]),
      };
    }),
};
