import type { CliEntry } from './command.ts';
import { downCommand } from './down.ts';
import { reloadCommand } from './reload.ts';
import { restartCommand } from './restart.ts';
import { statusCommand } from './status.ts';
import { upCommand } from './up.ts';

/**
 * The command tree. Each entry lives in its own file under src/cli/ (one
 * file per subcommand); add new ones here, grouped as the CLI shows them.
 * Entries with `load` are lazy: their modules (the agent daemon, bundle
 * verification, server mode, the demo) are evaluated only when argv names
 * them; the eager ones are the agent's thin control-socket clients.
 * test/integration/role-split.test.ts checks that `status`, `--version` and
 * the agent never evaluate server-mode modules.
 */
export const commands: readonly CliEntry[] = [
  // agent (node side)
  {
    command: 'run',
    describe: 'run the agent: join this node to its networks and keep them up (under systemd)',
    load: async () => (await import('./run.ts')).runCommand,
  },
  statusCommand,
  upCommand,
  downCommand,
  restartCommand,
  reloadCommand,
  {
    command: 'enroll',
    describe: 'enroll this node with the server (key made here, one-time token)',
    load: async () => (await import('./enroll.ts')).enrollCommand,
  },
  {
    command: 'verify <bundle>',
    describe: 'check a bundle file offline (exit 0: acceptable, 1: rejected, 2: usage)',
    load: async () => (await import('./verify.ts')).verifyCommand,
  },
  // server mode (MetaVPN host)
  {
    command: 'server',
    describe: 'server mode: networks, nodes, enrollment, the HTTPS API and openvpn servers',
    load: async () => (await import('./server/group.ts')).serverGroup,
  },
  // everything at once, in namespaces on this machine
  {
    command: 'demo [action]',
    describe:
      'run the whole system in network namespaces on this machine and prove it works (root; needs openvpn); `demo down` removes a kept demo',
    load: async () => (await import('./demo.ts')).demoCommand,
  },
];
