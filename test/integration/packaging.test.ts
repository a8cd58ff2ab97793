/**
 * The shipped artifacts in a clean Debian root (debootstrap minbase: no
 * Node.js, no systemd running): the .deb installed with dpkg, the startup
 * tarball unpacked at `/`, and the installed executable running
 * `--version` and `verify` there through chroot.
 *
 * Uses dist/mvpn-client from ./build.sh and builds the .deb from it with
 * packaging/build-deb.sh, so the test always checks the packaging as it is
 * now. The root comes from test/helpers/clean-root.ts (built once, cached
 * outside the repository, a fresh copy per test and removed afterwards).
 *
 * Maintainer scripts: with no systemd in a chroot nothing can start anyway,
 * so the "never starts an unconfigured agent" rule is also checked with a
 * recording stand-in for systemctl and /run/systemd/system present — the
 * one part real systemd cannot provide inside a chroot.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAgentConfig } from '../../src/agent/config.ts';
import { VERSION } from '../../src/version.ts';
import { cleanRoot, type CleanRoot } from '../helpers/clean-root.ts';
import { sh } from '../helpers/netns.ts';
import { tmpDir } from '../helpers/tmp.ts';

const BIN = 'dist/mvpn-client';
const LONG = 15 * 60_000;

let tmp: { path: string; remove: () => Promise<void> };
let deb: string;
let anchor: string;
let fullTarball: string;
let configTarball: string;
let bundle: string;
let membership: string;
let state: string;

async function mvpn(...args: string[]): Promise<string> {
  return (await sh(BIN, args, { timeoutMs: 120_000 })).stdout;
}

/** Processes whose root directory is inside `root`: anything a maintainer script or the tarball started. */
async function processesIn(root: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const r = await readlink(`/proc/${entry}/root`);
      if (r === root || r.startsWith(root + '/')) found.push(`${entry}: ${(await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0').join(' ')}`);
    } catch {
      // gone, or a kernel thread
    }
  }
  return found;
}

/** Compared by hash: a 100+ MB buffer diff would take the test worker's memory. */
async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function into(root: CleanRoot, file: string, name: string): Promise<string> {
  await copyFile(file, join(root.path, 'tmp', name));
  return `/tmp/${name}`;
}

beforeAll(async () => {
  try {
    await stat(BIN);
  } catch {
    throw new Error(`${BIN} is missing: run ./build.sh first (the packaging test installs the real executable)`);
  }
  tmp = await tmpDir('pkg');
  // The lint belongs to the build (build.sh); here only the package itself matters.
  const built = await sh('env', ['MVPN_LINTIAN=0', `MVPN_DEB_WORKDIR=${join(tmp.path, 'debwork')}`, 'packaging/build-deb.sh', BIN, join(tmp.path, 'out')], { timeoutMs: LONG });
  deb = built.stdout.trim();

  // A server state made by the real executable, as an ops host would.
  state = join(tmp.path, 'state');
  const init = JSON.parse(await mvpn('server', 'init', '--state-dir', state, '--hostname', 'vpn.example.org', '--address', '192.0.2.10', '--json')) as { trust_anchor: string };
  anchor = init.trust_anchor;
  await mvpn('server', 'network', 'create', 'lan', '--state-dir', state);
  await mvpn('server', 'node', 'add', 'n1', '--network', 'lan', '--state-dir', state);
  bundle = join(tmp.path, 'n1-lan.tar.gz');
  const exported = JSON.parse(await mvpn('server', 'export', 'n1', '--network', 'lan', '--out', bundle, '--state-dir', state, '--json')) as { membership: string };
  membership = exported.membership;
  // No --binary: the single executable ships itself.
  fullTarball = join(tmp.path, 'n1-startup.tar.gz');
  await mvpn('server', 'tarball', '--state-dir', state, '--node', 'n1', '--server-url', 'https://vpn.example.org:8443/', '--out', fullTarball);
  configTarball = join(tmp.path, 'n1-config.tar.gz');
  await mvpn('server', 'tarball', '--state-dir', state, '--node', 'n1', '--config-only', '--server-url', 'https://vpn.example.org:8443/', '--out', configTarball);
}, LONG);

