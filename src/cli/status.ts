import type { Argv } from 'yargs';
import { ExitCode, UsageError } from '../errors.ts';
import { DEFAULT_RUNTIME_DIR } from '../agent/paths.ts';
import { daemonRequest } from '../agent/control-client.ts';
import { renderStatusTable, statusExitCode, summaryLine, terminalSafeJson, type AgentStatus } from '../agent/status.ts';
import type { CliCommand } from './command.ts';
import type { Io } from './io.ts';

export interface StatusArgs {
  json: boolean;
  prometheus: boolean;
  'runtime-dir': string;
}

/**
 * `mvpn-client status`: asks the daemon over the world-readable status
 * socket, so experimenters need no root. Exit codes (documented in README):
 * 0 every network connected (also when the node is in none), 1 some are not
 * (ExitCode.notAllConnected), 3 the daemon is not running
 * (ExitCode.daemonUnreachable). `--prometheus` prints the daemon's metrics
 * once (for node_exporter's textfile collector) and exits 0 whatever the
 * networks' state: the metrics carry it.
 */
export const statusCommand: CliCommand<StatusArgs> = {
  command: 'status',
  describe: 'show the networks of this node (exit 0: all connected, 1: some not, 3: daemon not running)',
  builder: (y: Argv) =>
    y
      .option('json', { type: 'boolean', default: false, describe: "print the daemon's status object as JSON" })
      .option('prometheus', { type: 'boolean', default: false, describe: 'print the metrics in Prometheus text format (for a textfile collector)' })
      .option('runtime-dir', { type: 'string', default: DEFAULT_RUNTIME_DIR, describe: "the daemon's runtime directory" }) as unknown as Argv<StatusArgs>,
  async run(args: StatusArgs, io: Io): Promise<number> {
    // Transport failures throw MvpnError; main prints them and exits 3 or 4.
    if (args.prometheus) {
      if (args.json) throw new UsageError('--prometheus and --json are different outputs; give one');
      const text = (await daemonRequest({ runtimeDir: args['runtime-dir'], socket: 'status', method: 'GET', path: '/v1/metrics', action: 'status --prometheus', text: true })) as string;
      // The daemon renders with prom-client (label values escaped); nothing here is a terminal table.
      io.stdout.write(text);
      return ExitCode.ok;
    }
    const status = (await daemonRequest({
      runtimeDir: args['runtime-dir'],
      socket: 'status',
      method: 'GET',
      path: '/v1/status',
      action: 'status',
    })) as AgentStatus;
    if (args.json) {
      io.stdout.write(terminalSafeJson(JSON.stringify(status, null, 2)) + '\n');
    } else {
      io.stdout.write(renderStatusTable(status));
      io.stderr.write(`${summaryLine(status)}${status.ready ? '' : ' (daemon still starting)'}\n`);
    }
    return statusExitCode(status) === 0 ? ExitCode.ok : ExitCode.notAllConnected;
  },
};
