import type { Argv } from 'yargs';
import { ExitCode } from '../../errors.ts';
import { createLogger } from '../../log.ts';
import { openvpnFormatters, type OpenvpnEvent } from '../../openvpn/events.ts';
import { DEFAULT_STATE_DIR } from '../../server/config.ts';
import { ServerDaemon } from '../../server/daemon.ts';
import { serverFormatters, type ServerEvent } from '../../server/events.ts';
import { systemdFromEnv } from '../../systemd/notify.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { reportFailure } from './common.ts';

interface RunArgs {
  'state-dir': string;
  verbose: boolean;
}

/**
 * `mvpn-client server run`: the server daemon (systemd Type=notify). Runs
 * until SIGTERM/SIGINT, then stops every openvpn server it started (by pid)
 * and closes the listener. SIGHUP reconciles with the store at once.
 */
export const serverRunCommand: CliCommand<RunArgs & { json: boolean }> = {
  command: 'run',
  describe: 'run the server daemon: HTTPS API and one supervised openvpn server per network that is up',
  builder: (y: Argv) =>
    y
      .option('state-dir', { type: 'string', default: DEFAULT_STATE_DIR, describe: 'server state directory (made by `server init`)' })
      .option('verbose', { type: 'boolean', default: false, describe: 'log debug events (every API request)' }) as unknown as Argv<RunArgs & { json: boolean }>,
  async run(args: RunArgs & { json: boolean }, io: Io): Promise<number> {
    const sink = { write: (line: string) => void io.stderr.write(line + '\n') };
    const minLevel = args.verbose ? 'debug' : 'info';
    const logger = createLogger<ServerEvent>(serverFormatters, { sink, minLevel });
    const openvpnLogger = createLogger<OpenvpnEvent>(openvpnFormatters, { sink, minLevel });
    const systemd = systemdFromEnv(io.env as NodeJS.ProcessEnv, { sink, minLevel });
    const { notifier } = systemd;
    let daemon: ServerDaemon;
    try {
      daemon = await ServerDaemon.start({ stateDir: args['state-dir'], logger, openvpnLogger, ...(notifier ? { notifier } : {}) });
    } catch (err) {
      await notifier?.send({ STATUS: 'failed to start', ERRNO: '1' });
      return reportFailure({ json: false }, io, err);
    }
    const stopWatchdog = systemd.startWatchdog();
    await new Promise<void>((resolve) => {
      const onStop = (signal: string) => {
        process.off('SIGTERM', onTerm);
        process.off('SIGINT', onInt);
        process.off('SIGHUP', onHup);
        stopWatchdog?.();
        daemon.stop(`${signal} received`).then(resolve, (err: unknown) => {
          io.stderr.write(`mvpn-client: stopping: ${(err as Error).message}\n`);
          resolve();
        });
      };
      const onTerm = () => onStop('SIGTERM');
      const onInt = () => onStop('SIGINT');
      const onHup = () => void daemon.reconcile('SIGHUP');
      process.on('SIGTERM', onTerm);
      process.on('SIGINT', onInt);
      process.on('SIGHUP', onHup);
    });
    return ExitCode.ok;
  },
};