afterAll(async () => tmp?.remove());

/** verify in the root: the exported bundle passes; a tampered copy and the wrong node do not. */
async function checkVerify(root: CleanRoot, anchorInRoot: string): Promise<void> {
  const b = await into(root, bundle, 'bundle.tar.gz');
  const m = await into(root, membership, 'membership.json');
  const ok = await root.run('mvpn-client', ['verify', b, '--anchor', anchorInRoot, '--node', 'n1', '--membership', m], { allowFail: true });
  expect(ok.code, ok.stderr).toBe(0);

  const bytes = await readFile(bundle);
  bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
  await writeFile(join(root.path, 'tmp/tampered.tar.gz'), bytes);
  const bad = await root.run('mvpn-client', ['verify', '/tmp/tampered.tar.gz', '--anchor', anchorInRoot, '--node', 'n1'], { allowFail: true });
  // verify reports on stdout (the report is what was asked for); exit 1 means "not acceptable".
  expect(bad.code).toBe(1);
  expect(bad.stdout).toMatch(/rejected: MVPN_BUNDLE_/);

  const wrong = await root.run('mvpn-client', ['verify', b, '--anchor', anchorInRoot, '--node', 'n2'], { allowFail: true });
  expect(wrong.code).toBe(1);
  expect(wrong.stdout).toContain('rejected: MVPN_BUNDLE_WRONG_NODE');
}

