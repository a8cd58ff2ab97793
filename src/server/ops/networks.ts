/**
 * Network lifecycle (MetaVPN's add / up / down / del / purge, completed):
 * create → down; up ⇄ down; delete (only when down) keeps the records as
 * history and gives the port and subnet back; purge removes everything.
 *
 * A network's membership documents list it whether it is up or down: "down"
 * only stops its server (nodes keep their config and reconnect when it comes
 * back), "deleted" takes it out of every document.
 */
import { rm } from 'node:fs/promises';
import { isIP } from 'node:net';
import { StoreError, UsageError } from '../../errors.ts';
import { NETWORK_ID_RE, NetworkOptionsSchema, isRemoteHost, type NetworkOptions } from '../../bundle/schema.ts';
import type { KeyAlg } from '../../pki/keys.ts';
import { allocatePort, allocateSubnet, formatCidr, parseCidr, parsePortRange, intToIp, serverAddress } from '../alloc.ts';
import { acceptedRoutes, MAX_PUSHED_ROUTES, pushedRoutePrefixProblem } from '../../openvpn/push-policy.ts';
import { LAN_MTU } from '../../openvpn/mtu.ts';
import { dataPlane, newDataPlane } from '../documents.ts';
import { networkDir } from '../config.ts';
import type { NetworkFacts } from '../metrics.ts';
import { createNetworkPki } from '../pki-service.ts';
import { newNetworkRecord, type DevType, type NetworkRecord, type NetworkState, type Proto, type Remote } from '../store/store.ts';
import { Bumps, nowOf, type ServerContext } from './context.ts';
import { portNumber, splitHostPort } from '../../util/host-port.ts';
import { hostRemotes, networkHosts } from '../join.ts';
import { isMirror, isPeerNode, PEER_PREFIX } from '../federation/mirror.ts';

export interface CreateNetworkInput {
  readonly id: string;
  readonly name?: string | undefined;
  readonly devType?: DevType | undefined;
  readonly proto?: Proto | undefined;
  readonly subnet?: string | undefined;
  readonly port?: number | undefined;
  readonly remotes?: readonly string[] | undefined;
  readonly keyAlg?: KeyAlg | undefined;
  /** Prefixes nodes accept pushed routes for (push-policy.ts); empty or undefined: none. */
  readonly pushedRoutes?: readonly string[] | undefined;
  /** network.json settings copied into every node's spec (validated by NetworkOptionsSchema). */
  readonly options?: NetworkOptions | undefined;
  /** The LAN's MTU (default LAN_MTU, 1500). */
  readonly mtu?: number | undefined;
  /** The largest underlay datagram (default: newDataPlane's); null: no fragmentation. */
  readonly fragment?: number | null | undefined;
}

export function checkNetworkId(id: string): void {
  if (!NETWORK_ID_RE.test(id)) {
    throw new UsageError(`network id ${JSON.stringify(id)} is not valid: a lower-case letter, then up to 11 lower-case letters, digits or "-"`, {
      context: { network: id },
      hint: 'the id becomes interface names (ms-<id> on the server, mv-<id> on nodes), which are at most 15 characters',
    });
  }
}

function checkName(name: string): void {
  if (name.length < 1 || name.length > 128 || /\p{C}/u.test(name)) {
    throw new UsageError(`network name ${JSON.stringify(name)} must be 1-128 printable characters`);
  }
}

/** "HOST", "HOST:PORT", "[V6]" or "[V6]:PORT"; a bare IPv6 address has no port. */
export function parseRemote(text: string): Remote {
  const parts = splitHostPort(text) ?? { host: text, port: undefined, bracketed: false };
  const { host } = parts;
  let port: number | undefined;
  if (parts.port !== undefined) {
    port = portNumber(parts.port);
    if (port === undefined) throw new UsageError(`remote ${JSON.stringify(text)}: port ${JSON.stringify(parts.port)} is not a number`);
  }
  if (!isRemoteHost(host) || (parts.bracketed && isIP(host) !== 6)) {
    throw new UsageError(`remote ${JSON.stringify(text)}: ${JSON.stringify(host)} is not an IP address or DNS name`, { context: { remote: text } });
  }
  if (port !== undefined && (port < 1 || port > 65535)) throw new UsageError(`remote ${JSON.stringify(text)}: port ${port} is not between 1 and 65535`);
  return port === undefined ? { host } : { host, port };
}

