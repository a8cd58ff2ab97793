/**
 * What a node takes from its server's push (src/openvpn/push-policy.ts):
 * the prefix rules of network.json's `pushed_routes`, the node-side
 * refusal of prefixes that overlap its underlay, and reading openvpn's log
 * of what its filters removed. That real openvpn obeys the rendered filters
 * against a hostile server is test/integration/hostile-push.test.ts.
 */
import { describe, expect, test } from 'vitest';
import { NetworkSpecSchema, parseWithSchema } from '../../src/bundle/schema.ts';
import { MvpnError } from '../../src/errors.ts';
import { acceptedRoutes, parsePushLogLine, protectedPrefixes, pushedRoutePrefixProblem, readProtectedPrefixes } from '../../src/openvpn/push-policy.ts';
import { makeSpec } from '../helpers/bundle-fixtures.ts';

describe('pushedRoutePrefixProblem', () => {
  test.each(['203.0.113.0/24', '198.18.0.0/15', '198.51.100.7/32', '192.0.2.0/24'])('accepts %s', (p) => {
    expect(pushedRoutePrefixProblem(p)).toBeUndefined();
  });
  test.each<[string, RegExp]>([
    ['0.0.0.0/0', /never a default route/],
    ['0.0.0.0/1', /never a default route or a \/1 pair/],
    ['128.0.0.0/1', /\/1 pair/],
    ['198.0.0.0/7', /8\.\.32/],
    ['203.0.113.0/33', /8\.\.32/],
    ['203.0.113.1/24', /no host bits/],
    ['203.0.113.0', /IPv4 prefix/],
    ['203.0.113.00/24', /IPv4 prefix/],
    ['2001:db8::/32', /IPv4 prefix/],
    ['203.0.113.0/024', /IPv4 prefix/],
    ['route 0.0.0.0', /IPv4 prefix/],
  ])('refuses %s', (p, why) => {
    expect(pushedRoutePrefixProblem(p)).toMatch(why);
  });
});

describe('network.json pushed_routes', () => {
  const parse = (o: Record<string, unknown>): unknown => parseWithSchema(NetworkSpecSchema, { ...makeSpec('lab1'), ...o }, 'network.json');
  const codeAndMessage = (fn: () => unknown): string => {
    try {
      fn();
    } catch (e) {
      return e instanceof MvpnError ? `${e.code} ${e.message}` : String(e);
    }
    return 'no error';
  };

  test('allowed exactly when prefixes are listed', () => {
    expect(parse({ allow_pushed_routes: true, pushed_routes: ['203.0.113.0/24'] })).toMatchObject({ pushed_routes: ['203.0.113.0/24'] });
    expect(parse({ allow_pushed_routes: false })).not.toHaveProperty('pushed_routes');
    expect(codeAndMessage(() => parse({ allow_pushed_routes: true }))).toMatch(/^MVPN_SCHEMA_INVALID network.json: pushed_routes: allow_pushed_routes must be true exactly when/);
    expect(codeAndMessage(() => parse({ allow_pushed_routes: false, pushed_routes: ['203.0.113.0/24'] }))).toMatch(/^MVPN_SCHEMA_INVALID .*pushed_routes/);
    expect(codeAndMessage(() => parse({ allow_pushed_routes: true, pushed_routes: [] }))).toMatch(/^MVPN_SCHEMA_INVALID .*pushed_routes/);
  });

  test.each([['0.0.0.0/0'], ['0.0.0.0/1', '128.0.0.0/1'], ['203.0.113.0/24', '203.0.113.0/24'], ['203.0.113.0/24 255']])('refuses %j', (...prefixes) => {
    expect(codeAndMessage(() => parse({ allow_pushed_routes: true, pushed_routes: prefixes }))).toMatch(/^MVPN_SCHEMA_INVALID network.json: pushed_routes/);
  });
});

