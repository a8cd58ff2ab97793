import type { Argv } from 'yargs';
import { DEFAULT_RUNTIME_DIR } from '../agent/paths.ts';
import { daemonRequest } from '../agent/control-client.ts';
import type { NetworkVerb } from '../agent/control-api.ts';
import { ExitCode } from '../errors.ts';
import type { CliCommand } from './command.ts';
import type { Io } from './io.ts';

export interface NetworkVerbArgs {
  network: string;
  'runtime-dir': string;
}

/**
 * `up|down|restart NET` (this file and down.ts, restart.ts) share everything but the verb: one POST on the
 * root-only control socket. A non-root caller gets "permission denied: …
 * needs root (try sudo)" and exit 4 from the socket's file mode.
 */
export function networkVerbCommand(verb: NetworkVerb, describe: string): CliCommand<NetworkVerbArgs> {
  return {
    command: `${verb} <network>`,
    describe,
    builder: (y: Argv) =>
      y
        .positional('network', { type: 'string', demandOption: true, describe: 'network id' })
        .option('runtime-dir', { type: 'string', default: DEFAULT_RUNTIME_DIR, describe: "the daemon's runtime directory" }) as unknown as Argv<NetworkVerbArgs>,
    async run(args: NetworkVerbArgs, io: Io): Promise<number> {
      await daemonRequest({
        runtimeDir: args['runtime-dir'],
        socket: 'control',
        method: 'POST',
        path: `/v1/networks/${encodeURIComponent(args.network)}/${verb}`,
        action: `${verb} ${args.network}`,
      });
      io.stderr.write(`${verb} ${args.network}: done\n`);
      return ExitCode.ok;
    },
  };
}

/** `mvpn-client up NET`: start a network taken down with `down` (needs root). */
export const upCommand = networkVerbCommand('up', 'start a network that was taken down (needs root)');
