/**
 * Atomic install on a real file system: layout and modes, version switches,
 * a failure injected before every step (and a real full disk on a tiny
 * tmpfs) leaving the previous install byte-identical with no partial
 * directory, leftovers of a crashed install swept, and on-disk tampering of
 * every kind reported by readInstalled.
 */
import { execFile } from 'node:child_process';
import { appendFile, chmod, link, lstat, mkdir, readdir, readFile, readlink, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, test } from 'vitest';
import { installBundle, listInstalled, readInstalled, removeInstalled, shareInstalled, type InstallStep } from '../../src/bundle/install.ts';
import { ensureOpenvpnUser } from '../../src/openvpn/unpriv.ts';
import { verifyBundle, type VerifiedBundle } from '../../src/bundle/verify.ts';
import { MvpnError } from '../../src/errors.ts';
import { createCrl } from '../../src/pki/crl.ts';
import { caCn, serverCn } from '../../src/bundle/names.ts';
import { DAY, HOUR, bundleInput, makeBundleFixture, makeSpec, testRenderer } from '../helpers/bundle-fixtures.ts';
import { makeTestPki } from '../helpers/pki-fixtures.ts';
import { buildBundle } from '../../src/bundle/build.ts';
import { snapshotTree, treeHash } from '../helpers/adversarial/snapshot.ts';
import { tmpDir } from '../helpers/tmp.ts';

const execFileP = promisify(execFile);
const f = await makeBundleFixture();
const root = await tmpDir('install');
afterAll(() => root.remove());
/** The node's own key (identity.ts keeps it in <state>/identity); installs of key_origin "node" copy it. */
const NODE_KEY = join(root.path, 'node.key');
await writeFile(NODE_KEY, f.pki.clients[f.nodeId]!.keyPem, { mode: 0o600 });

let n = 0;
async function freshState(): Promise<string> {
  const d = join(root.path, `s${++n}`);
  await mkdir(d);
  return d;
}

async function verified(o: Parameters<typeof bundleInput>[1] = {}, input = bundleInput(f, o)): Promise<VerifiedBundle> {
  const b = await buildBundle(input);
  return verifyBundle(b.bytes, { anchor: f.anchor, nodeId: f.nodeId, now: f.now });
}

const install = (b: VerifiedBundle, stateDir: string, beforeStep?: (s: InstallStep) => void) =>
  installBundle(b, { stateDir, nodeKeyPath: NODE_KEY, render: testRenderer(), ...(beforeStep ? { beforeStep } : {}) });

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (err) {
    return err instanceof MvpnError ? err.code : `not an MvpnError: ${String(err)}`;
  }
  return undefined;
}

const v1 = await verified();
const v2 = await verified({ version: 2 });

