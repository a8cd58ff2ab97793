import { describe, expect, it } from 'vitest';
import {
  allocateAddress,
  allocatePort,
  allocateSubnet,
  formatCidr,
  intToIp,
  ipToInt,
  overlaps,
  parseCidr,
  parsePortRange,
  serverAddress,
  type AddressState,
} from '../../src/server/alloc.ts';
import { isMvpnError } from '../../src/errors.ts';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (isMvpnError(err)) return err.code;
    throw err;
  }
  return 'ok';
}

const ips = (...xs: string[]) => new Set(xs.map(ipToInt));
/** The state from sets, as the store would answer. */
const st = (taken: Set<number>, everUsed: Set<number>, extra: { previous?: number; freshFrom?: number } = {}): AddressState => ({
  taken: (ip) => taken.has(ip),
  everUsed: (ip) => everUsed.has(ip),
  ...extra,
});

describe('ipv4 parsing', () => {
  it.each([
    ['198.19.0.0/16', '198.19.0.0/16'],
    ['100.96.0.0/12', '100.96.0.0/12'],
    ['0.0.0.0/0', '0.0.0.0/0'],
  ])('parses %s', (text, back) => {
    expect(formatCidr(parseCidr(text))).toBe(back);
  });

  it.each([
    ['198.19.0.1/16', 'MVPN_ADDRESS_INVALID'], // host bits
    ['198.19.0.0/33', 'MVPN_ADDRESS_INVALID'],
    ['198.19.0/16', 'MVPN_ADDRESS_INVALID'],
    ['198.19.0.256/24', 'MVPN_ADDRESS_INVALID'],
    ['198.19.00.0/24', 'MVPN_ADDRESS_INVALID'], // leading zero: ambiguous (octal in some tools)
    ['198.19.0.0', 'MVPN_ADDRESS_INVALID'],
    ['', 'MVPN_ADDRESS_INVALID'],
  ])('refuses %j with %s', (text, expected) => {
    expect(code(() => parseCidr(text))).toBe(expected);
  });

  it('round-trips addresses at the edges', () => {
    for (const ip of ['0.0.0.0', '255.255.255.255', '198.19.3.4', '128.0.0.1']) expect(intToIp(ipToInt(ip))).toBe(ip);
  });

  it.each([
    ['198.19.0.0/24', '198.19.0.0/16', true],
    ['198.19.1.0/24', '198.19.0.0/24', false],
    ['198.19.0.128/25', '198.19.0.0/24', true],
    ['198.18.0.0/15', '198.19.255.0/24', true],
  ])('overlaps(%s, %s) = %s', (a, b, expected) => {
    expect(overlaps(parseCidr(a), parseCidr(b))).toBe(expected);
    expect(overlaps(parseCidr(b), parseCidr(a))).toBe(expected);
  });

  it.each([
    ['1194-1294', { first: 1194, last: 1294 }],
    ['5000-5000', { first: 5000, last: 5000 }],
  ])('parses port range %s', (text, range) => expect(parsePortRange(text)).toEqual(range));
  it.each(['0-10', '10-5', '1-65536', 'x', '1194'])('refuses port range %j', (text) => {
    expect(code(() => parsePortRange(text))).toBe('MVPN_CONFIG_INVALID');
  });
});

describe('allocatePort', () => {
  const range = { first: 1194, last: 1196 };
  it.each([
    ['lowest free', new Set<number>(), undefined, 1194],
    ['skips used', new Set([1194, 1195]), undefined, 1196],
    ['requested and free', new Set([1194]), 1300, 1300],
  ])('%s', (_name, used, requested, expected) => {
    expect(allocatePort(range, used, requested)).toBe(expected);
  });
  it.each([
    ['exhausted', new Set([1194, 1195, 1196]), undefined, 'MVPN_POOL_EXHAUSTED'],
    ['requested but used', new Set([1195]), 1195, 'MVPN_ALREADY_EXISTS'],
    ['requested out of range', new Set<number>(), 70000, 'MVPN_CONFIG_INVALID'],
  ])('refuses: %s', (_name, used, requested, expected) => {
    expect(code(() => allocatePort(range, used, requested))).toBe(expected);
  });
});