describe('the .deb in a clean Debian root', () => {
  let root: CleanRoot;

  beforeAll(async () => {
    root = await cleanRoot('debroot');
  }, LONG);

  afterAll(async () => {
    await root?.remove();
  }, LONG);

  it('starts clean: no Node.js, no mvpn-client', async () => {
    expect((await root.run('sh', ['-c', 'command -v node || command -v nodejs'], { allowFail: true })).code).not.toBe(0);
    expect((await root.run('test', ['-e', '/usr/bin/mvpn-client'], { allowFail: true })).code).not.toBe(0);
    expect((await root.run('test', ['-d', '/run/systemd/system'], { allowFail: true })).code).not.toBe(0);
  });

  it('installs with dpkg -i (Depends satisfied by the Debian packages alone), enables the agent unit, starts nothing', async () => {
    const r = await root.run('dpkg', ['-i', await into(root, deb, 'mvpn-client.deb')], { allowFail: true, timeoutMs: LONG });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect((await root.run('dpkg-query', ['-W', '-f', '${Status} ${Version}', 'mvpn-client'])).stdout).toBe(`install ok installed ${VERSION}`);
    for (const f of ['usr/bin/mvpn-client', 'lib/systemd/system/mvpn-client.service', 'lib/systemd/system/mvpn-server.service', 'etc/mvpn-client/config.json.example', 'usr/share/doc/mvpn-client/copyright']) {
      await expect(stat(join(root.path, f)), f).resolves.toBeTruthy();
    }
    // The alerting rules, where the README's Prometheus section points rule_files.
    expect(await readFile(join(root.path, 'usr/share/mvpn-client/prometheus/mvpn-alerts.yml'), 'utf8')).toBe(await readFile('packaging/mvpn-alerts.yml', 'utf8'));
    expect(await readFile(join(root.path, 'lib/systemd/system/mvpn-client.service'), 'utf8')).toBe(await readFile('systemd/mvpn-client.service', 'utf8'));
    expect(await readlink(join(root.path, 'etc/systemd/system/multi-user.target.wants/mvpn-client.service'))).toBe('/lib/systemd/system/mvpn-client.service');
    // The server unit is for ops hosts: installed, not enabled.
    await expect(lstat(join(root.path, 'etc/systemd/system/multi-user.target.wants/mvpn-server.service'))).rejects.toThrow();
    await expect(stat(join(root.path, 'etc/mvpn-client/config.json'))).rejects.toThrow();
    expect(await processesIn(root.path)).toEqual([]);
    const man = gunzipSync(await readFile(join(root.path, 'usr/share/man/man1/mvpn-client.1.gz'))).toString();
    expect(man).toContain('.TH MVPN-CLIENT 1');
    expect(man).toContain('mvpn-client server tarball');
    const copyright = await readFile(join(root.path, 'usr/share/doc/mvpn-client/copyright'), 'utf8');
    expect(copyright).toMatch(/^Format: https:\/\/www\.debian\.org\/doc\/packaging-manuals\/copyright-format\/1\.0\//);
    expect(copyright).toContain('License: BSD-3-Clause');
  }, LONG);

  it('runs --version there with no Node.js on the system', async () => {
    expect((await root.run('sh', ['-c', 'command -v node'], { allowFail: true })).code).not.toBe(0);
    const r = await root.run('mvpn-client', ['--version']);
    expect(r.stdout.trim()).toBe(VERSION);
  });

  it('takes the config-only startup tarball on top, and verify accepts the bundle and rejects a tampered one', async () => {
    const t = await into(root, configTarball, 'config.tar.gz');
    await root.run('tar', ['-xzf', t, '-C', '/']);
    expect((await lstat(join(root.path, 'lib'))).isSymbolicLink()).toBe(true);
    const token = await stat(join(root.path, 'etc/mvpn-client/enroll.token'));
    expect([token.mode & 0o777, token.uid, token.gid]).toEqual([0o600, 0, 0]);
    const config = JSON.parse(await readFile(join(root.path, 'etc/mvpn-client/config.json'), 'utf8')) as { anchor: string };
    expect(config.anchor).toBe(anchor);
    await checkVerify(root, config.anchor);
    expect(await processesIn(root.path)).toEqual([]);
  }, LONG);

  it('purge removes the executable, the enablement and the node configuration', async () => {
    const r = await root.run('dpkg', ['--purge', 'mvpn-client'], { allowFail: true, timeoutMs: LONG });
    expect(r.code, r.stderr).toBe(0);
    await expect(stat(join(root.path, 'usr/bin/mvpn-client'))).rejects.toThrow();
    await expect(lstat(join(root.path, 'etc/systemd/system/multi-user.target.wants/mvpn-client.service'))).rejects.toThrow();
    await expect(stat(join(root.path, 'etc/mvpn-client/config.json'))).rejects.toThrow();
    await expect(stat(join(root.path, 'etc/mvpn-client/enroll.token'))).rejects.toThrow();
  }, LONG);

  it('with systemd running: daemon-reload, no start while unconfigured; restart on upgrade once configured; stop on remove', async () => {
    const log = join(root.path, 'var/log/systemctl-calls.log');
    await mkdir(join(root.path, 'run/systemd/system'), { recursive: true });
    const fake = join(root.path, 'usr/bin/systemctl');
    await writeFile(
      fake,
      [
        '#!/bin/sh',
        '# Recording stand-in for systemctl: this root has no systemd to talk to.',
        'echo "$*" >> /var/log/systemctl-calls.log',
        'for unit in "$@"; do :; done',
        'case " $* " in',
        '*" is-enabled "*) if [ -e "/etc/systemd/system/multi-user.target.wants/$unit" ]; then echo enabled; exit 0; fi; echo disabled; exit 1 ;;',
        '*" is-active "*) exit 3 ;;',
        '# enable/preset do offline what the real one does for WantedBy=multi-user.target.',
        '*" enable "*|*" preset "*) mkdir -p /etc/systemd/system/multi-user.target.wants && ln -sf "/lib/systemd/system/$unit" "/etc/systemd/system/multi-user.target.wants/$unit" ;;',
        'esac',
        'exit 0',
        '',
      ].join('\n'),
    );
    await chmod(fake, 0o755);
    const calls = async () => (await readFile(log, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean);
    const starts = (lines: string[]) => lines.filter((l) => /\b(start|restart|try-restart|reload-or-restart)\b/.test(l) && l.includes('mvpn-client.service'));

    // Fresh install, no config: systemd learns the units, nothing is started.
    const debInRoot = await into(root, deb, 'mvpn-client.deb');
    let r = await root.run('dpkg', ['-i', debInRoot], { allowFail: true, timeoutMs: LONG });
    expect(r.code, r.stderr).toBe(0);
    let lines = await calls();
    expect(lines).toContain('--system daemon-reload');
    expect(starts(lines)).toEqual([]);
    expect(await processesIn(root.path)).toEqual([]);

    // Configured: reinstalling (the upgrade path) moves the enabled agent onto the new binary.
    await copyFile(join(root.path, 'etc/mvpn-client/config.json.example'), join(root.path, 'etc/mvpn-client/config.json'));
    await writeFile(log, '');
    r = await root.run('dpkg', ['-i', debInRoot], { allowFail: true, timeoutMs: LONG });
    expect(r.code, r.stderr).toBe(0);
    lines = await calls();
    expect(starts(lines).some((l) => /\brestart mvpn-client\.service$/.test(l))).toBe(true);

    // Remove: the daemons are stopped before their binary goes.
    await writeFile(log, '');
    r = await root.run('dpkg', ['-r', 'mvpn-client'], { allowFail: true, timeoutMs: LONG });
    expect(r.code, r.stderr).toBe(0);
    expect((await calls()).some((l) => /\bstop mvpn-client\.service mvpn-server\.service$/.test(l))).toBe(true);
    await rm(join(root.path, 'run/systemd/system'), { recursive: true });
  }, LONG);
});

describe('the startup tarball alone in a clean Debian root (no package)', () => {
  let root: CleanRoot;

  beforeAll(async () => {
    root = await cleanRoot('tarroot');
  }, LONG);

  afterAll(async () => {
    await root?.remove();
  }, LONG);

  it('unpacks at / with the node\'s tar: executable, unit enabled for boot, config, CA, private token; /lib stays a symlink', async () => {
    const t = await into(root, fullTarball, 'startup.tar.gz');
    await root.run('tar', ['-xzf', t, '-C', '/']);
    expect((await lstat(join(root.path, 'lib'))).isSymbolicLink()).toBe(true);
    expect(await sha256File(join(root.path, 'usr/bin/mvpn-client'))).toBe(await sha256File(BIN));
    // The wants link resolves inside the node's file system (test -e follows it).
    expect((await root.run('test', ['-e', '/etc/systemd/system/multi-user.target.wants/mvpn-client.service'], { allowFail: true })).code).toBe(0);
    expect(await readFile(join(root.path, 'lib/systemd/system/mvpn-client.service'), 'utf8')).toBe(await readFile('systemd/mvpn-client.service', 'utf8'));
    const config = parseAgentConfig(JSON.parse(await readFile(join(root.path, 'etc/mvpn-client/config.json'), 'utf8')), '/etc/mvpn-client/config.json');
    expect(config.node).toEqual({ id: 'n1' });
    expect(config.anchor).toBe(anchor);
    expect(config.sources).toEqual([{ type: 'https', url: 'https://vpn.example.org:8443/' }]);
    expect(await readFile(join(root.path, 'etc/mvpn-client/server-ca.pem'), 'utf8')).toBe((await readFile(join(state, 'api/ca.crt'), 'utf8')).trim() + '\n');
    const token = await stat(join(root.path, 'etc/mvpn-client/enroll.token'));
    expect([token.mode & 0o777, token.uid, token.gid]).toEqual([0o600, 0, 0]);
    expect(await processesIn(root.path)).toEqual([]);
  }, LONG);

  it('runs --version and verify there, with no Node.js installed', async () => {
    expect((await root.run('sh', ['-c', 'command -v node'], { allowFail: true })).code).not.toBe(0);
    expect((await root.run('mvpn-client', ['--version'])).stdout.trim()).toBe(VERSION);
    await checkVerify(root, anchor);
  }, LONG);

  it('startup.sh says what to do when systemd is not running, and starts nothing', async () => {
    const r = await root.run('/etc/mvpn-client/startup.sh', [], { allowFail: true });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('systemd is not running here');
    expect(await processesIn(root.path)).toEqual([]);
  });
});
