/**
 * A network.json setting flows from `createNetwork` through the real store
 * (its own column, read back) into the node's spec and the rendered client
 * config, with no copy in between: the path ARCHITECTURE.md's "Adding a
 * field to network.json" walks through. `mtu` stands for any such field.
 */
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceName } from '../../src/agent/networks.ts';
import { NetworkSpecSchema } from '../../src/bundle/schema.ts';
import { renderClientConfig, type ClientPaths } from '../../src/openvpn/client-config.ts';
import { networkSpec } from '../../src/server/documents.ts';
import { peerCn } from '../../src/server/federation/mirror.ts';
import { renderNetworkConfig } from '../../src/server/network-files.ts';
import { createNetwork, networkView } from '../../src/server/ops/networks.ts';
import { addNode } from '../../src/server/ops/nodes.ts';
import { newNetworkRecord } from '../../src/server/store/store.ts';
import { net, openvpnPids, withConnectedWorld } from '../helpers/agent-fixtures.ts';
import { dfPing } from '../helpers/lan-lab.ts';
import { waitFor } from '../helpers/netns.ts';
import { cli, makeServer, withContext, type TestServer } from '../helpers/server-fixtures.ts';

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

describe('network update --mtu/--fragment (a data plane changed after creation)', () => {
  const bundleVersions = (ctx: Parameters<Parameters<typeof withContext>[1]>[0], id: string): (number | null)[] =>
    ctx.store.read((tx) => ['a', 'b'].map((n) => tx.getMembership(id, n)?.bundleVersion ?? null));

  it('changes the LAN MTU and fragmentation in the store, every member\'s bundle (a new version) and the server config', async () => {
    let versions: (number | null)[] = [];
    await withContext(srv.stateDir, async (ctx) => {
      await createNetwork(ctx, { id: 'chmtu', remotes: ['198.18.0.1'] });
      for (const node of ['a', 'b']) await addNode(ctx, { node, network: 'chmtu' });
      versions = bundleVersions(ctx, 'chmtu');
    });
    expect(await srv.json(['network', 'update', 'chmtu', '--mtu', '1400'])).toMatchObject({ id: 'chmtu', mtu: 1400, fragment: 1280 });
    await withContext(srv.stateDir, async (ctx) => {
      const net = ctx.store.read((tx) => tx.getNetwork('chmtu'))!;
      expect(net.options).toEqual({ mtu: 1400, fragment: 1280 });
      const after = bundleVersions(ctx, 'chmtu');
      for (const [i, v] of after.entries()) expect(v).toBeGreaterThan(versions[i]!);
      expect(networkSpec(net, { address: '198.19.0.2', remotes: null })).toMatchObject({ mtu: 1400, fragment: 1280 });
      expect(renderNetworkConfig(ctx.config, ctx.paths, net).split('\n')).toEqual(expect.arrayContaining(['tun-mtu 1400', 'fragment 1280 mtu']));
      versions = after;
    });
    // Fragmentation off (a network whose paths all carry full frames), then a new floor.
    expect(await srv.json(['network', 'update', 'chmtu', '--fragment', 'off'])).toMatchObject({ mtu: 1400, fragment: null });
    await withContext(srv.stateDir, async (ctx) => {
      const net = ctx.store.read((tx) => tx.getNetwork('chmtu'))!;
      expect(net.options).toEqual({ mtu: 1400 });
      expect(renderNetworkConfig(ctx.config, ctx.paths, net)).not.toMatch(/^fragment /m);
      expect('fragment' in networkSpec(net, { address: '198.19.0.2', remotes: null })).toBe(false);
    });
    expect(await srv.json(['network', 'update', 'chmtu', '--fragment', '1400', '--mtu', '1500'])).toMatchObject({ mtu: 1500, fragment: 1400 });
    // The same values again: nothing changes, no new bundle.
    await withContext(srv.stateDir, async (ctx) => {
      versions = bundleVersions(ctx, 'chmtu');
    });
    expect(await srv.json(['network', 'update', 'chmtu', '--mtu', '1500'])).toMatchObject({ mtu: 1500, fragment: 1400, changed: false });
    await withContext(srv.stateDir, async (ctx) => {
      expect(bundleVersions(ctx, 'chmtu')).toEqual(versions);
    });
  });

  it('network create --fragment sets it from the start (a size, or off)', async () => {
    expect(await srv.json(['network', 'create', 'frag15', '--remote', '198.18.0.1', '--fragment', '1500'])).toMatchObject({ mtu: 1500, fragment: 1500 });
    expect(await srv.json(['network', 'create', 'fragoff', '--remote', '198.18.0.1', '--fragment', 'off'])).toMatchObject({ mtu: 1500, fragment: null });
    const r = await cli(['server', 'network', 'create', 'fragtcp', '--proto', 'tcp', '--remote', '198.18.0.1', '--fragment', '1400', '--state-dir', srv.stateDir]);
    expect(r.err).toMatch(/fragment is for UDP networks only.*MVPN_USAGE/);
  });

  it('refuses what cannot work, saying why, and changes nothing', async () => {
    await withContext(srv.stateDir, async (ctx) => {
      await createNetwork(ctx, { id: 'tcpnet', proto: 'tcp', remotes: ['198.18.0.1'] });
      await createNetwork(ctx, { id: 'linked', remotes: ['198.18.0.1'] });
      await addNode(ctx, { node: peerCn('far'), network: 'linked' }, { allowReserved: true });
    });
    const refused = async (args: string[], code: string, message: RegExp): Promise<void> => {
      const r = await cli(['server', 'network', 'update', ...args, '--state-dir', srv.stateDir]);
      expect(r.code).not.toBe(0);
      expect(r.err).toContain(code);
      expect(r.err).toMatch(message);
    };
    await refused(['tcpnet', '--fragment', '1280'], 'MVPN_USAGE', /fragment is for UDP networks only/);
    await refused(['chmtu', '--mtu', '100'], 'MVPN_USAGE', /--mtu 100 is not valid/);
    await refused(['chmtu', '--fragment', '200'], 'MVPN_USAGE', /fragment/);
    await refused(['chmtu'], 'MVPN_USAGE', /--mtu|--fragment/);
    // A peer server's link bundle carries the hub's data plane: its link client would no longer match.
    await refused(['linked', '--mtu', '1400'], 'MVPN_STORE_CONFLICT', /link.*far/);
    await withContext(srv.stateDir, async (ctx) => {
      expect(ctx.store.read((tx) => [tx.getNetwork('tcpnet')!.options, tx.getNetwork('linked')!.options])).toEqual([{ mtu: 1500 }, { mtu: 1500, fragment: 1280 }]);
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

/**
 * A running node follows a data-plane change made on its server (issue 13):
 * the real server daemon and agent in namespaces (agent-fixtures.ts
 * ServerWorld), the change made with the server CLI as an operator would.
 * Each step is one that a node not following it would fail: a node keeping
 * `fragment` after the server dropped it (or the reverse) exchanges no
 * frames at all, since the fragment header is on every data packet; a node
 * keeping the old `tun-mtu` shows it on its LAN interface. Nobody tells the
 * agent (no reload, a reconcile interval of an hour): its frame probe fails
 * against the restarted server and it fetches by itself (daemon.ts
 * followDataPlane); the second change comes within that fetch's 30 s gap,
 * so it is fetched when the gap ends.
 */
describe('a running node follows network update --mtu/--fragment', () => {
  it('new bundle, re-rendered config, openvpn restarted at both ends, full-size frames pass after each change', async () => {
    await withConnectedWorld('follow', async (c) => {
      const { w } = c;
      const serverPids = async (): Promise<number[]> => openvpnPids({ runtimeDir: w.server.stateDir });
      /** DF pings of `size` bytes to the server's LAN address answered: frames of size+28 bytes cross whole. */
      const crosses = async (size: number): Promise<boolean> => (await dfPing({ ns: w.node }, { tunnelIp: c.srvIp }, size, 2)) > 0;
      const lanMtu = async (dev: string): Promise<number> => {
        const r = await w.node.exec('ip', ['-j', 'link', 'show', 'dev', dev]);
        return (JSON.parse(r.stdout) as { mtu: number }[])[0]!.mtu;
      };
      const s0 = net(c.s0, 'follow')!;
      expect(s0).toMatchObject({ mtu: 1500, fragment: 1280 });
      const dev = deviceName('follow');
      expect(await lanMtu(dev)).toBe(1500);
      expect(await crosses(1472)).toBe(true);

      const steps: { args: string[]; mtu: number; fragment: number | null; lines: RegExp[]; absent: RegExp[] }[] = [
        // Fragmentation off: a node still fragmenting would exchange nothing with the server.
        { args: ['--fragment', 'off'], mtu: 1500, fragment: null, lines: [], absent: [/^fragment /m, /^mssfix /m] },
        // A smaller LAN MTU and fragmentation back on, at another size.
        { args: ['--mtu', '1400', '--fragment', '1400'], mtu: 1400, fragment: 1400, lines: [/^tun-mtu 1400$/m, /^fragment 1400 mtu$/m, /^mssfix 1400 mtu$/m], absent: [] },
      ];
      for (const step of steps) {
        const before = net(await w.status(), 'follow')!;
        const srvBefore = await serverPids();
        expect(await w.server.json(['network', 'update', 'follow', ...step.args])).toMatchObject({ mtu: step.mtu, fragment: step.fragment });
        // The server daemon re-renders its config and restarts the network's openvpn.
        const restarted = await waitFor(async () => {
          const now = await serverPids();
          return now.length === 1 && !srvBefore.includes(now[0]!);
        }, 60_000);
        expect(restarted, `the server's openvpn restarted after network update ${step.args.join(' ')}:\n${w.daemonLog}`).toBe(true);
        // No reload and a reconcile interval of an hour (ServerWorld's config): the agent fetches because its frames
        // stopped passing (daemon.ts followDataPlane), installs the new bundle and restarts its openvpn.
        const after = net(
          await w.waitStatus((s) => {
            const n = net(s, 'follow');
            return n?.state === 'connected' && n.bundle_version !== before.bundle_version && n.full_frames === 'ok';
          }, 120_000).catch((e: unknown) => { console.log('AGENTLOG', c.agent?.log()); throw e; }),
          'follow',
        )!;
        expect(after).toMatchObject({ mtu: step.mtu, fragment: step.fragment, full_frames: 'ok', last_error: null });
        expect(after.bundle_version).toBeGreaterThan(before.bundle_version!);
        expect(after.pid).not.toBe(before.pid);
        // The config the running openvpn was started with (its --config argument).
        const argv = (await readFile(`/proc/${after.pid}/cmdline`, 'utf8')).split('\0');
        const config = await readFile(argv[argv.indexOf('--config') + 1]!, 'utf8');
        for (const l of step.lines) expect(config).toMatch(l);
        for (const l of step.absent) expect(config).not.toMatch(l);
        expect(await lanMtu(dev)).toBe(step.mtu);
        // Full-size frames of the new LAN MTU cross; one byte more does not leave the node.
        expect(await crosses(step.mtu - 28)).toBe(true);
        expect(await crosses(step.mtu - 27)).toBe(false);
      }
    });
  }, 420_000);
});
