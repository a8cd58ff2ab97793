import type { CliCommand, CliGroup } from './command.ts';

/**
 * The command tree. Each entry lives in its own file under src/cli/ (one
 * file per subcommand); add new ones here, grouped as the CLI shows them.
 */
export const commands: readonly (CliCommand | CliGroup)[] = [];
