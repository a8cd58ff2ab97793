import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { UsageError } from '../../errors.ts';
import { execCommand } from '../../util/exec.ts';
import { parseJsonBounded } from '../../util/json.ts';
import { applyAcrossServers, checkServers, DEFAULT_RELAY_PORT, parseServersFile, ServerChannels, type ServerStep } from '../../server/federation/apply-servers.ts';
import { applyPlan } from '../../server/federation/plan-apply.ts';
import { formatPlan, parseExperiment, planExperiment, type Experiment, type Plan } from '../../server/federation/plan.ts';
import { formatRequestNotes, MAX_RSPEC_BYTES, parseTestbedsFile, planRequest, requestNotes, type RequestTranslation } from '../../server/federation/rspec.ts';
import type { CliCommand } from '../command.ts';
import { readInput } from '../input.ts';
import type { Io } from '../io.ts';
import { reportFailure, serverAction, serverOptions, table, writeOutput, type Output, type ServerArgs } from './common.ts';
import { loadSigningKey } from '../../server/anchor-rotation.ts';

interface PlanArgs extends ServerArgs {
  experiment?: string;
  rspec?: string;
  testbeds?: string;
  apply: boolean;
  server?: string;
  servers?: string;
  'links-dir'?: string;
  'api-url'?: string;
}

const MAX_DESCRIPTION_BYTES = 4 << 20;

interface Loaded {
  /** null: a request with no VPN LAN (the plan is empty). */
  readonly experiment: Experiment | null;
  readonly plan: Plan;
  /** With --rspec: what the request said beyond the plan (links left alone, nodes in no VPN LAN). */
  readonly request?: RequestTranslation;
}

/** The plan from EXPERIMENT.json, or from --rspec REQUEST.xml with --testbeds FILE (translated into a description first: one planner). */
async function loadPlan(io: Io, args: PlanArgs): Promise<Loaded> {
  if (args.rspec !== undefined) {
    if (args.experiment !== undefined) throw new UsageError('give an experiment description or --rspec REQUEST.xml, not both');
    if (args.testbeds === undefined) throw new UsageError('--rspec needs --testbeds FILE: {"testbeds": [...]} with each testbed\'s "component_manager" URN');
    const tbFile = String(args.testbeds);
    const testbeds = parseTestbedsFile(parseJsonBounded(await readInput(io, tbFile, 'testbeds file', 1 << 20), { maxBytes: 1 << 20, maxDepth: 6 }, 'testbeds file'), tbFile);
    const r = await planRequest(await readInput(io, String(args.rspec), 'request RSpec', MAX_RSPEC_BYTES), testbeds);
    return { experiment: r.experiment, plan: r.plan, request: r };
  }
  if (args.testbeds !== undefined) throw new UsageError('--testbeds goes with --rspec');
  if (args.experiment === undefined) throw new UsageError('give an experiment description (EXPERIMENT.json, - for standard input) or --rspec REQUEST.xml --testbeds FILE');
  const text = await readInput(io, String(args.experiment), 'experiment description', MAX_DESCRIPTION_BYTES);
  const experiment = parseExperiment(parseJsonBounded(text, { maxBytes: MAX_DESCRIPTION_BYTES, maxDepth: 8 }, 'experiment description'));
  return { experiment, plan: planExperiment(experiment) };
}

/** The plan's output, with the request's notes when it came from an RSpec. */
function planOutput(l: Loaded): { json: Record<string, unknown>; text: string } {
  return l.request ? { json: { request: requestNotes(l.request) }, text: formatRequestNotes(l.request) + '\n' + formatPlan(l.plan) } : { json: {}, text: formatPlan(l.plan) };
}

/** `--apply --servers FILE`: the whole plan, on every server, through their admin commands. */
async function applyEverywhere(io: Io, args: PlanArgs): Promise<Output> {
  const loaded = await loadPlan(io, args);
  const { experiment, plan } = loaded;
  const out = planOutput(loaded);
  const file = String(args.servers);
  const servers = parseServersFile(parseJsonBounded(await readInput(io, file, 'servers file', 1 << 20), { maxBytes: 1 << 20, maxDepth: 6 }, 'servers file'), file);
  checkServers(plan, servers);
  const steps = await applyAcrossServers(plan, JSON.stringify(experiment), new ServerChannels(servers, execCommand));
  return {
    json: { plan, steps, ...out.json },
    text: `${out.text}\napplied:\n${stepTable(steps)}\nleft to do: get each node its startup tarball from its LAN's hub: server tarball --node N --server-url https://API:PORT/ (plus --via API_VIA:${DEFAULT_RELAY_PORT} for a node behind a peer; see the API column)\n`,
  };
}