export function getNetworkOrThrow(ctx: ServerContext, id: string): NetworkRecord {
  checkNetworkId(id);
  const net = ctx.store.read((tx) => tx.getNetwork(id));
  if (!net) throw new StoreError('MVPN_NOT_FOUND', `no network ${id}`, { context: { network: id }, hint: 'see `mvpn-client server network list`' });
  return net;
}

export async function createNetwork(ctx: ServerContext, input: CreateNetworkInput): Promise<NetworkRecord> {
  checkNetworkId(input.id);
  const name = input.name ?? input.id;
  checkName(name);
  const devType = input.devType ?? 'tap';
  const proto = input.proto ?? 'udp';
  const requestedSubnet = input.subnet === undefined ? undefined : parseCidr(input.subnet);
  // Several hosts on the store: the network fails over between them, and by default nodes know every host (join.ts).
  const hosts = networkHosts(ctx.store.read((tx) => tx.listHosts()), hostRemotes(ctx.config));
  const remotes: Remote[] = input.remotes?.length ? input.remotes.map(parseRemote) : hosts.remotes.slice(0, 8);
  if (remotes.length === 0) {
    throw new UsageError(`network ${input.id} needs at least one --remote (the address nodes connect to)`, {
      hint: 'give --remote HOST[:PORT], or --hostname/--address at `server init` to set defaults',
    });
  }
  if (remotes.length > 8) throw new UsageError(`network ${input.id}: at most 8 remotes`);
  if (input.options !== undefined) checkOptions(input.id, input.options);
  const mtu = input.mtu ?? input.options?.mtu ?? LAN_MTU;
  checkMtu(input.id, mtu);
  const pushedRoutes = input.pushedRoutes?.length ? checkPushedRoutes(input.id, input.pushedRoutes, remotes) : undefined;
  const { fragment: defaultFragment, ...dp } = newDataPlane(proto, mtu);
  const fragment = input.fragment === undefined ? defaultFragment : (input.fragment ?? undefined);
  const options = checkOptions(input.id, { ...input.options, ...dp, ...(fragment === undefined ? {} : { fragment }) });
  checkFragmentProto(input.id, options, proto);
  const existing = ctx.store.read((tx) => tx.getNetwork(input.id));
  if (existing) throw alreadyExists(existing);

  const now = nowOf(ctx);
  const pki = await createNetworkPki(input.id, input.keyAlg ?? 'ec-p256', now, ctx.config.crl_days);
  return ctx.store.write((tx) => {
    const again = tx.getNetwork(input.id);
    if (again) throw alreadyExists(again);
    const live = tx.listNetworks().filter((n) => n.state !== 'deleted');
    const port = allocatePort(parsePortRange(ctx.config.port_range), new Set(live.map((n) => n.port)), input.port);
    const subnet = allocateSubnet(parseCidr(ctx.config.pool), ctx.config.subnet_prefix, live.map((n) => parseCidr(n.subnet)), requestedSubnet);
    const rec = newNetworkRecord({ id: input.id, name, devType, proto, port, subnet: formatCidr(subnet), remotes, ...pki, pushedRoutes, options, ...(hosts.failover ? { failover: true } : {}) }, now);
    tx.insertNetwork(rec);
    return rec;
  });
}

/**
 * `--pushed-route` prefixes: the rules every node applies too (push-policy.ts),
 * checked here so the operator hears about a prefix nodes would refuse.
 */
function checkPushedRoutes(id: string, prefixes: readonly string[], remotes: readonly Remote[]): string[] {
  if (prefixes.length > MAX_PUSHED_ROUTES) throw new UsageError(`network ${id}: at most ${MAX_PUSHED_ROUTES} --pushed-route prefixes`);
  for (const p of prefixes) {
    const problem = pushedRoutePrefixProblem(p);
    if (problem !== undefined) throw new UsageError(`--pushed-route ${JSON.stringify(p)}: ${problem}`, { context: { prefix: p } });
  }
  if (new Set(prefixes).size !== prefixes.length) throw new UsageError(`network ${id}: a --pushed-route prefix is given twice`);
  const { refused } = acceptedRoutes(prefixes, remotes, []);
  if (refused.length > 0) {
    throw new UsageError(`--pushed-route ${refused[0]!.prefix}: ${refused[0]!.reason}; nodes would refuse it`, {
      context: { prefix: refused[0]!.prefix },
      hint: 'a pushed route must never carry the traffic that reaches the server itself',
    });
  }
  return [...prefixes];
}

function checkMtu(id: string, mtu: number): void {
  if (!Number.isInteger(mtu) || mtu < 1280 || mtu > 9000) {
    throw new UsageError(`network ${id}: --mtu ${mtu} is not valid: an integer from 1280 to 9000`, {
      context: { network: id, mtu },
      hint: 'the LAN MTU is the interface MTU of every member; 1500 (the default) is Ethernet\'s, which experiment software assumes',
    });
  }
}

