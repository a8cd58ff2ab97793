import { isSea } from 'node:sea';
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { checkRoot, runDemo } from '../demo/run.ts';
import { demoRequest, type DemoRequest } from '../demo/request.ts';
import { UsageError } from '../errors.ts';
import { MAX_RSPEC_BYTES, parseTestbedsFile } from '../server/federation/rspec.ts';
import { parseJsonBounded } from '../util/json.ts';
import { readInput } from './input.ts';
import { DEFAULT_BASE_DIR, downAll } from '../demo/state.ts';
import type { CliCommand } from './command.ts';
import type { Io } from './io.ts';

interface DemoArgs {
  action?: string;
  keep: boolean;
  federated: boolean;
  l3: boolean;
  ha: boolean;
  rspec?: string;
  testbeds?: string;
  dir: string;
  'timeout-s': number;
  agentless: number;
}

/** This executable as an argv prefix: itself when packaged, node + the entry script in development. */
export function selfCommand(): string[] {
  if (isSea()) return [process.execPath];
  const script = process.argv[1];
  return script ? [process.execPath, resolve(script)] : [process.execPath];
}

/**
 * `mvpn-client demo [down] [--federated]`: the whole system in namespaces on
 * this machine (two testbeds, the planner's plan applied on the servers it
 * names, six agents), proven by status, an all-pairs ping matrix and
 * neighbour tables; `--federated` makes both testbeds private, each with its
 * own server, joined by a link; `--ha`: four nodes on a LAN whose server
 * runs on two hosts sharing a PostgreSQL store, and the owning host killed; `--l3`: three
 * servers (public a, private b and c), one routed LAN, a node moved between servers; `--rspec REQUEST.xml --testbeds FILE` builds
 * the testbeds and the one VPN LAN a GENI request describes; `--agentless N` runs N nodes as stock
 * openvpn clients of exported profiles; `down` removes what `demo --keep` (or a
 * killed demo) left.
 */
export const demoCommand: Omit<CliCommand<DemoArgs>, 'describe'> = {
  command: 'demo [action]',
  builder: (y: Argv) =>
    y
      .positional('action', { type: 'string', choices: ['down'], describe: 'down: remove what `demo --keep` left' })
      .option('keep', { type: 'boolean', default: false, describe: 'leave the demo running and print commands to look around' })
      .option('federated', { type: 'boolean', default: false, describe: 'two private testbeds, a server on each ops host, joined by a server-to-server link' })
      .option('l3', { type: 'boolean', default: false, describe: "three testbeds (public a, private b and c), a server on each ops host, one routed L3 LAN (BIRD between the servers); a node's first server is cut off and it moves to another" })
      .option('ha', { type: 'boolean', default: false, describe: 'two server hosts on one PostgreSQL store (a cluster of the demo\'s own, Debian\'s postgresql), four nodes; the owning host is killed and the LAN fails over' })
      .option('rspec', { type: 'string', describe: 'instead: the testbeds and the one VPN LAN of a GENI request RSpec (with --testbeds; addresses in 198.18.0.0/15)' })
      .option('testbeds', { type: 'string', describe: 'with --rspec: JSON {"testbeds": [...]} as for server plan --rspec' })
      .option('dir', { type: 'string', default: DEFAULT_BASE_DIR, describe: "where demos keep their files and state files" })
      .option('agentless', { type: 'number', default: 0, describe: 'this many nodes run a stock `openvpn --config` of an exported profile (server export --format ovpn) instead of the agent' })
      .option('timeout-s', { type: 'number', default: 240, describe: 'how long to wait for enrollment and for all nodes to connect' }) as unknown as Argv<DemoArgs>,
  async run(args: DemoArgs, io: Io): Promise<number> {
    const baseDir = resolve(args.dir);
    if (args.action === 'down') {
      checkRoot();
      const r = await downAll(baseDir, (l) => io.stderr.write(`demo down: ${l}\n`));
      io.stdout.write(
        r.removed.length === 0 ? 'no kept demo found\n' : `removed demo(s) ${r.removed.join(', ')}\n`,
      );
      if (r.running.length > 0) io.stdout.write(`still running (not kept; they tear down by themselves): ${r.running.join(', ')}\n`);
      return 0;
    }
    let request: DemoRequest | undefined;
    if (args.rspec !== undefined || args.testbeds !== undefined) {
      if (args.rspec === undefined || args.testbeds === undefined) throw new UsageError('--rspec REQUEST.xml and --testbeds FILE go together');
      if (args.federated || args.ha || args.l3) throw new UsageError('--federated, --ha, --l3 and --rspec are different demos: give one');
      const tbFile = String(args.testbeds);
      const testbeds = parseTestbedsFile(parseJsonBounded(await readInput(io, tbFile, 'testbeds file', 1 << 20), { maxBytes: 1 << 20, maxDepth: 6 }, 'testbeds file'), tbFile);
      request = await demoRequest(await readInput(io, String(args.rspec), 'request RSpec', MAX_RSPEC_BYTES), testbeds);
    }
    if ([args.ha, args.federated, args.l3].filter(Boolean).length > 1) throw new UsageError('--federated, --ha and --l3 are different demos: give one');
    // an agentless node's stock openvpn is checked on its tap (the L2 demos'); the L3 demo has none
    if (args.l3 && args.agentless > 0) throw new UsageError('--agentless is not part of demo --l3');
    return runDemo({
      ...(request ? { request } : {}),
      bin: selfCommand(),
      baseDir,
      keep: args.keep,
      federated: args.federated,
      ha: args.ha,
      l3: args.l3,
      timeoutS: args['timeout-s'],
      agentless: args.agentless,
      out: (s) => io.stdout.write(s),
      err: (s) => io.stderr.write(s),
    });
  },
};
