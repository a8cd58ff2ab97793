import type { Argv } from 'yargs';
import { DEFAULT_RUNTIME_DIR } from '../agent/paths.ts';
import { daemonRequest } from '../agent/control-client.ts';
import { printable } from '../agent/status.ts';
import { ExitCode } from '../errors.ts';
import type { CliCommand } from './command.ts';
import type { Io } from './io.ts';

interface ReloadArgs {
  'runtime-dir': string;
}

/**
 * `mvpn-client reload`: reconcile now (same as SIGHUP / systemctl reload) and
 * wait for it. Exit 0 when the reconcile got a membership document, 5 when
 * discovery failed (networks keep running either way).
 */
export const reloadCommand: CliCommand<ReloadArgs> = {
  command: 'reload',
  describe: 'fetch membership and bundles now and apply changes (needs root)',
  builder: (y: Argv) =>
    y.option('runtime-dir', { type: 'string', default: DEFAULT_RUNTIME_DIR, describe: "the daemon's runtime directory" }) as unknown as Argv<ReloadArgs>,
  async run(args: ReloadArgs, io: Io): Promise<number> {
    const r = (await daemonRequest({
      runtimeDir: args['runtime-dir'],
      socket: 'control',
      method: 'POST',
      path: '/v1/reload',
      action: 'reload',
      timeoutMs: 15 * 60_000,
    })) as { ok: boolean; error?: { code: string; message: string } };
    if (r.ok) {
      io.stderr.write('reload: done\n');
      return ExitCode.ok;
    }
    io.stderr.write(`mvpn-client: reload: ${printable(r.error?.message ?? 'failed')} [${printable(r.error?.code ?? 'MVPN_INTERNAL')}]\n`);
    return ExitCode.failure;
  },
};
