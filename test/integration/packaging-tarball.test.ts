/**
 * `mvpn-client server tarball` on a real server state directory, driven
 * through the CLI entry with buffers, and its archives read back with GNU
 * tar — the tool a testbed node unpacks them with.
 */
import { copyFile, lstat, mkdir, readFile, readlink, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../src/agent/config.ts';
import { bufferIo } from '../../src/cli/io.ts';
import { main } from '../../src/cli/main.ts';
import { tokenHash } from '../../src/server/ops/nodes.ts';
import { SqliteStore } from '../../src/server/store/sqlite.ts';
import { STARTUP_SCRIPT } from '../../src/server/startup-tarball.ts';
import { sh } from '../helpers/netns.ts';
import { tmpDir } from '../helpers/tmp.ts';

let tmp: { path: string; remove: () => Promise<void> };
let state: string;
let fakeBinary: string;
let anchor: string;
/** The repository's unit: a stand-in binary has no build tree next to it to find one in. */
const unit = 'systemd/mvpn-client.service';

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = bufferIo();
  const code = await main(argv, io);
  return { code, out: io.out(), err: io.err() };
}

async function tarballCli(...argv: string[]) {
  return cli('server', 'tarball', '--state-dir', state, ...argv);
}

/** `tar -tvz` lines parsed: mode string, owner, size, path, link target. */
async function listing(file: string): Promise<{ mode: string; owner: string; path: string; link?: string }[]> {
  const r = await sh('tar', ['--numeric-owner', '-tvzf', file]);
  return r.stdout
    .trim()
    .split('\n')
    .map((line) => {
      const f = line.split(/\s+/);
      const rest = f.slice(5).join(' ');
      const [path, link] = rest.split(' -> ');
      return { mode: f[0]!, owner: f[1]!, path: path!, ...(link ? { link } : {}) };
    });
}

beforeAll(async () => {
  tmp = await tmpDir('tarball');
  state = join(tmp.path, 'state');
  // Any ELF file stands in for the 100+ MB executable here; the clean-root test ships the real one.
  fakeBinary = join(tmp.path, 'mvpn-client');
  await copyFile('/bin/true', fakeBinary);
  const init = await cli('server', 'init', '--state-dir', state, '--hostname', 'vpn.example.org', '--address', '192.0.2.10', '--json');
  expect(init.code, init.err).toBe(0);
  anchor = (JSON.parse(init.out) as { trust_anchor: string }).trust_anchor;
  expect((await cli('server', 'network', 'create', 'lan', '--state-dir', state)).code).toBe(0);
  for (const n of ['n1', 'n2', 'n3']) expect((await cli('server', 'node', 'add', n, '--network', 'lan', '--state-dir', state)).code).toBe(0);
});
afterAll(async () => tmp?.remove());