describe('install layout', () => {
  test('a fresh 0710 version directory behind a symlink; keys and crl.pem 0640 (openvpn re-reads them after dropping root), the rest 0644; the node key copied in; config through the stable path', async () => {
    const s = await freshState();
    const inst = await install(v1, s);
    const nets = join(s, 'networks');
    expect(((await lstat(nets)).mode & 0o777).toString(8)).toBe('710');
    const target = await readlink(join(nets, f.network));
    expect(target).toMatch(/^\.lab1\.1\.[0-9a-f]{12}$/);
    expect(inst.versionDir).toBe(join(nets, target));
    expect(((await lstat(inst.versionDir)).mode & 0o777).toString(8)).toBe('710');
    const modes: Record<string, string> = {};
    for (const name of await readdir(inst.versionDir)) modes[name] = ((await lstat(join(inst.versionDir, name))).mode & 0o7777).toString(8);
    expect(modes).toEqual({
      'ca.crt': '644',
      'crl.pem': '640',
      'install.json': '644',
      'manifest.json': '644',
      'manifest.sig': '644',
      'network.json': '644',
      'node.crt': '644',
      'node.key': '640',
      'openvpn.conf': '644',
      'tls-crypt-v2.key': '640',
    });
    for (const name of await readdir(inst.versionDir)) expect((await lstat(join(inst.versionDir, name))).uid).toBe(process.getuid!());
    const conf = await readFile(inst.configPath, 'utf8');
    expect(conf).toContain(`crl-verify ${join(s, 'networks', 'lab1', 'crl.pem')}\n`);
    // every file openvpn loads is under the stable path, so a renewal (new cert, new key) renders the same config
    expect(conf).toContain(`key ${join(s, 'networks', 'lab1', 'node.key')}\n`);
    expect(await readFile(join(inst.versionDir, 'node.key'), 'utf8')).toBe(await readFile(NODE_KEY, 'utf8'));
    expect([inst.paths.key, inst.keySource]).toEqual([join(s, 'networks', 'lab1', 'node.key'), NODE_KEY]);
    const back = await readInstalled(s, f.network, { anchor: f.anchor });
    expect(back).toMatchObject({ network: 'lab1', version: 1, sha256: v1.sha256, configPath: inst.configPath, keySource: NODE_KEY, configSha256: inst.configSha256 });
  });

  test('an install made before the key was copied (config naming the node key itself) is still read, with that key', async () => {
    const s = await freshState();
    const inst = await install(v1, s);
    await unlink(join(inst.versionDir, 'node.key'));
    const record = JSON.parse(await readFile(join(inst.versionDir, 'install.json'), 'utf8')) as Record<string, unknown>;
    delete record['key_sha256'];
    await unlink(join(inst.versionDir, 'install.json'));
    await writeFile(join(inst.versionDir, 'install.json'), JSON.stringify(record), { mode: 0o644 });
    const back = await readInstalled(s, 'lab1');
    expect([back?.paths.key, back?.keySource]).toEqual([NODE_KEY, NODE_KEY]);
  });

  test('a node key that cannot be read fails the install before anything is written', async () => {
    const s = await freshState();
    const err = await installBundle(v1, { stateDir: s, nodeKeyPath: join(root.path, 'missing.key'), render: testRenderer() }).catch((e: unknown) => e);
    expect((err as MvpnError).code).toBe('MVPN_BUNDLE_INSTALL_FAILED');
    expect((err as MvpnError).message).toContain('missing.key');
    expect(await readdir(s)).toEqual([]);
  });

  test('a central-key bundle uses its own node.key (0640)', async () => {
    const s = await freshState();
    const inst = await install(await verified({ central: true }), s);
    expect(inst.paths.key).toBe(join(s, 'networks', 'lab1', 'node.key'));
    expect(((await lstat(join(inst.versionDir, 'node.key'))).mode & 0o777).toString(8)).toBe('640');
  });

  test('key_origin node without a node key path is refused before anything is written', async () => {
    const s = await freshState();
    expect(await codeOf(installBundle(v1, { stateDir: s, render: testRenderer() }))).toBe('MVPN_BUNDLE_INSTALL_FAILED');
    expect(await readdir(s)).toEqual([]);
  });

  test('an upgrade switches the symlink and removes the old version directory', async () => {
    const s = await freshState();
    const a = await install(v1, s);
    const b = await install(v2, s);
    expect(b.version).toBe(2);
    expect((await readdir(join(s, 'networks'))).sort()).toEqual([`.${b.versionDir.split('.').slice(-3).join('.')}`, 'lab1'].sort());
    await expect(lstat(a.versionDir)).rejects.toThrow();
    expect((await readInstalled(s, 'lab1'))?.version).toBe(2);
  });

  test('a CRL-only update renders the identical openvpn.conf (the running openvpn picks up the new CRL through the stable path)', async () => {
    const s = await freshState();
    const a = await install(v1, s);
    const before = await readFile(a.configPath, 'utf8');
    const crl = await createCrl({ ca: f.pki.ca, revoked: [], thisUpdate: new Date(f.now.getTime() - HOUR), nextUpdate: new Date(f.now.getTime() + 14 * DAY), crlNumber: 9 });
    const b = await install(await verified({ version: 2 }, { ...bundleInput(f, { version: 2 }), crlPem: crl }), s);
    expect(await readFile(b.configPath, 'utf8')).toBe(before);
    expect(await readFile(join(s, 'networks', 'lab1', 'crl.pem'), 'utf8')).toBe(crl);
  });
});

