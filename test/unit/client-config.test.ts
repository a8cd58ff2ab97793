/**
 * The hardened client template (DESIGN.md §4) and the extra-options
 * allow-list, table by table, and the standalone profile of agentless
 * nodes rendered from the same template. That openvpn itself accepts the rendered
 * config and connects with it is test/integration/client-config.test.ts.
 */
import { describe, expect, test } from 'vitest';
import { renderClientConfig, renderStandaloneConfig, type ClientPaths, type InlineMaterial } from '../../src/openvpn/client-config.ts';
import { checkExtraOptions, normaliseDirective, unsafeDirective } from '../../src/openvpn/options.ts';
import { MvpnError } from '../../src/errors.ts';
import { NetworkSpecSchema, type NetworkSpec } from '../../src/bundle/schema.ts';
import { makeSpec } from '../helpers/bundle-fixtures.ts';
import { FORBIDDEN_DIRECTIVES, ODD_SPELLINGS } from '../helpers/adversarial/cases.ts';

const paths: ClientPaths = {
  ca: '/var/lib/mvpn-client/networks/lab1/ca.crt',
  cert: '/var/lib/mvpn-client/networks/lab1/node.crt',
  key: '/var/lib/mvpn-client/identity/node.key',
  tlsCryptV2: '/var/lib/mvpn-client/networks/lab1/tls-crypt-v2.key',
  crl: '/var/lib/mvpn-client/networks/lab1/crl.pem',
  mgmtSocket: '/run/mvpn-client/lab1.mgmt',
  dev: 'mv-lab1',
};

function directives(conf: string): string[][] {
  return conf
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split(' '));
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof MvpnError ? err.code : `not an MvpnError: ${String(err)}`;
  }
  return undefined;
}

