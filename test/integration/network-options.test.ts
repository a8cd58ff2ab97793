/**
 * A network.json setting flows from `createNetwork` through the real store
 * (its own column, read back) into the node's spec and the rendered client
 * config, with no copy in between: the path ARCHITECTURE.md's "Adding a
 * field to network.json" walks through. `mtu` stands for any such field.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetworkSpecSchema } from '../../src/bundle/schema.ts';
import { renderClientConfig, type ClientPaths } from '../../src/openvpn/client-config.ts';
import { networkSpec } from '../../src/server/documents.ts';
import { createNetwork, networkView } from '../../src/server/ops/networks.ts';
import { newNetworkRecord } from '../../src/server/store/store.ts';
import { makeServer, withContext, type TestServer } from '../helpers/server-fixtures.ts';

const paths: ClientPaths = {
  ca: '/var/lib/mvpn/n/ca.crt',
  cert: '/var/lib/mvpn/n/node.crt',
  key: '/var/lib/mvpn/n/node.key',
  tlsCryptV2: '/var/lib/mvpn/n/tc.key',
  crl: '/var/lib/mvpn/n/crl.pem',
  mgmtSocket: '/run/mvpn/n.sock',
  dev: 'mv-n',
};

let srv: TestServer;
beforeAll(async () => {
  srv = await makeServer({ label: 'opts' });
});
afterAll(() => srv.remove());

describe('network.json options', () => {
  it('reach the stored record, the node spec, the rendered config and the JSON view', async () => {
    await withContext(srv.stateDir, async (ctx) => {
      await createNetwork(ctx, { id: 'withmtu', remotes: ['198.18.0.1'], options: { mtu: 1400 } });
      const net = ctx.store.read((tx) => tx.getNetwork('withmtu'))!;
      // A UDP network also fragments at the path-MTU floor (issue 13), the same option path.
      expect(net.options).toEqual({ mtu: 1400, fragment: 1280 });
      const spec = networkSpec(net, { address: '198.19.0.2', remotes: null });
      expect(spec.mtu).toBe(1400);
      expect(NetworkSpecSchema.safeParse(spec).success).toBe(true);
      expect(renderClientConfig(spec, paths).split('\n')).toContain('tun-mtu 1400');
      expect(networkView(net)).toMatchObject({ id: 'withmtu', mtu: 1400 });
    });
    expect(await srv.json(['network', 'show', 'withmtu'])).toMatchObject({ mtu: 1400 });
  });

  it('a network without options (made before issue 13) has none in its spec or config, as before', async () => {
    await withContext(srv.stateDir, async (ctx) => {
      await createNetwork(ctx, { id: 'plain', remotes: ['198.18.0.1'] });
      const { options, ...before } = ctx.store.read((tx) => tx.getNetwork('plain'))!;
      expect(options).toEqual({ mtu: 1500, fragment: 1280 });
      const spec = networkSpec(before, { address: '198.19.1.2', remotes: null });
      expect('mtu' in spec).toBe(false);
      expect(renderClientConfig(spec, paths)).not.toContain('tun-mtu');
    });
  });

  it('an option the node schema would refuse is refused at creation with the field named, and nothing is stored', async () => {
    await withContext(srv.stateDir, async (ctx) => {
      await expect(createNetwork(ctx, { id: 'badmtu', remotes: ['198.18.0.1'], options: { mtu: 100 } })).rejects.toMatchObject({
        code: 'MVPN_USAGE',
        message: expect.stringMatching(/^network badmtu: mtu: /) as unknown as string,
      });
      await expect(createNetwork(ctx, { id: 'badkey', remotes: ['198.18.0.1'], options: { nosuch: 1 } as never })).rejects.toMatchObject({ code: 'MVPN_USAGE' });
      expect(ctx.store.read((tx) => [tx.getNetwork('badmtu'), tx.getNetwork('badkey')])).toEqual([undefined, undefined]);
    });
  });
});

describe('newNetworkRecord', () => {
  const init = {
    id: 'n1',
    name: 'n1',
    devType: 'tap',
    proto: 'udp',
    port: 1194,
    subnet: '198.19.0.0/24',
    remotes: [{ host: '192.0.2.1' }],
    keyAlg: 'ec-p256',
    caCertPem: 'ca',
    caKeyPem: 'cakey',
    serverCertPem: 'cert',
    serverKeyPem: 'key',
    tlsCryptV2ServerKey: 'tc',
    crlPem: 'crl',
    crlNumber: 1,
    crlNextUpdate: 5,
  } as const;

  it('fills the defaults and leaves unset optional fields absent', () => {
    const r = newNetworkRecord({ ...init, pushedRoutes: undefined, options: {} }, 42);
    expect(r).toStrictEqual({ ...init, kind: 'own', state: 'down', allocHint: 0, createdAt: 42, updatedAt: 42 });
  });

  it('keeps what is given', () => {
    const r = newNetworkRecord({ ...init, state: 'up', pushedRoutes: ['198.51.100.0/24'], options: { mtu: 1300 } }, 7);
    expect(r).toMatchObject({ state: 'up', pushedRoutes: ['198.51.100.0/24'], options: { mtu: 1300 }, allocHint: 0, createdAt: 7 });
  });
});
