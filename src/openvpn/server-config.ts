/**
 * The openvpn server config of one network, rendered by the server daemon
 * from its store. Like the client side, every value is either a constant or
 * one the caller has validated (ids, addresses, absolute plain paths), and
 * nothing runs scripts.
 *
 * L2 (tap, the default): `mode server` + `tls-server` + `server-bridge GW
 * MASK POOL` for the bridge-mode semantics (openvpn forwards Ethernet frames
 * between clients, `client-to-client` lets them see each other's MACs), plus
 * an explicit `ifconfig` so the server's own tunnel address sits on the tap.
 * Without that `ifconfig` openvpn leaves the tap down and unaddressed (it
 * expects an external bridge to carry the address), and no frame would flow
 * at all. A peer's mirror of a hub network (DESIGN.md §1, topology 2) is
 * `bridged`: its address is on the Linux bridge joining its tap and the
 * link's, so the tap gets no `ifconfig`.
 *
 * The tap gets a fixed MAC (`lladdr`, derived from the network id by the
 * caller): a restarted server keeps its MAC, so nodes' ARP entries for the
 * server's tunnel address stay right instead of pointing at the MAC of a tap
 * that no longer exists until they time out.
 *
 * L3 (tun): `topology subnet` + `server NET MASK nopool`. An L3 network
 * across servers (`routed`, src/server/routing) spells `server` out with the
 * server address the hub allocated (`ifconfig SERVERIP MASK`, pushed
 * `topology subnet` and `route-gateway`) and `ifconfig-noexec`: the daemon
 * made the tun persistent and put the address on it with `noprefixroute`,
 * so no route lands in the main table; packets for addresses that are not
 * its clients go from openvpn into the tun and are routed by the network's
 * own table.
 *
 * MTU: `tun-mtu`, `fragment` and `mssfix` as every node renders them from
 * its network.json (mtu.ts `mtuLines`; openvpn's fragmentation needs both ends).
 *
 * Addresses: `client-config-dir` with one file per node holding
 * `ifconfig-push ADDR MASK` (renderCcd), and `ccd-exclusive`, so a node
 * without a file — removed, revoked, unknown — is refused even before the
 * CRL is consulted. The pool `server-bridge` requires is never used: every
 * allowed node has a fixed address.
 *
 * Not in the file: `management <sock> unix`, `management-hold` and
 * `writepid`. The supervisor (supervisor.ts) passes them on the command
 * line, so the socket and pid file paths live in one place; the daemon
 * releases the hold once it is attached to the management interface.
 *
 * Revocation: openvpn re-reads the `crl-verify` file when it changes (it
 * checks at each new TLS session), so the daemon replaces it atomically and
 * ends the revoked node's live session with `client-kill ID RESTART`.
 */
import { RenderError } from '../errors.ts';
import { NETWORK_ID_RE } from '../bundle/schema.ts';
import { intToIp, netmaskString, parseCidr } from '../server/alloc.ts';
import { fastPathLines, mtuLines, type DataPlane } from './mtu.ts';
import { pushedRoutePrefixProblem } from './push-policy.ts';

export interface ServerNetwork {
  readonly id: string;
  readonly devType: 'tap' | 'tun';
  readonly proto: 'udp' | 'tcp';
  readonly port: number;
  /** Address openvpn binds to; undefined: all. */
  readonly local?: string | undefined;
  /** Subnet network address, netmask and the server's own address in it. */
  readonly network: string;
  readonly netmask: string;
  readonly serverIp: string;
  /** First and last host of the subnet (the `server-bridge` pool, never used). */
  readonly firstHost: string;
  readonly lastHost: string;
  readonly ciphers: readonly string[];
  readonly keepalive: { readonly interval: number; readonly timeout: number };
  /**
   * tap only: the tap is a port of a Linux bridge that holds `serverIp` (a
   * peer's mirror of a hub network, src/server/federation): no `ifconfig`
   * on the tap, and the caller gives no `lladdr` (the hub's tap has it).
   */
  readonly bridged?: boolean | undefined;
  /**
   * tun only: the server address is the hub's allocation and already sits on
   * a persistent tun (L3 across servers, src/server/routing): openvpn
   * configures nothing on the device.
   */
  readonly routed?: boolean | undefined;
  /**
   * routed only: the `route-gateway` pushed to clients (default `serverIp`).
   * Every server of an L3 network pushes the same one (the node specs'
   * `server_tunnel_ip`), so a node moving between servers is pushed the same
   * options: openvpn reopens its tun when a reconnect's push differs, which
   * fails once it has dropped root (a fatal exit and a supervisor restart,
   * ~7 s of the failover). On a tun any on-link gateway serves.
   */
  readonly routeGateway?: string | undefined;
  /** tap only: the server tap's MAC, a locally administered unicast address (`02:…`). */
  readonly lladdr?: string | undefined;
  /** Prefixes pushed to clients as routes via the server (network.json `pushed_routes`). */
  readonly pushedRoutes?: readonly string[] | undefined;
  /** LAN MTU and fragmentation, as in every member's network.json (mtu.ts). */
  readonly dataPlane?: DataPlane | undefined;
}

export interface ServerFiles {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
  readonly tlsCryptV2: string;
  readonly crl: string;
  readonly ccdDir: string;
  /** `ms-<id>` */
  readonly dev: string;
}

