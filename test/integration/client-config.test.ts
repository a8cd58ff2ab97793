/**
 * The whole trust core on real parts: a bundle built by src/bundle/build.ts,
 * listed in a signed membership document, verified and installed the way
 * the agent does it, and the openvpn client config rendered from its
 * network.json run by real openvpn against a real server in network
 * namespaces, over UDP and TCP. Proves the hardened template is valid
 * openvpn, that it waits on the management hold, that the tunnel carries
 * traffic, and that pushed routes are ignored unless the spec allows them
 * while redirect-gateway is always ignored (DESIGN.md §4).
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildBundle } from '../../src/bundle/build.ts';
import { installBundle } from '../../src/bundle/install.ts';
import { verifyMembership } from '../../src/bundle/membership.ts';
import { verifyBundle } from '../../src/bundle/verify.ts';
import { renderClientConfig } from '../../src/openvpn/client-config.ts';
import { bundleInput, makeBundleFixture, makeMembership, makeSpec } from '../helpers/bundle-fixtures.ts';
import { waitFor, withLab, type Netns } from '../helpers/netns.ts';
import { writeTestPki } from '../helpers/pki-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

const SERVER_UNDERLAY = '198.18.0.1';
const CLIENT_UNDERLAY = '198.18.0.2';
const SERVER_TUNNEL = '198.19.0.1';
const PUSHED_ROUTE = '203.0.113.0/24';
const CONNECTED = 'Initialization Sequence Completed';

interface Running {
  readonly child: ChildProcess;
  log(): string;
}

function startOpenvpn(ns: Netns, configPath: string): Running {
  const child = ns.spawn('openvpn', ['--config', configPath]);
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  return { child, log: () => out };
}

/** A tap server like the server mode's (the node's address from its ccd file), which also pushes a route and redirect-gateway the client must ignore. */
function serverConfig(p: Awaited<ReturnType<typeof writeTestPki>>, proto: 'udp' | 'tcp', ccd: string): string {
  return [
    `client-config-dir ${ccd}`,
    'server 198.19.0.0 255.255.255.0',
    'dev tap0',
    'dev-type tap',
    proto === 'udp' ? 'proto udp4' : 'proto tcp4-server',
    `local ${SERVER_UNDERLAY}`,
    'port 1194',
    `ca ${p.ca}`,
    `cert ${p.serverCert}`,
    `key ${p.serverKey}`,
    'dh none',
    `tls-crypt-v2 ${p.tlsCryptV2Server}`,
    `crl-verify ${p.crl}`,
    'remote-cert-tls client',
    'tls-version-min 1.2',
    'data-ciphers AES-256-GCM:CHACHA20-POLY1305',
    'disable-dco',
    'keepalive 2 10',
    'persist-key',
    `push "route ${PUSHED_ROUTE.replace('/24', ' 255.255.255.0')}"`,
    'push "redirect-gateway def1"',
    'verb 4',
    '',
  ].join('\n');
}

/** Reads management lines until `want` matches one; resolves with everything read. */
function mgmtUntil(sock: Socket, want: RegExp, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      sock.off('data', onData);
      reject(new Error(`management: no ${want} within ${timeoutMs} ms; got:\n${buf}`));
    }, timeoutMs);
    const onData = (b: Buffer): void => {
      buf += b.toString();
      if (want.test(buf)) {
        clearTimeout(timer);
        sock.off('data', onData);
        resolve(buf);
      }
    };
    sock.on('data', onData);
  });
}

