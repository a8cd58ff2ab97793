import type { Argv } from 'yargs';
import { AgentDaemon } from '../agent/daemon.ts';
import { loadAgentConfig } from '../agent/config.ts';
import { DEFAULT_CONFIG_PATH } from '../agent/paths.ts';
import { agentFormatters } from '../agent/events.ts';
import { ExitCode, MvpnError } from '../errors.ts';
import { createLogger, type LineSink } from '../log.ts';
import { openvpnFormatters } from '../openvpn/events.ts';
import { systemdFromEnv } from '../systemd/notify.ts';
import type { CliCommand } from './command.ts';
import type { Io } from './io.ts';

interface RunArgs {
  config: string;
}

/**
 * `mvpn-client run`: the agent daemon, in the foreground (systemd
 * Type=notify). Returns after SIGTERM/SIGINT once every openvpn it started
 * has been stopped; SIGHUP reconciles now (like `mvpn-client reload`). A
 * config it cannot use stops it before anything is touched, with the field
 * named.
 */
export const runCommand: Omit<CliCommand<RunArgs>, 'describe'> = {
  command: 'run',
  builder: (y: Argv) =>
    y.option('config', {
      type: 'string',
      default: DEFAULT_CONFIG_PATH,
      describe: 'agent config file, or the directory holding config.json (e.g. where the startup tarball unpacked)',
    }) as unknown as Argv<RunArgs>,
  async run(args: RunArgs, io: Io): Promise<number> {
    if (process.getuid?.() !== 0) {
      throw new MvpnError('MVPN_NOT_ROOT', 'run needs root: it creates tap/tun interfaces and the root-only control socket', {
        hint: 'run it as the mvpn-client systemd service, or with sudo',
      });
    }
    const config = await loadAgentConfig(args.config);
    const sink: LineSink = { write: (line) => void io.stderr.write(line + '\n') };
    const journal = io.env['JOURNAL_STREAM'] !== undefined;
    const logger = createLogger(agentFormatters, { sink, journal });
    const openvpnLogger = createLogger(openvpnFormatters, { sink, journal });
    const systemd = systemdFromEnv(io.env as NodeJS.ProcessEnv, { sink, journal });
    const { notifier } = systemd;
    const daemon = await AgentDaemon.create(config, { logger, openvpnLogger, notifier });

    let resolveStopped: () => void = () => undefined;
    const stopped = new Promise<void>((r) => (resolveStopped = r));
    const onStop = (sig: string) => () => void daemon.stop(sig).then(resolveStopped);
    const onTerm = onStop('SIGTERM');
    const onInt = onStop('SIGINT');
    const onHup = (): void => void daemon.reload('SIGHUP');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
    process.on('SIGHUP', onHup);
    const stopWatchdog = systemd.startWatchdog();
    try {
      try {
        await daemon.start();
      } catch (err) {
        await daemon.stop('start failed');
        throw err;
      }
      await stopped;
    } finally {
      stopWatchdog?.();
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      process.off('SIGHUP', onHup);
    }
    return ExitCode.ok;
  },
};
