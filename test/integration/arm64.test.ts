/**
 * The linux-arm64 executable and its packages (issue 18), built by
 * ./build.sh on this x86-64 machine and run under qemu-user. One arm64
 * Debian root (debootstrap --foreign, second stage under qemu through
 * binfmt_misc; cached like the amd64 root, test/helpers/clean-root.ts)
 * serves twice: its libraries are the C/C++ runtime for
 * `qemu-aarch64-static -L ROOT dist/mvpn-client-linux-arm64` (qemu called
 * directly), and the .deb installs into it with dpkg, where the installed
 * `mvpn-client --version` runs. The bundle it verifies and the server state
 * it plans against are made by the x64 executable, as on a mixed testbed.
 */
import { createHash } from 'node:crypto';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VERSION } from '../../src/version.ts';
import { cleanRoot, ensureForeignBinfmt, type CleanRoot } from '../helpers/clean-root.ts';
import { sh, type ExecResult } from '../helpers/netns.ts';
import { tmpDir } from '../helpers/tmp.ts';

const X64 = 'dist/mvpn-client';
const ARM = 'dist/mvpn-client-linux-arm64';
const QEMU = 'qemu-aarch64-static';
const LONG = 60 * 60_000;

let tmp: { path: string; remove: () => Promise<void> };
let root: CleanRoot;

/** The arm64 executable under emulation, arm64's libraries from the root, with a clean environment. */
function arm(args: readonly string[], opts: { allowFail?: boolean } = {}): Promise<ExecResult> {
  return sh('env', ['-i', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin', QEMU, '-L', root.path, ARM, ...args], { timeoutMs: 300_000, ...opts });
}

async function x64(...args: string[]): Promise<string> {
  return (await sh(X64, args, { timeoutMs: 120_000 })).stdout;
}

beforeAll(async () => {
  for (const f of [X64, ARM]) {
    if ((await sh('test', ['-x', f], { allowFail: true })).code !== 0) throw new Error(`${f} is missing: run ./build.sh first (it builds both executables)`);
  }
  if ((await sh('sh', ['-c', `command -v ${QEMU}`], { allowFail: true })).code !== 0) {
    throw new Error(`${QEMU} is missing: apt-get install qemu-user-static (build.sh does this)`);
  }
  tmp = await tmpDir('arm64');
  root = await cleanRoot('arm64root', { arch: 'arm64' });
}, LONG);

afterAll(async () => {
  await root?.remove();
  await tmp?.remove();
}, LONG);

describe('the linux-arm64 executable under qemu-user', () => {
  it('is an ARM aarch64 ELF executable, and the x64 one keeps its name and architecture', async () => {
    expect((await sh('file', ['-b', ARM])).stdout).toMatch(/ELF 64-bit LSB .*ARM aarch64/);
    expect((await sh('file', ['-b', X64])).stdout).toMatch(/ELF 64-bit LSB .*x86-64/);
  });

  it('--version', async () => {
    expect((await arm(['--version'])).stdout.trim()).toBe(VERSION);
  }, 300_000);

  it('verify accepts a real bundle exported by the x64 server and rejects a tampered one', async () => {
    const state = join(tmp.path, 'state');
    const init = JSON.parse(await x64('server', 'init', '--state-dir', state, '--hostname', 'vpn.example.org', '--address', '192.0.2.10', '--json')) as { trust_anchor: string };
    const anchor = init.trust_anchor;
    await x64('server', 'network', 'create', 'lan', '--state-dir', state);
    await x64('server', 'node', 'add', 'n1', '--network', 'lan', '--state-dir', state);
    const bundle = join(tmp.path, 'n1.tar.gz');
    const { membership } = JSON.parse(await x64('server', 'export', 'n1', '--network', 'lan', '--out', bundle, '--state-dir', state, '--json')) as { membership: string };
    const ok = await arm(['verify', bundle, '--anchor', anchor, '--node', 'n1', '--membership', membership], { allowFail: true });
    expect(ok.code, ok.stderr + ok.stdout).toBe(0);
    const bytes = await readFile(bundle);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    await writeFile(join(tmp.path, 'tampered.tar.gz'), bytes);
    const bad = await arm(['verify', join(tmp.path, 'tampered.tar.gz'), '--anchor', anchor, '--node', 'n1'], { allowFail: true });
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/rejected: MVPN_BUNDLE_/);
  }, 600_000);

  it('server plan prints the same plan as the x64 executable', async () => {
    const experiment = 'test/fixtures/experiment-public-private.json';
    const r = await arm(['server', 'plan', experiment, '--json'], { allowFail: true });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(JSON.parse(await x64('server', 'plan', experiment, '--json')));
  }, 300_000);

  it('the agent (its own asset agent.cjs, no code cache on arm64) names what is wrong in its config, as the x64 one does', async () => {
    const config = join(tmp.path, 'agent-config.json');
    await writeFile(config, '{}\n');
    const r = await arm(['run', '--config', config], { allowFail: true });
    const want = await sh(X64, ['run', '--config', config], { allowFail: true, timeoutMs: 120_000 });
    expect(r.stderr).toMatch(/\[MVPN_CONFIG_INVALID\]/);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: want.code, stderr: want.stderr });
  }, 300_000);

  it('status exits 3 when no daemon runs', async () => {
    const r = await arm(['status', '--runtime-dir', join(tmp.path, 'no-daemon')], { allowFail: true });
    expect(r.code, r.stderr).toBe(3);
  }, 300_000);
});

