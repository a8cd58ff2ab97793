/**
 * Regression tests for issue 22, findings 2 and 3: a hostile openvpn server
 * (here: one built from the network's real server certificate, key and
 * tls-crypt-v2 server key, with a hand-written config) cannot take the
 * node's routing through what it pushes.
 *
 * Each case runs the client exactly as the agent does — a signed bundle
 * verified and installed with the agent's rendered config, openvpn under the
 * Supervisor with the agent's instance spec — in its own namespace with an
 * underlay default route, and checks that the node's IPv4 routing table
 * (`ip -4 route show table all`) gained nothing but the tunnel's own
 * expected entries, that its route to the server and to an address behind
 * its default gateway are unchanged, and that the network's status is
 * `degraded` with MVPN_OPENVPN_PUSH_REFUSED naming the refused push, without
 * restarting openvpn over and over. A pushed `route-gateway` other than the
 * server's tunnel address (the underlay, or another address whose text
 * starts with the server's) is refused too: listed prefixes stay in the tunnel.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildBundle } from '../../src/bundle/build.ts';
import { installBundle } from '../../src/bundle/install.ts';
import { verifyBundle } from '../../src/bundle/verify.ts';
import type { NetworkSpec } from '../../src/bundle/schema.ts';
import { instanceSpec } from '../../src/agent/networks.ts';
import { renderClientConfig } from '../../src/openvpn/client-config.ts';
import { readProtectedPrefixes } from '../../src/openvpn/push-policy.ts';
import { Supervisor } from '../../src/openvpn/supervisor.ts';
import { bundleInput, makeBundleFixture, makeSpec } from '../helpers/bundle-fixtures.ts';
import { waitFor, withLab, type Netns } from '../helpers/netns.ts';
import { writeTestPki, type TestPkiPaths } from '../helpers/pki-fixtures.ts';
import { dump, fastDeps, recordingLogger } from '../helpers/supervisor-lab.ts';
import { tmpDir } from '../helpers/tmp.ts';

const SERVER_UNDERLAY = '198.18.0.1';
const CLIENT_UNDERLAY = '198.18.0.2';
const SERVER_TUNNEL = '198.19.0.1';
const NODE_ADDRESS = '198.19.0.10';
/** Reached through the node's default gateway (inside 128.0.0.0/1, so a hijack would move it). */
const BEHIND_GATEWAY = '192.0.2.77';
const DEV = 'mv-lab1';

interface Case {
  readonly name: string;
  /** The ccd file the hostile server has for the node. */
  readonly ccd: string;
  readonly spec: Partial<NetworkSpec>;
  /** What the refusal reason must name. */
  readonly refused: readonly string[];
  /** Lines the tunnel itself may add to `ip -4 route show table all`. */
  readonly tunnelRoutes: readonly RegExp[];
}

const tunnelUp = [
  new RegExp(`^198\\.19\\.0\\.0/24 dev ${DEV} proto kernel scope link src ${NODE_ADDRESS.replace(/\./g, '\\.')}`),
  new RegExp(`^local ${NODE_ADDRESS.replace(/\./g, '\\.')} dev ${DEV} table local`),
  new RegExp(`^broadcast 198\\.19\\.0\\.255 dev ${DEV} table local`),
];

