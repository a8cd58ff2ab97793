/**
 * The files a network's openvpn server reads, written from the store:
 * exactly one ccd file per node allowed to connect, keys 0600, and a report
 * of whether openvpn must restart (config, certificate, keys) or picks the
 * change up by itself (CRL, ccd).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadServerConfig, type ServerConfig, type ServerPaths } from '../../src/server/config.ts';
import { networkFilePaths, serverMac, writeNetworkFiles } from '../../src/server/network-files.ts';
import type { MemberSummary, NetworkRecord } from '../../src/server/store/store.ts';
import { makeServer, openContext, type TestServer } from '../helpers/server-fixtures.ts';

describe('network files', () => {
  let s: TestServer;
  let config: ServerConfig;
  let paths: ServerPaths;
  let net: NetworkRecord;
  const m = (node: string, address: string, extra: Partial<MemberSummary> = {}): MemberSummary => ({ node, address, revoked: false, certSerial: `aa${node}`, ...extra });

  beforeAll(async () => {
    s = await makeServer({ label: 'files' });
    await s.run(['network', 'create', 'lab', '--remote', '198.18.0.1']);
    ({ config, paths } = await loadServerConfig(s.stateDir));
    const ctx = await openContext(s.stateDir);
    net = ctx.store.read((tx) => tx.getNetwork('lab')!);
    ctx.close();
  });
  afterAll(async () => s.remove());

  it('writes the config, certificates, keys (0600), CRL and one ccd file per allowed node', async () => {
    const r = await writeNetworkFiles(config, paths, net, [
      m('pc1', '198.19.0.2'),
      m('pc2', '198.19.0.3', { revoked: true }),
      m('pc3', '198.19.0.4', { certSerial: null }),
    ]);
    expect(r).toEqual({ restartNeeded: true, crlChanged: true, ccdChanged: true });
    const f = networkFilePaths(paths, 'lab');
    expect(await readdir(f.ccdDir)).toEqual(['pc1']);
    expect(await readFile(join(f.ccdDir, 'pc1'), 'utf8')).toBe('ifconfig-push 198.19.0.2 255.255.255.0\n');
    for (const k of [f.key, f.tlsCryptV2]) expect((await stat(k)).mode & 0o777).toBe(0o600);
    // openvpn re-reads the CRL and ccd after dropping to mvpn-openvpn: only those and the directories above them are its group's
    for (const d of [f.dir, f.ccdDir]) expect((await stat(d)).mode & 0o777).toBe(0o710);
    for (const x of [f.crl, join(f.ccdDir, 'pc1')]) expect((await stat(x)).mode & 0o777).toBe(0o640);
    const conf = await readFile(f.config, 'utf8');
    expect(conf).toContain(`crl-verify ${f.crl}`);
    expect(conf).toContain(`lladdr ${serverMac('lab')}`);
    expect(await readFile(f.crl, 'utf8')).toBe(net.crlPem);
  });

  it('reports nothing when nothing changed, and leaves the files untouched', async () => {
    const f = networkFilePaths(paths, 'lab');
    const before = (await stat(f.crl)).mtimeMs;
    const r = await writeNetworkFiles(config, paths, net, [m('pc1', '198.19.0.2')]);
    expect(r).toEqual({ restartNeeded: false, crlChanged: false, ccdChanged: false });
    expect((await stat(f.crl)).mtimeMs).toBe(before);
  });

  it('a new CRL or member needs no restart; a removed member loses its ccd file', async () => {
    const f = networkFilePaths(paths, 'lab');
    const r = await writeNetworkFiles(config, paths, { ...net, crlPem: net.crlPem + '\n' }, [m('pc9', '198.19.0.9')]);
    expect(r).toEqual({ restartNeeded: false, crlChanged: true, ccdChanged: true });
    expect(await readdir(f.ccdDir)).toEqual(['pc9']);
  });

  it('a changed port needs a restart', async () => {
    const r = await writeNetworkFiles(config, paths, { ...net, port: net.port + 50 }, [m('pc9', '198.19.0.9')]);
    expect(r.restartNeeded).toBe(true);
  });

  it('gives each network its own stable, locally administered unicast MAC', () => {
    expect(serverMac('lab')).toBe(serverMac('lab'));
    expect(serverMac('lab')).not.toBe(serverMac('lab2'));
    expect(serverMac('lab')).toMatch(/^02(:[0-9a-f]{2}){5}$/);
  });
});
