/**
 * src/pki/tls-crypt-v2.ts against the real openvpn 2.6:
 * - client keys openvpn made unwrap with our code (same layout, same key split);
 * - openvpn accepts our server key for its own wrapping;
 * - a real openvpn server and client, both keys from our code, connect, and
 *   the server decodes our metadata (seen through `tls-crypt-v2-verify`);
 *   a client key wrapped under another server key is refused.
 */
import type { ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateTlsCryptV2ServerKey, unwrapTlsCryptV2ClientKey, wrapTlsCryptV2ClientKey } from '../../src/pki/tls-crypt-v2.ts';
import { makeTestPki, writeTestPki, type TestPki, type TestPkiPaths } from '../helpers/pki-fixtures.ts';
import { sh, waitFor, withLab, type Netns } from '../helpers/netns.ts';
import { tmpDir } from '../helpers/tmp.ts';

const CONNECTED = 'Initialization Sequence Completed';
const DAY = 86_400_000;
const SERVER_UNDERLAY = '198.18.2.1';
const CLIENT_UNDERLAY = '198.18.2.2';

async function withTmp<T>(label: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const t = await tmpDir(label);
  try {
    return await fn(t.path);
  } finally {
    await t.remove();
  }
}

describe('tls-crypt-v2 keys are openvpn-compatible (offline)', () => {
  it('unwraps client keys openvpn generated, with timestamp and with user metadata', async () => {
    await withTmp('tc2', async (dir) => {
      const srv = join(dir, 'srv.key');
      await sh('openvpn', ['--genkey', 'tls-crypt-v2-server', srv]);
      await sh('openvpn', ['--tls-crypt-v2', srv, '--genkey', 'tls-crypt-v2-client', join(dir, 'ts.key')]);
      await sh('openvpn', ['--tls-crypt-v2', srv, '--genkey', 'tls-crypt-v2-client', join(dir, 'user.key'), Buffer.from('node=pc42').toString('base64')]);
      const srvPem = await readFile(srv, 'utf8');
      const tsKey = await readFile(join(dir, 'ts.key'), 'utf8');
      const userKey = await readFile(join(dir, 'user.key'), 'utf8');

      const ts = unwrapTlsCryptV2ClientKey(srvPem, tsKey);
      expect(ts.metadata.type).toBe('timestamp');
      if (ts.metadata.type === 'timestamp') expect(Math.abs(ts.metadata.time.getTime() - Date.now())).toBeLessThan(DAY);
      expect(unwrapTlsCryptV2ClientKey(srvPem, userKey).metadata).toEqual({ type: 'user', data: Buffer.from('node=pc42') });
      // Another server key cannot unwrap it.
      expect(() => unwrapTlsCryptV2ClientKey(generateTlsCryptV2ServerKey(), userKey)).toThrow(/not wrapped with this server key/);
    });
  });

  it('openvpn wraps client keys with our server key, and we unwrap them', async () => {
    await withTmp('tc2', async (dir) => {
      const srvPem = generateTlsCryptV2ServerKey();
      await writeFile(join(dir, 'srv.key'), srvPem, { mode: 0o600 });
      await sh('openvpn', ['--tls-crypt-v2', join(dir, 'srv.key'), '--genkey', 'tls-crypt-v2-client', join(dir, 'cli.key')]);
      expect(unwrapTlsCryptV2ClientKey(srvPem, await readFile(join(dir, 'cli.key'), 'utf8')).metadata.type).toBe('timestamp');
    });
  });
});

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

function serverConfig(p: TestPkiPaths, verifyScript: string): string {
  return `server 198.19.2.0 255.255.255.0
dev tap0
dev-type tap
proto udp4
local ${SERVER_UNDERLAY}
port 1194
ca ${p.ca}
cert ${p.serverCert}
key ${p.serverKey}
dh none
tls-crypt-v2 ${p.tlsCryptV2Server}
script-security 2
tls-crypt-v2-verify ${verifyScript}
crl-verify ${p.crl}
remote-cert-tls client
disable-dco
verb 4
`;
}

function clientConfig(p: TestPkiPaths, tc2Path: string): string {
  const c = p.clients['node1']!;
  return `client
dev tap0
dev-type tap
proto udp4
remote ${SERVER_UNDERLAY} 1194
nobind
ca ${p.ca}
cert ${c.cert}
key ${c.key}
tls-crypt-v2 ${tc2Path}
remote-cert-tls server
verify-x509-name server name
disable-dco
connect-retry 1 2
hand-window 5
verb 4
`;
}

