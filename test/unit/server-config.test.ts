import { describe, expect, it } from 'vitest';
import { renderCcd, renderServerConfig, type ServerFiles, type ServerNetwork } from '../../src/openvpn/server-config.ts';
import { isMvpnError } from '../../src/errors.ts';

const net: ServerNetwork = {
  id: 'lab1',
  devType: 'tap',
  proto: 'udp',
  port: 1194,
  network: '198.19.0.0',
  netmask: '255.255.255.0',
  serverIp: '198.19.0.1',
  firstHost: '198.19.0.1',
  lastHost: '198.19.0.254',
  ciphers: ['AES-256-GCM', 'AES-128-GCM'],
  keepalive: { interval: 10, timeout: 60 },
};
const files: ServerFiles = {
  ca: '/var/lib/mvpn-server/networks/lab1/ca.crt',
  cert: '/var/lib/mvpn-server/networks/lab1/server.crt',
  key: '/var/lib/mvpn-server/networks/lab1/server.key',
  tlsCryptV2: '/var/lib/mvpn-server/networks/lab1/tls-crypt-v2-server.key',
  crl: '/var/lib/mvpn-server/networks/lab1/crl.pem',
  ccdDir: '/var/lib/mvpn-server/networks/lab1/ccd',
  dev: 'ms-lab1',
};

function directives(conf: string): string[][] {
  return conf
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split(' '));
}
const has = (conf: string, line: string) => conf.split('\n').includes(line);