describe('renderClientConfig', () => {
  test('renders the hardened template exactly', () => {
    expect(renderClientConfig(makeSpec('lab1'), paths)).toBe(
      [
        '# openvpn client config for network lab1, rendered by mvpn-client from network.json.',
        '# Do not edit: it is rewritten on every install.',
        'client',
        'dev-type tap',
        'dev mv-lab1',
        'proto udp',
        'remote 198.18.0.1 1194',
        'remote vpn.example.org 1195',
        'nobind',
        'remote-cert-tls server',
        'verify-x509-name mvpn-server-lab1 name',
        `ca ${paths.ca}`,
        `cert ${paths.cert}`,
        `key ${paths.key}`,
        `tls-crypt-v2 ${paths.tlsCryptV2}`,
        `crl-verify ${paths.crl}`,
        'tls-version-min 1.2',
        'data-ciphers AES-256-GCM:CHACHA20-POLY1305',
        'persist-tun',
        'connect-retry 0',
        'server-poll-timeout 3',
        'tls-timeout 1',
        `management ${paths.mgmtSocket} unix`,
        'management-hold',
        'script-security 1',
        'pull-filter accept "ifconfig 192.0.2.10 255.255.255.0"',
        'pull-filter ignore "ifconfig"',
        'pull-filter ignore "redirect-"',
        'route-nopull',
        'keepalive 10 60',
        'txqueuelen 1000',
        'fast-io',
        'sndbuf 2097152',
        'rcvbuf 2097152',
        'verb 3',
        '',
      ].join('\n'),
    );
  });

  test.each<[string, Parameters<typeof makeSpec>[1], (d: string[][]) => void]>([
    ['pushed routes allowed: only the listed prefixes, redirect still ignored, the address still pinned, the gateway only the server', { allow_pushed_routes: true, pushed_routes: ['203.0.113.0/24', '198.51.100.0/24'], server_tunnel_ip: '192.0.2.1' }, (d) => {
      expect(d.some((x) => x[0] === 'route-nopull')).toBe(false);
      expect(d.filter((x) => x[0] === 'pull-filter')).toEqual([
        ['pull-filter', 'accept', '"ifconfig', '192.0.2.10', '255.255.255.0"'],
        ['pull-filter', 'ignore', '"ifconfig"'],
        ['pull-filter', 'ignore', '"redirect-"'],
        ['pull-filter', 'accept', '"route', '203.0.113.0', '255.255.255.0"'],
        ['pull-filter', 'accept', '"route', '198.51.100.0', '255.255.255.0"'],
        ...Array.from({ length: 10 }, (_, i) => ['pull-filter', 'ignore', '"route-gateway', `192.0.2.1${i}"`]),
        ['pull-filter', 'accept', '"route-gateway', '192.0.2.1"'],
        ['pull-filter', 'ignore', '"route"'],
      ]);
    }],
    ['a server tunnel address outside the node subnet (or none) accepts no route-gateway at all', { allow_pushed_routes: true, pushed_routes: ['203.0.113.0/24'], server_tunnel_ip: '198.51.100.1' }, (d) => {
      expect(d.filter((x) => x[0] === 'pull-filter' && x[2] === '"route-gateway')).toEqual([]);
      expect(d).toContainEqual(['pull-filter', 'ignore', '"route"']);
    }],
    ['the accepted ifconfig is the spec address with its netmask', { address: { ipv4: '198.19.7.200/22' } }, (d) => {
      expect(d).toContainEqual(['pull-filter', 'accept', '"ifconfig', '198.19.7.200', '255.255.252.0"']);
    }],
    ['tcp becomes tcp-client', { proto: 'tcp' }, (d) => expect(d).toContainEqual(['proto', 'tcp-client'])],
    ['tun device type', { dev_type: 'tun' }, (d) => expect(d).toContainEqual(['dev-type', 'tun'])],
    ['mtu', { mtu: 1400 }, (d) => expect(d).toContainEqual(['tun-mtu', '1400'])],
    ['fragment: openvpn splits datagrams to the spec size and clamps TCP to fit one', { mtu: 1500, fragment: 1280 }, (d) => {
      expect(d.filter((x) => ['tun-mtu', 'fragment', 'mssfix'].includes(x[0]!))).toEqual([['tun-mtu', '1500'], ['fragment', '1280', 'mtu'], ['mssfix', '1280', 'mtu']]);
    }],
    ['no fragment or mssfix without the spec asking (a network made before they existed)', {}, (d) => {
      expect(d.map((x) => x[0])).not.toContain('fragment');
      expect(d.map((x) => x[0])).not.toContain('mssfix');
    }],
    ['remotes keep their order', { remotes: [{ host: '2001:db8::9', port: 7 }, { host: '198.18.0.9', port: 8 }, { host: 'b.example', port: 9 }] }, (d) =>
      expect(d.filter((x) => x[0] === 'remote')).toEqual([['remote', '2001:db8::9', '7'], ['remote', '198.18.0.9', '8'], ['remote', 'b.example', '9']])],
    ['extra options are appended in canonical form', { extra_options: [['SNDBUF', '393216'], ['--mute-replay-warnings']] }, (d) => {
      expect(d.slice(-2)).toEqual([['sndbuf', '393216'], ['mute-replay-warnings']]);
    }],
  ])('%s', (_n, overrides, check) => {
    check(directives(renderClientConfig(makeSpec('lab1', overrides), paths)));
  });

  test('never carries directives that write files, run scripts or open TCP management', () => {
    for (const spec of [makeSpec('lab1'), makeSpec('lab1', { allow_pushed_routes: true, pushed_routes: ['203.0.113.0/24'], proto: 'tcp', mtu: 1300, extra_options: [['ping', '5']] })]) {
      const names = directives(renderClientConfig(spec, paths)).map((d) => d[0]);
      for (const bad of ['log', 'log-append', 'status', 'writepid', 'up', 'down', 'route-up', 'plugin', 'remote-random', 'management-query-passwords', 'daemon', 'config', 'cd']) {
        expect(names).not.toContain(bad);
      }
      expect(names.filter((x) => x === 'management')).toHaveLength(1);
      expect(names.filter((x) => x === 'script-security')).toHaveLength(1);
    }
  });

  test.each<[string, Partial<ClientPaths>]>([
    ['a relative path', { ca: 'ca.crt' }],
    ['a path with a space', { crl: '/var/lib/my dir/crl.pem' }],
    ['a path with a newline', { key: '/x\nup /bin/sh' }],
    ['a path with a quote', { cert: '/x/"a' }],
    ['a path with ..', { tlsCryptV2: '/var/lib/../etc/x' }],
    ['a device name over 15 characters', { dev: 'mv-abcdefghijklm' }],
    ['a device name with a slash', { dev: 'mv/x' }],
  ])('refuses %s', (_n, p) => {
    expect(codeOf(() => renderClientConfig(makeSpec('lab1'), { ...paths, ...p }))).toBe('MVPN_OPTION_INVALID');
  });

  test('a listed prefix that overlaps the node underlay or a remote address is left out, with the reason in a comment', () => {
    const spec = makeSpec('lab1', { allow_pushed_routes: true, pushed_routes: ['203.0.113.0/24', '198.18.0.0/16', '198.51.100.0/24'] });
    const conf = renderClientConfig(spec, paths, [{ cidr: '198.51.100.128/25', what: 'the subnet of eth1' }]);
    const accepted = directives(conf).filter((x) => x[0] === 'pull-filter' && x[1] === 'accept' && x[2] === '"route');
    expect(accepted).toEqual([['pull-filter', 'accept', '"route', '203.0.113.0', '255.255.255.0"']]);
    expect(conf).toContain('# pushed routes for 198.18.0.0/16 refused on this node: it overlaps the server address 198.18.0.1 (198.18.0.1/32)');
    expect(conf).toContain('# pushed routes for 198.51.100.0/24 refused on this node: it overlaps the subnet of eth1 (198.51.100.128/25)');
    expect(conf).toMatch(/pull-filter ignore "route"\n/);
  });

  // The data plane is the network's (both ends must agree): never a node-side extra option, with or without spec fields.
  test.each<[string[], string, Partial<NetworkSpec>]>([
    [['tun-mtu', '1300'], 'mtu', { mtu: 1400 }],
    [['tun-mtu', '1300'], 'mtu', {}],
    [['link-mtu', '1400'], 'mtu', {}],
    [['fragment', '1400'], 'fragment', { fragment: 1280 }],
    [['fragment', '1300'], 'fragment', {}],
    [['mssfix', '1400'], 'fragment', {}],
    [['MSSFIX', '0'], 'fragment', { fragment: 1280 }],
  ])('extra %j is refused, naming the network option %s', (opt, field, spec) => {
    try {
      renderClientConfig(makeSpec('lab1', { ...spec, extra_options: [opt] }), paths);
      expect.unreachable();
    } catch (err) {
      expect((err as MvpnError).code).toBe('MVPN_OPTION_FORBIDDEN');
      expect((err as MvpnError).message).toContain(`network option \`${field}\``);
      expect((err as MvpnError).context).toMatchObject({ directive: opt[0]!.toLowerCase() });
    }
  });

  test('the schema refuses fragment on a TCP network', () => {
    expect(NetworkSpecSchema.safeParse(makeSpec('lab1', { proto: 'tcp', fragment: 1280 })).success).toBe(false);
    expect(NetworkSpecSchema.safeParse(makeSpec('lab1', { fragment: 1280 })).success).toBe(true);
  });
});

