/**
 * Allocation of the scarce things a network needs: a UDP port, a subnet that
 * overlaps no other network's, and a stable address per node.
 *
 * Everything here is pure: callers read what is in use from the store inside
 * the same IMMEDIATE transaction that records the result, so two CLI calls at
 * once can never hand out the same port, subnet or address.
 *
 * Address reuse policy: a node's address never changes while it is a member.
 * When a node is added, it gets back the address it had in that network
 * before (if still free); otherwise the lowest address that no member has
 * ever held, and only when the subnet has none of those left, the lowest
 * freed one. A revoked certificate cannot connect anyway (CRL + ccd-exclusive
 * bind the address to the CN), so reuse is safe for openvpn; preferring
 * never-used addresses only keeps stale ARP entries and experimenters'
 * notes from pointing at a different node while space remains.
 */
import { StoreError } from '../errors.ts';

/** An IPv4 subnet; `base` is the network address as an unsigned 32-bit integer. */
export interface Cidr {
  readonly base: number;
  readonly prefix: number;
}

export interface PortRange {
  readonly first: number;
  readonly last: number;
}

export function ipToInt(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255)) {
    throw new StoreError('MVPN_ADDRESS_INVALID', `not an IPv4 address: ${JSON.stringify(ip)}`, { context: { address: ip } });
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function netmaskString(prefix: number): string {
  return intToIp(maskOf(prefix));
}

export function size(c: Cidr): number {
  return 2 ** (32 - c.prefix);
}

/** Parses "a.b.c.d/len"; the address must be the network address (no host bits). */
export function parseCidr(text: string): Cidr {
  const m = /^([0-9.]+)\/([0-9]{1,2})$/.exec(text);
  if (!m) throw new StoreError('MVPN_ADDRESS_INVALID', `not an IPv4 CIDR: ${JSON.stringify(text)} (expected a.b.c.d/len)`, { context: { cidr: text } });
  const base = ipToInt(m[1]!);
  const prefix = Number(m[2]);
  if (prefix > 32) throw new StoreError('MVPN_ADDRESS_INVALID', `prefix length ${prefix} is more than 32`, { context: { cidr: text } });
  if ((base & ~maskOf(prefix)) >>> 0 !== 0) {
    throw new StoreError('MVPN_ADDRESS_INVALID', `${text} has host bits set; did you mean ${intToIp((base & maskOf(prefix)) >>> 0)}/${prefix}?`, {
      context: { cidr: text },
    });
  }
  return { base, prefix };
}

export function formatCidr(c: Cidr): string {
  return `${intToIp(c.base)}/${c.prefix}`;
}

export function contains(c: Cidr, ip: number): boolean {
  return (ip & maskOf(c.prefix)) >>> 0 === c.base;
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  const prefix = Math.min(a.prefix, b.prefix);
  return (a.base & maskOf(prefix)) >>> 0 === (b.base & maskOf(prefix)) >>> 0;
}

/** Parses "A-B" (inclusive). */
export function parsePortRange(text: string): PortRange {
  const m = /^([0-9]{1,5})-([0-9]{1,5})$/.exec(text);
  const first = Number(m?.[1]);
  const last = Number(m?.[2]);
  if (!m || first < 1 || last > 65535 || first > last) {
    throw new StoreError('MVPN_CONFIG_INVALID', `not a port range: ${JSON.stringify(text)} (expected A-B with 1 <= A <= B <= 65535)`, {
      context: { range: text },
    });
  }
  return { first, last };
}

/**
 * A UDP port for a new network: `requested` if no other network uses it,
 * else the lowest free port of the range.
 */
export function allocatePort(range: PortRange, used: ReadonlySet<number>, requested?: number): number {
  if (requested !== undefined) {
    if (!Number.isInteger(requested) || requested < 1 || requested > 65535) {
      throw new StoreError('MVPN_CONFIG_INVALID', `port ${requested} is not between 1 and 65535`, { context: { port: requested } });
    }
    if (used.has(requested)) throw new StoreError('MVPN_ALREADY_EXISTS', `port ${requested} is already used by another network`, { context: { port: requested } });
    return requested;
  }
  for (let p = range.first; p <= range.last; p++) if (!used.has(p)) return p;
  throw new StoreError('MVPN_POOL_EXHAUSTED', `no free port left in ${range.first}-${range.last}`, {
    context: { range: `${range.first}-${range.last}` },
    hint: 'widen port_range in config.json or delete unused networks',
  });
}

/** Smallest subnet a network may have: network, server, one node, broadcast. */
export const MAX_SUBNET_PREFIX = 30;

/**
 * A subnet for a new network that overlaps no subnet in `used`: `requested`
 * (anywhere, pool or not: the operator chose it) or the lowest free aligned
 * block of `/prefix` inside the pool.
 */
export function allocateSubnet(pool: Cidr, prefix: number, used: readonly Cidr[], requested?: Cidr): Cidr {
  if (requested !== undefined) {
    if (requested.prefix > MAX_SUBNET_PREFIX || requested.prefix < 8) {
      throw new StoreError('MVPN_ADDRESS_INVALID', `subnet ${formatCidr(requested)} must have a prefix between /8 and /${MAX_SUBNET_PREFIX}`, {
        context: { subnet: formatCidr(requested) },
      });
    }
    const clash = used.find((u) => overlaps(u, requested));
    if (clash) {
      throw new StoreError('MVPN_ALREADY_EXISTS', `subnet ${formatCidr(requested)} overlaps ${formatCidr(clash)} of another network`, {
        context: { subnet: formatCidr(requested), other: formatCidr(clash) },
      });
    }
    return requested;
  }
  if (prefix < pool.prefix || prefix > MAX_SUBNET_PREFIX) {
    throw new StoreError('MVPN_CONFIG_INVALID', `a /${prefix} subnet does not fit the pool ${formatCidr(pool)}`, { context: { pool: formatCidr(pool), prefix } });
  }
  const step = 2 ** (32 - prefix);
  const end = pool.base + size(pool);
  for (let base = pool.base; base < end; base += step) {
    const candidate = { base, prefix };
    // Skip straight past a clash instead of stepping through a big used block.
    const clash = used.find((u) => overlaps(u, candidate));
    if (!clash) return candidate;
    const clashEnd = clash.base + size(clash);
    if (clashEnd > base + step) base = clashEnd - step;
  }
  throw new StoreError('MVPN_POOL_EXHAUSTED', `no free /${prefix} subnet left in the pool ${formatCidr(pool)}`, {
    context: { pool: formatCidr(pool), prefix },
    hint: 'give --subnet explicitly, widen the pool in config.json, or purge unused networks',
  });
}

/** The server's own tunnel address: the first host of the subnet. */
export function serverAddress(subnet: Cidr): number {
  return subnet.base + 1;
}

/** Addresses a node may hold: hosts of the subnet other than the server's. */
function isAssignable(subnet: Cidr, ip: number): boolean {
  const broadcast = subnet.base + size(subnet) - 1;
  return contains(subnet, ip) && ip !== subnet.base && ip !== broadcast && ip !== serverAddress(subnet);
}

export interface AddressState {
  /** Held by a current member (active or revoked: a revoked member keeps its address reserved). */
  readonly taken: (ip: number) => boolean;
  /** Held by any member of this network, ever. */
  readonly everUsed: (ip: number) => boolean;
  /** The address this node held in this network before, if any. */
  readonly previous?: number | undefined;
  /**
   * Where to start looking for a never-used address: every address below it
   * has been used (a hint kept with the network, so adding the 1,000th node
   * does not walk the first 999). Absent: the subnet's first host.
   */
  readonly freshFrom?: number | undefined;
}

/**
 * A node's address in a network: `requested` validated (inside the subnet,
 * not the network, broadcast or server address, not taken), or allocated by
 * the policy in the module comment. `fresh` says the address was never used
 * before (the caller moves its hint past it).
 */
export function allocateAddress(subnet: Cidr, state: AddressState, requested?: number): { address: number; fresh: boolean } {
  if (requested !== undefined) {
    if (!isAssignable(subnet, requested)) {
      const why = !contains(subnet, requested)
        ? `is outside the network's subnet ${formatCidr(subnet)}`
        : requested === serverAddress(subnet)
          ? "is the server's own tunnel address"
          : 'is the network or broadcast address';
      throw new StoreError('MVPN_ADDRESS_INVALID', `address ${intToIp(requested)} ${why}`, {
        context: { address: intToIp(requested), subnet: formatCidr(subnet) },
      });
    }
    if (state.taken(requested)) {
      throw new StoreError('MVPN_ALREADY_EXISTS', `address ${intToIp(requested)} is already held by another node`, {
        context: { address: intToIp(requested) },
      });
    }
    return { address: requested, fresh: !state.everUsed(requested) };
  }
  if (state.previous !== undefined && isAssignable(subnet, state.previous) && !state.taken(state.previous)) return { address: state.previous, fresh: false };
  const first = subnet.base + 1;
  const last = subnet.base + size(subnet) - 2;
  for (let ip = Math.max(first, state.freshFrom ?? first); ip <= last; ip++) {
    if (isAssignable(subnet, ip) && !state.everUsed(ip) && !state.taken(ip)) return { address: ip, fresh: true };
  }
  // No never-used address left: the lowest freed one (a full scan, only when the subnet is nearly full).
  for (let ip = first; ip <= last; ip++) if (isAssignable(subnet, ip) && !state.taken(ip)) return { address: ip, fresh: false };
  throw new StoreError('MVPN_POOL_EXHAUSTED', `no free address left in ${formatCidr(subnet)}`, {
    context: { subnet: formatCidr(subnet) },
    hint: 'remove nodes that left, or create the network with a larger --subnet',
  });
}
