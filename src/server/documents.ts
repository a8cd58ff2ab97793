/**
 * What the server signs and hands out, as pure functions of the store's
 * records: a node's network spec, its bundle for a network, and its
 * membership document.
 *
 * Determinism matters: the same records give the same bytes (bundles are
 * built deterministically, Ed25519 signatures are deterministic, the
 * document's timestamps come from the store, not from "now"), so a bundle's
 * sha256 in the document stays right, ETags are stable across daemon
 * restarts, and a document serial never stands for two different documents
 * (which an agent would rightly call equivocation).
 */
import { buildBundle } from '../bundle/build.ts';
import { buildMembership } from '../bundle/membership.ts';
import type { MembershipDoc, NetworkSpec } from '../bundle/schema.ts';
import type { SigningKey } from '../bundle/sign.ts';
import { PATH_MTU_FLOOR, type DataPlane } from '../openvpn/mtu.ts';
import { intToIp, parseCidr, serverAddress } from './alloc.ts';
import { serverCn, trustedCaPem } from './pki-service.ts';
import { iso } from './ops/context.ts';
import type { MembershipRecord, NetworkRecord, NodeRecord, Remote } from './store/store.ts';

/** Data-channel ciphers, strongest first; all AEAD. */
export const CIPHERS = ['AES-256-GCM', 'AES-128-GCM', 'CHACHA20-POLY1305'] as const;
export const KEEPALIVE = { interval: 10, timeout: 60 } as const;
/**
 * A failover network's keepalive (NetworkRecord.failover): a node whose
 * server died gives up on it after 10 s of silence and tries its next
 * remote, the host that takes the lease over (src/server/lease.ts); with the
 * lease's 10 s TTL both run at the same time, inside the 30 s target. Cost:
 * an idle session sends a ping every 2 s each way instead of every 10 s,
 * about 50 bytes each on the wire (README, BENCHMARKS.md).
 */
export const FAILOVER_KEEPALIVE = { interval: 2, timeout: 10 } as const;

/**
 * The keepalive a network's server and nodes use. An L3 (tun) network gets
 * the fast one too: it may span servers at any time (a link export adds a
 * peer without touching a node's bundle), and a node whose server is
 * unreachable moves to its next remote after 10 s instead of 60 s
 * (ARCHITECTURE.md "L3 networks across servers", roaming).
 */
export function keepaliveOf(net: Pick<NetworkRecord, 'failover'> & { readonly devType?: NetworkRecord['devType'] }): { readonly interval: number; readonly timeout: number } {
  return net.failover === true || net.devType === 'tun' ? FAILOVER_KEEPALIVE : KEEPALIVE;
}

/**
 * The LAN MTU and fragmentation (mtu.ts) a network gets when it is created,
 * kept in its options (network.json `mtu`, `fragment`): a UDP network
 * fragments at PATH_MTU_FLOOR; TCP carries any frame size itself.
 */
export function newDataPlane(proto: NetworkRecord['proto'], mtu: number): DataPlane {
  return { mtu, ...(proto === 'udp' ? { fragment: PATH_MTU_FLOOR } : {}) };
}

/**
 * A network's LAN MTU and fragmentation, the same for its server config and
 * every node's spec; a network without them (made before issue 13) renders
 * as it did.
 */
export function dataPlane(net: Pick<NetworkRecord, 'options'>): DataPlane {
  const { mtu, fragment } = net.options ?? {};
  return { ...(mtu === undefined ? {} : { mtu }), ...(fragment === undefined ? {} : { fragment }) };
}

/**
 * The remotes a node dials: its own (a per-node override, e.g. the planner's
 * pick) if it has them, else the network's. A failover network's node with
 * its own remotes gets the network's other hosts after them, so a node the
 * planner pinned to one host still reaches the host that takes the network
 * over (at most 8, like the network's list).
 */
function nodeRemotes(net: NetworkRecord, own: MembershipRecord['remotes']): readonly Remote[] {
  if (own === undefined || own === null) return net.remotes;
  if (net.failover !== true) return own;
  const known = new Set(own.map((r) => r.host));
  return [...own, ...net.remotes.filter((r) => !known.has(r.host))].slice(0, 8);
}

