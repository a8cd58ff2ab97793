/**
 * `demo --rspec REQUEST.xml --testbeds FILE`: the testbeds a request and its
 * testbeds file describe, built in namespaces (topology.ts) with the
 * request's nodes named by their client_ids, and the description the
 * request translates into (rspec.ts) as what the planner reads — the same
 * translation `server plan --rspec` uses.
 *
 * The demo proves one Ethernet LAN (ping matrix, neighbour tables,
 * broadcast) and builds only lab addresses, so the request must give
 * exactly one Layer 2 VPN LAN, its addresses (if any) inside 198.19.0.0/16
 * (a LAN without addresses gets the demo's 198.19.0.0/24), and every ops
 * host the plan uses must fit the demo's segments: its public address on
 * the demo's internet 198.18.0.0/24 (.1–.10; nodes take .11 and up), its
 * internal address the .1 of a /24 of its own inside 198.18.0.0/15.
 */
import { UsageError } from '../errors.ts';
import { contains, ipToInt, overlaps, parseCidr } from '../server/alloc.ts';
import { formatRequestNotes, translateRequest, type TestbedsFile } from '../server/federation/rspec.ts';
import { parseExperiment, planExperiment, type Experiment } from '../server/federation/plan.ts';
import { INTERNET_SUBNET, VPN_SUBNET, type TestbedSpec } from './topology.ts';

export interface DemoRequest {
  readonly testbeds: readonly TestbedSpec[];
  readonly experiment: Experiment;
  /** What the request said beyond the plan (links left alone, nodes in no VPN LAN). */
  readonly notes: string;
}

const DEMO_VPN_RANGE = parseCidr('198.19.0.0/16');
const LAB_RANGE = parseCidr('198.18.0.0/15');

function refuse(message: string): UsageError {
  return new UsageError(`demo --rspec: ${message}`);
}

export async function demoRequest(input: string | Uint8Array, testbedsFile: TestbedsFile): Promise<DemoRequest> {
  const t = await translateRequest(input, testbedsFile);
  if (t.experiment === null) throw refuse('the request has no VPN LAN (a link with link_type openvpn, or spanning component managers)');
  const lans = t.experiment.lans;
  if (lans.length !== 1) throw refuse(`the request has ${lans.length} VPN LANs (${lans.map((l) => l.name).join(', ')}); the demo proves one LAN: give it a request with one`);
  const lan = lans[0]!;
  if ((lan.layer ?? 2) !== 2) throw refuse(`LAN ${lan.name} is Layer 3; the demo's proofs (neighbour tables, broadcast) are for one Layer 2 LAN`);
  if (lan.subnet !== undefined) {
    const c = parseCidr(lan.subnet);
    if (!overlaps(c, DEMO_VPN_RANGE) || c.prefix < 16) {
      throw refuse(`LAN ${lan.name}'s addresses (${lan.subnet}) are outside 198.19.0.0/16, the range the demo configures inside its namespaces; use 198.19.x.y addresses in a demo request`);
    }
  }
  const experiment = parseExperiment({ ...t.experiment, lans: [{ ...lan, subnet: lan.subnet ?? VPN_SUBNET }] });
  const plan = planExperiment(experiment);

  const internet = parseCidr(INTERNET_SUBNET);
  const used = new Set([...plan.servers.map((s) => s.testbed), ...experiment.nodes.map((n) => n.testbed)]);
  const testbeds: TestbedSpec[] = [];
  const segments: { testbed: string; base: number }[] = [];
  for (const tb of experiment.testbeds.filter((x) => used.has(x.name))) {
    const nodeIds = experiment.nodes.filter((n) => n.testbed === tb.name).map((n) => n.name);
    if (tb.ops) {
      const pub = ipToInt(tb.ops.public);
      if (!contains(internet, pub) || pub - internet.base < 1 || pub - internet.base > 10) {
        throw refuse(`testbed ${tb.name}: ops public address ${tb.ops.public} must be 198.18.0.1 to 198.18.0.10 (the demo's internet ${INTERNET_SUBNET}; nodes take .11 and up)`);
      }
      const internal = ipToInt(tb.ops.internal);
      const base = internal - 1;
      if (!contains(LAB_RANGE, internal) || base % 256 !== 0 || contains(internet, internal)) {
        throw refuse(`testbed ${tb.name}: ops internal address ${tb.ops.internal} must be the .1 of a /24 of its own inside 198.18.0.0/15, not on ${INTERNET_SUBNET}`);
      }
      const clash = segments.find((s) => s.base === base);
      if (clash) throw refuse(`testbeds ${clash.testbed} and ${tb.name} have their ops internal addresses on the same /24`);
      segments.push({ testbed: tb.name, base });
    }
    if (nodeIds.length > 240) throw refuse(`testbed ${tb.name} has ${nodeIds.length} nodes; the demo builds at most 240 per testbed`);
    testbeds.push({ name: tb.name, nodes: tb.nodes, count: nodeIds.length, nodeIds, ...(tb.ops ? { ops: { public: tb.ops.public, internal: tb.ops.internal } } : {}) });
  }
  if (testbeds.filter((tb) => tb.nodes === 'public').reduce((n, tb) => n + tb.count, 0) > 240) throw refuse('more than 240 public nodes; the demo builds at most 240');
  return { testbeds, experiment, notes: formatRequestNotes(t) };
}