describe('checkExtraOptions', () => {
  test.each([
    [['mtu-disc', 'yes']],
    [['sndbuf', '393216']],
    [['rcvbuf', '0']],
    [['txqueuelen', '1000']],
    [['connect-retry', '5', '300']],
    [['connect-retry-max', '10']],
    [['hand-window', '60']],
    [['reneg-sec', '3600']],
    [['tls-timeout', '2']],
    [['ping', '10']],
    [['ping-restart', '60']],
    [['mute-replay-warnings']],
    [['explicit-exit-notify']],
    [['explicit-exit-notify', '2']],
    [['resolv-retry', 'infinite']],
    [['replay-window', '128', '15']],
  ])('allowed: %j', (opt) => {
    expect(checkExtraOptions([opt])).toEqual([opt]);
  });

  test.each(FORBIDDEN_DIRECTIVES.map((d) => [d]))('forbidden: %s (named in the error)', (d) => {
    try {
      checkExtraOptions([['ping', '5'], [d, 'x']]);
      expect.unreachable();
    } catch (err) {
      expect((err as MvpnError).code).toBe('MVPN_OPTION_FORBIDDEN');
      expect((err as MvpnError).message).toContain(`"${d}"`);
      expect((err as MvpnError).message).toMatch(/is forbidden: \w+/); // with its reason, not "not on the allow-list"
      expect((err as MvpnError).message).toContain('extra_options[1]');
      expect((err as MvpnError).context).toMatchObject({ directive: d, index: 1 });
    }
  });

  test.each(ODD_SPELLINGS.map((s) => [s]))('"up" spelled %j is recognised and refused as "up"', (s) => {
    try {
      checkExtraOptions([[s, '/bin/sh']]);
      expect.unreachable();
    } catch (err) {
      expect((err as MvpnError).code).toBe('MVPN_OPTION_FORBIDDEN');
      expect((err as MvpnError).context['directive']).toBe('up');
    }
  });

  test.each([
    ['log-foo', 'MVPN_OPTION_FORBIDDEN'],
    ['setenv-opt', 'MVPN_OPTION_FORBIDDEN'],
    ['management-client-auth', 'MVPN_OPTION_FORBIDDEN'],
    ['tls-crypt-v2', 'MVPN_OPTION_FORBIDDEN'],
    ['ca', 'MVPN_OPTION_FORBIDDEN'],
    ['verify-x509-name', 'MVPN_OPTION_FORBIDDEN'],
    ['pull-filter', 'MVPN_OPTION_FORBIDDEN'],
    ['redirect-gateway', 'MVPN_OPTION_FORBIDDEN'],
    ['route', 'MVPN_OPTION_FORBIDDEN'],
    ['remote', 'MVPN_OPTION_FORBIDDEN'],
    ['data-ciphers', 'MVPN_OPTION_FORBIDDEN'],
    ['frobnicate', 'MVPN_OPTION_UNKNOWN'],
    ['u\u0440', 'MVPN_OPTION_UNKNOWN'], // Cyrillic er: not "up", and not allowed either
    ['</ca>', 'MVPN_OPTION_UNKNOWN'],
    ['', 'MVPN_OPTION_UNKNOWN'],
  ])('directive %j → %s', (d, code) => {
    expect(codeOf(() => checkExtraOptions([[d]]))).toBe(code);
  });

  test.each<[string[], string]>([
    [['sndbuf', '1400\nup /bin/sh'], 'newline'],
    [['sndbuf', '1400 1'], 'space'],
    [['sndbuf', "'1400'"], 'quote'],
    [['sndbuf', '1400\\'], 'backslash'],
    [['sndbuf', '#1400'], 'comment'],
    [['sndbuf', '1400\0'], 'NUL'],
    [['sndbuf', '１４００'], 'non-ASCII digits'],
    [['sndbuf', '99999999'], 'out of range'],
    [['sndbuf', '01400'], 'leading zero'],
    [['mtu-disc', 'sometimes'], 'bad keyword'],
    [['ping'], 'missing argument'],
    [['ping', '5', '6'], 'extra argument'],
    [['mute-replay-warnings', '1'], 'argument to a flag'],
    [['resolv-retry', 'forever'], 'bad keyword'],
  ])('invalid arguments: %j (%s)', (opt) => {
    expect(codeOf(() => checkExtraOptions([opt]))).toBe('MVPN_OPTION_INVALID');
  });

  test('udp-only options are refused with proto tcp', () => {
    expect(checkExtraOptions([['fast-io']], { proto: 'udp' })).toHaveLength(1);
    expect(codeOf(() => checkExtraOptions([['fast-io']], { proto: 'tcp' }))).toBe('MVPN_OPTION_INVALID');
    expect(codeOf(() => checkExtraOptions([['explicit-exit-notify']], { proto: 'tcp' }))).toBe('MVPN_OPTION_INVALID');
  });

  test('a directive given twice is refused', () => {
    expect(codeOf(() => checkExtraOptions([['ping', '5'], ['PING', '6']]))).toBe('MVPN_OPTION_INVALID');
  });

  test.each([
    ['UP', 'up'],
    ['\t"--Log-Append"\u00a0', 'log-append'],
    ['ｓｔａｔｕｓ', 'status'],
    ['\u2014up', 'up'],
  ])('normaliseDirective(%j) = %j', (raw, want) => {
    expect(normaliseDirective(raw)).toBe(want);
  });
});