describe('per-node startup tarball', () => {
  let out: string;
  let report: { entries: string[]; node: string; anchor: string; server_urls: string[]; warnings: string[] };

  beforeAll(async () => {
    out = join(tmp.path, 'n1.tar.gz');
    const r = await tarballCli('--node', 'n1', '--server-url', 'https://vpn.example.org:8443', '--server-url', 'https://192.0.2.10:8443/', '--binary', fakeBinary, '--unit', unit, '--out', out, '--json');
    expect(r.code, r.err + r.out).toBe(0);
    report = JSON.parse(r.out);
  });

  it('holds exactly the node files, relative paths, root-owned, fixed modes, and no directory entry for a system directory', async () => {
    const l = await listing(out);
    expect(l.map((e) => e.path)).toEqual([
      'usr/bin/mvpn-client',
      'lib/systemd/system/mvpn-client.service',
      'etc/systemd/system/multi-user.target.wants/mvpn-client.service',
      'etc/mvpn-client/',
      'etc/mvpn-client/config.json',
      'etc/mvpn-client/server-ca.pem',
      'etc/mvpn-client/enroll.token',
      'etc/mvpn-client/startup.sh',
    ]);
    expect(report.entries).toEqual(l.map((e) => e.path));
    for (const e of l) expect(e.owner).toBe('0/0');
    const mode = Object.fromEntries(l.map((e) => [e.path, e.mode]));
    expect(mode['usr/bin/mvpn-client']).toBe('-rwxr-xr-x');
    expect(mode['etc/mvpn-client/enroll.token']).toBe('-rw-------');
    expect(mode['etc/mvpn-client/config.json']).toBe('-rw-r--r--');
    expect(mode['etc/mvpn-client/']).toBe('drwxr-xr-x');
    expect(l.find((e) => e.path.startsWith('etc/systemd'))?.link).toBe('/lib/systemd/system/mvpn-client.service');
    // The tarball holds a secret, so the file itself is private.
    expect((await stat(out)).mode & 0o777).toBe(0o600);
  });

  it('unpacks over a merged-/usr root without replacing the /lib symlink, and the wants link reaches the unit', async () => {
    const root = join(tmp.path, 'root-merged');
    await mkdir(join(root, 'usr/lib'), { recursive: true });
    await mkdir(join(root, 'usr/bin'), { recursive: true });
    await mkdir(join(root, 'etc'), { recursive: true });
    await symlink('usr/lib', join(root, 'lib'));
    await sh('tar', ['-xzf', out, '-C', root]);
    expect((await lstat(join(root, 'lib'))).isSymbolicLink()).toBe(true);
    expect(await readFile(join(root, 'usr/lib/systemd/system/mvpn-client.service'), 'utf8')).toBe(await readFile('systemd/mvpn-client.service', 'utf8'));
    expect(await readlink(join(root, 'etc/systemd/system/multi-user.target.wants/mvpn-client.service'))).toBe('/lib/systemd/system/mvpn-client.service');
    expect(await readFile(join(root, 'usr/bin/mvpn-client'))).toEqual(await readFile(fakeBinary));
    expect(await readFile(join(root, 'etc/mvpn-client/startup.sh'), 'utf8')).toBe(STARTUP_SCRIPT);
  });

  it("installs an agent config the agent accepts: the node's id, the server URLs in order, the anchor, the pinned API CA and the token", async () => {
    const root = join(tmp.path, 'root-config');
    await mkdir(root);
    await sh('tar', ['-xzf', out, '-C', root, 'etc/mvpn-client']);
    // The agent loads it as it would at /etc/mvpn-client (relative paths would resolve there; these are absolute).
    const config = await loadAgentConfig(join(root, 'etc/mvpn-client/config.json'));
    expect(config.node).toEqual({ id: 'n1' });
    expect(config.sources).toEqual([
      { type: 'https', url: 'https://vpn.example.org:8443/' },
      { type: 'https', url: 'https://192.0.2.10:8443/' },
    ]);
    expect(config.anchor).toBe(anchor);
    expect(report.anchor).toBe(anchor);
    expect(config.serverCa).toBe('/etc/mvpn-client/server-ca.pem');
    expect(config.enroll).toEqual({ tokenFile: '/etc/mvpn-client/enroll.token', url: 'https://vpn.example.org:8443/' });
    expect(await readFile(join(root, 'etc/mvpn-client/server-ca.pem'), 'utf8')).toBe((await readFile(join(state, 'api/ca.crt'), 'utf8')).trim() + '\n');
    expect((await readFile(join(state, 'trust-anchor'), 'utf8')).trim()).toBe(anchor);
    // The token in the tarball is one the server issued for n1 and has not seen used.
    const token = (await readFile(join(root, 'etc/mvpn-client/enroll.token'), 'utf8')).trim();
    const store = SqliteStore.open(join(state, 'store.db'));
    try {
      const rec = store.read((tx) => tx.getToken(tokenHash(token)));
      expect(rec?.node).toBe('n1');
      expect(rec?.usedAt).toBeNull();
    } finally {
      store.close();
    }
    expect(report.warnings).toEqual([]);
  });
});

describe('per-experiment startup tarball', () => {
  it('carries no token, lets the node name itself, and writes one private token tarball per node', async () => {
    const out = join(tmp.path, 'exp.tar.gz');
    const tokens = join(tmp.path, 'tokens');
    const r = await tarballCli('--experiment', '--node', 'n2', '--node', 'n3', '--token-dir', tokens, '--server-url', 'https://vpn.example.org:8443/', '--binary', fakeBinary, '--unit', unit, '--out', out, '--json');
    expect(r.code, r.err + r.out).toBe(0);
    const paths = (await listing(out)).map((e) => e.path);
    expect(paths).not.toContain('etc/mvpn-client/enroll.token');
    expect(paths).toContain('usr/bin/mvpn-client');
    expect((await stat(out)).mode & 0o777).toBe(0o644);
    const config = JSON.parse((await sh('tar', ['-xzOf', out, 'etc/mvpn-client/config.json'])).stdout) as { node: unknown; enroll: { token_file: string } };
    expect(config.node).toEqual({ hostname: 'short' });
    expect(config.enroll.token_file).toBe('/etc/mvpn-client/enroll.token');

    expect((await readdir(tokens)).sort()).toEqual(['n2.token.tar.gz', 'n3.token.tar.gz']);
    const seen = new Set<string>();
    for (const n of ['n2', 'n3']) {
      const file = join(tokens, `${n}.token.tar.gz`);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const l = await listing(file);
      expect(l.map((e) => [e.path, e.mode, e.owner])).toEqual([
        ['etc/mvpn-client/', 'drwxr-xr-x', '0/0'],
        ['etc/mvpn-client/enroll.token', '-rw-------', '0/0'],
      ]);
      const token = (await sh('tar', ['-xzOf', file, 'etc/mvpn-client/enroll.token'])).stdout.trim();
      seen.add(token);
      const store = SqliteStore.open(join(state, 'store.db'));
      try {
        expect(store.read((tx) => tx.getToken(tokenHash(token)))?.node).toBe(n);
      } finally {
        store.close();
      }
    }
    expect(seen.size).toBe(2);
  });

  it('with --node-id-from file:PATH reads the id from the testbed file', async () => {
    const out = join(tmp.path, 'exp-file.tar.gz');
    const r = await tarballCli('--experiment', '--node-id-from', 'file:/var/emulab/boot/nickname', '--server-url', 'https://vpn.example.org:8443/', '--config-only', '--out', out);
    expect(r.code, r.err).toBe(0);
    const config = JSON.parse((await sh('tar', ['-xzOf', out, 'etc/mvpn-client/config.json'])).stdout) as { node: unknown };
    expect(config.node).toEqual({ file: '/var/emulab/boot/nickname' });
  });
});