function stepTable(steps: readonly ServerStep[]): string {
  return table([['SERVER', 'ACTION', 'LAN', 'WHAT', 'DETAIL'], ...steps.map((s) => [s.server, s.action, s.lan, s.node ?? s.peer ?? '-', s.detail])]);
}

/**
 * `server plan (EXPERIMENT.json | --rspec REQUEST.xml --testbeds FILE) [--json] [--apply (--servers FILE | --server TESTBED [--links-dir DIR])]`:
 * prints which server hosts each LAN, which links join servers and which
 * remote each node uses. `--apply --servers FILE` carries the plan out on
 * every server it names, through the admin command the file gives for each
 * (apply-servers.ts); `--apply --server TESTBED` does only this server's
 * part (the LANs it hosts, their nodes with addresses and remotes, and with
 * --links-dir the link bundles for its peers). EXPERIMENT may be `-`.
 * A GENI request RSpec (rspec.ts) is translated into a description first,
 * and that description is what travels to the hubs, so both inputs end in
 * the same plan and the same state.
 */
export const serverPlanCommand: CliCommand<PlanArgs> = {
  command: 'plan [experiment]',
  describe: 'plan servers, links and node remotes for an experiment description or a GENI request RSpec; --apply carries it out',
  builder: (y: Argv) =>
    serverOptions(
      y
        .positional('experiment', { type: 'string', describe: 'experiment description (JSON: testbeds, nodes, lans; - = standard input)' })
        .option('rspec', { type: 'string', describe: `instead: a GENI v3 / ProtoGENI v2 request RSpec (XML, at most ${MAX_RSPEC_BYTES} bytes; - = standard input)` })
        .option('testbeds', { type: 'string', describe: 'with --rspec: JSON {"testbeds": [experiment testbed entries + "component_manager": URN]}' })
        .option('apply', { type: 'boolean', default: false, describe: 'carry out the plan (--servers) or this server\'s part of it (--server)' })
        .option('servers', { type: 'string', describe: 'with --apply: JSON {"servers": {TESTBED: {"command": [argv running `mvpn-client server` there]}}}' })
        .option('server', { type: 'string', describe: 'with --apply: only the part of the testbed this server runs on' })
        .option('links-dir', { type: 'string', describe: 'with --apply: write link bundles for this server\'s peers here' })
        .option('api-url', { type: 'string', describe: "with --links-dir: https://HOST:PORT at which peers reach this server's API" }),
    ) as unknown as Argv<PlanArgs>,
  run: async (args: PlanArgs, io: Io) => {
    if (!args.apply) {
      if (args.servers !== undefined || args.server !== undefined) return reportFailure(args, io, new UsageError('--servers and --server go with --apply'));
      return planOnly(args, io);
    }
    if (args.servers !== undefined) {
      try {
        if (args.server !== undefined) throw new UsageError('give --servers FILE (every server) or --server TESTBED (this one), not both');
        writeOutput(args, io, await applyEverywhere(io, args));
        return 0;
      } catch (err) {
        return reportFailure(args, io, err);
      }
    }
    return serverAction(args, io, async (ctx) => {
      const loaded = await loadPlan(io, args);
      const { plan } = loaded;
      if (args.server === undefined) throw new UsageError('--apply needs --servers FILE (carry out the whole plan) or --server TESTBED (only the testbed this server runs on)');
      if (!plan.servers.some((s) => s.testbed === args.server)) {
        throw new UsageError(`the plan has no server on testbed ${JSON.stringify(args.server)} (servers: ${plan.servers.map((s) => s.testbed).join(', ')})`);
      }
      const linksDir = args['links-dir'] === undefined ? undefined : resolve(args['links-dir']);
      const extra = linksDir
        ? {
            linksDir,
            signingKey: await loadSigningKey(ctx.paths),
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
        json: { plan, server: args.server, steps, left, ...planOutput(loaded).json },
        text: `${planOutput(loaded).text}\napplied on ${args.server}:\n${steps.length ? table([['ACTION', 'LAN', 'WHAT', 'DETAIL'], ...steps.map((s) => [s.action, s.lan, s.node ?? s.peer ?? '-', s.detail])]) : '(nothing: this server hosts no LAN)\n'}\nleft to do:\n${left.map((l) => `  ${l}`).join('\n')}`,
      };
    });
  },
};

async function planOnly(args: PlanArgs, io: Io): Promise<number> {
  try {
    const loaded = await loadPlan(io, args);
    const out = planOutput(loaded);
    writeOutput(args, io, { json: { ...loaded.plan, ...out.json }, text: out.text });
    return 0;
  } catch (err) {
    return reportFailure(args, io, err);
  }
}
