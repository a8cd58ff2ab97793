import type { Argv } from 'yargs';
import { createToken, parseTtl } from '../../server/ops/nodes.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { serverAction, serverOptions, type ServerArgs } from './common.ts';

interface TokenArgs extends ServerArgs {
  node: string;
  ttl: string;
}

/**
 * `server node token NODE [--ttl 24h]`: a one-time enrollment token bound to
 * NODE. Printed once; the server keeps only its sha256.
 */
export const nodeTokenCommand: CliCommand<TokenArgs> = {
  command: 'token <node>',
  describe: 'print a one-time enrollment token for a node (only its hash is stored)',
  builder: (y: Argv) =>
    serverOptions(
      y
        .positional('node', { type: 'string', demandOption: true, describe: 'node id' })
        .option('ttl', { type: 'string', default: '24h', describe: 'how long the token is valid (1m to 30d)' }),
    ) as unknown as Argv<TokenArgs>,
  run: (args: TokenArgs, io: Io) =>
    serverAction(args, io, (ctx) => {
      const { token, expiresAt } = createToken(ctx, String(args.node), parseTtl(args.ttl));
      const expires = new Date(expiresAt).toISOString();
      return { json: { node: String(args.node), token, expires_at: expires }, text: token };
    }),
};