describe('--via: nodes reach the server API through a TCP relay (a federated testbed)', () => {
  it('puts the relay on every https source and on enroll, and the agent accepts the config', async () => {
    const out = join(tmp.path, 'via.tar.gz');
    const r = await tarballCli(
      '--node', 'n1', '--config-only', '--server-url', 'https://vpn.example.org:8443', '--server-url', 'https://192.0.2.10:8443/', '--via', '198.51.100.2:8444', '--out', out, '--json',
    );
    expect(r.code, r.err).toBe(0);
    expect((JSON.parse(r.out) as { via: string }).via).toBe('198.51.100.2:8444');
    const root = join(tmp.path, 'root-via');
    await mkdir(root);
    await sh('tar', ['-xzf', out, '-C', root, 'etc/mvpn-client']);
    const raw = JSON.parse(await readFile(join(root, 'etc/mvpn-client/config.json'), 'utf8')) as { sources: unknown; enroll: unknown };
    expect(raw.sources).toEqual([
      { type: 'https', url: 'https://vpn.example.org:8443/', via: '198.51.100.2:8444' },
      { type: 'https', url: 'https://192.0.2.10:8443/', via: '198.51.100.2:8444' },
    ]);
    expect(raw.enroll).toEqual({ token_file: '/etc/mvpn-client/enroll.token', url: 'https://vpn.example.org:8443/', via: '198.51.100.2:8444' });
    const config = await loadAgentConfig(join(root, 'etc/mvpn-client/config.json'));
    expect(config.sources.map((s) => (s.type === 'https' ? s.via : undefined))).toEqual(['198.51.100.2:8444', '198.51.100.2:8444']);
    expect(config.enroll).toEqual({ tokenFile: '/etc/mvpn-client/enroll.token', url: 'https://vpn.example.org:8443/', via: '198.51.100.2:8444' });
    // The certificate check is still for the URL hosts, which the API certificate names: no warning.
    expect(r.err).not.toContain('warning');
  });

  it('says so in the text report, with an IPv6 relay', async () => {
    const r = await tarballCli('--node', 'n1', '--config-only', '--server-url', 'https://192.0.2.10:8443/', '--via', '[2001:db8::2]:8444', '--out', join(tmp.path, 'via6.tar.gz'));
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('nodes connect through the relay [2001:db8::2]:8444; TLS is verified for 192.0.2.10:8443');
  });
});

describe('config-only tarball (images with the .deb installed)', () => {
  it('leaves out the executable, the unit and its link', async () => {
    const out = join(tmp.path, 'conf.tar.gz');
    // Not a single executable and no --binary: fine, nothing is shipped.
    const r = await tarballCli('--node', 'n1', '--config-only', '--server-url', 'https://vpn.example.org:8443/', '--out', out);
    expect(r.code, r.err).toBe(0);
    expect((await listing(out)).map((e) => e.path)).toEqual([
      'etc/mvpn-client/',
      'etc/mvpn-client/config.json',
      'etc/mvpn-client/server-ca.pem',
      'etc/mvpn-client/enroll.token',
      'etc/mvpn-client/startup.sh',
    ]);
  });
});

