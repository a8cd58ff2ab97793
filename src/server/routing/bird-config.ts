/**
 * The BIRD 2 configuration of one server daemon (ARCHITECTURE.md "L3
 * routing"): one BIRD per daemon carrying every L3 network of that server,
 * each network with its own BIRD table, kernel table, static protocols and
 * iBGP sessions, so networks never see each other's routes.
 *
 * Per network `<id>` (BIRD symbols use `_` for `-`):
 * - `ipv4 table t_<id>`;
 * - `protocol static c_<id>`: a /32 `via "<tun>"` for every client connected
 *   to THIS server now (the daemon learns them from its openvpn server),
 *   with the session's start as `bgp_local_pref` (newest session wins);
 *   the only routes announced to the other servers;
 * - `protocol static l_<id>`: a /32 `via "<backbone>"` for every other
 *   server's backbone address (its addresses carry `noprefixroute`, so the
 *   kernel has no connected route for them in any table); never announced;
 * - `protocol kernel k_<id>`: exports the table into the network's own
 *   kernel table (`kernel table N`), imports nothing, so the main table is
 *   never written;
 * - `protocol bgp b_<id>_<n>`: iBGP to each other server over the backbone
 *   segment (`direct`, `gateway direct`, `next hop self`): a next hop is
 *   always an address on the same segment.
 *
 * Pure: the same input always renders the same bytes, so an unchanged
 * config is not reloaded.
 */
import { createHash } from 'node:crypto';

export interface L3Peer {
  /** Stable name of the other server (used in the protocol's name). */
  readonly name: string;
  /** Its address on the backbone segment. */
  readonly address: string;
}

export interface L3Client {
  readonly address: string;
  /** When its session began (ms since the epoch, openvpn's connected_since). */
  readonly since: number;
}

export interface L3RoutingSpec {
  /** Network id ([a-z][a-z0-9-]{0,11}). */
  readonly network: string;
  /** The network's subnet, e.g. 100.96.0.0/24. */
  readonly subnet: string;
  /** This server's address on the backbone (and its BGP source). */
  readonly local: string;
  /** The openvpn server's tun (clients' /32s point at it). */
  readonly tunDev: string;
  /** The backbone segment's interface. */
  readonly backboneDev: string;
  readonly peers: readonly L3Peer[];
  /** The clients connected to this server now. */
  readonly clients: readonly L3Client[];
}

/** Seconds before which no session starts: local_pref = seconds since then (32 bits last until 2161). */
const PREF_EPOCH_S = 1_735_689_600;

/**
 * A client's BGP local_pref: the start of its session in seconds, so when a
 * node that moved is still announced by its old server for a moment (that
 * server's openvpn has not timed the session out yet), every server prefers
 * the newest session's route.
 */
export function sessionPref(since: number): number {
  return Math.max(1, Math.min(0xffffffff, Math.floor(since / 1000) - PREF_EPOCH_S));
}

const hash32 = (s: string): number => createHash('sha256').update(s).digest().readUInt32BE(0);

/**
 * The network's kernel routing table: derived from its id, so every server
 * uses the same number and a restart finds its routes again. 0x6d760000 +
 * 16 bits of hash: far above the reserved 253–255 and the small numbers
 * administrators pick by hand.
 */
export function routeTableId(network: string): number {
  return 0x6d760000 + (hash32(`mvpn-table:${network}`) & 0xffff);
}

/** The `ip rule` priority for the network's subnet (before `main` at 32766). */
export function rulePriority(network: string): number {
  return 20000 + (hash32(`mvpn-rule:${network}`) % 10000);
}

/** The network's private 4-byte ASN (RFC 6996: 4200000000–4294967294), the same at every server (iBGP). */
export function networkAsn(network: string): number {
  return 4_200_000_000 + (hash32(`mvpn-asn:${network}`) % 94_967_294);
}

const sym = (s: string): string => s.replace(/[^a-zA-Z0-9]/g, '_');
const ipRe = /^\d{1,3}(\.\d{1,3}){3}$/;
const devRe = /^[a-zA-Z0-9_.-]{1,15}$/;

function check(spec: L3RoutingSpec): void {
  for (const a of [spec.local, ...spec.clients.map((c) => c.address), ...spec.peers.map((p) => p.address)]) {
    if (!ipRe.test(a)) throw new Error(`routing for ${spec.network}: not an IPv4 address: ${a}`);
  }
  for (const d of [spec.tunDev, spec.backboneDev]) if (!devRe.test(d)) throw new Error(`routing for ${spec.network}: bad interface name ${d}`);
}

/**
 * The whole configuration. `routerId`: the daemon's (one per BIRD); it must
 * differ between servers that peer, so the daemon takes its own backbone
 * address in its first network.
 */
export function renderBirdConfig(routerId: string, nets: readonly L3RoutingSpec[]): string {
  const out: string[] = [
    '# Written by the mvpn server daemon; rewritten on every change (do not edit).',
    `router id ${routerId};`,
    'protocol device { scan time 5; }',
  ];
  for (const n of [...nets].sort((a, b) => a.network.localeCompare(b.network))) {
    check(n);
    const id = sym(n.network);
    const asn = networkAsn(n.network);
    out.push(
      '',
      `# network ${n.network} (${n.subnet})`,
      `ipv4 table t_${id};`,
      `protocol static c_${id} {`,
      `  ipv4 { table t_${id}; };`,
      ...[...n.clients].sort((a, b) => a.address.localeCompare(b.address)).map((c) => `  route ${c.address}/32 via "${n.tunDev}" { bgp_local_pref = ${sessionPref(c.since)}; };`),
      '}',
      `protocol static l_${id} {`,
      `  ipv4 { table t_${id}; };`,
      ...[...n.peers].sort((a, b) => a.name.localeCompare(b.name)).map((p) => `  route ${p.address}/32 via "${n.backboneDev}";`),
      '}',
      `protocol kernel k_${id} {`,
      `  kernel table ${routeTableId(n.network)};`,
      '  scan time 10;',
      `  ipv4 { table t_${id}; import none; export all; };`,
      '}',
    );
    for (const p of [...n.peers].sort((a, b) => a.name.localeCompare(b.name))) {
      out.push(
        `protocol bgp b_${id}_${sym(p.name)} {`,
        `  local ${n.local} as ${asn};`,
        `  neighbor ${p.address} as ${asn};`,
        `  interface "${n.backboneDev}";`,
        '  direct;',
        '  hold time 6; keepalive time 2; connect retry time 2; error wait time 1, 10;',
        `  ipv4 { table t_${id}; gateway direct; next hop self; import all; export where proto = "c_${id}"; };`,
        '}',
      );
    }
  }
  return `${out.join('\n')}\n`;
}
