/**
 * The planner: from an experiment description (testbeds with their ops
 * hosts, nodes with their testbed, LANs with their members) to a plan —
 * which server hosts each LAN (the hub, the one allocation authority), which
 * peer servers join it by a link, and which remote each node connects to.
 * A pure function; `server plan` prints it and `--apply` carries out the
 * part that belongs to the local server.
 *
 * Rules (DESIGN.md §1):
 * - A server runs on a testbed's ops host (when the description gives one;
 *   `server: false` opts a testbed out).
 * - A private node can only reach its own testbed's ops host: its testbed
 *   must run a server, and that server serves it (internal address).
 * - A LAN with private nodes from one testbed is hosted there (topology 1);
 *   with private nodes from several, the testbed with the most of the LAN's
 *   nodes hosts it and every other private testbed's server joins it as a
 *   peer (topology 2). A LAN of public nodes only is hosted by the member
 *   testbed with a server and the most members (else any testbed with a
 *   server, by name).
 * - Public nodes connect to the hub: its internal address when the hub is
 *   on their own testbed, its public address otherwise.
 * - The hub's API (enrollment, documents) is reached the same way; a node
 *   behind a peer reaches it through the relay on its own server's internal
 *   address (`api_via`), TLS still end to end with the hub.
 * - A LAN is Layer 2 (tap) unless it says `"layer": 3` (tun, topology
 *   subnet). An L3 LAN is planned exactly like an L2 one (hub, peers,
 *   links, each node's server); across servers its peers join the hub's
 *   backbone and the servers share routes by BIRD (src/server/routing),
 *   which the daemons set up from the links `--apply` makes. In an L3 LAN
 *   a public testbed that runs a server serves its own nodes as a peer (at
 *   its public address, API direct to the hub): every server routes, so
 *   each testbed's nodes stay on their own server.
 *
 * GENI request RSpecs (rspec.ts) are translated into this description, so
 * there is one planner whatever the input.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { UsageError } from '../../errors.ts';
import { ipToInt, parseCidr, overlaps, size, type Cidr } from '../alloc.ts';

const NAME_RE = /^[a-z0-9][a-z0-9-]{0,30}$/;
const LAN_RE = /^[a-z][a-z0-9-]{0,11}$/;
const NODE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const ipv4 = z.string().refine((s) => isIP(s) === 4, 'expected an IPv4 address');

/** One testbed of a description (also the entries of a request's testbeds file, rspec.ts). */
export const TestbedShape = {
  name: z.string().regex(NAME_RE, 'testbed names are lower-case letters, digits and "-" (they name servers and peers)'),
  nodes: z.enum(['public', 'private']),
  ops: z.strictObject({ public: ipv4, internal: ipv4, server: z.boolean().default(true) }).optional(),
};

export const ExperimentSchema = z.strictObject({
  testbeds: z.array(z.strictObject(TestbedShape)).min(1),
  nodes: z.array(z.strictObject({ name: z.string().regex(NODE_RE, 'not a valid node id'), testbed: z.string() })).min(1),
  lans: z
    .array(
      z.strictObject({
        name: z.string().regex(LAN_RE, 'LAN names become network ids: a lower-case letter, then up to 11 lower-case letters, digits or "-"'),
        subnet: z.string().optional(),
        /** 2 (default): an Ethernet LAN (tap); 3: a routed subnet (tun). */
        layer: z.union([z.literal(2), z.literal(3)]).optional(),
        /** Why this LAN exists, in the words of whatever wrote the description (a request translator says which link). */
        reason: z.string().min(1).max(512).optional(),
        members: z
          .array(
            z.union([
              z.string(),
              z.strictObject({
                node: z.string(),
                address: ipv4.optional(),
                /** The requester's name for this member's interface (an RSpec interface client_id), carried into the plan. */
                interface: z.string().min(1).max(256).optional(),
              }),
            ]),
          )
          .min(1),
      }),
    )
    .min(1),
});
export type Experiment = z.infer<typeof ExperimentSchema>;

export interface PlanMember {
  readonly node: string;
  readonly testbed: string;
  readonly address: string | null;
  /** The testbed whose server this node connects to. */
  readonly server: string;
  /** The address it connects to (the port is the network's). */
  readonly remote: string;
  /** The hub's address in the node's API URL (enrollment, documents, bundles). */
  readonly api: string;
  /** A node behind a peer reaches the hub's API through its own server's relay at this address; null = directly. */
  readonly api_via: string | null;
  /** The requester's interface name (RSpec interface client_id), so a CM can map the plan onto its manifest; null if none was given. */
  readonly interface: string | null;
}

