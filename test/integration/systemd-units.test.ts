/**
 * The shipped unit files, checked by systemd's own tools: `systemd-analyze
 * verify` in a scratch root (so nothing is installed on this machine) and
 * `systemd-analyze security --offline` for the exposure score the README
 * reports.
 */
import { chmod, copyFile, cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sh } from '../helpers/netns.ts';
import { tmpDir } from '../helpers/tmp.ts';

const units = ['mvpn-client.service', 'mvpn-server.service'];
let root: { path: string; remove: () => Promise<void> };

beforeAll(async () => {
  root = await tmpDir('units');
  await mkdir(join(root.path, 'usr/bin'), { recursive: true });
  await mkdir(join(root.path, 'bin'), { recursive: true });
  await mkdir(join(root.path, 'etc/systemd/system'), { recursive: true });
  await mkdir(join(root.path, 'usr/lib/systemd'), { recursive: true });
  // ExecStart must name an executable; a stub stands in for the 100+ MB binary.
  await writeFile(join(root.path, 'usr/bin/mvpn-client'), '#!/bin/sh\nexit 0\n');
  await chmod(join(root.path, 'usr/bin/mvpn-client'), 0o755);
  await copyFile('/bin/kill', join(root.path, 'bin/kill'));
  await cp('/usr/lib/systemd/system', join(root.path, 'usr/lib/systemd/system'), { recursive: true });
  for (const u of units) await copyFile(join('systemd', u), join(root.path, 'etc/systemd/system', u));
});
afterAll(async () => root?.remove());

async function verify(unit: string): Promise<{ code: number; stderr: string }> {
  const r = await sh('systemd-analyze', ['verify', '--man=no', `--root=${root.path}`, join(root.path, 'etc/systemd/system', unit)], { allowFail: true });
  return { code: r.code, stderr: r.stderr.trim() };
}

describe('systemd units', () => {
  it.each(units)('%s passes systemd-analyze verify without a warning', async (unit) => {
    expect(await verify(unit)).toEqual({ code: 0, stderr: '' });
  });

  it('the verify check notices a broken unit (so the test above can fail)', async () => {
    const path = join(root.path, 'etc/systemd/system', 'broken.service');
    const text = (await readFile('systemd/mvpn-client.service', 'utf8')).replace('Type=notify', 'Type=notify\nKillMod=mixed');
    await writeFile(path, text);
    const r = await verify('broken.service');
    expect(r.stderr).toContain("Unknown key 'KillMod'");
  });

  it.each(units)('%s is Type=notify with a watchdog, reload by SIGHUP, KillMode=mixed and no MemoryDenyWriteExecute', async (unit) => {
    const text = await readFile(join('systemd', unit), 'utf8');
    for (const line of ['Type=notify', 'NotifyAccess=all', 'KillMode=mixed', 'Restart=on-failure', 'DeviceAllow=/dev/net/tun rw', 'NoNewPrivileges=yes', 'ProtectSystem=strict']) {
      expect(text.split('\n')).toContain(line);
    }
    expect(text).toMatch(/^WatchdogSec=\d+s$/m);
    expect(text).toMatch(/^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
    expect(text).not.toMatch(/^MemoryDenyWriteExecute/m);
  });

  it('the agent unit has an exposure of 4.0 or less in systemd-analyze security', async () => {
    const r = await sh('systemd-analyze', ['security', '--offline=true', `--root=${root.path}`, join(root.path, 'etc/systemd/system/mvpn-client.service')], { allowFail: true });
    const m = /Overall exposure level for mvpn-client\.service: ([\d.]+)/.exec(r.stdout + r.stderr);
    expect(m, r.stdout + r.stderr).not.toBeNull();
    expect(Number(m![1])).toBeLessThanOrEqual(4.0);
  });
});
