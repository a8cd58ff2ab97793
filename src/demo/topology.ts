/**
 * The demo's testbeds, built from src/netns/lab.ts, and the experiment
 * description the planner reads for them (DESIGN.md §1):
 *
 *   topology 1, public + private (`demo`):
 *     "internet" bridge 198.18.0.0/24: a1..aN (public), b-ops 198.18.0.1
 *     b's LAN bridge  198.18.1.0/24: b-ops 198.18.1.1, b1..bN (private)
 *   topology 2, two private testbeds (`demo --federated`):
 *     "internet" bridge 198.18.0.0/24: b-ops 198.18.0.1, c-ops 198.18.0.2
 *     b's LAN 198.18.1.0/24: b-ops .1, b1..bN;  c's LAN 198.18.2.0/24: c-ops .1, c1..cN
 *   `demo --ha`: topology 1 without b's nodes, and a second ops host of b
 *     (b2: 198.18.0.2 on the internet, 198.18.1.2 on b's LAN) on the same store
 *   `demo --l3`: topology 2 plus public testbed a with an ops host of its own
 *     (a-ops 198.18.0.3, internal 198.18.3.1): three servers, one L3 LAN
 *
 * Each bridge lives in a namespace of its own, so nothing touches the host.
 * An ops host does not forward (a fresh namespace has ip_forward=0), so a
 * private node can reach nothing but its own ops host's internal address.
 * Public nodes get 198.18.0.11 and up; private ones .11 and up on their
 * testbed's LAN. The VPN subnet is 198.19.0.0/24. Every address goes
 * through the lab's address check.
 */
import type { Lab, Netns } from '../netns/lab.ts';
import type { Experiment } from '../server/federation/plan.ts';

export const INTERNET_SUBNET = '198.18.0.0/24';
export const VPN_SUBNET = '198.19.0.0/24';
export const VPN_BROADCAST = '198.19.0.255';
/** b's ops host in both topologies. */
export const OPS_PUBLIC = '198.18.0.1';
export const OPS_PRIVATE = '198.18.1.1';
/** The one LAN of the demo: its network id on the servers. */
export const NETWORK_ID = 'demo';

export interface TestbedSpec {
  /** Lower-case; names the testbed's nodes (b1, b2, …) and its server. */
  readonly name: string;
  readonly nodes: 'public' | 'private';
  readonly count: number;
  /** The nodes' ids when a request names them (`demo --rspec`: RSpec client_ids); else `<name>1` … `<name><count>`. */
  readonly nodeIds?: readonly string[];
  /** Its ops host: public address on the internet segment, internal address (x.y.z.1) on its own LAN. */
  readonly ops?: { readonly public: string; readonly internal: string; readonly standby?: { readonly public: string; readonly internal: string } };
}

/** Topology 1: public testbed a, private testbed b with its ops host. */
export function publicPrivate(aCount: number, bCount: number): TestbedSpec[] {
  return [
    { name: 'a', nodes: 'public', count: aCount },
    { name: 'b', nodes: 'private', count: bCount, ops: { public: OPS_PUBLIC, internal: OPS_PRIVATE } },
  ];
}

/** `demo --ha`: public nodes a1..aN, testbed b's server on two ops hosts (b-ops, b-ops2 198.18.0.2) sharing one store. */
export function highAvailability(aCount: number): TestbedSpec[] {
  return [
    { name: 'a', nodes: 'public', count: aCount },
    { name: 'b', nodes: 'private', count: 0, ops: { public: OPS_PUBLIC, internal: OPS_PRIVATE, standby: { public: '198.18.0.2', internal: '198.18.1.2' } } },
  ];
}

/** The key of a testbed's second ops host in Topology.ops. */
export const standbyOf = (testbed: string): string => `${testbed}2`;

/** Topology 2: private testbeds b and c, only their ops hosts public. */
export function federated(bCount: number, cCount: number): TestbedSpec[] {
  return [
    { name: 'b', nodes: 'private', count: bCount, ops: { public: OPS_PUBLIC, internal: OPS_PRIVATE } },
    { name: 'c', nodes: 'private', count: cCount, ops: { public: '198.18.0.2', internal: '198.18.2.1' } },
  ];
}

/** `demo --l3`: public a and private b and c, each testbed with an ops host running a server. */
export function threeServers(count: number): TestbedSpec[] {
  return [{ name: 'a', nodes: 'public', count, ops: { public: '198.18.0.3', internal: '198.18.3.1' } }, ...federated(count, count)];
}