export interface PlanLan {
  readonly name: string;
  readonly subnet: string | null;
  /** 2: Ethernet (tap); 3: routed (tun). */
  readonly layer: 2 | 3;
  /** Why the LAN is planned (from the description; the RSpec translator says which link and rule); null if not said. */
  readonly reason: string | null;
  readonly hub: string;
  readonly peers: readonly string[];
  readonly members: readonly PlanMember[];
}

export interface PlanLink {
  readonly lan: string;
  readonly hub: string;
  readonly peer: string;
  /** The hub's address the peer's link connects to. */
  readonly hub_remote: string;
}

export interface PlanServer {
  readonly testbed: string;
  readonly public: string;
  readonly internal: string;
  readonly hosts: readonly string[];
  readonly joins: readonly string[];
}

export interface Plan {
  readonly servers: readonly PlanServer[];
  readonly lans: readonly PlanLan[];
  readonly links: readonly PlanLink[];
}

function bad(message: string, context: Record<string, unknown> = {}): UsageError {
  return new UsageError(`experiment: ${message}`, { context });
}

function dupes(names: readonly string[]): string | undefined {
  const seen = new Set<string>();
  for (const n of names) {
    if (seen.has(n)) return n;
    seen.add(n);
  }
  return undefined;
}

/** Parses a description (zod), with every problem named by its path. */
export function parseExperiment(value: unknown): Experiment {
  const r = ExperimentSchema.safeParse(value);
  if (!r.success) throw bad(r.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; '));
  return r.data;
}

export function planExperiment(exp: Experiment): Plan {
  for (const [what, names] of [
    ['testbed', exp.testbeds.map((t) => t.name)],
    ['node', exp.nodes.map((n) => n.name)],
    ['LAN', exp.lans.map((l) => l.name)],
  ] as const) {
    const d = dupes(names);
    if (d !== undefined) throw bad(`duplicate ${what} name ${JSON.stringify(d)}`, { [what]: d });
  }
  const testbeds = new Map(exp.testbeds.map((t) => [t.name, t]));
  const nodes = new Map(exp.nodes.map((n) => [n.name, n]));
  const hasServer = (tb: string) => testbeds.get(tb)?.ops?.server === true;
  for (const n of exp.nodes) {
    const tb = testbeds.get(n.testbed);
    if (!tb) throw bad(`node ${n.name} names testbed ${JSON.stringify(n.testbed)}, which is not described`, { node: n.name });
    if (tb.nodes === 'private' && !hasServer(tb.name)) {
      throw bad(`node ${n.name} is private, but its testbed ${tb.name} has no server (give testbeds[].ops with server true): a private node can only reach its own ops host`, {
        node: n.name,
        testbed: tb.name,
      });
    }
  }

  const subnets: { lan: string; cidr: Cidr }[] = [];
  const lans: PlanLan[] = [];
  const links: PlanLink[] = [];
  for (const lan of exp.lans) {
    let cidr: Cidr | undefined;
    if (lan.subnet !== undefined) {
      try {
        cidr = parseCidr(lan.subnet);
      } catch (err) {
        throw bad(`LAN ${lan.name}: subnet ${JSON.stringify(lan.subnet)}: ${(err as Error).message}`, { lan: lan.name });
      }
      const clash = subnets.find((s) => overlaps(s.cidr, cidr!));
      if (clash) throw bad(`LAN ${lan.name}'s subnet ${lan.subnet} overlaps LAN ${clash.lan}'s`, { lan: lan.name, other: clash.lan });
      subnets.push({ lan: lan.name, cidr });
    }
    const members = lan.members.map((m) => (typeof m === 'string' ? { node: m, address: undefined, interface: undefined } : m));
    const dn = dupes(members.map((m) => m.node));
    if (dn !== undefined) throw bad(`LAN ${lan.name} lists node ${dn} twice`, { lan: lan.name, node: dn });
    const da = dupes(members.flatMap((m) => (m.address === undefined ? [] : [m.address])));
    if (da !== undefined) throw bad(`LAN ${lan.name} gives address ${da} to two nodes`, { lan: lan.name, address: da });
    for (const m of members) {
      if (!nodes.has(m.node)) throw bad(`LAN ${lan.name} lists node ${JSON.stringify(m.node)}, which is not described`, { lan: lan.name, node: m.node });
      if (m.address !== undefined && cidr) {
        const ip = ipToInt(m.address);
        if (ip <= cidr.base + 1 || ip >= cidr.base + size(cidr) - 1) {
          throw bad(`LAN ${lan.name}: address ${m.address} of ${m.node} is not a node address of ${lan.subnet} (the first host is the server's)`, { lan: lan.name });
        }
      }
    }
    const count = new Map<string, number>();
    for (const m of members) count.set(nodes.get(m.node)!.testbed, (count.get(nodes.get(m.node)!.testbed) ?? 0) + 1);
    const byWeight = (a: string, b: string) => (count.get(b) ?? 0) - (count.get(a) ?? 0) || (a < b ? -1 : a > b ? 1 : 0);
    const privateTbs = [...count.keys()].filter((tb) => testbeds.get(tb)!.nodes === 'private').sort(byWeight);
    let hub: string | undefined = privateTbs[0];
    if (hub === undefined) {
      hub = [...count.keys()].filter(hasServer).sort(byWeight)[0] ?? exp.testbeds.map((t) => t.name).filter(hasServer).sort()[0];
      if (hub === undefined) throw bad(`LAN ${lan.name} has no server to host it: no testbed runs one (give a testbed ops with server true)`, { lan: lan.name });
    }
    const layer = lan.layer ?? 2;
    // L3: every server routes, so a public testbed that runs a server serves its own nodes too (a peer like a private one)
    const publicPeers = layer === 3 ? [...count.keys()].filter((tb) => tb !== hub && testbeds.get(tb)!.nodes === 'public' && hasServer(tb)).sort(byWeight) : [];
    const peers = [...privateTbs.filter((tb) => tb !== hub), ...publicPeers];
    const hubOps = testbeds.get(hub)!.ops!;
    const planned: PlanMember[] = members.map((m) => {
      const tb = nodes.get(m.node)!.testbed;
      const server = testbeds.get(tb)!.nodes === 'private' || publicPeers.includes(tb) ? tb : hub;
      const ops = testbeds.get(server)!.ops!;
      const api = tb === hub ? hubOps.internal : hubOps.public;
      // public nodes behind a public peer reach the hub's API and their server on the public side
      const onPublicPeer = publicPeers.includes(server);
      const apiVia = server !== hub && !onPublicPeer ? ops.internal : null;
      const remote = tb === server && !onPublicPeer ? ops.internal : ops.public;
      return { node: m.node, testbed: tb, address: m.address ?? null, server, remote, api, api_via: apiVia, interface: m.interface ?? null };
    });
    for (const p of peers) links.push({ lan: lan.name, hub, peer: p, hub_remote: hubOps.public });
    lans.push({ name: lan.name, subnet: lan.subnet ?? null, layer, reason: lan.reason ?? null, hub, peers, members: planned });
  }
  const servers: PlanServer[] = exp.testbeds
    .filter((t) => lans.some((l) => l.hub === t.name || l.peers.includes(t.name)))
    .map((t) => ({
      testbed: t.name,
      public: t.ops!.public,
      internal: t.ops!.internal,
      hosts: lans.filter((l) => l.hub === t.name).map((l) => l.name),
      joins: lans.filter((l) => l.peers.includes(t.name)).map((l) => l.name),
    }));
  return { servers, lans, links };
}

/** The plan as plain text tables. */
export function formatPlan(plan: Plan): string {
  const rows = (r: string[][]) => {
    const w: number[] = [];
    for (const row of r) row.forEach((c, i) => (w[i] = Math.max(w[i] ?? 0, c.length)));
    return r.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(w[i]!))).join('  ')).join('\n');
  };
  const withIf = plan.lans.some((l) => l.members.some((m) => m.interface !== null));
  const out = [
    'servers:',
    rows([['TESTBED', 'PUBLIC', 'INTERNAL', 'HOSTS', 'JOINS'], ...plan.servers.map((s) => [s.testbed, s.public, s.internal, s.hosts.join(',') || '-', s.joins.join(',') || '-'])]),
    '',
    'lans:',
    rows([['LAN', 'LAYER', 'HUB', 'PEERS', 'SUBNET', 'WHY'], ...plan.lans.map((l) => [l.name, `L${l.layer}`, l.hub, l.peers.join(',') || '-', l.subnet ?? '(from the pool)', l.reason ?? '-'])]),
    '',
    'links:',
    plan.links.length === 0 ? '(none)' : rows([['LAN', 'PEER', 'HUB', 'HUB ADDRESS'], ...plan.links.map((l) => [l.lan, l.peer, l.hub, l.hub_remote])]),
    '',
    'nodes:',
    rows([
      ['LAN', 'NODE', 'TESTBED', 'SERVER', 'REMOTE', 'ADDRESS', 'API', ...(withIf ? ['INTERFACE'] : [])],
      ...plan.lans.flatMap((l) =>
        l.members.map((m) => [
          l.name,
          m.node,
          m.testbed,
          m.server,
          m.remote,
          m.address ?? '(allocated by hub)',
          m.api_via ? `${m.api} via ${m.api_via}` : m.api,
          ...(withIf ? [m.interface ?? '-'] : []),
        ]),
      ),
    ]),
  ];
  return out.join('\n') + '\n';
}