/**
 * One server (keys from `makeTestPki`, i.e. our server key) and one client
 * using the given client key file. Resolves with both logs once `done`
 * holds for them, or throws with the logs after the bound.
 */
async function runPair(
  clientKeyPem: (pki: TestPki) => string,
  done: (server: string, client: string) => boolean,
): Promise<{ server: string; client: string; metadata: { type: number; data: Buffer }[] }> {
  return withTmp('tc2net', async (dir) => {
    const pki = await makeTestPki({ clients: ['node1'] });
    const paths = await writeTestPki(pki, join(dir, 'pki'));
    const tc2 = join(dir, 'client.tc2');
    await writeFile(tc2, clientKeyPem(pki), { mode: 0o600 });
    // Test-only server hook: keep a copy of every metadata blob openvpn unwrapped.
    const verify = join(dir, 'verify.sh');
    await writeFile(verify, `#!/bin/sh\ncp "$metadata_file" "${dir}/metadata-$metadata_type.bin"\nexit 0\n`, { mode: 0o755 });
    await writeFile(join(dir, 'server.conf'), serverConfig(paths, verify));
    await writeFile(join(dir, 'client.conf'), clientConfig(paths, tc2));
    return withLab(async (lab) => {
      const srv = await lab.ns('srv');
      const cli = await lab.ns('cli');
      await lab.link(srv, cli, { aName: 'eth0', bName: 'eth0', aAddr: `${SERVER_UNDERLAY}/30`, bAddr: `${CLIENT_UNDERLAY}/30` });
      const server = startOpenvpn(srv, join(dir, 'server.conf'));
      expect(await waitFor(() => server.log().includes(CONNECTED), 30_000), `server did not start:\n${server.log()}`).toBe(true);
      const client = startOpenvpn(cli, join(dir, 'client.conf'));
      const ok = await waitFor(() => done(server.log(), client.log()), 60_000);
      expect(ok, `condition not reached:\nSERVER\n${server.log()}\nCLIENT\n${client.log()}`).toBe(true);
      const metadata: { type: number; data: Buffer }[] = [];
      for (const type of [0, 1]) {
        const data = await readFile(join(dir, `metadata-${type}.bin`)).catch(() => undefined);
        if (data) metadata.push({ type, data });
      }
      return { server: server.log(), client: client.log(), metadata };
    });
  });
}

/** The client gave up on a handshake and started over at least once. */
const clientRetried = (client: string): boolean => /SIGUSR1\[soft,tls-error\]/.test(client);

describe('tls-crypt-v2 keys from our code in a real openvpn connection', () => {
  it('connects when both the server key and the wrapped client key come from src/pki', async () => {
    const before = Math.floor(Date.now() / 1000);
    const { server, metadata } = await runPair(
      (pki) => wrapTlsCryptV2ClientKey(pki.tlsCryptV2ServerKey),
      (_s, c) => c.includes(CONNECTED),
    );
    expect(server).toContain('Control Channel: using tls-crypt-v2 key');
    expect(server).toMatch(/\[node1\] Peer Connection Initiated/);
    // openvpn read our default metadata as a timestamp (type 1, 64-bit big-endian seconds).
    expect(metadata.map((m) => m.type)).toEqual([1]);
    const t = Number(metadata[0]!.data.readBigInt64BE(0));
    expect(t).toBeGreaterThanOrEqual(before);
    expect(t).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000));
  });

  it('connects with user metadata in the wrapped key', async () => {
    const { metadata } = await runPair(
      (pki) => wrapTlsCryptV2ClientKey(pki.tlsCryptV2ServerKey, Buffer.from('network=net1')),
      (_s, c) => c.includes(CONNECTED),
    );
    expect(metadata).toEqual([{ type: 0, data: Buffer.from('network=net1') }]);
  });

  it('refuses a client key wrapped with a different server key', async () => {
    const { server, client } = await runPair(
      () => wrapTlsCryptV2ClientKey(generateTlsCryptV2ServerKey()),
      (s, c) => s.includes('Can not unwrap tls-crypt-v2 client key') && clientRetried(c),
    );
    expect(server).toContain('client key authentication error');
    expect(client).not.toContain(CONNECTED);
    expect(server).not.toMatch(/Peer Connection Initiated/);
  });
});