function checkFragmentProto(id: string, options: NetworkOptions, proto: Proto): void {
  if (options.fragment !== undefined && proto !== 'udp') throw new UsageError(`network ${id}: fragment is for UDP networks only (openvpn fragments UDP datagrams)`, { context: { network: id } });
}

export interface DataPlaneUpdate {
  readonly mtu?: number | undefined;
  /** The largest underlay datagram openvpn sends; null: no fragmentation. */
  readonly fragment?: number | null | undefined;
}

/**
 * `network update`: a new LAN MTU or fragment size for a network that has
 * members already. The server config and every member's spec render from
 * the same options (documents.ts dataPlane), so the daemon restarts the
 * network's openvpn with the new config and every active member gets a new
 * bundle version (signed when it is served) that its agent installs with
 * its next update; until a node has it, its fragmentation differs from the
 * server's and its frames do not cross. A network with federation links is
 * refused: a peer's link bundle carries the hub's data plane and would no
 * longer match (ARCHITECTURE.md, "Full-size frames over any path MTU").
 */
export function updateNetworkDataPlane(ctx: ServerContext, id: string, change: DataPlaneUpdate): { readonly net: NetworkRecord; readonly changed: boolean } {
  checkNetworkId(id);
  if (change.mtu === undefined && change.fragment === undefined) throw new UsageError(`network ${id}: nothing to update: give --mtu BYTES and/or --fragment BYTES|off`);
  if (change.mtu !== undefined) checkMtu(id, change.mtu);
  const now = nowOf(ctx);
  return ctx.store.write((tx) => {
    const net = tx.getNetwork(id);
    if (!net) throw new StoreError('MVPN_NOT_FOUND', `no network ${id}`, { context: { network: id } });
    if (net.state === 'deleted') throw new StoreError('MVPN_STORE_CONFLICT', `network ${id} is deleted`, { context: { network: id } });
    if (isMirror(net)) throw new StoreError('MVPN_STORE_CONFLICT', `network ${id} is a peer's mirror of a hub's network: its MTU and fragmentation are the hub's`, { context: { network: id }, hint: 'change them at the hub' });
    const { fragment: oldFragment, ...rest } = net.options ?? {};
    const fragment = change.fragment === undefined ? oldFragment : (change.fragment ?? undefined);
    const options = checkOptions(id, { ...rest, ...(change.mtu === undefined ? {} : { mtu: change.mtu }), ...(fragment === undefined ? {} : { fragment }) });
    checkFragmentProto(id, options, net.proto);
    const before = dataPlane(net);
    const after = dataPlane({ options });
    if (before.mtu === after.mtu && before.fragment === after.fragment) return { net, changed: false };
    const links = tx.memberAddresses(id).filter((m) => isPeerNode(m.node) && !m.revoked);
    if (links.length > 0) {
      const peers = links.map((m) => m.node.slice(PEER_PREFIX.length)).join(', ');
      throw new StoreError('MVPN_STORE_CONFLICT', `network ${id} has federation links (${peers}): each peer's link bundle carries this network's MTU and fragmentation, and its link would no longer match`, {
        context: { network: id },
        hint: `remove the links (mvpn-client server link remove ${id} --peer NAME), update, then export and add them again`,
      });
    }
    tx.updateNetwork(id, { options, updatedAt: now });
    new Bumps().network(id).apply(tx, now, ctx.config.membership_days);
    return { net: { ...net, options, updatedAt: now }, changed: true };
  });
}

/** network.json settings, checked by the schema every node applies to them too. */
function checkOptions(id: string, options: NetworkOptions): NetworkOptions {
  const r = NetworkOptionsSchema.safeParse(options);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new UsageError(`network ${id}: ${issue.path.join('.') || 'options'}: ${issue.message}`, { context: { network: id, field: issue.path.join('.') } });
  }
  return r.data;
}

function alreadyExists(net: NetworkRecord): StoreError {
  return new StoreError('MVPN_ALREADY_EXISTS', `network ${net.id} already exists${net.state === 'deleted' ? ' (deleted, kept as history)' : ''}`, {
    context: { network: net.id, state: net.state },
    ...(net.state === 'deleted' ? { hint: `\`mvpn-client server network purge ${net.id}\` removes it for good` } : {}),
  });
}

export function listNetworks(ctx: ServerContext): NetworkRecord[] {
  return ctx.store.read((tx) => tx.listNetworks());
}

