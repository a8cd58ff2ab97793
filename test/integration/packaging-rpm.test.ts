/**
 * The .rpm: built with rpmbuild from dist/mvpn-client, its payload and
 * dependencies read back with rpm, and installed with its scriptlets into
 * a clean root by the host's rpm (`--root`; it runs the scriptlets inside
 * the root). The root is the Debian minbase root of the .deb test, so rpm
 * cannot resolve library dependencies there (`--nodeps`); what this checks
 * is the payload, that the executable runs without Node.js, and that the
 * scriptlets never start an unconfigured agent.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VERSION } from '../../src/version.ts';
import { cleanRoot, type CleanRoot } from '../helpers/clean-root.ts';
import { sh } from '../helpers/netns.ts';
import { tmpDir } from '../helpers/tmp.ts';

const BIN = 'dist/mvpn-client';
const LONG = 15 * 60_000;

let tmp: { path: string; remove: () => Promise<void> };
let rpmFile: string;
let root: CleanRoot;

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function rpmIn(...args: string[]) {
  return sh('rpm', ['--root', root.path, ...args], { allowFail: true, timeoutMs: LONG });
}

/** Processes whose root directory is inside the clean root. */
async function processesIn(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const r = await readlink(`/proc/${entry}/root`);
      if (r === dir || r.startsWith(dir + '/')) found.push(entry);
    } catch {
      // gone
    }
  }
  return found;
}

beforeAll(async () => {
  try {
    await stat(BIN);
  } catch {
    throw new Error(`${BIN} is missing: run ./build.sh first`);
  }
  tmp = await tmpDir('rpm');
  const built = await sh('env', [`MVPN_RPM_WORKDIR=${join(tmp.path, 'work')}`, 'packaging/build-rpm.sh', BIN, join(tmp.path, 'out')], { timeoutMs: LONG });
  rpmFile = built.stdout.trim();
  root = await cleanRoot('rpmroot');
  await sh('rpm', ['--root', root.path, '--initdb']);
}, LONG);

afterAll(async () => {
  await root?.remove();
  await tmp?.remove();
}, LONG);

describe('the .rpm', () => {
  it('declares openvpn, iproute, iputils and the shared libraries, and carries the files', async () => {
    const requires = (await sh('rpm', ['-qpR', rpmFile])).stdout.split('\n');
    expect(requires).toContain('openvpn');
    expect(requires).toContain('iproute');
    expect(requires).toContain('iputils');
    expect(requires.some((r) => r.startsWith('libc.so.6'))).toBe(true);
    const files = (await sh('rpm', ['-qpl', rpmFile])).stdout.trim().split('\n');
    expect(files).toEqual(
      expect.arrayContaining([
        '/usr/bin/mvpn-client',
        '/usr/lib/systemd/system/mvpn-client.service',
        '/usr/lib/systemd/system/mvpn-server.service',
        '/etc/mvpn-client/config.json.example',
        '/usr/share/man/man1/mvpn-client.1.gz',
        '/usr/share/licenses/mvpn-client/copyright',
        '/usr/share/mvpn-client/prometheus/mvpn-alerts.yml',
      ]),
    );
    expect((await sh('rpm', ['-qp', '--qf', '%{VERSION} %{LICENSE}', rpmFile])).stdout).toBe(`${VERSION} BSD-3-Clause`);
  });

  it('installs into a clean root with its scriptlets, ships the executable unaltered (not stripped), starts nothing', async () => {
    const r = await rpmIn('-i', '--nodeps', rpmFile);
    expect(r.code, r.stderr).toBe(0);
    expect(await sha256File(join(root.path, 'usr/bin/mvpn-client'))).toBe(await sha256File(BIN));
    expect((await root.run('sh', ['-c', 'command -v node'], { allowFail: true })).code).not.toBe(0);
    expect((await root.run('mvpn-client', ['--version'])).stdout.trim()).toBe(VERSION);
    expect(await processesIn(root.path)).toEqual([]);
    const e = await rpmIn('-e', '--nodeps', 'mvpn-client');
    expect(e.code, e.stderr).toBe(0);
    await expect(stat(join(root.path, 'usr/bin/mvpn-client'))).rejects.toThrow();
  }, LONG);

  it('with systemd running: enables the agent, starts it only when /etc/mvpn-client/config.json exists, stops it on erase', async () => {
    const log = join(root.path, 'var/log/systemctl-calls.log');
    await mkdir(join(root.path, 'run/systemd/system'), { recursive: true });
    const fake = join(root.path, 'usr/bin/systemctl');
    await writeFile(fake, '#!/bin/sh\n# Recording stand-in for systemctl: no systemd runs in this root.\necho "$*" >> /var/log/systemctl-calls.log\nexit 0\n');
    await chmod(fake, 0o755);
    const calls = async () => (await readFile(log, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean);

    let r = await rpmIn('-i', '--nodeps', rpmFile);
    expect(r.code, r.stderr).toBe(0);
    let lines = await calls();
    expect(lines).toContain('--quiet enable mvpn-client.service');
    expect(lines).toContain('daemon-reload');
    expect(lines.filter((l) => /\b(start|restart)\b/.test(l))).toEqual([]);
    r = await rpmIn('-e', '--nodeps', 'mvpn-client');
    expect(r.code, r.stderr).toBe(0);
    expect(await calls()).toContain('stop mvpn-client.service mvpn-server.service');

    // The node is configured before the package arrives (e.g. by a startup tarball).
    await mkdir(join(root.path, 'etc/mvpn-client'), { recursive: true });
    await copyFile('packaging/config.json.example', join(root.path, 'etc/mvpn-client/config.json'));
    await writeFile(log, '');
    r = await rpmIn('-i', '--nodeps', rpmFile);
    expect(r.code, r.stderr).toBe(0);
    lines = await calls();
    expect(lines).toContain('start mvpn-client.service');
    await rm(join(root.path, 'run/systemd/system'), { recursive: true });
  }, LONG);
});
