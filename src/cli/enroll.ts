import type { Argv } from 'yargs';
import { loadAgentConfig } from '../agent/config.ts';
import { DEFAULT_CONFIG_PATH } from '../agent/paths.ts';
import { enroll } from '../agent/enroll.ts';
import { resolveNodeId } from '../agent/node-id.ts';
import { loadCaPem } from '../agent/trust.ts';
import { viaProblem } from '../agent/via.ts';
import { ConfigError, ExitCode, UsageError } from '../errors.ts';
import type { CliCommand } from './command.ts';
import type { Io } from './io.ts';

interface EnrollArgs {
  config: string;
  force: boolean;
  'token-file'?: string;
  url?: string;
  via?: string;
}

/**
 * `mvpn-client enroll`: make this node's key pair here, send a CSR with the
 * one-time token, store the identity certificate. The token file is removed
 * afterwards. Re-enrolling (a new key) needs --force. `run` does the same
 * automatically once when a token file is configured and no identity exists.
 */
export const enrollCommand: Omit<CliCommand<EnrollArgs>, 'describe'> = {
  command: 'enroll',
  builder: (y: Argv) =>
    y
      .option('config', { type: 'string', default: DEFAULT_CONFIG_PATH, describe: 'agent config file or directory' })
      .option('force', { type: 'boolean', default: false, describe: 're-enroll with a new key even if enrolled' })
      .option('token-file', { type: 'string', describe: 'token file (default: enroll.token_file of the config)' })
      .option('url', { type: 'string', describe: 'server URL (default: enroll.url of the config, or the first https source)' })
      .option('via', {
        type: 'string',
        describe: 'HOST:PORT of a TCP relay to connect through, TLS still verified for the URL host (default: enroll.via of the config, unless --url is given)',
      }) as unknown as Argv<EnrollArgs>,
  async run(args: EnrollArgs, io: Io): Promise<number> {
    const config = await loadAgentConfig(args.config);
    const tokenFile = args['token-file'] ?? config.enroll?.tokenFile;
    const firstHttps = config.sources.find((s) => s.type === 'https');
    const url = args.url ?? config.enroll?.url ?? (firstHttps?.type === 'https' ? new URL(firstHttps.url).origin : undefined);
    // A --url of its own is reached directly unless --via says otherwise; the config's via belongs to the config's URL.
    const via = args.via ?? (args.url !== undefined ? undefined : config.enroll ? config.enroll.via : firstHttps?.type === 'https' ? firstHttps.via : undefined);
    const problem = args.via === undefined ? undefined : viaProblem(args.via);
    if (problem !== undefined) throw new UsageError(`--via ${JSON.stringify(args.via)}: ${problem}`);
    if (tokenFile === undefined || url === undefined) {
      throw new ConfigError('MVPN_CONFIG_INVALID', `config ${config.path}: enroll: no token file or server URL configured`, {
        hint: 'set enroll.token_file (and enroll.url) in the config, or pass --token-file and --url',
      });
    }
    const nodeId = await resolveNodeId(config.node);
    const serverCaPem = config.serverCa === undefined ? undefined : await loadCaPem(config.serverCa, 'server_ca');
    const id = await enroll({
      nodeId,
      url,
      ...(via === undefined ? {} : { via }),
      tokenFile,
      ...(serverCaPem === undefined ? {} : { serverCaPem }),
      stateDir: config.stateDir,
      force: args.force,
      now: new Date(),
      timeoutMs: config.fetch.requestTimeoutMs,
    });
    io.stdout.write(`enrolled node ${nodeId}; identity certificate in ${id.paths.cert}\n`);
    io.stderr.write('the token file was consumed; if the agent is running, `mvpn-client reload` uses the new identity now\n');
    return ExitCode.ok;
  },
};