const CASES: readonly Case[] = [
  {
    name: 'an address in 128.0.0.0/1 with netmask 128.0.0.0',
    ccd: 'ifconfig-push 128.0.0.5 128.0.0.0\n',
    spec: {},
    refused: ['ifconfig 128.0.0.5 128.0.0.0'],
    tunnelRoutes: [],
  },
  {
    name: 'a wrong address in the right subnet',
    ccd: 'ifconfig-push 198.19.0.77 255.255.255.0\n',
    spec: {},
    refused: ['ifconfig 198.19.0.77 255.255.255.0'],
    tunnelRoutes: [],
  },
  {
    name: 'the def1 route pair, and a listed prefix that covers the underlay, on a network that allows one small prefix',
    ccd: [
      `ifconfig-push ${NODE_ADDRESS} 255.255.255.0`,
      'push "route 0.0.0.0 128.0.0.0"',
      'push "route 128.0.0.0 128.0.0.0"',
      'push "route 198.18.0.0 255.255.0.0"',
      'push "route 203.0.113.0 255.255.255.0"',
      '',
    ].join('\n'),
    spec: { allow_pushed_routes: true, pushed_routes: ['203.0.113.0/24', '198.18.0.0/16'] },
    refused: ['route 0.0.0.0 128.0.0.0', 'route 128.0.0.0 128.0.0.0', 'route 198.18.0.0 255.255.0.0'],
    tunnelRoutes: [...tunnelUp, new RegExp(`^203\\.0\\.113\\.0/24 via ${SERVER_TUNNEL.replace(/\./g, '\\.')} dev ${DEV}`)],
  },
  ...['198.18.0.1', '198.19.0.12'].map((gateway) => ({
    name: `a route-gateway that is not the server's tunnel address (${gateway}${gateway.startsWith('198.18.') ? ': the underlay' : ': in the subnet, and its text starts with the server address'}) for a listed prefix`,
    // After the server's own route-gateway (198.19.0.1) in the push: the last one would win.
    ccd: [`ifconfig-push ${NODE_ADDRESS} 255.255.255.0`, `push "route-gateway ${gateway}"`, 'push "route 203.0.113.0 255.255.255.0"', ''].join('\n'),
    spec: { allow_pushed_routes: true, pushed_routes: ['203.0.113.0/24'] },
    refused: [`route-gateway ${gateway}`],
    tunnelRoutes: [...tunnelUp, new RegExp(`^203\\.0\\.113\\.0/24 via ${SERVER_TUNNEL.replace(/\./g, '\\.')} dev ${DEV}`)],
  })),
];

function hostileServerConfig(p: TestPkiPaths, ccd: string): string {
  return [
    'server 198.19.0.0 255.255.255.0',
    'dev tap0',
    'dev-type tap',
    'proto udp4',
    `local ${SERVER_UNDERLAY}`,
    'port 1194',
    `client-config-dir ${ccd}`,
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
    'push "redirect-gateway def1"',
    'verb 3',
    '',
  ].join('\n');
}