describe('renderServerConfig', () => {
  it('an L3 server across servers pushes the network-wide route-gateway, so every server pushes the same options (a node moving between them keeps its tun)', () => {
    const peer = { ...net, devType: 'tun' as const, routed: true, serverIp: '198.19.0.8' };
    expect(has(renderServerConfig({ ...peer, routeGateway: '198.19.0.1' }, files), 'push "route-gateway 198.19.0.1"')).toBe(true);
    expect(has(renderServerConfig(peer, files), 'push "route-gateway 198.19.0.8"')).toBe(true);
    expect(() => renderServerConfig({ ...peer, routeGateway: '198.19.0.1\npush "x"' }, files)).toThrow(/routeGateway/);
  });

  it('renders L2 (tap) as server-bridge with the server address on the tap and per-node addresses only', () => {
    const conf = renderServerConfig(net, files);
    for (const line of [
      'dev-type tap',
      'dev ms-lab1',
      'proto udp',
      'port 1194',
      'mode server',
      'tls-server',
      'ifconfig 198.19.0.1 255.255.255.0',
      'server-bridge 198.19.0.1 255.255.255.0 198.19.0.1 198.19.0.254',
      'client-to-client',
      `client-config-dir ${files.ccdDir}`,
      'ccd-exclusive',
      `crl-verify ${files.crl}`,
      `tls-crypt-v2 ${files.tlsCryptV2}`,
      'remote-cert-tls client',
      'verify-client-cert require',
      'dh none',
      'ecdh-curve prime256v1',
      'tls-version-min 1.2',
      'data-ciphers AES-256-GCM:AES-128-GCM',
      'keepalive 10 60',
      'persist-key',
      'persist-tun',
      'script-security 1',
    ]) {
      expect(has(conf, line), line).toBe(true);
    }
    expect(conf).not.toMatch(/^topology/m);
    expect(conf).not.toMatch(/^local /m);
  });

  it('renders L3 (tun) as topology subnet + server without a pool', () => {
    const conf = renderServerConfig({ ...net, devType: 'tun' }, files);
    expect(has(conf, 'dev-type tun')).toBe(true);
    expect(has(conf, 'topology subnet')).toBe(true);
    expect(has(conf, 'server 198.19.0.0 255.255.255.0 nopool')).toBe(true);
    expect(conf).not.toMatch(/^server-bridge/m);
    expect(renderServerConfig({ ...net, devType: 'tun', lladdr: '02:00:00:00:00:01' }, files)).not.toMatch(/^lladdr/m);
    expect(has(conf, 'ccd-exclusive')).toBe(true);
  });

  it('pushes a route for each listed prefix, none without them, and refuses a prefix nodes would refuse', () => {
    const conf = renderServerConfig({ ...net, pushedRoutes: ['203.0.113.0/24', '198.18.0.0/15'] }, files);
    expect(conf.split('\n').filter((l) => l.startsWith('push '))).toEqual(['push "route 203.0.113.0 255.255.255.0"', 'push "route 198.18.0.0 255.254.0.0"']);
    expect(renderServerConfig(net, files)).not.toMatch(/^push /m);
    for (const bad of ['0.0.0.0/1', '203.0.113.1/24', '203.0.113.0/24"\nup /bin/sh']) {
      expect(() => renderServerConfig({ ...net, pushedRoutes: [bad] }, files)).toThrow(/pushedRoutes/);
    }
  });

  it.each([
    [{ proto: 'tcp' as const }, 'proto tcp-server'],
    [{ local: '198.18.0.1' }, 'local 198.18.0.1'],
    [{ port: 1300 }, 'port 1300'],
    [{ lladdr: '02:6d:76:00:12:ab' }, 'lladdr 02:6d:76:00:12:ab'],
    [{ dataPlane: { mtu: 1500, fragment: 1280 } }, 'fragment 1280 mtu'],
    [{ dataPlane: { mtu: 1500, fragment: 1280 } }, 'mssfix 1280 mtu'],
    [{ dataPlane: { mtu: 1500 } }, 'tun-mtu 1500'],
  ])('renders %j', (patch, line) => {
    expect(has(renderServerConfig({ ...net, ...patch }, files), line)).toBe(true);
  });

  it('renders no MTU lines without a data plane, and refuses fragment on TCP or out of range', () => {
    expect(renderServerConfig(net, files)).not.toMatch(/^(tun-mtu|fragment|mssfix) /m);
    expect(() => renderServerConfig({ ...net, proto: 'tcp', dataPlane: { fragment: 1280 } }, files)).toThrow(/fragment/);
    expect(() => renderServerConfig({ ...net, dataPlane: { fragment: 100 } }, files)).toThrow(/fragment/);
    expect(() => renderServerConfig({ ...net, dataPlane: { mtu: 1.5 } }, files)).toThrow(/mtu/);
  });

  it('never runs scripts or writes files on its own', () => {
    const names = directives(renderServerConfig(net, files)).map((d) => d[0]);
    for (const bad of ['up', 'down', 'client-connect', 'learn-address', 'tls-verify', 'plugin', 'log', 'log-append', 'status', 'writepid', 'duplicate-cn']) {
      expect(names).not.toContain(bad);
    }
    expect(directives(renderServerConfig(net, files)).find((d) => d[0] === 'script-security')).toEqual(['script-security', '1']);
  });

  it.each<[string, Partial<ServerNetwork>, Partial<ServerFiles>]>([
    ['id with a newline', { id: 'lab1\nup /bin/sh' }, {}],
    ['id too long', { id: 'abcdefghijklmn' }, {}],
    ['port 0', { port: 0 }, {}],
    ['bad local', { local: '198.18.0.1 up' }, {}],
    ['multicast lladdr', { lladdr: '01:00:5e:00:00:01' }, {}],
    ['bad lladdr', { lladdr: '02:00:00:00:00:00\nup x' }, {}],
    ['bad netmask', { netmask: '255.255.255.0\nplugin x' }, {}],
    ['bad cipher', { ciphers: ['AES-256-GCM x'] }, {}],
    ['no cipher', { ciphers: [] }, {}],
    ['keepalive timeout not longer', { keepalive: { interval: 10, timeout: 10 } }, {}],
    ['relative path', {}, { crl: 'crl.pem' }],
    ['path with a space', {}, { key: '/tmp/a b/key' }],
    ['path with ..', {}, { ccdDir: '/var/lib/../etc' }],
    ['dev too long', {}, { dev: 'ms-abcdefghijklmn' }],
  ])('refuses %s', (_name, netPatch, filePatch) => {
    try {
      renderServerConfig({ ...net, ...netPatch }, { ...files, ...filePatch });
      expect.unreachable();
    } catch (err) {
      expect(isMvpnError(err) && err.code).toBe('MVPN_OPTION_INVALID');
    }
  });
});

describe('renderCcd', () => {
  it('pins the node address', () => expect(renderCcd('198.19.0.7', '255.255.255.0')).toBe('ifconfig-push 198.19.0.7 255.255.255.0\n'));
  it.each([
    ['198.19.0.7\nifconfig-push 1.2.3.4', '255.255.255.0'],
    ['198.19.0.256', '255.255.255.0'],
    ['198.19.0.7', 'x'],
  ])('refuses %j %j', (a, m) => expect(() => renderCcd(a, m)).toThrow(/not valid/));
});