describe('allocateSubnet', () => {
  const pool = parseCidr('198.19.0.0/16');
  const cidrs = (...xs: string[]) => xs.map(parseCidr);
  it.each([
    ['first block', [], 24, '198.19.0.0/24'],
    ['next block', cidrs('198.19.0.0/24'), 24, '198.19.1.0/24'],
    ['fills a hole', cidrs('198.19.0.0/24', '198.19.2.0/24'), 24, '198.19.1.0/24'],
    ['skips a bigger used block', cidrs('198.19.0.0/20'), 24, '198.19.16.0/24'],
    ['skips a partly used block', cidrs('198.19.0.128/25'), 24, '198.19.1.0/24'],
    ['other sizes', cidrs('198.19.0.0/24'), 28, '198.19.1.0/28'],
    ['ignores subnets outside the pool', cidrs('192.0.2.0/24'), 24, '198.19.0.0/24'],
  ])('%s', (_name, used, prefix, expected) => {
    expect(formatCidr(allocateSubnet(pool, prefix, used))).toBe(expected);
  });

  it('accepts a requested subnet outside the pool when nothing overlaps', () => {
    expect(formatCidr(allocateSubnet(pool, 24, cidrs('198.19.0.0/24'), parseCidr('203.0.113.0/24')))).toBe('203.0.113.0/24');
  });

  it.each([
    ['requested overlaps', cidrs('198.19.0.0/16'), 24, '198.19.4.0/24', 'MVPN_ALREADY_EXISTS'],
    ['requested covers another', cidrs('198.19.4.0/24'), 24, '198.19.0.0/20', 'MVPN_ALREADY_EXISTS'],
    ['requested too small', [], 24, '198.19.0.0/31', 'MVPN_ADDRESS_INVALID'],
    ['pool exhausted', cidrs('198.19.0.0/16'), 24, undefined, 'MVPN_POOL_EXHAUSTED'],
    ['prefix larger than pool', [], 8, undefined, 'MVPN_CONFIG_INVALID'],
  ])('refuses: %s', (_name, used, prefix, requested, expected) => {
    expect(code(() => allocateSubnet(pool, prefix, used, requested === undefined ? undefined : parseCidr(requested)))).toBe(expected);
  });

  it('never hands out overlapping subnets, however it is asked', () => {
    const used: ReturnType<typeof parseCidr>[] = [];
    const prefixes = [24, 28, 22, 30, 24, 26, 20, 24];
    for (let i = 0; i < 40; i++) {
      const c = allocateSubnet(pool, prefixes[i % prefixes.length]!, used);
      for (const u of used) expect(overlaps(u, c), `${formatCidr(c)} vs ${formatCidr(u)}`).toBe(false);
      used.push(c);
    }
  });
});

describe('allocateAddress', () => {
  const subnet = parseCidr('198.19.5.0/24');
  const none: AddressState = st(new Set(), new Set());
  it('the server holds the first host', () => expect(intToIp(serverAddress(subnet))).toBe('198.19.5.1'));

  it.each<[string, AddressState, string | undefined, string]>([
    ['lowest host after the server', none, undefined, '198.19.5.2'],
    ['skips taken', st(ips('198.19.5.2', '198.19.5.3'), ips('198.19.5.2', '198.19.5.3')), undefined, '198.19.5.4'],
    ['prefers never-used over freed', st(ips('198.19.5.3'), ips('198.19.5.2', '198.19.5.3')), undefined, '198.19.5.4'],
    ['gives a returning node its old address', st(new Set(), ips('198.19.5.9'), { previous: ipToInt('198.19.5.9') }), undefined, '198.19.5.9'],
    ['not the old address when someone else holds it now', st(ips('198.19.5.9'), ips('198.19.5.9'), { previous: ipToInt('198.19.5.9') }), undefined, '198.19.5.2'],
    ['starts at the hint', st(ips('198.19.5.2'), ips('198.19.5.2', '198.19.5.3'), { freshFrom: ipToInt('198.19.5.4') }), undefined, '198.19.5.4'],
    ['a hint below the subnet is harmless', st(new Set(), new Set(), { freshFrom: 0 }), undefined, '198.19.5.2'],
    ['requested', none, '198.19.5.200', '198.19.5.200'],
  ])('%s', (_name, state, requested, expected) => {
    expect(intToIp(allocateAddress(subnet, state, requested === undefined ? undefined : ipToInt(requested)).address)).toBe(expected);
  });

  it('says whether the address was never used before', () => {
    expect(allocateAddress(subnet, st(new Set(), new Set())).fresh).toBe(true);
    expect(allocateAddress(subnet, st(new Set(), ips('198.19.5.9'), { previous: ipToInt('198.19.5.9') })).fresh).toBe(false);
    expect(allocateAddress(subnet, st(new Set(), ips('198.19.5.9')), ipToInt('198.19.5.9')).fresh).toBe(false);
  });

  it('reuses a freed address only when the subnet has no never-used one left', () => {
    const small = parseCidr('198.19.6.0/29'); // hosts .1 (server) .2-.6
    const everUsed = ips('198.19.6.2', '198.19.6.3', '198.19.6.4', '198.19.6.5', '198.19.6.6');
    const taken = ips('198.19.6.2', '198.19.6.4', '198.19.6.5', '198.19.6.6');
    expect(intToIp(allocateAddress(small, st(taken, everUsed)).address)).toBe('198.19.6.3');
    // Also when the hint says everything below the end was used.
    expect(intToIp(allocateAddress(small, st(taken, everUsed, { freshFrom: ipToInt('198.19.6.7') })).address)).toBe('198.19.6.3');
  });

  it.each([
    ['outside the subnet', '198.19.6.2', 'MVPN_ADDRESS_INVALID'],
    ['the network address', '198.19.5.0', 'MVPN_ADDRESS_INVALID'],
    ['the broadcast address', '198.19.5.255', 'MVPN_ADDRESS_INVALID'],
    ["the server's address", '198.19.5.1', 'MVPN_ADDRESS_INVALID'],
    ['taken', '198.19.5.7', 'MVPN_ALREADY_EXISTS'],
  ])('refuses a requested address that is %s', (_name, requested, expected) => {
    expect(code(() => allocateAddress(subnet, st(ips('198.19.5.7'), new Set()), ipToInt(requested)))).toBe(expected);
  });

  it('reports exhaustion', () => {
    const tiny = parseCidr('198.19.7.0/30'); // .1 server, .2 the only node address
    expect(code(() => allocateAddress(tiny, st(ips('198.19.7.2'), new Set())))).toBe('MVPN_POOL_EXHAUSTED');
  });
});