/** The network as one node sees it; a remote's port defaults to the network's. */
export function networkSpec(net: NetworkRecord, m: Pick<MembershipRecord, 'address' | 'remotes'>): NetworkSpec {
  const subnet = parseCidr(net.subnet);
  return {
    schema: 1,
    id: net.id,
    name: net.name,
    dev_type: net.devType,
    proto: net.proto,
    remotes: nodeRemotes(net, m.remotes).map((r) => ({ host: r.host, port: r.port ?? net.port })),
    server_cn: serverCn(net.id),
    address: { ipv4: `${m.address}/${subnet.prefix}` },
    server_tunnel_ip: intToIp(serverAddress(subnet)),
    // The operator's per-network settings, as they are (schema.ts NetworkOptionsSchema).
    ...net.options,
    ciphers: [...CIPHERS],
    keepalive: { ...keepaliveOf(net) },
    allow_pushed_routes: net.pushedRoutes !== undefined,
    ...(net.pushedRoutes === undefined ? {} : { pushed_routes: [...net.pushedRoutes] }),
  };
}

export interface BuiltBundle {
  readonly bytes: Buffer;
  readonly sha256: string;
  readonly size: number;
}

/**
 * A node's bundle for one network at the membership's current version.
 * `nodeKeyPem` only for a central key (offline export); the manifest says so.
 */
export async function buildNodeBundle(
  key: SigningKey,
  net: NetworkRecord,
  m: MembershipRecord,
  nodeKeyPem?: string,
): Promise<BuiltBundle> {
  if (m.certPem === null || m.keyOrigin === null) throw new Error(`membership ${m.node}/${m.network} has no certificate`);
  return buildBundle({
    signingKey: key,
    manifest: {
      node: m.node,
      network: net.id,
      version: m.bundleVersion,
      created: iso(m.bundleCreatedAt),
      // The bundle is good as long as its CRL: openvpn refuses every peer after the CRL's nextUpdate.
      expires: iso(net.crlNextUpdate),
      key_origin: m.keyOrigin,
    },
    spec: networkSpec(net, m),
    caPem: trustedCaPem(net),
    nodeCertPem: m.certPem,
    tlsCryptV2ClientKey: m.tlsCryptV2ClientKey,
    crlPem: net.crlPem,
    ...(nodeKeyPem === undefined ? {} : { nodeKeyPem }),
    ...(net.caRoll ? { caRollPem: net.caRoll.proofPem } : {}),
  });
}

/** Memberships an online document lists: active, certified with the node's own key, network not deleted. */
export function servedMemberships(memberships: readonly MembershipRecord[], networks: ReadonlyMap<string, NetworkRecord>): MembershipRecord[] {
  return memberships
    .filter((m) => !m.revoked && m.keyOrigin === 'node' && m.certPem !== null && networks.get(m.network)?.state !== 'deleted' && networks.has(m.network))
    .sort((a, b) => (a.network < b.network ? -1 : a.network > b.network ? 1 : 0));
}

export function bundlePath(network: string, version: number): string {
  return `bundles/${network}/${version}`;
}

/**
 * The membership document (unsigned) for `node` listing `entries`, each with
 * its bundle's hash and size; `url` defaults to the API path relative to the
 * document's own URL (…/v1/membership → …/v1/bundles/<net>/<version>).
 */
export function membershipDoc(
  node: Pick<NodeRecord, 'id' | 'docSerial' | 'docIssuedAt' | 'docExpiresAt'>,
  entries: readonly { net: NetworkRecord; m: MembershipRecord; bundle: BuiltBundle; url?: string }[],
): MembershipDoc {
  return {
    node: node.id,
    serial: node.docSerial,
    issued_at: iso(node.docIssuedAt),
    expires_at: iso(node.docExpiresAt),
    networks: entries.map(({ net, m, bundle, url }) => ({
      id: net.id,
      name: net.name,
      bundle: { version: m.bundleVersion, sha256: bundle.sha256, size: bundle.size, url: url ?? bundlePath(net.id, m.bundleVersion) },
    })),
  };
}

export function signMembership(doc: MembershipDoc, key: SigningKey): Buffer {
  return buildMembership(doc, key);
}
