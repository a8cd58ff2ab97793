import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { ExitCode, UsageError } from '../../errors.ts';
import { DEFAULT_LISTEN, DEFAULT_METRICS_LISTEN, DEFAULT_POOL, DEFAULT_PORT_RANGE, DEFAULT_STATE_DIR } from '../../server/config.ts';
import { initServer } from '../../server/init.ts';
import { parseJoinMaterial, type JoinMaterial } from '../../server/join.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { reportFailure, writeOutput } from './common.ts';

interface InitArgs {
  'state-dir': string;
  hostname: string[];
  address: string[];
  listen?: string;
  'vpn-listen'?: string;
  'metrics-listen'?: string;
  'metrics-allow-remote': boolean;
  pool?: string;
  'port-range'?: string;
  'runtime-dir'?: string;
  openvpn?: string;
  'store-url'?: string;
  'store-file'?: string;
  'host-id'?: string;
  join?: string;
  json: boolean;
}

/**
 * `mvpn-client server init`: create the state directory (signing key, API CA,
 * listener certificate, config, store). Prints the trust anchor line and the
 * API CA path: both go into the nodes' startup tarballs. With `--join=-`
 * it sets up a further host on an existing PostgreSQL store instead, from
 * the join material on stdin (`server join-material` on a host of the store).
 */
export const serverInitCommand: CliCommand<InitArgs> = {
  command: 'init',
  describe: 'create a new server state directory (refuses to overwrite one)',
  builder: (y: Argv) =>
    y
      .option('state-dir', { type: 'string', default: DEFAULT_STATE_DIR, describe: 'where to create it (0700)' })
      .option('hostname', { type: 'string', array: true, default: [], describe: "DNS name of this server (listener certificate, default remotes); repeat" })
      .option('address', { type: 'string', array: true, default: [], describe: 'IP address of this server (listener certificate, default remotes); repeat' })
      .option('listen', { type: 'string', describe: `HTTPS API listener ADDR:PORT (default ${DEFAULT_LISTEN})` })
      .option('vpn-listen', { type: 'string', describe: 'address the openvpn servers bind to (default: all)' })
      .option('metrics-listen', { type: 'string', describe: `Prometheus metrics listener ADDR:PORT, or "off" (default ${DEFAULT_METRICS_LISTEN})` })
      .option('metrics-allow-remote', { type: 'boolean', default: false, describe: 'allow a non-loopback --metrics-listen (anyone who reaches it reads the metrics)' })
      .option('pool', { type: 'string', describe: `IPv4 pool network subnets come from (default ${DEFAULT_POOL})` })
      .option('port-range', { type: 'string', describe: `UDP ports for networks, A-B (default ${DEFAULT_PORT_RANGE})` })
      .option('runtime-dir', { type: 'string', describe: 'management sockets, pid files, status (default /run/mvpn-server or <state-dir>/run)' })
      .option('openvpn', { type: 'string', describe: 'openvpn executable (default: openvpn on PATH)' })
      .option('store-url', { type: 'string', describe: 'keep the state in this PostgreSQL database (postgresql://…; default: SQLite store.db in the state directory)' })
      .option('store-file', { type: 'string', describe: 'same, the URL read from this file (owner-only: it holds the password)' })
      .conflicts('store-url', 'store-file')
      .option('host-id', { type: 'string', describe: 'this host\'s id among the hosts of its store (default "primary"; required with --join)' })
      .option('join', { type: 'string', describe: 'join an existing PostgreSQL store: "-" reads `server join-material` output from stdin' })
      .option('json', { type: 'boolean', default: false, describe: 'print JSON on stdout' }) as unknown as Argv<InitArgs>,
  async run(args: InitArgs, io: Io): Promise<number> {
    try {
      const join = args.join === undefined ? undefined : await readJoinMaterial(args.join, io);
      const r = await initServer({
        ...(join === undefined ? {} : { join }),
        ...(args['host-id'] === undefined ? {} : { hostId: args['host-id'] }),
        stateDir: args['state-dir'],
        hostnames: args.hostname.map(String),
        addresses: args.address.map(String),
        ...(args.listen === undefined ? {} : { listen: args.listen }),
        ...(args['vpn-listen'] === undefined ? {} : { vpnListen: args['vpn-listen'] }),
        ...(args['metrics-listen'] === undefined ? {} : { metricsListen: args['metrics-listen'] === 'off' ? null : args['metrics-listen'] }),
        ...(args['metrics-allow-remote'] ? { metricsAllowRemote: true } : {}),
        ...(args.pool === undefined ? {} : { pool: args.pool }),
        ...(args['port-range'] === undefined ? {} : { portRange: args['port-range'] }),
        ...(args['runtime-dir'] === undefined ? {} : { runtimeDir: args['runtime-dir'] }),
        ...(args.openvpn === undefined ? {} : { openvpnPath: args.openvpn }),
        ...(args['store-url'] === undefined ? {} : { store: { postgres: { url: args['store-url'] } } }),
        ...(args['store-file'] === undefined ? {} : { store: { postgres: { connection_file: resolve(args['store-file']) } } }),
      });
      writeOutput(args, io, {
        json: {
          state_dir: r.stateDir,
          trust_anchor: r.trustAnchor,
          trust_anchor_file: r.trustAnchorPath,
          api_ca: r.apiCaPath,
          listen: r.config.listen,
          hostnames: r.config.hostnames,
          addresses: r.config.addresses,
          pool: r.config.pool,
          port_range: r.config.port_range,
          runtime_dir: r.config.runtime_dir,
          store: r.config.store === undefined ? 'sqlite' : 'postgres',
        },
        text: [
          join ? `joined the store as host ${r.config.host_id ?? ''}: initialised ${r.stateDir}` : `initialised ${r.stateDir}`,
          `trust anchor: ${r.trustAnchor}`,
          `  (also in ${r.trustAnchorPath}; put it in the nodes' startup tarball as the agent's "anchor")`,
          `API CA: ${r.apiCaPath}`,
          `  (put it in the startup tarball as the agent's "server_ca")`,
          `HTTPS API will listen on ${r.config.listen}; names in its certificate: ${[...r.config.hostnames, ...r.config.addresses].join(', ')}`,
        ].join('\n'),
      });
      return ExitCode.ok;
    } catch (err) {
      return reportFailure(args, io, err);
    }
  },
};

/** `--join=-`: the join material from stdin (only there: it holds the signing key, and a file of it would outlive the join). */
async function readJoinMaterial(source: string, io: Io): Promise<JoinMaterial> {
  if (source !== '-' || io.stdin === undefined) throw new UsageError('--join takes "-": pipe `mvpn-client server join-material` from a host of the store into stdin');
  return parseJoinMaterial((await io.stdin(2_000_000)).toString('utf8'), 'the join material on stdin');
}