describe('the arm64 packages', () => {
  let deb: string;

  beforeAll(async () => {
    // dpkg and the maintainer scripts are the root's own arm64 programs
    await ensureForeignBinfmt('arm64');
    const built = await sh('env', ['MVPN_LINTIAN=0', `MVPN_DEB_WORKDIR=${join(tmp.path, 'debwork')}`, 'MVPN_TWIN=' + X64, 'packaging/build-deb.sh', ARM, join(tmp.path, 'out')], { timeoutMs: LONG });
    deb = built.stdout.trim();
  }, LONG);

  it('the .deb is for arm64 and carries the arm64 executable', async () => {
    expect(deb).toMatch(new RegExp(`mvpn-client_${VERSION.replaceAll('.', '\\.')}_arm64\\.deb$`));
    expect((await sh('dpkg-deb', ['-f', deb, 'Architecture'])).stdout.trim()).toBe('arm64');
    const ex = join(tmp.path, 'deb-x');
    await sh('dpkg-deb', ['-x', deb, ex]);
    expect(await sh('cmp', [join(ex, 'usr/bin/mvpn-client'), ARM], { allowFail: true })).toMatchObject({ code: 0 });
  });

  it('installs with dpkg -i into an arm64 Debian root, where mvpn-client --version runs', async () => {
    expect((await root.run('dpkg', ['--print-architecture'])).stdout.trim()).toBe('arm64');
    await copyFile(deb, join(root.path, 'tmp/mvpn-client.deb'));
    const r = await root.run('dpkg', ['-i', '/tmp/mvpn-client.deb'], { allowFail: true, timeoutMs: LONG });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const v = await root.run('mvpn-client', ['--version'], { allowFail: true, timeoutMs: 300_000 });
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout.trim()).toBe(VERSION);
  }, LONG);

  it('the .rpm is for aarch64 and carries the arm64 executable', async () => {
    const built = await sh('env', [`MVPN_RPM_WORKDIR=${join(tmp.path, 'rpmwork')}`, 'MVPN_TWIN=' + X64, 'packaging/build-rpm.sh', ARM, join(tmp.path, 'out')], { timeoutMs: LONG });
    const rpm = built.stdout.trim();
    expect(rpm).toMatch(/\.aarch64\.rpm$/);
    expect((await sh('rpm', ['-qp', '--qf', '%{ARCH}', rpm])).stdout).toBe('aarch64');
    // the packaged file's digest (sha256) is the arm64 executable's
    const digests = (await sh('rpm', ['-qp', '--qf', '[%{FILENAMES} %{FILEDIGESTS}\n]', rpm])).stdout;
    const want = createHash('sha256').update(await readFile(ARM)).digest('hex');
    expect(digests).toContain(`/usr/bin/mvpn-client ${want}`);
  }, LONG);
});