describe('failures leave the previous install byte-identical', () => {
  test.each<InstallStep>(['mkdir', 'write', 'render', 'fsync', 'switch'])('failure before step "%s"', async (step) => {
    const s = await freshState();
    await install(v1, s);
    const before = await snapshotTree(s);
    const err = await install(v2, s, (at) => {
      if (at === step) throw new Error(`injected failure at ${at}`);
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MvpnError);
    expect((err as MvpnError).code).toBe('MVPN_BUNDLE_INSTALL_FAILED');
    expect(await snapshotTree(s)).toEqual(before);
    expect((await readInstalled(s, 'lab1'))?.version).toBe(1);
  });

  test('a failure during cleanup (after the switch) still reports success; the next install sweeps', async () => {
    const s = await freshState();
    const a = await install(v1, s);
    const b = await install(v2, s, (at) => {
      if (at === 'cleanup') throw new Error('injected');
    });
    expect((await readInstalled(s, 'lab1'))?.version).toBe(2);
    await expect(lstat(a.versionDir)).resolves.toBeDefined();
    await install(v1, s);
    await expect(lstat(a.versionDir)).rejects.toThrow();
    await expect(lstat(b.versionDir)).rejects.toThrow();
  });

  test('a renderer that throws keeps its own error code', async () => {
    const s = await freshState();
    await install(v1, s);
    const before = await treeHash(s);
    const err = await installBundle(v2, {
      stateDir: s,
      nodeKeyPath: NODE_KEY,
      render: (spec, dir, files) => testRenderer()(spec, dir, { ...files, ca: 'relative/path' }),
    }).catch((e: unknown) => e);
    expect((err as MvpnError).code).toBe('MVPN_OPTION_INVALID');
    expect(await treeHash(s)).toBe(before);
  });

  test('a real full disk (a 64 KiB tmpfs) fails the install cleanly', async () => {
    const mnt = join(root.path, 'tiny');
    await mkdir(mnt);
    await execFileP('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', mnt]);
    try {
      await install(v1, mnt);
      const before = await snapshotTree(mnt);
      // Fill the disk so the next version cannot be written completely.
      await writeFile(join(mnt, 'filler'), Buffer.alloc(1 << 20)).catch(() => undefined);
      const withFiller = await snapshotTree(mnt);
      const err = await install(v2, mnt).catch((e: unknown) => e);
      expect((err as MvpnError).code).toBe('MVPN_BUNDLE_INSTALL_FAILED');
      expect(String((err as MvpnError).message)).toMatch(/ENOSPC|no space/i);
      expect(await snapshotTree(mnt)).toEqual(withFiller);
      await rm(join(mnt, 'filler'));
      expect(await snapshotTree(mnt)).toEqual(before);
      expect((await readInstalled(mnt, 'lab1'))?.version).toBe(1);
    } finally {
      await execFileP('umount', [mnt]).catch(() => execFileP('umount', ['-l', mnt]));
    }
  });

  test('with the openvpn user, crl.pem, the keys and the directories above them belong to its group; an install made before openvpn dropped root (0700, crl.pem 0644, keys 0600) is still read and shareInstalled brings it to the new modes', async () => {
    const who = await ensureOpenvpnUser();
    if (who === undefined) return; // not root: nothing is shared (the integration tests run as root)
    const s = await freshState();
    const shared = await installBundle(v1, { stateDir: s, nodeKeyPath: NODE_KEY, render: testRenderer(), openvpnUser: who });
    for (const p of [join(s, 'networks'), shared.versionDir, ...['crl.pem', 'node.key', 'tls-crypt-v2.key'].map((n) => join(shared.versionDir, n))]) {
      expect((await lstat(p)).gid, p).toBe(who.gid);
    }
    expect((await lstat(join(shared.versionDir, 'node.crt'))).gid).toBe(0);

    const old = await freshState();
    const inst = await install(v1, old);
    await chmod(inst.versionDir, 0o700);
    await chmod(join(inst.versionDir, 'crl.pem'), 0o644);
    for (const n of ['node.key', 'tls-crypt-v2.key']) await chmod(join(inst.versionDir, n), 0o600);
    const back = await readInstalled(old, 'lab1');
    expect(back?.version).toBe(1);
    await shareInstalled(old, back!, who);
    expect((await lstat(inst.versionDir)).mode & 0o7777).toBe(0o710);
    for (const n of ['crl.pem', 'node.key', 'tls-crypt-v2.key']) {
      const st = await lstat(join(inst.versionDir, n));
      expect({ n, mode: st.mode & 0o7777, gid: st.gid }).toEqual({ n, mode: 0o640, gid: who.gid });
    }
    expect((await readInstalled(old, 'lab1'))?.version).toBe(1);
  });

  test('leftovers of a crashed install (partial version dir, temporary link) are swept by the next install', async () => {
    const s = await freshState();
    await install(v1, s);
    const nets = join(s, 'networks');
    await mkdir(join(nets, '.lab1.7.0123456789ab'), { mode: 0o700 });
    await writeFile(join(nets, '.lab1.7.0123456789ab', 'ca.crt'), 'half');
    await symlink('.lab1.7.0123456789ab', join(nets, '.lab1.link.0123456789ab'));
    await mkdir(join(nets, '.lab10.1.0123456789ab'));
    await install(v2, s);
    const names = await readdir(nets);
    expect(names).not.toContain('.lab1.7.0123456789ab');
    expect(names).not.toContain('.lab1.link.0123456789ab');
    expect(names).toContain('.lab10.1.0123456789ab');
  });
});