describe('rendered client config on real openvpn', () => {
  it.each([
    { proto: 'udp' as const, allowPushedRoutes: false },
    { proto: 'tcp' as const, allowPushedRoutes: true },
  ])('$proto, pushed routes allowed: $allowPushedRoutes — verifies, installs, waits on the management hold, connects, carries traffic, ignores redirect-gateway', async ({ proto, allowPushedRoutes }) => {
    const tmp = await tmpDir('ccfg');
    try {
      const f = await makeBundleFixture({ nodes: ['pc101'] });
      const serverPaths = await writeTestPki(f.pki, join(tmp.path, 'server-pki'));
      const ccd = join(tmp.path, 'ccd');
      await mkdir(ccd);
      await writeFile(join(ccd, 'pc101'), 'ifconfig-push 198.19.0.10 255.255.255.0\n');
      await writeFile(join(tmp.path, 'server.conf'), serverConfig(serverPaths, proto, ccd));

      // Server side: build and sign, as server mode does.
      const spec = makeSpec('lab1', {
        proto,
        allow_pushed_routes: allowPushedRoutes,
        ...(allowPushedRoutes ? { pushed_routes: [PUSHED_ROUTE] } : {}),
        remotes: [{ host: SERVER_UNDERLAY, port: 1194 }],
        address: { ipv4: '198.19.0.10/24' },
        server_tunnel_ip: SERVER_TUNNEL,
        extra_options: [['hand-window', '10']],
      });
      const bundle = await buildBundle(bundleInput(f, { spec }));
      const envelope = makeMembership(f, [{ bundle }]);

      // Node side: verify and install, as the agent does.
      const nodeKeyPath = join(tmp.path, 'identity', 'node.key');
      await mkdir(join(tmp.path, 'identity'), { mode: 0o700 });
      await writeFile(nodeKeyPath, f.pki.clients['pc101']!.keyPem, { mode: 0o600 });
      const runDir = join(tmp.path, 'run');
      await mkdir(runDir, { mode: 0o700 });
      const mgmtSocket = join(runDir, 'lab1.mgmt');
      const m = verifyMembership(envelope, { anchor: f.anchor, nodeId: 'pc101', now: new Date() });
      const entry = m.doc.networks[0]!;
      const verified = await verifyBundle(bundle.bytes, {
        anchor: f.anchor,
        nodeId: 'pc101',
        now: new Date(),
        expect: { network: entry.id, version: entry.bundle.version, sha256: entry.bundle.sha256, size: entry.bundle.size },
        nodeKeyPem: f.pki.clients['pc101']!.keyPem,
      });
      const installed = await installBundle(verified, {
        stateDir: join(tmp.path, 'state'),
        nodeKeyPath,
        render: (s, _dir, files) => renderClientConfig(s, { ...files, mgmtSocket, dev: 'mv-lab1' }),
      });

      await withLab(async (lab) => {
        const srv = await lab.ns('srv');
        const cli = await lab.ns('cli');
        await lab.link(srv, cli, { aName: 'eth0', bName: 'eth0', aAddr: `${SERVER_UNDERLAY}/30`, bAddr: `${CLIENT_UNDERLAY}/30` });
        const defaultBefore = (await cli.exec('ip', ['route', 'show', 'default'])).stdout;
        const server = startOpenvpn(srv, join(tmp.path, 'server.conf'));
        expect(await waitFor(() => server.log().includes(CONNECTED), 30_000), `server did not start:\n${server.log()}`).toBe(true);

        const client = startOpenvpn(cli, installed.configPath);
        // management-hold: nothing happens until the agent releases the hold.
        expect(await waitFor(async () => (await cli.exec('test', ['-S', mgmtSocket], { allowFail: true })).code === 0, 30_000), `no management socket:\n${client.log()}`).toBe(true);
        const sock = connect(mgmtSocket);
        try {
          await mgmtUntil(sock, />HOLD:Waiting for hold release/, 30_000);
          expect(client.log()).not.toContain(CONNECTED);
          sock.write('state on\nhold release\n');
          await mgmtUntil(sock, /,CONNECTED,SUCCESS,/, 60_000);
        } finally {
          sock.destroy();
        }
        expect(await waitFor(() => client.log().includes(CONNECTED), 30_000), `client did not connect:\n${client.log()}\nSERVER\n${server.log()}`).toBe(true);
        expect(server.log()).toMatch(/VERIFY OK: depth=0, CN=pc101/);
        expect(server.log()).toContain('Control Channel: using tls-crypt-v2 key');
        expect(client.log()).toContain("Pushed option removed by filter: 'redirect-gateway def1'");
        expect(client.log()).toContain(`VERIFY X509NAME OK: CN=${spec.server_cn}`);

        expect(await waitFor(() => cli.ping(SERVER_TUNNEL, { timeoutS: 2 }), 30_000), `no ping over the tunnel:\n${client.log()}`).toBe(true);
        const routes = (await cli.exec('ip', ['route', 'show'])).stdout;
        if (allowPushedRoutes) expect(routes, 'the allowed pushed route is missing').toContain(`${PUSHED_ROUTE} via ${SERVER_TUNNEL}`);
        else expect(routes, 'a pushed route was installed').not.toContain(PUSHED_ROUTE.split('/')[0]);
        expect((await cli.exec('ip', ['route', 'show', 'default'])).stdout).toBe(defaultBefore);
        expect(routes).not.toMatch(/^(0\.0\.0\.0\/1|128\.0\.0\.0\/1) /m);
        expect((await cli.exec('ip', ['-d', 'link', 'show', 'mv-lab1'])).stdout).toMatch(/tun type tap/);
      });
    } finally {
      await tmp.remove();
    }
  });
});
