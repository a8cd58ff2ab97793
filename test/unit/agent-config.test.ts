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
  ];
  it.each(bad)('refuses %s and names the field', (_name, json, field) => {
    const e = errorOf(() => parseAgentConfig(json, '/etc/mvpn-client/config.json'));
    expect(e.code).toBe('MVPN_CONFIG_INVALID');
    expect(e.message).toContain(field);
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
