// What a node dials (documents.ts networkSpec): its own remotes, and on a
// failover network the other hosts after them, so a node the planner pinned
// to one host still reaches the host that takes the network over.
import { describe, expect, it } from 'vitest';
import { networkSpec } from '../../src/server/documents.ts';
import { newNetworkRecord, type NetworkRecord, type Remote } from '../../src/server/store/store.ts';

const network = (remotes: Remote[], failover: boolean): NetworkRecord =>
  newNetworkRecord(
    {
      id: 'lan',
      name: 'lan',
      devType: 'tap',
      proto: 'udp',
      port: 1194,
      subnet: '198.19.0.0/24',
      remotes,
      keyAlg: 'ec-p256',
      caCertPem: '',
      caKeyPem: '',
      serverCertPem: '',
      serverKeyPem: '',
      tlsCryptV2ServerKey: '',
      crlPem: '',
      crlNumber: 1,
      crlNextUpdate: 0,
      ...(failover ? { failover: true } : {}),
    },
    0,
  );

const dialed = (net: NetworkRecord, own?: Remote[]) => networkSpec(net, { address: '198.19.0.10', ...(own ? { remotes: own } : {}) }).remotes.map((r) => `${r.host}:${r.port}`);

describe('the remotes in a node bundle', () => {
  const hosts = [{ host: '198.18.0.1' }, { host: '198.18.0.2' }];

  it('a node without remotes of its own dials the network\'s, in order', () => {
    expect(dialed(network(hosts, true))).toEqual(['198.18.0.1:1194', '198.18.0.2:1194']);
  });

  it('a pinned node on a single-host network dials only its own remotes', () => {
    expect(dialed(network(hosts, false), [{ host: '203.0.113.7', port: 2000 }])).toEqual(['203.0.113.7:2000']);
  });

  it('a pinned node on a failover network dials its own remotes first, then every other host', () => {
    expect(dialed(network(hosts, true), [{ host: '198.18.0.1' }])).toEqual(['198.18.0.1:1194', '198.18.0.2:1194']);
    expect(dialed(network(hosts, true), [{ host: '203.0.113.7', port: 2000 }])).toEqual(['203.0.113.7:2000', '198.18.0.1:1194', '198.18.0.2:1194']);
  });

  it('keeps at most 8 remotes', () => {
    const many = Array.from({ length: 8 }, (_, i) => ({ host: `198.18.0.${i + 1}` }));
    expect(dialed(network(many, true), [{ host: '203.0.113.7' }])).toHaveLength(8);
  });
});
