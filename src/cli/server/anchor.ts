import { readFile } from 'node:fs/promises';
import type { Argv } from 'yargs';
import { anchorToString, parseAnchor } from '../../bundle/sign.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { serverAction, serverOptions, type ServerArgs } from './common.ts';

/**
 * `server anchor`: prints this server's trust anchor (`ed25519:…`), the line
 * agents and peer servers pin. Read from the state directory and parsed, so
 * a damaged anchor file is reported rather than handed on; lets a script
 * (plan --apply across servers) fetch it through the same admin channel as
 * every other command.
 */
export const serverAnchorCommand: CliCommand<ServerArgs> = {
  command: 'anchor',
  describe: "print this server's trust anchor (what agents and peer servers pin)",
  builder: (y: Argv) => serverOptions(y) as unknown as Argv<ServerArgs>,
  run: (args: ServerArgs, io: Io) =>
    serverAction(args, io, async (ctx) => {
      const line = anchorToString(parseAnchor((await readFile(ctx.paths.trustAnchor, 'utf8')).trim()));
      return { json: { trust_anchor: line, trust_anchor_file: ctx.paths.trustAnchor }, text: line };
    }),
};
