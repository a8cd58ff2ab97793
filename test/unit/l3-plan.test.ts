/**
 * Which networks the server daemon routes and how (src/server/routing
 * l3-runner.ts l3Plan): a tun network spanning servers, from the store's
 * records alone; the hub's backbone server config and a peer's link client
 * to it (tun branch of linkSpec).
 */
import { describe, expect, it } from 'vitest';
import { renderClientConfig } from '../../src/openvpn/client-config.ts';
import type { LinkPayload } from '../../src/server/federation/link-bundle.ts';
import { linkSpec } from '../../src/server/federation/link-runtime.ts';
import { backboneProto, renderBackboneConfig } from '../../src/server/routing/backbone.ts';
import { HUB_NAME, l3Plan } from '../../src/server/routing/l3-runner.ts';
import { newNetworkRecord, type MemberSummary, type NetworkRecord } from '../../src/server/store/store.ts';

const net = (devType: 'tap' | 'tun', kind: 'own' | 'mirror' = 'own'): NetworkRecord =>
  newNetworkRecord(
    { id: 'l3', name: 'l3', kind, devType, proto: 'udp', port: 1200, subnet: '198.19.4.0/24', remotes: [{ host: '198.18.0.1' }], keyAlg: 'ec-p256', caCertPem: '', caKeyPem: '', serverCertPem: '', serverKeyPem: '', tlsCryptV2ServerKey: '', crlPem: '', crlNumber: 1, crlNextUpdate: 0 },
    0,
  );
const member = (node: string, address: string, o: Partial<MemberSummary> = {}): MemberSummary => ({ node, address, revoked: false, certSerial: 'aa', prevCertSerial: null, ...o });
const members = [member('n1', '198.19.4.10'), member('mvpn-peer-b', '198.19.4.2'), member('mvpn-peer-c', '198.19.4.3'), member('mvpn-peer-d', '198.19.4.4', { revoked: true })];
const payload = (devType: 'tap' | 'tun'): LinkPayload =>
  ({
    network: { id: 'l3', name: 'l3', dev_type: devType, proto: 'udp', subnet: '198.19.4.0/24', port: 1200, server_cn: 'mvpn-server-l3', ...(devType === 'tun' ? { backbone: { proto: 'tcp', port: 1200 } } : {}) },
    hub: { remotes: [{ host: '198.18.0.1', port: 1200 }], api_url: 'https://198.18.0.1:8443', api_ca: '' },
    peer: { name: 'b', cn: 'mvpn-peer-b', address: '198.19.4.2' },
  }) as unknown as LinkPayload;

describe('l3Plan: the routed networks of a server', () => {
  it('hub: a tun network with peers is routed over its backbone tap, neighbours = its allowed peers', () => {
    expect(l3Plan(net('tun'), members)).toEqual({
      network: 'l3',
      subnet: '198.19.4.0/24',
      role: 'hub',
      local: '198.19.4.1',
      tunDev: 'ms-l3',
      backboneDev: 'mk-l3',
      peers: [
        { name: 'mvpn-peer-b', address: '198.19.4.2' },
        { name: 'mvpn-peer-c', address: '198.19.4.3' },
      ],
    });
  });

  it('a tun network on one server, and every tap network, are not routed', () => {
    expect(l3Plan(net('tun'), [member('n1', '198.19.4.10')])).toBeUndefined();
    expect(l3Plan(net('tun'), [member('mvpn-peer-b', '198.19.4.2', { revoked: true })])).toBeUndefined();
    expect(l3Plan(net('tap'), members)).toBeUndefined();
    expect(l3Plan(net('tap', 'mirror'), [], { payload: payload('tap'), servers: [] })).toBeUndefined();
  });

  it('peer: its own address, the hub and the other servers the hub listed (never itself) over its link tap', () => {
    const servers = [
      { node: 'mvpn-peer-b', address: '198.19.4.2' },
      { node: 'mvpn-peer-c', address: '198.19.4.3' },
    ];
    expect(l3Plan(net('tun', 'mirror'), [], { payload: payload('tun'), servers })).toEqual({
      network: 'l3',
      subnet: '198.19.4.0/24',
      role: 'peer',
      local: '198.19.4.2',
      tunDev: 'ms-l3',
      backboneDev: 'ml-l3',
      peers: [
        { name: HUB_NAME, address: '198.19.4.1' },
        { name: 'mvpn-peer-c', address: '198.19.4.3' },
      ],
    });
    // Before the first sync only the hub is known.
    expect(l3Plan(net('tun', 'mirror'), [], { payload: payload('tun'), servers: [] })?.peers).toEqual([{ name: HUB_NAME, address: '198.19.4.1' }]);
    // A mirror without its link row is not routed.
    expect(l3Plan(net('tun', 'mirror'), [])).toBeUndefined();
  });
});

describe('the backbone', () => {
  it("the hub's backbone server: a tap server on the network's port, other protocol, address put on by the daemon, its own ccd", () => {
    expect(backboneProto('udp')).toBe('tcp');
    expect(backboneProto('tcp')).toBe('udp');
    const paths = { stateDir: '/s', networksDir: '/s/networks' } as never;
    const lines = renderBackboneConfig({ vpn_listen: '198.18.0.1' } as never, paths, net('tun')).split('\n');
    expect(lines).toEqual(expect.arrayContaining(['dev-type tap', 'dev mk-l3', 'proto tcp-server', 'port 1200', 'mode server', 'client-to-client', 'ccd-exclusive', 'keepalive 2 25', 'server-bridge 198.19.4.1 255.255.255.0 198.19.4.1 198.19.4.254']));
    expect(lines.some((l) => l.startsWith('ifconfig') || l.startsWith('lladdr'))).toBe(false);
    expect(lines.find((l) => l.startsWith('client-config-dir'))).toMatch(/\/l3\/backbone\/ccd$/);
  });

  it("a peer's link to an L3 network dials the backbone (its port and protocol) as a tap, without the network's fragmentation", () => {
    const spec = linkSpec(payload('tun'));
    expect(spec).toMatchObject({ dev_type: 'tap', proto: 'tcp', remotes: [{ host: '198.18.0.1', port: 1200 }] });
    expect(spec.fragment).toBeUndefined();
    const text = renderClientConfig(spec, { ca: '/c', cert: '/c', key: '/k', tlsCryptV2: '/t', crl: '/r', mgmtSocket: '/run/x.sock', dev: 'ml-l3' }, [], { bridged: true });
    expect(text).toContain('dev-type tap');
    expect(text).toContain('ifconfig-noexec');
    expect(text).toMatch(/proto tcp/);
  });
});
