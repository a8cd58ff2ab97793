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

/**
 * A top-level command or group whose modules are evaluated only when argv
 * names it (role-split start-up): `server …` and `demo` (server mode, PKI
 * generator, planner, demo) cost `status`, `--version` and the agent
 * nothing, and the agent's own modules cost `status` nothing. `command` and
 * `describe` are what `--help` lists; `load` brings the rest (builder and
 * run, or children).
 */
export interface CliLazy {
  readonly command: string;
  readonly describe: string;
  readonly load: () => Promise<Omit<CliCommand, 'describe'> | Omit<CliGroup, 'describe'>>;
}

export type CliEntry = CliCommand | CliGroup | CliLazy;

export function isGroup(c: CliCommand | CliGroup): c is CliGroup {
  return 'children' in c;
}

export function isLazy(c: CliEntry): c is CliLazy {
  return 'load' in c;
}