describe('acceptedRoutes', () => {
  const remotes = [{ host: '198.18.0.1' }, { host: 'vpn.example.org' }, { host: '2001:db8::1' }];
  test.each<[string, string[], { cidr: string; what: string }[], string[], string[]]>([
    ['nothing to protect but the remote', ['203.0.113.0/24', '198.18.0.0/24'], [], ['203.0.113.0/24'], ['198.18.0.0/24']],
    ['a prefix inside an underlay subnet', ['198.51.100.128/25'], [{ cidr: '198.51.100.0/24', what: 'the subnet of eth1' }], [], ['198.51.100.128/25']],
    ['a prefix covering an underlay subnet', ['192.0.0.0/8'], [{ cidr: '192.0.2.0/24', what: 'the subnet of eth0' }], [], ['192.0.0.0/8']],
    ['a prefix covering the default gateway', ['203.0.0.0/16'], [{ cidr: '203.0.113.1/32', what: 'the default gateway' }], [], ['203.0.0.0/16']],
    ['next to, not overlapping', ['203.0.113.0/25'], [{ cidr: '203.0.113.128/25', what: 'the subnet of eth0' }], ['203.0.113.0/25'], []],
    ['unknown underlay protects everything', ['203.0.113.0/24'], [{ cidr: '0.0.0.0/0', what: 'the underlay' }], [], ['203.0.113.0/24']],
  ])('%s', (_n, prefixes, protect, accepted, refused) => {
    const d = acceptedRoutes(prefixes, remotes, protect);
    expect(d.accepted).toEqual(accepted);
    expect(d.refused.map((r) => r.prefix)).toEqual(refused);
    for (const r of d.refused) expect(r.reason).toMatch(/^it overlaps .+ \(\d+\.\d+\.\d+\.\d+\/\d+\)$/);
  });
});

describe('protectedPrefixes / readProtectedPrefixes', () => {
  const addr = JSON.stringify([
    { ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8 }] },
    { ifname: 'eth0', addr_info: [{ family: 'inet', local: '198.18.0.2', prefixlen: 30 }, { family: 'inet6', local: 'fe80::1', prefixlen: 64 }] },
    { ifname: 'mv-lab1', addr_info: [{ family: 'inet', local: '198.19.0.10', prefixlen: 24 }] },
    { ifname: 'mv-lab2', addr_info: [{ family: 'inet', local: '203.0.113.9', prefixlen: 24 }] },
  ]);
  const routes = JSON.stringify([{ dst: 'default', gateway: '198.18.0.1', dev: 'eth0' }]);

  test('every other interface subnet (other networks included) and the default gateway; not the network own tunnel', () => {
    expect(protectedPrefixes(addr, routes, 'mv-lab1')).toEqual([
      { cidr: '127.0.0.0/8', what: 'the subnet of lo' },
      { cidr: '198.18.0.0/30', what: 'the subnet of eth0' },
      { cidr: '203.0.113.0/24', what: 'the subnet of mv-lab2' },
      { cidr: '198.18.0.1/32', what: 'the default gateway on eth0' },
    ]);
  });

  test('when ip cannot tell, everything is protected', async () => {
    const failing = await readProtectedPrefixes(() => Promise.resolve({ code: 1, stdout: '', stderr: 'nope' }), 'mv-lab1');
    expect(failing).toEqual([{ cidr: '0.0.0.0/0', what: "the node's underlay (ip could not read it)" }]);
    const throwing = await readProtectedPrefixes(() => Promise.reject(new Error('ENOENT')), 'mv-lab1');
    expect(throwing.map((p) => p.cidr)).toEqual(['0.0.0.0/0']);
    const ok = await readProtectedPrefixes((_c, args) => Promise.resolve({ code: 0, stdout: args.includes('route') ? routes : addr, stderr: '' }), 'mv-lab1');
    expect(ok).toHaveLength(4);
  });
});

describe('parsePushLogLine', () => {
  test.each<[string, ReturnType<typeof parsePushLogLine>]>([
    ["2026-12-02 16:50:01 PUSH: Received control message: 'PUSH_REPLY,route-gateway 198.19.0.1,ifconfig 128.0.0.5 128.0.0.0'", { kind: 'reply' }],
    ["2026-12-02 16:50:01 Pushed option removed by filter: 'ifconfig 128.0.0.5 128.0.0.0'", { kind: 'refused', option: 'ifconfig 128.0.0.5 128.0.0.0' }],
    ["Pushed option removed by filter: 'route 0.0.0.0 128.0.0.0'", { kind: 'refused', option: 'route 0.0.0.0 128.0.0.0' }],
    ["2026-12-02 16:50:01 Pushed option accepted by filter: 'ifconfig 198.19.0.10 255.255.255.0'", undefined],
    ['2026-12-02 16:50:01 Initialization Sequence Completed', undefined],
  ])('%s', (line, want) => {
    expect(parsePushLogLine(line)).toEqual(want);
  });
});
