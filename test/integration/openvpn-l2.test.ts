/**
 * The project's first end-to-end check on real parts: an openvpn server and
 * client in two namespaces joined by a veth underlay (198.18.0.0/30), an L2
 * tap tunnel (198.19.0.0/24) secured with certificates, tls-crypt-v2 keys
 * and a CRL all made by src/pki (via the test fixtures). It proves the
 * certificates satisfy `remote-cert-tls`/`verify-x509-name`, the native
 * tls-crypt-v2 keys are accepted, the tunnel carries Ethernet, and a client
 * listed in the CRL never gets in.
 */
import type { ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { wrapTlsCryptV2ClientKey } from '../../src/pki/tls-crypt-v2.ts';
import { makeTestPki, writeTestPki, type TestPkiPaths } from '../helpers/pki-fixtures.ts';
import { waitFor, withLab, type Netns } from '../helpers/netns.ts';
import { tmpDir } from '../helpers/tmp.ts';

const SERVER_UNDERLAY = '198.18.0.1';
const CLIENT_UNDERLAY = '198.18.0.2';
const SERVER_TUNNEL = '198.19.0.1';
const CONNECTED = 'Initialization Sequence Completed';

/** An openvpn child with its combined output, for assertions and failure messages. */
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

function serverConfig(p: TestPkiPaths): string {
  return [
    'server 198.19.0.0 255.255.255.0',
    'dev tap0',
    'dev-type tap',
    'proto udp4',
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
    'data-ciphers AES-256-GCM',
    'disable-dco',
    'keepalive 2 10',
    'persist-key',
    'verb 4',
    '',
  ].join('\n');
}

/**
 * `hand-window 5`: a refused client (its TLS 1.3 handshake looks complete to
 * it before the server's verdict) gives up and retries after 5 s instead of
 * openvpn's default 60 s, so the CRL test sees a retry refused as well.
 */
function clientConfig(p: TestPkiPaths, name: string): string {
  const c = p.clients[name]!;
  return [
    'client',
    'dev tap0',
    'dev-type tap',
    'proto udp4',
    `remote ${SERVER_UNDERLAY} 1194`,
    'nobind',
    `ca ${p.ca}`,
    `cert ${c.cert}`,
    `key ${c.key}`,
    `tls-crypt-v2 ${c.tlsCryptV2}`,
    'remote-cert-tls server',
    'verify-x509-name server name',
    'tls-version-min 1.2',
    'data-ciphers AES-256-GCM',
    'disable-dco',
    'connect-retry 1 2',
    'hand-window 5',
    'verb 4',
    '',
  ].join('\n');
}

async function macOf(ns: Netns, ifname: string): Promise<string> {
  return (await ns.exec('cat', [`/sys/class/net/${ifname}/address`])).stdout.trim().toLowerCase();
}

describe('openvpn L2 tunnel with src/pki material', () => {
  it('connects a client over tls-crypt-v2 and carries Ethernet: ping over the tap, the server MAC in the neighbour table', async () => {
    const tmp = await tmpDir('l2');
    try {
      const pki = await makeTestPki({ clients: ['node1'] });
      const paths = await writeTestPki(pki, join(tmp.path, 'pki'));
      await writeFile(join(tmp.path, 'server.conf'), serverConfig(paths));
      await writeFile(join(tmp.path, 'client.conf'), clientConfig(paths, 'node1'));
      await withLab(async (lab) => {
        const srv = await lab.ns('srv');
        const cli = await lab.ns('cli');
        await lab.link(srv, cli, { aName: 'eth0', bName: 'eth0', aAddr: `${SERVER_UNDERLAY}/30`, bAddr: `${CLIENT_UNDERLAY}/30` });
        const server = startOpenvpn(srv, join(tmp.path, 'server.conf'));
        expect(await waitFor(() => server.log().includes(CONNECTED), 30_000), `server did not start:\n${server.log()}`).toBe(true);
        const client = startOpenvpn(cli, join(tmp.path, 'client.conf'));
        expect(await waitFor(() => client.log().includes(CONNECTED), 60_000), `client did not connect:\nCLIENT\n${client.log()}\nSERVER\n${server.log()}`).toBe(true);
        // The control channel really was wrapped with the client's tls-crypt-v2 key.
        expect(server.log()).toContain('Control Channel: using tls-crypt-v2 key');
        expect(server.log()).toMatch(/VERIFY OK: depth=0, CN=node1/);

        expect(await waitFor(() => cli.ping(SERVER_TUNNEL, { timeoutS: 2 }), 30_000), `no ping over the tap:\n${client.log()}`).toBe(true);
        // L2: the client resolved the server's tunnel address by ARP over the tap.
        const serverMac = await macOf(srv, 'tap0');
        const neigh = (await cli.exec('ip', ['neigh', 'show', SERVER_TUNNEL, 'dev', 'tap0'])).stdout;
        expect(neigh.toLowerCase()).toContain(`lladdr ${serverMac}`);
        expect((await cli.exec('ip', ['-d', 'link', 'show', 'tap0'])).stdout).toMatch(/link\/ether .*\n\s+tun type tap/);
      });
    } finally {
      await tmp.remove();
    }
  });

  it("with two CAs and both CAs' CRLs in one crl-verify file (a CA roll's overlap), a revoked client of either CA is refused and a good one of the new CA gets in", async () => {
    const tmp = await tmpDir('crl2');
    try {
      const now = new Date();
      const oldPki = await makeTestPki({ clients: ['a-bad'], revoked: ['a-bad'], caCn: 'mvpn-ca-lab1', now });
      const newPki = await makeTestPki({ clients: ['b-good', 'b-bad'], revoked: ['b-bad'], caCn: 'mvpn-ca-lab1.2', now });
      // One server (the old CA's certificate, as during the overlap); the new CA's clients get tls-crypt-v2 keys for it.
      const rewrapped = Object.fromEntries(
        Object.entries(newPki.clients).map(([name, c]) => [name, { ...c, tlsCryptV2Key: wrapTlsCryptV2ClientKey(oldPki.tlsCryptV2ServerKey, undefined, { now }) }]),
      );
      const both = {
        ...oldPki,
        ca: { ...oldPki.ca, certPem: oldPki.ca.certPem + newPki.ca.certPem },
        crlPem: oldPki.crlPem + newPki.crlPem,
        clients: { ...oldPki.clients, ...rewrapped },
      };
      const paths = await writeTestPki(both, join(tmp.path, 'pki'));
      await writeFile(join(tmp.path, 'server.conf'), serverConfig(paths));
      for (const name of ['a-bad', 'b-bad', 'b-good']) await writeFile(join(tmp.path, `${name}.conf`), clientConfig(paths, name));
      await withLab(async (lab) => {
        const srv = await lab.ns('srv');
        const nss: Record<string, Netns> = {};
        const ports: string[] = [];
        let host = 2;
        for (const name of ['a-bad', 'b-bad', 'b-good']) {
          const ns = await lab.ns(name);
          await lab.link(srv, ns, { aName: `v-${name}`, bName: 'eth0' });
          ports.push(`v-${name}`);
          nss[name] = ns;
        }
        await lab.bridge(srv, 'br0', ports, `${SERVER_UNDERLAY}/24`);
        for (const name of ['a-bad', 'b-bad', 'b-good']) await nss[name]!.addr('eth0', `198.18.0.${host++}/24`);
        const server = startOpenvpn(srv, join(tmp.path, 'server.conf'));
        expect(await waitFor(() => server.log().includes(CONNECTED), 30_000), `server did not start:\n${server.log()}`).toBe(true);

        const clients = Object.fromEntries(['a-bad', 'b-bad', 'b-good'].map((name) => [name, startOpenvpn(nss[name]!, join(tmp.path, `${name}.conf`))]));
        for (const name of ['a-bad', 'b-bad']) {
          const refused = new RegExp(`VERIFY ERROR: depth=0, error=certificate revoked: CN=${name}`);
          expect(await waitFor(() => refused.test(server.log()), 60_000), `server did not refuse ${name}:\n${server.log()}`).toBe(true);
        }
        expect(await waitFor(() => clients['b-good']!.log().includes(CONNECTED), 60_000), `b-good did not connect:\n${clients['b-good']!.log()}\nSERVER\n${server.log()}`).toBe(true);
        expect(server.log()).toMatch(/VERIFY OK: depth=1, CN=mvpn-ca-lab1\.2/);
        expect(await waitFor(() => nss['b-good']!.ping(SERVER_TUNNEL), 30_000)).toBe(true);
        for (const name of ['a-bad', 'b-bad']) expect(clients[name]!.log()).not.toContain(CONNECTED);
      });
    } finally {
      await tmp.remove();
    }
  });

  it('refuses a client whose certificate is in the CRL, while a good client of the same CA gets in', async () => {
    const tmp = await tmpDir('crl');
    try {
      const pki = await makeTestPki({ clients: ['good', 'bad'], revoked: ['bad'] });
      const paths = await writeTestPki(pki, join(tmp.path, 'pki'));
      await writeFile(join(tmp.path, 'server.conf'), serverConfig(paths));
      await writeFile(join(tmp.path, 'bad.conf'), clientConfig(paths, 'bad'));
      await writeFile(join(tmp.path, 'good.conf'), clientConfig(paths, 'good'));
      await withLab(async (lab) => {
        const srv = await lab.ns('srv');
        const bad = await lab.ns('bad');
        const good = await lab.ns('good');
        const [bSrv, bBad] = [`v-bad`, 'eth0'];
        const [gSrv, gGood] = [`v-good`, 'eth0'];
        await lab.link(srv, bad, { aName: bSrv, bName: bBad });
        await lab.link(srv, good, { aName: gSrv, bName: gGood });
        await lab.bridge(srv, 'br0', [bSrv, gSrv], `${SERVER_UNDERLAY}/24`);
        await bad.addr('eth0', '198.18.0.2/24');
        await good.addr('eth0', '198.18.0.3/24');
        const server = startOpenvpn(srv, join(tmp.path, 'server.conf'));
        expect(await waitFor(() => server.log().includes(CONNECTED), 30_000), `server did not start:\n${server.log()}`).toBe(true);

        const badClient = startOpenvpn(bad, join(tmp.path, 'bad.conf'));
        const refusals = (): number => server.log().match(/VERIFY ERROR: depth=0, error=certificate revoked: CN=bad/g)?.length ?? 0;
        expect(await waitFor(() => refusals() >= 1, 60_000), `server did not refuse the revoked client:\n${server.log()}`).toBe(true);
        // The client never completes, gives up and retries; the retry is refused too.
        expect(await waitFor(() => /SIGUSR1\[soft,tls-error\]/.test(badClient.log()), 60_000), `revoked client did not give up:\n${badClient.log()}`).toBe(true);
        expect(await waitFor(() => refusals() >= 2, 60_000), `revoked client did not retry:\n${badClient.log()}`).toBe(true);

        const goodClient = startOpenvpn(good, join(tmp.path, 'good.conf'));
        expect(await waitFor(() => goodClient.log().includes(CONNECTED), 60_000), `good client did not connect:\n${goodClient.log()}\nSERVER\n${server.log()}`).toBe(true);
        expect(await waitFor(() => good.ping(SERVER_TUNNEL), 30_000)).toBe(true);

        // The revoked client has been refused at least twice and never got in.
        expect(badClient.log()).not.toContain(CONNECTED);
        expect(await bad.ping(SERVER_TUNNEL, { timeoutS: 1 }), 'the revoked client reached the tunnel').toBe(false);
      });
    } finally {
      await tmp.remove();
    }
  });
});