describe('readInstalled detects tampering on disk', () => {
  const cases: [string, (dir: string, s: string) => Promise<void>, string][] = [
    ['a bundle file changed', (d) => appendFile(join(d, 'ca.crt'), '\n'), 'MVPN_BUNDLE_FILE_HASH_MISMATCH'],
    ['openvpn.conf changed', (d) => appendFile(join(d, 'openvpn.conf'), 'up /bin/sh\n'), 'MVPN_BUNDLE_FILE_HASH_MISMATCH'],
    ['manifest.json changed', (d) => appendFile(join(d, 'manifest.json'), ' '), 'MVPN_BUNDLE_FILE_HASH_MISMATCH'],
    ['a file removed', (d) => unlink(join(d, 'crl.pem')), 'MVPN_BUNDLE_FILE_MISSING'],
    ['a file added', (d) => writeFile(join(d, 'extra'), 'x', { mode: 0o644 }), 'MVPN_BUNDLE_FILE_UNLISTED'],
    ['a key made world-readable', (d) => chmod(join(d, 'tls-crypt-v2.key'), 0o644), 'MVPN_BUNDLE_INSTALL_FAILED'],
    ['the copied node key made world-readable', (d) => chmod(join(d, 'node.key'), 0o644), 'MVPN_BUNDLE_INSTALL_FAILED'],
    ['the copied node key changed', (d) => appendFile(join(d, 'node.key'), '\n'), 'MVPN_BUNDLE_FILE_HASH_MISMATCH'],
    ['the copied node key removed', (d) => unlink(join(d, 'node.key')), 'MVPN_BUNDLE_FILE_MISSING'],
    ['the version directory opened up', (d) => chmod(d, 0o755), 'MVPN_BUNDLE_INSTALL_FAILED'],
    [
      'a file replaced by a symlink',
      async (d) => {
        await unlink(join(d, 'crl.pem'));
        await symlink('/etc/hostname', join(d, 'crl.pem'));
      },
      'MVPN_BUNDLE_UNSAFE_ENTRY',
    ],
    ['a file hard-linked elsewhere', (d, s) => link(join(d, 'ca.crt'), join(s, 'ca-copy')), 'MVPN_BUNDLE_UNSAFE_ENTRY'],
    [
      'the network symlink retargeted outside',
      async (_d, s) => {
        await unlink(join(s, 'networks', 'lab1'));
        await symlink('/etc', join(s, 'networks', 'lab1'));
      },
      'MVPN_BUNDLE_INSTALL_FAILED',
    ],
    [
      'the network link replaced by a directory',
      async (_d, s) => {
        await unlink(join(s, 'networks', 'lab1'));
        await mkdir(join(s, 'networks', 'lab1'));
      },
      'MVPN_BUNDLE_INSTALL_FAILED',
    ],
    ['the version directory removed', (d) => rm(d, { recursive: true }), 'MVPN_BUNDLE_FILE_MISSING'],
  ];
  test.each(cases)('%s', async (_n, tamper, code) => {
    const s = await freshState();
    const inst = await install(v1, s);
    await tamper(inst.versionDir, s);
    expect(await codeOf(readInstalled(s, 'lab1'))).toBe(code);
    const errors: string[] = [];
    expect(await listInstalled(s, { onError: (net, err) => errors.push(`${net}:${(err as MvpnError).code}`) })).toEqual([]);
    expect(errors).toEqual([`lab1:${code}`]);
  });

  test('manifest.sig is re-checked when an anchor is given', async () => {
    const s = await freshState();
    const inst = await install(v1, s);
    await writeFile(join(inst.versionDir, 'manifest.sig'), 'AAAA');
    expect(await readInstalled(s, 'lab1')).toBeDefined();
    expect(await codeOf(readInstalled(s, 'lab1', { anchor: f.anchor }))).toBe('MVPN_SIGNATURE_INVALID');
  });
});

describe('listing and removing', () => {
  test('list several networks; remove one; a missing network is undefined', async () => {
    const s = await freshState();
    await install(v1, s);
    const lab2 = await makeTestPki({ clients: [f.nodeId], serverCn: serverCn('lab2'), caCn: caCn('lab2'), now: f.now });
    await install(await verified({ network: 'lab2', spec: makeSpec('lab2'), pki: lab2 }), s);
    expect((await listInstalled(s)).map((b) => b.network)).toEqual(['lab1', 'lab2']);
    await removeInstalled(s, 'lab1');
    expect(await readInstalled(s, 'lab1')).toBeUndefined();
    expect((await listInstalled(s)).map((b) => b.network)).toEqual(['lab2']);
    expect((await readdir(join(s, 'networks'))).filter((x) => x.includes('lab1'))).toEqual([]);
    await removeInstalled(s, 'lab1');
    expect(await listInstalled(await freshState())).toEqual([]);
  });

  test('a network id that is not one is refused', async () => {
    expect(await codeOf(readInstalled(await freshState(), '../etc'))).toBe('MVPN_SCHEMA_INVALID');
    expect(await codeOf(removeInstalled(await freshState(), '../etc'))).toBe('MVPN_SCHEMA_INVALID');
  });
});
