/**
 * The demo's two-testbed topology, built from src/netns/lab.ts:
 *
 *   "internet" bridge (198.18.0.0/24)
 *     ├── A nodes a1..aN  eth0 198.18.0.11+   (public addresses)
 *     └── B-ops           eth0 198.18.0.1     (public)
 *   B LAN bridge (198.18.1.0/24)
 *     ├── B-ops           eth1 198.18.1.1     (private)
 *     └── B nodes b1..bN  eth0 198.18.1.11+   (private only, no default route)
 *
 * Each bridge lives in a namespace of its own, so nothing of the topology
 * touches the host. B-ops does not forward (a fresh namespace has
 * ip_forward=0), so B's nodes cannot reach the internet segment at all:
 * they can only join through B-ops' private address. The VPN subnet is
 * 198.19.0.0/24. Every address goes through the lab's address check.
 */
import type { Lab, Netns } from '../netns/lab.ts';

export const INTERNET_SUBNET = '198.18.0.0/24';
export const B_LAN_SUBNET = '198.18.1.0/24';
export const VPN_SUBNET = '198.19.0.0/24';
export const OPS_PUBLIC = '198.18.0.1';
export const OPS_PRIVATE = '198.18.1.1';

export interface DemoNode {
  /** Node id on the server (a1, b1, ...). */
  readonly id: string;
  readonly testbed: 'A' | 'B';
  readonly ns: Netns;
  /** Underlay address (public for A, private for B). */
  readonly underlay: string;
  /** The node's interface to its segment, inside `ns`. */
  readonly ifname: string;
  /** The peer of that interface, inside the segment's bridge namespace. */
  readonly bridgePort: string;
  /** Server address this node reaches the server mode on. */
  readonly opsAddress: string;
}

export interface Topology {
  readonly internet: Netns;
  readonly bLan: Netns;
  readonly ops: Netns;
  readonly nodes: readonly DemoNode[];
}

/** Build the topology with `aCount` public and `bCount` private nodes. */
export async function buildTopology(lab: Lab, opts: { aCount: number; bCount: number }): Promise<Topology> {
  const internet = await lab.ns('inet');
  const bLan = await lab.ns('blan');
  const ops = await lab.ns('bops');
  const inetPorts: string[] = [];
  const lanPorts: string[] = [];

  const [, opsPub] = await lab.link(ops, internet, { aName: 'eth0', aAddr: `${OPS_PUBLIC}/24` });
  inetPorts.push(opsPub);
  const [, opsPriv] = await lab.link(ops, bLan, { aName: 'eth1', aAddr: `${OPS_PRIVATE}/24` });
  lanPorts.push(opsPriv);

  const nodes: DemoNode[] = [];
  for (let i = 1; i <= opts.aCount; i++) {
    const ns = await lab.ns(`a${i}`);
    const underlay = `198.18.0.${10 + i}`;
    const [ifname, port] = await lab.link(ns, internet, { aName: 'eth0', aAddr: `${underlay}/24` });
    inetPorts.push(port);
    nodes.push({ id: `a${i}`, testbed: 'A', ns, underlay, ifname, bridgePort: port, opsAddress: OPS_PUBLIC });
  }
  for (let i = 1; i <= opts.bCount; i++) {
    const ns = await lab.ns(`b${i}`);
    const underlay = `198.18.1.${10 + i}`;
    const [ifname, port] = await lab.link(ns, bLan, { aName: 'eth0', aAddr: `${underlay}/24` });
    lanPorts.push(port);
    nodes.push({ id: `b${i}`, testbed: 'B', ns, underlay, ifname, bridgePort: port, opsAddress: OPS_PRIVATE });
  }
  await lab.bridge(internet, 'br0', inetPorts);
  await lab.bridge(bLan, 'br0', lanPorts);
  return { internet, bLan, ops, nodes };
}

/** The namespace a node's segment bridge lives in (for link faults on its port). */
export function segmentOf(t: Topology, node: DemoNode): Netns {
  return node.testbed === 'A' ? t.internet : t.bLan;
}
