/**
 * What a node takes from its openvpn server's push (DESIGN.md §3: a
 * compromised server, or anyone holding the network's server key, must not
 * reach past the VPN into the node's routing).
 *
 * The rule is enforced by openvpn itself, with `pull-filter` lines the
 * client template renders from the signed `network.json` (first match wins,
 * and a pattern matches when the pushed line starts with it):
 *
 * - `pull-filter accept "ifconfig <address> <netmask>"` of exactly the
 *   node's address from the spec, then `pull-filter ignore "ifconfig"`
 *   (which also catches `ifconfig-ipv6`): a server that pushes another
 *   address, or the right one with a wider netmask, gets neither applied.
 * - `redirect-gateway` and `redirect-private` are always ignored.
 * - Routes: `route-nopull` unless the spec allows pushed routes; then only
 *   `route <net> <mask>` of exactly a prefix the spec lists, every other
 *   `route…` line ignored. The `route-gateway` such routes use is accepted
 *   only when it is the server's own tunnel address (`server_tunnel_ip`,
 *   inside the node's subnet; what `server-bridge` and `server` push): a
 *   server that pushes another gateway (an underlay host, say) would send
 *   the listed prefixes past the tunnel. A pull-filter pattern matches by
 *   text prefix, so `route-gateway 198.19.0.1` would also accept
 *   198.19.0.12: the ten one-digit-longer texts are ignored first.
 *   A route line's text after the listed mask can only name a gateway or
 *   metric, or narrow the mask's last octet: never a wider destination.
 *
 * Listed prefixes themselves: at least /8 (so never a default route nor a
 * `/1` pair) and in canonical form, checked by the schema; and on the node,
 * never one that overlaps what the node needs to reach its testbed and its
 * server — the subnets of its other interfaces, its default gateways, the
 * spec's remote addresses. Those are refused at render time (see
 * acceptedRoutes) and so ignored when pushed.
 *
 * openvpn logs every line a filter removed ("Pushed option removed by
 * filter: '…'", verb 3); the supervisor collects them per push reply
 * (parsePushLogLine) and the health check turns them into a `degraded`
 * network with the refused lines as reason, instead of restarting a tunnel
 * that would be pushed the same thing again.
 */
import { isIPv4 } from 'node:net';
import { formatCidr, ipToInt, maskOf, netmaskString, overlaps, parseCidr, type Cidr } from '../server/alloc.ts';
import type { ExecFn } from '../util/exec.ts';
import { parseJsonBounded } from '../util/json.ts';

/** The shortest prefix a network may list for pushed routes: /8 keeps out a default route and the `def1` `/1` pair. */
export const MIN_PUSHED_ROUTE_PREFIX = 8;
/** At most this many prefixes per network. */
export const MAX_PUSHED_ROUTES = 16;

/** Why `text` cannot be a pushed-route prefix, or undefined when it can (canonical a.b.c.d/len, len 8..32). */
export function pushedRoutePrefixProblem(text: string): string | undefined {
  const m = /^([0-9.]{7,15})\/([0-9]{1,2})$/.exec(text);
  if (m === null || !isIPv4(m[1]!) || /(^|\.)0\d/.test(m[1]!)) return 'expected an IPv4 prefix like 203.0.113.0/24';
  const len = Number(m[2]);
  if (len < MIN_PUSHED_ROUTE_PREFIX || len > 32) return `prefix length must be ${MIN_PUSHED_ROUTE_PREFIX}..32 (never a default route or a /1 pair)`;
  let c: Cidr;
  try {
    c = parseCidr(text);
  } catch {
    return 'expected the network address of the prefix (no host bits set)';
  }
  return formatCidr(c) === text ? undefined : 'expected the prefix in canonical form';
}

/** Something on the node that pushed routes must never cover, e.g. `{ cidr: '198.18.0.0/30', what: 'the subnet of eth0' }`. */
export interface ProtectedPrefix {
  readonly cidr: string;
  readonly what: string;
}

export interface RouteDecision {
  readonly accepted: readonly string[];
  readonly refused: readonly { readonly prefix: string; readonly reason: string }[];
}

/**
 * The spec's listed prefixes split into those the node accepts and those it
 * refuses because they overlap something in `protect` (a remote address of
 * the spec is always protected). Pure.
 */
export function acceptedRoutes(prefixes: readonly string[], remotes: readonly { readonly host: string }[], protect: readonly ProtectedPrefix[]): RouteDecision {
  const all: ProtectedPrefix[] = [...remotes.filter((r) => isIPv4(r.host)).map((r) => ({ cidr: `${r.host}/32`, what: `the server address ${r.host}` })), ...protect];
  const accepted: string[] = [];
  const refused: { prefix: string; reason: string }[] = [];
  for (const prefix of prefixes) {
    const c = parseCidr(prefix);
    const hit = all.find((p) => overlaps(c, parseCidr(p.cidr)));
    if (hit === undefined) accepted.push(prefix);
    else refused.push({ prefix, reason: `it overlaps ${hit.what} (${hit.cidr})` });
  }
  return { accepted, refused };
}

