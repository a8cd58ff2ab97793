/**
 * The link client's config is the client renderer's (the nodes' template)
 * for linkSpec(payload), plus only what a bridge port needs.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, test } from 'vitest';
import { NetworkSpecSchema } from '../../src/bundle/schema.ts';
import { renderClientConfig } from '../../src/openvpn/client-config.ts';
import type { LinkPayload } from '../../src/server/federation/link-bundle.ts';
import { linkSpec } from '../../src/server/federation/link-runtime.ts';
import { networkSpec } from '../../src/server/documents.ts';

const previous = JSON.parse(readFileSync(resolve(import.meta.dirname, '../fixtures/link/previous-release.json'), 'utf8')) as { payload: string };
const payload = JSON.parse(Buffer.from(previous.payload, 'base64').toString('utf8')) as LinkPayload;
const paths = { ca: '/s/ca.crt', cert: '/s/link.crt', key: '/s/link.key', tlsCryptV2: '/s/tc.key', crl: '/s/crl.pem', mgmtSocket: '/run/ml-lab.sock', dev: 'ml-lab' };
const lines = (text: string) => text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));

describe('link client config', () => {
  test('linkSpec is a valid NetworkSpec: the hub, its server CN, the peer address and the nodes\' ciphers', () => {
    const spec = NetworkSpecSchema.parse(linkSpec(payload));
    expect(spec).toMatchObject({ id: payload.network.id, dev_type: 'tap', server_cn: payload.network.server_cn, remotes: payload.hub.remotes, keepalive: { interval: 2, timeout: 25 } });
    expect(spec.address.ipv4).toBe(`${payload.peer.address}/${payload.network.subnet.split('/')[1]}`);
    const node = networkSpec({ id: 'lab', name: 'lab', devType: 'tap', proto: 'udp', port: 1194, subnet: '198.19.0.0/24', remotes: [{ host: '192.0.2.1' }] } as never, { address: '198.19.0.5', remotes: null });
    expect(spec.ciphers).toEqual(node.ciphers);
  });

  test('bridged adds exactly what a bridge port needs to the node template', () => {
    const spec = linkSpec(payload);
    const plain = lines(renderClientConfig(spec, paths));
    const bridged = lines(renderClientConfig(spec, paths, [], { bridged: true }));
    expect(bridged.filter((l) => !plain.includes(l))).toEqual(['persist-key', 'connect-retry 0 5', 'pull-filter ignore "ping"', 'ifconfig-noexec', 'route-noexec']);
    expect(plain.filter((l) => !bridged.includes(l))).toEqual(['connect-retry 0']);
    expect(bridged).toEqual(expect.arrayContaining(['dev ml-lab', 'keepalive 2 25', `verify-x509-name ${payload.network.server_cn} name`, 'crl-verify /s/crl.pem', 'route-nopull']));
    for (const r of payload.hub.remotes) expect(bridged).toContain(`remote ${r.host} ${r.port}`);
  });
});