const PATH_RE = /^\/[A-Za-z0-9._/+@=,-]{1,4000}$/;
const DEV_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const IPV4_RE = /^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$/;
const IP_RE = /^[0-9A-Fa-f:.]{2,45}$/;
const CIPHER_RE = /^[A-Z0-9-]{1,32}$/;
/** Unicast (bit 0 of the first octet clear), lower-case hex. */
const MAC_RE = /^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$/;

function invalid(field: string, value: unknown): RenderError {
  return new RenderError('MVPN_OPTION_INVALID', `cannot render the openvpn server config: ${field} ${JSON.stringify(value)} is not valid`, {
    context: { field, value },
  });
}

function check(net: ServerNetwork, files: ServerFiles): void {
  if (!NETWORK_ID_RE.test(net.id)) throw invalid('id', net.id);
  if (!Number.isInteger(net.port) || net.port < 1 || net.port > 65535) throw invalid('port', net.port);
  if (net.local !== undefined && !IP_RE.test(net.local)) throw invalid('local', net.local);
  if (net.lladdr !== undefined && !MAC_RE.test(net.lladdr)) throw invalid('lladdr', net.lladdr);
  for (const k of ['network', 'netmask', 'serverIp', 'firstHost', 'lastHost'] as const) if (!IPV4_RE.test(net[k])) throw invalid(k, net[k]);
  if (net.routeGateway !== undefined && !IPV4_RE.test(net.routeGateway)) throw invalid('routeGateway', net.routeGateway);
  for (const r of net.pushedRoutes ?? []) if (pushedRoutePrefixProblem(r) !== undefined) throw invalid('pushedRoutes', r);
  const { mtu, fragment } = net.dataPlane ?? {};
  if (mtu !== undefined && (!Number.isInteger(mtu) || mtu < 576 || mtu > 9000)) throw invalid('mtu', mtu);
  if (fragment !== undefined && (!Number.isInteger(fragment) || fragment < 576 || fragment > 9000 || net.proto !== 'udp')) throw invalid('fragment', fragment);
  if (net.ciphers.length === 0 || !net.ciphers.every((c) => CIPHER_RE.test(c))) throw invalid('ciphers', net.ciphers);
  const { interval, timeout } = net.keepalive;
  if (!Number.isInteger(interval) || !Number.isInteger(timeout) || interval < 1 || timeout <= interval) throw invalid('keepalive', net.keepalive);
  for (const [k, v] of Object.entries(files) as [keyof ServerFiles, string][]) {
    const ok = k === 'dev' ? DEV_RE.test(v) : PATH_RE.test(v) && !v.split('/').includes('..');
    if (!ok) throw invalid(k, v);
  }
}

export function renderServerConfig(net: ServerNetwork, files: ServerFiles): string {
  check(net, files);
  const l2 = net.devType === 'tap';
  const lines = [
    `# openvpn server config for network ${net.id}, rendered by mvpn-client server from its store.`,
    '# Do not edit: the daemon rewrites it. The management socket, management-hold and the pid file',
    '# are given on the command line by the supervisor.',
    `dev-type ${net.devType}`,
    `dev ${files.dev}`,
    ...(l2 && net.lladdr !== undefined ? [`lladdr ${net.lladdr}`] : []),
    `proto ${net.proto === 'tcp' ? 'tcp-server' : 'udp'}`,
    ...(net.local === undefined ? [] : [`local ${net.local}`]),
    `port ${net.port}`,
    ...(l2
      ? ['mode server', 'tls-server', ...(net.bridged === true ? [] : [`ifconfig ${net.serverIp} ${net.netmask}`]), `server-bridge ${net.serverIp} ${net.netmask} ${net.firstHost} ${net.lastHost}`]
      : net.routed === true
        ? ['mode server', 'tls-server', 'topology subnet', 'push "topology subnet"', `ifconfig ${net.serverIp} ${net.netmask}`, 'ifconfig-noexec', `push "route-gateway ${net.routeGateway ?? net.serverIp}"`]
        : ['topology subnet', `server ${net.network} ${net.netmask} nopool`]),
    'client-to-client',
    ...(net.pushedRoutes ?? []).map((r) => {
      const c = parseCidr(r);
      return `push "route ${intToIp(c.base)} ${netmaskString(c.prefix)}"`;
    }),
    `client-config-dir ${files.ccdDir}`,
    'ccd-exclusive',
    `ca ${files.ca}`,
    `cert ${files.cert}`,
    `key ${files.key}`,
    `tls-crypt-v2 ${files.tlsCryptV2}`,
    `crl-verify ${files.crl}`,
    'remote-cert-tls client',
    'verify-client-cert require',
    'dh none',
    'ecdh-curve prime256v1',
    'tls-version-min 1.2',
    `data-ciphers ${net.ciphers.join(':')}`,
    `keepalive ${net.keepalive.interval} ${net.keepalive.timeout}`,
    ...mtuLines(net.dataPlane ?? {}),
    ...fastPathLines(net.proto),
    ...(net.proto === 'udp' ? ['explicit-exit-notify 1'] : []),
    'persist-key',
    'persist-tun',
    'script-security 1',
    'verb 3',
  ];
  return lines.join('\n') + '\n';
}

/** The client-config-dir file of one node: its fixed address. */
export function renderCcd(address: string, netmask: string): string {
  if (!IPV4_RE.test(address)) throw invalid('address', address);
  if (!IPV4_RE.test(netmask)) throw invalid('netmask', netmask);
  return `ifconfig-push ${address} ${netmask}\n`;
}
