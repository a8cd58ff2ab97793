import type { CliCommand, CliGroup } from './command.ts';
import { demoCommand } from './demo.ts';
import { downCommand } from './down.ts';
import { enrollCommand } from './enroll.ts';
import { reloadCommand } from './reload.ts';
import { restartCommand } from './restart.ts';
import { runCommand } from './run.ts';
import { serverGroup } from './server/group.ts';
import { statusCommand } from './status.ts';
import { upCommand } from './up.ts';
import { verifyCommand } from './verify.ts';

/**
 * The command tree. Each entry lives in its own file under src/cli/ (one
 * file per subcommand); add new ones here, grouped as the CLI shows them.
 */
export const commands: readonly (CliCommand | CliGroup)[] = [
  // agent (node side)
  runCommand,
  statusCommand,
  upCommand,
  downCommand,
  restartCommand,
  reloadCommand,
  enrollCommand,
  verifyCommand,
  // server mode (MetaVPN host)
  serverGroup,
  // everything at once, in namespaces on this machine
  demoCommand,
];