/** PEM-shaped stand-ins: the renderer checks shape, the integration test uses real material. */
const pem = (label: string): string => `-----BEGIN ${label}-----\nQUJD\n-----END ${label}-----\n`;
const inline: InlineMaterial = {
  ca: pem('CERTIFICATE') + pem('CERTIFICATE'),
  cert: pem('CERTIFICATE'),
  key: pem('PRIVATE KEY'),
  tlsCryptV2: pem('OpenVPN tls-crypt-v2 client key'),
  crl: pem('X509 CRL'),
};

/** Directive lines outside inline blocks, as openvpn reads the file. */
function profileDirectives(conf: string): string[][] {
  let inBlock = false;
  const out: string[][] = [];
  for (const l of conf.split('\n')) {
    if (/^<\/[a-z0-9-]+>$/.test(l)) inBlock = false;
    else if (/^<[a-z0-9-]+>$/.test(l)) inBlock = true;
    else if (!inBlock && l && !l.startsWith('#')) out.push(l.split(' '));
  }
  return out;
}

describe('renderStandaloneConfig (agentless profile)', () => {
  const spec = makeSpec('lab1');
  const profile = renderStandaloneConfig(spec, 'n7', inline);

  test('is the agent template with trust material inline and no management', () => {
    const agent = directives(renderClientConfig(spec, paths));
    const mine = profileDirectives(profile);
    const fileDirectives = new Set(['ca', 'cert', 'key', 'tls-crypt-v2', 'crl-verify']);
    const agentOnly = new Set(['management', 'management-hold', 'script-security']);
    // every other line of the agent's config is in the profile, in the same order
    const expected = agent.filter((d) => !fileDirectives.has(d[0]!) && !agentOnly.has(d[0]!)).map((d) => (d[0] === 'dev' ? ['dev', 'tap'] : d));
    expect(mine).toEqual(expected);
    for (const [tag, body] of [['ca', inline.ca], ['cert', inline.cert], ['key', inline.key], ['tls-crypt-v2', inline.tlsCryptV2], ['crl-verify', inline.crl]] as const) {
      expect(profile).toContain(`<${tag}>\n${body}</${tag}>\n`);
    }
  });

  test('carries no directive from the deny list, checked with the options checker', () => {
    for (const [name, ...args] of profileDirectives(profile)) expect(unsafeDirective(name!, args), name).toBeUndefined();
    // and the checker does see each deny-listed directive
    // (DESIGN.md §4's list, and what loads code or writes files and devices; not the trust and routing ones only extra_options refuses)
    const denied = [...FORBIDDEN_DIRECTIVES.slice(0, FORBIDDEN_DIRECTIVES.indexOf('engine')), 'engine', 'providers', 'pkcs11-providers', 'genkey', 'mktun', 'memstats'];
    for (const d of denied) expect(unsafeDirective(d, d === 'management' ? ['0.0.0.0', '7505'] : ['/bin/sh']), d).toBeDefined();
    expect(unsafeDirective('route-nopull')).toBeUndefined();
    expect(unsafeDirective('management', ['/run/x.sock', 'unix'])).toBeUndefined();
    expect(unsafeDirective('user', ['nobody'])).toBeUndefined();
  });

  test('keeps the hardened settings and the spec\'s choices', () => {
    const d = profileDirectives(profile);
    // (the route policy lines are the agent's: the first test compares the whole template)
    expect(d.some((x) => x[0] === 'verify-x509-name')).toBe(true);
    for (const want of [['remote-cert-tls', 'server'], ['tls-version-min', '1.2']]) {
      expect(d).toContainEqual(want);
    }
    expect(d.filter((x) => x[0] === 'remote')).toEqual([['remote', '198.18.0.1', '1194'], ['remote', 'vpn.example.org', '1195']]);
  });

  test.each<[string, Partial<InlineMaterial>]>([
    ['a closing tag smuggled into the CA', { ca: `${pem('CERTIFICATE')}</ca>\nup /bin/sh\n<ca>\n` }],
    ['a directive instead of a key', { key: 'up /bin/sh\n' }],
    ['an empty CRL', { crl: '' }],
    ['text around the PEM', { cert: `hello\n${pem('CERTIFICATE')}` }],
  ])('refuses material that is not plain PEM: %s', (_what, bad) => {
    expect(codeOf(() => renderStandaloneConfig(spec, 'n7', { ...inline, ...bad }))).toBe('MVPN_OPTION_INVALID');
  });

  test('refuses a node id that could break the comment line', () => {
    expect(codeOf(() => renderStandaloneConfig(spec, 'n7\nup /bin/sh', inline))).toBe('MVPN_OPTION_INVALID');
  });
});
