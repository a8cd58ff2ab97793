import type { Argv } from 'yargs';
import type { Io } from './io.ts';

/**
 * One CLI subcommand: its yargs definition and a `run` that knows nothing
 * about argv parsing and writes only through `io`. `run` resolves to the
 * process exit code (see ExitCode in errors.ts); failures may also be thrown
 * as MvpnError and are turned into a message and exit code by main.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the registry holds commands of every argument shape
export interface CliCommand<A = any> {
  readonly command: string;
  readonly describe: string;
  readonly builder: (y: Argv) => Argv<A>;
  readonly run: (args: A, io: Io) => Promise<number>;
}

/** A command that only groups others (`server`, `server network`). */
export interface CliGroup {
  readonly command: string;
  readonly describe: string;
  readonly children: readonly (CliCommand | CliGroup)[];
}

export function isGroup(c: CliCommand | CliGroup): c is CliGroup {
  return 'children' in c;
}
