import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAgentConfig, parseAgentConfig } from '../../src/agent/config.ts';
import { resolveNodeId } from '../../src/agent/node-id.ts';
import { MvpnError } from '../../src/errors.ts';
import { tmpDir } from '../helpers/tmp.ts';

const ANCHOR = 'ed25519:' + Buffer.alloc(32, 7).toString('base64');
const minimal = { node: { id: 'pc1' }, sources: [{ type: 'https', url: 'https://metavpn.example.test:8443' }], anchor: ANCHOR };

function errorOf(fn: () => unknown): MvpnError {
  try {
    fn();
  } catch (err) {
    if (err instanceof MvpnError) return err;
    throw err;
  }
  throw new Error('expected an error');
}

describe('agent config', () => {
  it('fills defaults for a minimal config', () => {
    const c = parseAgentConfig(minimal, '/etc/mvpn-client/config.json');
    expect(c.stateDir).toBe('/var/lib/mvpn-client');
    expect(c.runtimeDir).toBe('/run/mvpn-client');
    expect(c.reconcileIntervalMs).toBe(300_000);
    expect(c.fetch.maxMembershipBytes).toBe(512 << 10);
    expect(c.fetch.retries).toBe(3);
    expect(c.anchor).toBe(ANCHOR);
    expect(c.enroll).toBeUndefined();
  });

  it('resolves relative paths against the config file directory (startup tarball layout)', () => {
    const c = parseAgentConfig(
      {
        node: { file: 'nodeid' },
        sources: [{ type: 'file', path: 'membership.json' }, ...minimal.sources],
        anchor: 'anchor.pub',
        server_ca: 'api-ca.crt',
        enroll: { token_file: 'token' },
        state_dir: 'state',
      },
      '/var/tmp/mvpn/config.json',
    );
    expect(c.node).toEqual({ file: '/var/tmp/mvpn/nodeid' });
    expect(c.sources[0]).toEqual({ type: 'file', path: '/var/tmp/mvpn/membership.json' });
    expect(c.anchor).toBe('/var/tmp/mvpn/anchor.pub');
    expect(c.serverCa).toBe('/var/tmp/mvpn/api-ca.crt');
    expect(c.enroll).toEqual({ tokenFile: '/var/tmp/mvpn/token', url: 'https://metavpn.example.test:8443' });
    expect(c.stateDir).toBe('/var/tmp/mvpn/state');
  });

  const bad: [string, unknown, string][] = [
    ['unknown top-level field', { ...minimal, sourcs: [] }, '(top level)'],
    ['no sources', { ...minimal, sources: [] }, 'sources'],
    ['http source', { ...minimal, sources: [{ type: 'https', url: 'http://x.test/' }] }, 'sources[0].url'],
    ['unknown source type', { ...minimal, sources: [{ type: 'ftp', url: 'x' }] }, 'sources[0].type'],
    ['extra field in a source', { ...minimal, sources: [{ type: 'file', path: 'a', url: 'b' }] }, 'sources[0]'],
    ['bad node id', { ...minimal, node: { id: 'bad id' } }, 'node'],
    ['missing anchor', { node: minimal.node, sources: minimal.sources }, 'anchor'],
    ['negative interval', { ...minimal, reconcile_interval_s: -1 }, 'reconcile_interval_s'],
    ['fractional byte cap', { ...minimal, fetch: { max_bundle_bytes: 1.5 } }, 'fetch.max_bundle_bytes'],
    ['enroll without any https url', { ...minimal, sources: [{ type: 'file', path: 'm' }], enroll: { token_file: 't' } }, 'enroll.url'],
    ['via without a port', { ...minimal, sources: [{ ...minimal.sources[0], via: '198.18.2.1' }] }, 'sources[0].via: no :PORT'],
    ['via port 0', { ...minimal, sources: [{ ...minimal.sources[0], via: '198.18.2.1:0' }] }, 'sources[0].via: port "0" is not 1-65535'],
    ['via with bare IPv6', { ...minimal, sources: [{ ...minimal.sources[0], via: '2001:db8::1:8444' }] }, 'sources[0].via: an IPv6 address goes in brackets'],
    ['via as a URL', { ...minimal, sources: [{ ...minimal.sources[0], via: 'tcp://198.18.2.1:8444' }] }, 'sources[0].via'],
    ['via on a file source', { ...minimal, sources: [{ type: 'file', path: 'm', via: '198.18.2.1:8444' }] }, 'sources[0]'],
    ['via not a string', { ...minimal, sources: [{ ...minimal.sources[0], via: 8444 }] }, 'sources[0].via'],
    ['metrics_listen not ADDR:PORT', { ...minimal, metrics_listen: 'localhost:9475' }, 'metrics_listen: listen address "localhost:9475" is not ADDR:PORT'],
    ['metrics_listen on port 0', { ...minimal, metrics_listen: '127.0.0.1:0' }, 'metrics_listen: port 0'],
    ['metrics_listen off loopback', { ...minimal, metrics_listen: '198.18.0.2:9475' }, 'metrics_listen: 198.18.0.2:9475 is not a loopback address'],
    ['metrics_listen on the wildcard', { ...minimal, metrics_listen: '[::]:9475' }, 'metrics_listen: [::]:9475 is not a loopback address'],
    ['metrics_allow_remote not a boolean', { ...minimal, metrics_allow_remote: 'yes' }, 'metrics_allow_remote'],
    ['bad enroll via', { ...minimal, enroll: { token_file: 't', via: '198.18.2.300:8444' } }, 'enroll.via: "198.18.2.300" is not an IPv4 address'],
  ];
  it.each(bad)('refuses %s and names the field', (_name, json, field) => {
    const e = errorOf(() => parseAgentConfig(json, '/etc/mvpn-client/config.json'));
    expect(e.code).toBe('MVPN_CONFIG_INVALID');
    expect(e.message).toContain(field);
  });

  it('metrics_listen: off by default, loopback as written, another address only with metrics_allow_remote', () => {
    expect(parseAgentConfig(minimal, '/etc/mvpn-client/config.json').metricsListen).toBeUndefined();
    expect(parseAgentConfig({ ...minimal, metrics_listen: '127.0.0.1:9475' }, '/c.json').metricsListen).toEqual({ host: '127.0.0.1', port: 9475 });
    expect(parseAgentConfig({ ...minimal, metrics_listen: '[::1]:9475' }, '/c.json').metricsListen).toEqual({ host: '::1', port: 9475 });
    const remote = parseAgentConfig({ ...minimal, metrics_listen: '198.18.0.2:9475', metrics_allow_remote: true }, '/c.json');
    expect(remote.metricsListen).toEqual({ host: '198.18.0.2', port: 9475 });
  });

  describe('via (TCP relay)', () => {
    const hub = { type: 'https', url: 'https://198.18.0.1:8443/' };
    it.each(['198.18.2.1:8444', '[2001:db8::1]:443', 'ops.c.testbed.test:1', 'ops:65535'])('accepts via %s on an https source', (via) => {
      const c = parseAgentConfig({ ...minimal, sources: [{ ...hub, via }] }, '/etc/mvpn-client/config.json');
      expect(c.sources[0]).toEqual({ ...hub, via });
    });

    it('enroll defaults to the first https source: its origin and its via', () => {
      const c = parseAgentConfig(
        { ...minimal, sources: [{ type: 'file', path: 'm' }, { ...hub, via: '198.18.2.1:8444' }, { type: 'https', url: 'https://198.51.100.7/' }], enroll: { token_file: 't' } },
        '/etc/mvpn-client/config.json',
      );
      expect(c.enroll).toEqual({ tokenFile: '/etc/mvpn-client/t', url: 'https://198.18.0.1:8443', via: '198.18.2.1:8444' });
    });

    it("an explicit enroll.url does not take a source's via; enroll.via is its own", () => {
      const sources = [{ ...hub, via: '198.18.2.1:8444' }];
      const own = parseAgentConfig({ ...minimal, sources, enroll: { token_file: 't', url: 'https://198.51.100.7/' } }, '/etc/mvpn-client/config.json');
      expect(own.enroll).toEqual({ tokenFile: '/etc/mvpn-client/t', url: 'https://198.51.100.7/' });
      const both = parseAgentConfig(
        { ...minimal, sources, enroll: { token_file: 't', url: 'https://198.51.100.7/', via: '[2001:db8::2]:9000' } },
        '/etc/mvpn-client/config.json',
      );
      expect(both.enroll?.via).toBe('[2001:db8::2]:9000');
    });
  });

  describe('files', () => {
    let dir: { path: string; remove: () => Promise<void> };
    beforeAll(async () => {
      dir = await tmpDir('cfg');
    });
    afterAll(async () => dir.remove());

    it('loads config.json from a directory given as --config', async () => {
      await mkdir(join(dir.path, 'tarball'));
      await writeFile(join(dir.path, 'tarball', 'config.json'), JSON.stringify({ ...minimal, anchor: 'anchor.pub' }));
      const c = await loadAgentConfig(join(dir.path, 'tarball'));
      expect(c.path).toBe(join(dir.path, 'tarball', 'config.json'));
      expect(c.anchor).toBe(join(dir.path, 'tarball', 'anchor.pub'));
    });

    it('says MVPN_CONFIG_MISSING for a missing file and MVPN_CONFIG_INVALID for broken JSON', async () => {
      await expect(loadAgentConfig(join(dir.path, 'nope.json'))).rejects.toMatchObject({ code: 'MVPN_CONFIG_MISSING' });
      await writeFile(join(dir.path, 'broken.json'), '{"node": ');
      await expect(loadAgentConfig(join(dir.path, 'broken.json'))).rejects.toMatchObject({ code: 'MVPN_CONFIG_INVALID' });
    });
  });
});

describe('node id', () => {
  it.each([
    [{ id: 'pc7' }, 'pc7'],
    [{ file: '/var/emulab/boot/nodeid' }, 'pc123'],
    [{ hostname: true as const }, 'node1'],
    [{ hostname: 'full' as const }, 'node1.exp.proj.testbed.test'],
  ])('resolves %j', async (source, want) => {
    const id = await resolveNodeId(source, { readFile: async () => 'pc123\n', hostname: () => 'node1.exp.proj.testbed.test' });
    expect(id).toBe(want);
  });

  it('refuses an unreadable node-id file and a malformed id, naming node', async () => {
    await expect(
      resolveNodeId({ file: '/nonexistent' }, { readFile: async () => Promise.reject(new Error('ENOENT')) }),
    ).rejects.toMatchObject({ code: 'MVPN_CONFIG_INVALID', message: expect.stringContaining('node.file') });
    await expect(resolveNodeId({ file: '/x' }, { readFile: async () => '../etc\n' })).rejects.toMatchObject({
      code: 'MVPN_CONFIG_INVALID',
    });
  });
});