/** up / down. Idempotent; a deleted network cannot come back up. */
export function setNetworkState(ctx: ServerContext, id: string, state: 'up' | 'down'): NetworkRecord {
  checkNetworkId(id);
  const now = nowOf(ctx);
  return ctx.store.write((tx) => {
    const net = tx.getNetwork(id);
    if (!net) throw new StoreError('MVPN_NOT_FOUND', `no network ${id}`, { context: { network: id } });
    if (net.state === 'deleted') throw new StoreError('MVPN_STORE_CONFLICT', `network ${id} is deleted`, { context: { network: id }, hint: 'create a new one' });
    if (net.state !== state) tx.updateNetwork(id, { state, updatedAt: now });
    return { ...net, state, updatedAt: net.state !== state ? now : net.updatedAt };
  });
}

/** Marks a down network deleted: out of every document, port and subnet free again, records kept. */
export function deleteNetwork(ctx: ServerContext, id: string): NetworkRecord {
  checkNetworkId(id);
  const now = nowOf(ctx);
  return ctx.store.write((tx) => {
    const net = tx.getNetwork(id);
    if (!net) throw new StoreError('MVPN_NOT_FOUND', `no network ${id}`, { context: { network: id } });
    requireNotUp(net, 'delete');
    if (net.state === 'deleted') return net;
    tx.updateNetwork(id, { state: 'deleted', updatedAt: now });
    const bumps = new Bumps();
    for (const m of tx.memberAddresses(id)) bumps.doc(m.node);
    bumps.apply(tx, now, ctx.config.membership_days);
    return { ...net, state: 'deleted' as NetworkState, updatedAt: now };
  });
}

/** Removes a network that is not up and everything it had: records, keys, rendered files. */
export async function purgeNetwork(ctx: ServerContext, id: string): Promise<NetworkRecord> {
  checkNetworkId(id);
  const now = nowOf(ctx);
  const net = ctx.store.write((tx) => {
    const n = tx.getNetwork(id);
    if (!n) throw new StoreError('MVPN_NOT_FOUND', `no network ${id}`, { context: { network: id } });
    requireNotUp(n, 'purge');
    const bumps = new Bumps();
    for (const m of tx.memberAddresses(id)) bumps.doc(m.node);
    tx.deleteNetwork(id);
    bumps.apply(tx, now, ctx.config.membership_days);
    return n;
  });
  await rm(networkDir(ctx.paths, id), { recursive: true, force: true });
  return net;
}

function requireNotUp(net: NetworkRecord, verb: string): void {
  if (net.state === 'up') {
    throw new StoreError('MVPN_STORE_CONFLICT', `network ${net.id} is up; bring it down before you ${verb} it`, {
      context: { network: net.id },
      hint: `mvpn-client server network down ${net.id}`,
    });
  }
}

/** JSON view of a network (no key material). */
/** Per-network facts from the store for the metrics (src/server/metrics.ts). */
export function networkFacts(ctx: ServerContext): NetworkFacts[] {
  return ctx.store.read((tx) => {
    const ms = tx.listMemberships();
    return tx
      .listNetworks()
      .filter((n) => n.state !== 'deleted')
      .map((n) => {
        const mine = ms.filter((m) => m.network === n.id);
        return { id: n.id, crlNextUpdate: n.crlNextUpdate, crlNumber: n.crlNumber, members: mine.length, bundleVersion: mine.reduce((a, m) => Math.max(a, m.bundleVersion), 0) };
      });
  });
}

export function networkView(net: NetworkRecord, members?: { active: number; revoked: number }): Record<string, unknown> {
  const subnet = parseCidr(net.subnet);
  return {
    id: net.id,
    name: net.name,
    state: net.state,
    dev_type: net.devType,
    proto: net.proto,
    port: net.port,
    subnet: net.subnet,
    server_address: intToIp(serverAddress(subnet)),
    remotes: net.remotes.map((r) => ({ host: r.host, port: r.port ?? net.port })),
    pushed_routes: net.pushedRoutes ?? [],
    ...net.options,
    // The LAN's MTU and the largest underlay datagram (null: no fragmentation); both null for a network made before they existed.
    mtu: dataPlane(net).mtu ?? null,
    fragment: dataPlane(net).fragment ?? null,
    key_alg: net.keyAlg,
    crl: { number: net.crlNumber, next_update: new Date(net.crlNextUpdate).toISOString() },
    ...(members ? { nodes: members } : {}),
    created_at: new Date(net.createdAt).toISOString(),
    updated_at: new Date(net.updatedAt).toISOString(),
  };
}