describe('refusals: a clear error with a stable code, and no file written', () => {
  const base = () => ['--server-url', 'https://vpn.example.org:8443/', '--binary', fakeBinary, '--unit', unit];
  it.each([
    ['an unknown node', ['--node', 'ghost'], 'MVPN_NOT_FOUND', 5],
    ['two nodes without --experiment', ['--node', 'n1', '--node', 'n2'], 'MVPN_USAGE', 2],
    ['no node without --experiment', [], 'MVPN_USAGE', 2],
    ['--experiment nodes without --token-dir', ['--experiment', '--node', 'n1'], 'MVPN_USAGE', 2],
    ['a plain http server URL', ['--node', 'n1', '--server-url', 'http://vpn.example.org/'], 'MVPN_USAGE', 2],
    ['a node id source that is not one', ['--node', 'n1', '--node-id-from', 'dns'], 'MVPN_USAGE', 2],
    ['a relative node id file', ['--experiment', '--node-id-from', 'file:nodeid'], 'MVPN_USAGE', 2],
    ['a bad token lifetime', ['--node', 'n1', '--token-ttl', '90d'], 'MVPN_USAGE', 2],
    ['a --via without a port', ['--node', 'n1', '--via', '198.51.100.2'], 'MVPN_USAGE', 2],
    ['a --via that is a URL', ['--node', 'n1', '--via', 'tcp://198.51.100.2:8444'], 'MVPN_USAGE', 2],
  ])('%s', async (_name, extra, code, exit) => {
    const out = join(tmp.path, `refused-${code}-${Math.random().toString(16).slice(2)}.tar.gz`);
    const r = await tarballCli(...base(), ...extra, '--out', out);
    expect(r.code).toBe(exit);
    expect(r.err).toContain(`[${code}]`);
    await expect(stat(out)).rejects.toThrow();
  });

  it('a --binary that is not an executable', async () => {
    const notElf = join(tmp.path, 'not-elf');
    await writeFile(notElf, '#!/bin/sh\n');
    const out = join(tmp.path, 'not-elf.tar.gz');
    const r = await tarballCli('--node', 'n1', '--server-url', 'https://vpn.example.org:8443/', '--binary', notElf, '--out', out);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/not an ELF executable.*\[MVPN_USAGE\]/);
    await expect(stat(out)).rejects.toThrow();
  });

  it('shipping itself when it is not the single executable (here: node running the sources)', async () => {
    const out = join(tmp.path, 'self.tar.gz');
    const r = await tarballCli('--node', 'n1', '--server-url', 'https://vpn.example.org:8443/', '--out', out);
    expect(r.code).toBe(2);
    expect(r.err).toContain('pass --binary PATH');
    await expect(stat(out)).rejects.toThrow();
  });

  it('an output directory that does not exist', async () => {
    const r = await tarballCli(...base(), '--node', 'n1', '--out', join(tmp.path, 'no/such/dir/x.tar.gz'));
    expect(r.code).toBe(5);
    expect(r.err).toContain('[MVPN_TARBALL_FAILED]');
  });
});

it('warns when a server URL names a host the API certificate does not hold', async () => {
  const out = join(tmp.path, 'warn.tar.gz');
  const r = await tarballCli('--node', 'n1', '--config-only', '--server-url', 'https://other.example.net:8443/', '--out', out);
  expect(r.code).toBe(0);
  expect(r.err).toContain('warning: other.example.net is not a name or address in the server');
});

describe('which unit it ships', () => {
  it('finds the unit of the build tree the executable comes from (dist/../systemd/)', async () => {
    const tree = join(tmp.path, 'tree');
    await mkdir(join(tree, 'dist'), { recursive: true });
    await mkdir(join(tree, 'systemd'));
    await copyFile(fakeBinary, join(tree, 'dist/mvpn-client'));
    const text = (await readFile(unit, 'utf8')).replace('Description=', 'Description=from the build tree: ');
    await writeFile(join(tree, 'systemd/mvpn-client.service'), text);
    const out = join(tmp.path, 'tree.tar.gz');
    const r = await tarballCli('--node', 'n1', '--server-url', 'https://vpn.example.org:8443/', '--binary', join(tree, 'dist/mvpn-client'), '--out', out);
    expect(r.code, r.err).toBe(0);
    expect((await sh('tar', ['-xzOf', out, 'lib/systemd/system/mvpn-client.service'])).stdout).toBe(text);
  });

  it('refuses a unit that does not run the agent (e.g. the server unit by mistake)', async () => {
    const out = join(tmp.path, 'wrong-unit.tar.gz');
    const r = await tarballCli('--node', 'n1', '--server-url', 'https://vpn.example.org:8443/', '--binary', fakeBinary, '--unit', 'systemd/mvpn-server.service', '--out', out);
    expect(r.code).toBe(2);
    expect(r.err).toContain('does not look like the agent unit');
    await expect(stat(out)).rejects.toThrow();
  });
});
