import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { UsageError } from '../../errors.ts';
import { signingKeyFromPem } from '../../bundle/sign.ts';
import { parseJsonBounded } from '../../util/json.ts';
import { applyPlan } from '../../server/federation/plan-apply.ts';
import { formatPlan, parseExperiment, planExperiment, type Plan } from '../../server/federation/plan.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { reportFailure, serverAction, serverOptions, table, writeOutput, type ServerArgs } from './common.ts';

interface PlanArgs extends ServerArgs {
  experiment: string;
  apply: boolean;
  server?: string;
  'links-dir'?: string;
  'api-url'?: string;
}

async function loadPlan(file: string): Promise<Plan> {
  let text: Buffer;
  try {
    text = await readFile(resolve(file));
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
  }
  return planExperiment(parseExperiment(parseJsonBounded(text, { maxBytes: 4 << 20, maxDepth: 8 }, 'experiment description')));
}

/**
 * `server plan EXPERIMENT.json [--json] [--apply --server TESTBED [--links-dir DIR]]`:
 * prints which server hosts each LAN, which links join servers and which
 * remote each node uses; `--apply` creates this server's part (the LANs it
 * hosts, their nodes with addresses and remotes, and with --links-dir the
 * link bundles for its peers).
 */
export const serverPlanCommand: CliCommand<PlanArgs> = {
  command: 'plan <experiment>',
  describe: 'plan servers, links and node remotes for an experiment description; --apply does the local part',
  builder: (y: Argv) =>
    serverOptions(
      y
        .positional('experiment', { type: 'string', demandOption: true, describe: 'experiment description (JSON: testbeds, nodes, lans)' })
        .option('apply', { type: 'boolean', default: false, describe: 'carry out the part of the plan that belongs to this server' })
        .option('server', { type: 'string', describe: 'with --apply: the testbed this server runs on' })
        .option('links-dir', { type: 'string', describe: 'with --apply: write link bundles for this server\'s peers here' })
        .option('api-url', { type: 'string', describe: "with --links-dir: https://HOST:PORT at which peers reach this server's API" }),
    ) as unknown as Argv<PlanArgs>,
  run: async (args: PlanArgs, io: Io) => {
    if (!args.apply) {
      try {
        const plan = await loadPlan(String(args.experiment));
        writeOutput(args, io, { json: plan, text: formatPlan(plan) });
        return 0;
      } catch (err) {
        return reportFailure(args, io, err);
      }
    }
    return serverAction(args, io, async (ctx) => {
      const plan = await loadPlan(String(args.experiment));
      if (args.server === undefined) throw new UsageError('--apply needs --server TESTBED (the testbed this server runs on)');
      if (!plan.servers.some((s) => s.testbed === args.server)) {
        throw new UsageError(`the plan has no server on testbed ${JSON.stringify(args.server)} (servers: ${plan.servers.map((s) => s.testbed).join(', ')})`);
      }
      const linksDir = args['links-dir'] === undefined ? undefined : resolve(args['links-dir']);
      const extra = linksDir
        ? {
            linksDir,
            signingKey: signingKeyFromPem(await readFile(ctx.paths.signingKey, 'utf8')),
            apiCa: { alg: 'ec-p256' as const, certPem: await readFile(ctx.paths.apiCaCert, 'utf8'), keyPem: await readFile(ctx.paths.apiCaKey, 'utf8') },
            apiUrl: args['api-url'],
          }
        : {};
      const steps = await applyPlan(ctx, plan, args.server, extra);
      const left = [
        ...plan.links.filter((l) => l.hub === args.server).map((l) => `on ${l.peer}: mvpn-client server link add <link-${l.lan}-${l.peer}.json> --hub-anchor @<this server's trust-anchor>`),
        ...plan.lans.filter((l) => l.hub !== args.server && l.peers.includes(args.server!)).map((l) => `LAN ${l.name} is hosted by ${l.hub}: apply the plan there, then link add here`),
        'nodes: export their bundles (server export) or enroll them (server node token)',
      ];
      return {
        json: { plan, server: args.server, steps, left },
        text: `${formatPlan(plan)}\napplied on ${args.server}:\n${steps.length ? table([['ACTION', 'LAN', 'WHAT', 'DETAIL'], ...steps.map((s) => [s.action, s.lan, s.node ?? s.peer ?? '-', s.detail])]) : '(nothing: this server hosts no LAN)\n'}\nleft to do:\n${left.map((l) => `  ${l}`).join('\n')}`,
      };
    });
  },
};