export interface DemoNode {
  /** Node id on the servers (a1, b1, ...). */
  readonly id: string;
  readonly testbed: string;
  readonly public: boolean;
  readonly ns: Netns;
  /** Underlay address. */
  readonly underlay: string;
  /** The node's interface to its segment, inside `ns`. */
  readonly ifname: string;
  /** The peer of that interface, inside the segment's bridge namespace. */
  readonly bridgePort: string;
}

export interface OpsHost {
  readonly testbed: string;
  readonly ns: Netns;
  readonly public: string;
  readonly internal: string;
}

export interface Topology {
  readonly testbeds: readonly TestbedSpec[];
  readonly internet: Netns;
  /** Each testbed with an ops host has a LAN of its own (by testbed name). */
  readonly lans: ReadonlyMap<string, Netns>;
  readonly ops: ReadonlyMap<string, OpsHost>;
  readonly nodes: readonly DemoNode[];
}

const lanPrefix = (internal: string): string => internal.split('.').slice(0, 3).join('.');

export async function buildTopology(lab: Lab, testbeds: readonly TestbedSpec[]): Promise<Topology> {
  const internet = await lab.ns('inet');
  const inetPorts: string[] = [];
  const lanPorts = new Map<string, string[]>();
  const lans = new Map<string, Netns>();
  const ops = new Map<string, OpsHost>();
  for (const tb of testbeds) {
    if (!tb.ops) continue;
    const lan = await lab.ns(`${tb.name}lan`);
    const ns = await lab.ns(`${tb.name}ops`);
    inetPorts.push((await lab.link(ns, internet, { aName: 'eth0', aAddr: `${tb.ops.public}/24` }))[1]);
    lanPorts.set(tb.name, [(await lab.link(ns, lan, { aName: 'eth1', aAddr: `${tb.ops.internal}/24` }))[1]]);
    lans.set(tb.name, lan);
    ops.set(tb.name, { testbed: tb.name, ns, public: tb.ops.public, internal: tb.ops.internal });
    if (tb.ops.standby) {
      const st = tb.ops.standby;
      const ns2 = await lab.ns(`${tb.name}ops2`);
      inetPorts.push((await lab.link(ns2, internet, { aName: 'eth0', aAddr: `${st.public}/24` }))[1]);
      lanPorts.get(tb.name)!.push((await lab.link(ns2, lan, { aName: 'eth1', aAddr: `${st.internal}/24` }))[1]);
      ops.set(standbyOf(tb.name), { testbed: standbyOf(tb.name), ns: ns2, public: st.public, internal: st.internal });
    }
  }
  const nodes: DemoNode[] = [];
  let publicHost = 10;
  for (const tb of testbeds) {
    const ids = tb.nodeIds ?? Array.from({ length: tb.count }, (_, i) => `${tb.name}${i + 1}`);
    for (const [k, id] of ids.entries()) {
      const i = k + 1;
      const ns = await lab.ns(id);
      const isPublic = tb.nodes === 'public';
      if (!isPublic && !tb.ops) throw new Error(`testbed ${tb.name} is private but has no ops host`);
      const underlay = isPublic ? `198.18.0.${++publicHost}` : `${lanPrefix(tb.ops!.internal)}.${10 + i}`;
      const segment = isPublic ? internet : lans.get(tb.name)!;
      const [ifname, port] = await lab.link(ns, segment, { aName: 'eth0', aAddr: `${underlay}/24` });
      (isPublic ? inetPorts : lanPorts.get(tb.name)!).push(port);
      nodes.push({ id, testbed: tb.name, public: isPublic, ns, underlay, ifname, bridgePort: port });
    }
  }
  await lab.bridge(internet, 'br0', inetPorts);
  for (const [tb, lan] of lans) await lab.bridge(lan, 'br0', lanPorts.get(tb)!);
  return { testbeds, internet, lans, ops, nodes };
}

/** The namespace a node's segment bridge lives in (for link faults on its port). */
export function segmentOf(t: Topology, node: DemoNode): Netns {
  return node.public ? t.internet : t.lans.get(node.testbed)!;
}

/** What the planner reads: the testbeds as built, and one LAN of every node (`layer` 3: routed, `demo --l3`). */
export function experimentFor(t: Topology, layer: 2 | 3 = 2): Experiment {
  return {
    testbeds: t.testbeds.map((tb) => ({
      name: tb.name,
      nodes: tb.nodes,
      ...(tb.ops ? { ops: { public: tb.ops.public, internal: tb.ops.internal, server: true } } : {}),
    })),
    nodes: t.nodes.map((n) => ({ name: n.id, testbed: n.testbed })),
    lans: [{ name: NETWORK_ID, subnet: VPN_SUBNET, ...(layer === 3 ? { layer } : {}), members: t.nodes.map((n) => n.id) }],
  };
}