async function routing(ns: Netns): Promise<{ table: string[]; toServer: string; behindGateway: string }> {
  const table = (await ns.exec('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout.split('\n').filter((l) => l.trim() !== '');
  const get = async (ip: string): Promise<string> => (await ns.exec('ip', ['-4', 'route', 'get', ip])).stdout.replace(/\s+uid \d+.*$/s, '').trim();
  return { table, toServer: await get(SERVER_UNDERLAY), behindGateway: await get(BEHIND_GATEWAY) };
}

describe('a hostile openvpn server cannot take the node routing (issue 22, findings 2 and 3)', () => {
  it.each(CASES)('$name', async (c) => {
    const tmp = await tmpDir('hpush');
    try {
      const f = await makeBundleFixture({ nodes: ['pc101'] });
      // The network's real server credentials, in a config the attacker wrote.
      const serverPki = await writeTestPki(f.pki, join(tmp.path, 'server-pki'));
      const ccd = join(tmp.path, 'ccd');
      await mkdir(ccd);
      await writeFile(join(ccd, 'pc101'), c.ccd);
      await writeFile(join(tmp.path, 'server.conf'), hostileServerConfig(serverPki, ccd));

      const spec = makeSpec('lab1', {
        remotes: [{ host: SERVER_UNDERLAY, port: 1194 }],
        address: { ipv4: `${NODE_ADDRESS}/24` },
        server_tunnel_ip: SERVER_TUNNEL,
        ...c.spec,
      });
      const bundle = await buildBundle(bundleInput(f, { spec }));
      const nodeKeyPath = join(tmp.path, 'identity', 'node.key');
      await mkdir(join(tmp.path, 'identity'), { mode: 0o700 });
      await writeFile(nodeKeyPath, f.pki.clients['pc101']!.keyPem, { mode: 0o600 });
      const runDir = join(tmp.path, 'run');
      await mkdir(runDir, { mode: 0o700 });
      const verified = await verifyBundle(bundle.bytes, {
        anchor: f.anchor,
        nodeId: 'pc101',
        now: new Date(),
        expect: { network: 'lab1', version: 1, sha256: bundle.sha256, size: bundle.size },
        nodeKeyPem: f.pki.clients['pc101']!.keyPem,
      });

      await withLab(async (lab) => {
        const srv = await lab.ns('srv');
        const cli = await lab.ns('cli');
        await lab.link(srv, cli, { aName: 'eth0', bName: 'eth0', aAddr: `${SERVER_UNDERLAY}/30`, bAddr: `${CLIENT_UNDERLAY}/30` });
        await cli.exec('ip', ['route', 'add', 'default', 'via', SERVER_UNDERLAY]);

        // Rendered the way the agent does (reconcile.ts): the node's underlay read in its namespace.
        const protect = await readProtectedPrefixes((cmd, args) => cli.exec(cmd, args, { allowFail: true }), DEV);
        const installed = await installBundle(verified, {
          stateDir: join(tmp.path, 'state'),
          nodeKeyPath,
          render: (s, _dir, files) => renderClientConfig(s, { ...files, mgmtSocket: join(runDir, 'lab1.mgmt'), dev: DEV }, protect),
        });
        const before = await routing(cli);

        const server = srv.spawn('openvpn', ['--config', join(tmp.path, 'server.conf')]);
        let serverLog = '';
        server.stdout?.on('data', (b: Buffer) => (serverLog += b.toString()));
        const log = recordingLogger();
        const sup = new Supervisor({ ...instanceSpec(installed, runDir, 'openvpn'), mgmtSocket: join(runDir, 'lab1.mgmt'), pidFile: join(runDir, 'lab1.pid') }, fastDeps(cli, log));
        try {
          expect(await waitFor(() => serverLog.includes('Initialization Sequence Completed'), 30_000), `server did not start:\n${serverLog}`).toBe(true);
          sup.start();
          // openvpn got the push: CONNECTED (the tunnel is up, whatever the health check then says).
          const pushed = await waitFor(() => log.events.some((e) => e.kind === 'openvpn.output' && e.line.includes('Initialization Sequence Completed')), 60_000);
          expect(pushed, `the client never completed its connection:\n${dump(log.events)}\nSERVER\n${serverLog}`).toBe(true);
          // Several health checks later (each would have restarted a network without its address).
          const checksSeen = log.events.filter((e) => e.kind === 'openvpn.health').length;
          expect(await waitFor(() => log.events.filter((e) => e.kind === 'openvpn.health').length >= checksSeen + 5, 30_000)).toBe(true);

          const after = await routing(cli);
          expect(after.toServer).toBe(before.toServer);
          expect(after.behindGateway).toBe(before.behindGateway);
          expect(after.behindGateway).toMatch(new RegExp(`via ${SERVER_UNDERLAY} dev eth0`));
          const added = after.table.filter((l) => !before.table.includes(l));
          const unexpected = added.filter((l) => !c.tunnelRoutes.some((re) => re.test(l)));
          expect(unexpected, `routes the server should not have been able to add:\n${added.join('\n')}`).toEqual([]);
          expect(after.table.filter((l) => before.table.includes(l))).toEqual(before.table);
          for (const re of c.tunnelRoutes) expect(added.some((l) => re.test(l)), `missing ${re}:\n${after.table.join('\n')}`).toBe(true);
          const addrs = (await cli.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', DEV])).stdout;
          if (c.tunnelRoutes.length === 0) expect(addrs.trim()).toBe('');
          else expect(addrs).toContain(`${NODE_ADDRESS}/24`);

          // Status says why, and it is definite: the same process, degraded, not a restart loop.
          const st = sup.status();
          expect(st, `${JSON.stringify(st)}\n${dump(log.events)}`).toMatchObject({ state: 'degraded', restarts: 0, lastError: { code: 'MVPN_OPENVPN_PUSH_REFUSED' } });
          for (const r of c.refused) expect(st.lastError!.message).toContain(`'${r}'`);
          expect(st.lastError!.message).toContain("'redirect-gateway def1'");
          const logged = log.events.flatMap((e) => (e.kind === 'openvpn.push-refused' ? [e.option] : []));
          for (const r of c.refused) expect(logged).toContain(r);
        } finally {
          await sup.stop();
          server.kill('SIGTERM');
          await new Promise<void>((resolve) => (server.exitCode !== null ? resolve() : server.once('exit', () => resolve())));
        }
      });
    } finally {
      await tmp.remove();
    }
  });
});