/** The `pull-filter` / `route-nopull` lines of the client template (see the module comment). */
export function pullFilterLines(address: string, routes: readonly string[] | undefined, serverTunnelIp?: string): string[] {
  const a = parseCidr(toNetwork(address));
  const ip = address.split('/')[0]!;
  const lines = [`pull-filter accept "ifconfig ${ip} ${netmaskString(a.prefix)}"`, 'pull-filter ignore "ifconfig"', 'pull-filter ignore "redirect-"'];
  if (routes === undefined) return [...lines, 'route-nopull'];
  return [
    ...lines,
    ...routes.map((r) => {
      const c = parseCidr(r);
      return `pull-filter accept "route ${formatCidr(c).split('/')[0]} ${netmaskString(c.prefix)}"`;
    }),
    ...routeGatewayLines(a, serverTunnelIp),
    'pull-filter ignore "route"',
  ];
}

/** Accepts `route-gateway <serverTunnelIp>` exactly, when that address is inside the node's subnet `a`; nothing otherwise (the catch-all ignores it). */
function routeGatewayLines(a: Cidr, serverTunnelIp: string | undefined): string[] {
  if (serverTunnelIp === undefined || !isIPv4(serverTunnelIp) || !overlaps(a, { base: ipToInt(serverTunnelIp), prefix: 32 })) return [];
  const longer = Array.from({ length: 10 }, (_, d) => `pull-filter ignore "route-gateway ${serverTunnelIp}${d}"`);
  return [...longer, `pull-filter accept "route-gateway ${serverTunnelIp}"`];
}

/** `a.b.c.d/len` → its network `x.y.z.0/len`. */
function toNetwork(cidr: string): string {
  const [ip, len] = cidr.split('/');
  const prefix = Number(len);
  return formatCidr({ base: (ipToInt(ip!) & maskOf(prefix)) >>> 0, prefix });
}

/** What one openvpn log line says about the push, if anything: a new push reply, or a line a filter removed. */
export type PushLogLine = { readonly kind: 'reply' } | { readonly kind: 'refused'; readonly option: string };

const REFUSED_RE = /Pushed option removed by filter: '(.*)'$/;

export function parsePushLogLine(line: string): PushLogLine | undefined {
  if (line.includes('PUSH: Received control message: ')) return { kind: 'reply' };
  const m = REFUSED_RE.exec(line);
  return m === null ? undefined : { kind: 'refused', option: m[1]! };
}

interface IpAddrJson {
  ifname?: unknown;
  addr_info?: { family?: unknown; local?: unknown; prefixlen?: unknown }[];
}
interface IpRouteJson {
  dst?: unknown;
  gateway?: unknown;
  dev?: unknown;
}

/**
 * Parses `ip -j -4 addr show` and `ip -j -4 route show default` into what
 * pushed routes must not cover: the subnet of every IPv4 address on an
 * interface other than `ownDev`, and every default gateway. Pure.
 */
export function protectedPrefixes(addrJson: string, defaultRouteJson: string, ownDev: string): ProtectedPrefix[] {
  const out: ProtectedPrefix[] = [];
  const links = parseJsonBounded(addrJson, { maxBytes: 1 << 20, maxDepth: 8 }, 'ip -j addr output');
  for (const link of Array.isArray(links) ? (links as IpAddrJson[]) : []) {
    if (typeof link.ifname !== 'string' || link.ifname === ownDev) continue;
    for (const a of Array.isArray(link.addr_info) ? link.addr_info : []) {
      if (a.family !== 'inet' || typeof a.local !== 'string' || typeof a.prefixlen !== 'number' || !isIPv4(a.local)) continue;
      out.push({ cidr: toNetwork(`${a.local}/${a.prefixlen}`), what: `the subnet of ${link.ifname}` });
    }
  }
  const routes = parseJsonBounded(defaultRouteJson, { maxBytes: 1 << 20, maxDepth: 8 }, 'ip -j route output');
  for (const r of Array.isArray(routes) ? (routes as IpRouteJson[]) : []) {
    if (typeof r.gateway === 'string' && isIPv4(r.gateway)) out.push({ cidr: `${r.gateway}/32`, what: `the default gateway${typeof r.dev === 'string' ? ` on ${r.dev}` : ''}` });
  }
  return out;
}

/**
 * Reads the node's protected prefixes with `ip` (exec injected, like
 * health.ts's readDevice). When `ip` cannot tell, everything is protected:
 * without knowing the node's underlay, no pushed route may be accepted.
 */
export async function readProtectedPrefixes(exec: ExecFn, ownDev: string, timeoutMs = 5_000): Promise<ProtectedPrefix[]> {
  const unknown = [{ cidr: '0.0.0.0/0', what: "the node's underlay (ip could not read it)" }];
  try {
    const [addr, route] = await Promise.all([exec('ip', ['-j', '-4', 'addr', 'show'], { timeoutMs }), exec('ip', ['-j', '-4', 'route', 'show', 'default'], { timeoutMs })]);
    if (addr.code !== 0 || route.code !== 0) return unknown;
    return protectedPrefixes(addr.stdout, route.stdout, ownDev);
  } catch {
    return unknown;
  }
}
