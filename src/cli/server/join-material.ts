import type { Argv } from 'yargs';
import { ExitCode } from '../../errors.ts';
import { joinMaterial } from '../../server/join.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { reportFailure, serverOptions, type ServerArgs } from './common.ts';

/**
 * `mvpn-client server join-material`: what another host needs to join this
 * server's PostgreSQL store (src/server/join.ts), as one JSON document on
 * stdout — the signing key and API CA key included, so it goes straight
 * into `server init --join=-` over ssh, never into a file or the API.
 */
export const serverJoinMaterialCommand: CliCommand<ServerArgs> = {
  command: 'join-material',
  describe: 'print the secrets and settings another host needs for `server init --join=-` (pipe it over ssh; it holds the signing key)',
  builder: (y: Argv) => serverOptions(y) as unknown as Argv<ServerArgs>,
  async run(args: ServerArgs, io: Io): Promise<number> {
    try {
      io.stdout.write(JSON.stringify(await joinMaterial(args['state-dir'])) + '\n');
      return ExitCode.ok;
    } catch (err) {
      return reportFailure(args, io, err);
    }
  },
};
