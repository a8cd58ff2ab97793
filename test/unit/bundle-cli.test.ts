/**
 * `mvpn-client verify` through the real CLI entry (main with buffers): it
 * explains a good bundle, names the code and reason for a bad one, and its
 * exit code is 0 only when the bundle is acceptable (1 rejected, 2 usage).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { anchorToString, generateSigningKey } from '../../src/bundle/sign.ts';
import { main } from '../../src/cli/main.ts';
import { bufferIo } from '../../src/cli/io.ts';
import type { VerifyReport } from '../../src/cli/verify.ts';
import { DAY, makeBundle, makeBundleFixture, makeMembership, makeSpec } from '../helpers/bundle-fixtures.ts';
import { rawBundle } from '../helpers/adversarial/raw-bundle.ts';
import { tmpDir } from '../helpers/tmp.ts';

const f = await makeBundleFixture();
const dir = await tmpDir('verify-cli');
afterAll(() => dir.remove());
const good = await makeBundle(f);
const goodPath = join(dir.path, 'lab1-1.tar.gz');
await writeFile(goodPath, good.bytes);
const anchor = anchorToString(f.signingKey);
const anchorFile = join(dir.path, 'anchor');
await writeFile(anchorFile, `${anchor}\n`);
const membershipPath = join(dir.path, 'membership.json');
await writeFile(membershipPath, makeMembership(f, [{ bundle: good }]));
const now = f.now.toISOString();

async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = bufferIo();
  const code = await main(['verify', ...args], io);
  return { code, out: io.out(), err: io.err() };
}

async function file(name: string, data: Buffer): Promise<string> {
  const p = join(dir.path, name);
  await writeFile(p, data);
  return p;
}

describe('mvpn-client verify', () => {
  test('a good bundle: exit 0 and a report of what it holds', async () => {
    const r = await run(goodPath, '--anchor', anchor, '--node', f.nodeId, '--now', now);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^network\s+lab1 {2}version 1$/m);
    expect(r.out).toMatch(/^key origin\s+node$/m);
    expect(r.out).toMatch(/^node cert\s+CN pc101, serial [0-9a-f]+, valid .* to .*$/m);
    expect(r.out).toMatch(/^CRL\s+next update \S+, 0 revoked$/m);
    expect(r.out).toMatch(/^files\s+ca\.crt \(\d+\), crl\.pem/m);
    expect(r.out).toMatch(/^result\s+acceptable$/m);
    expect(r.out).not.toContain('unverified');
  });

  test('the anchor may be a file; the membership document binds the bundle', async () => {
    const r = await run(goodPath, '--anchor', anchorFile, '--node', f.nodeId, '--membership', membershipPath, '--now', now);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^membership\s+serial 1, expires \S+, lists lab1 version 1$/m);
  });

  test('--json prints the report object', async () => {
    const r = await run(goodPath, '--anchor', anchor, '--node', f.nodeId, '--json', '--now', now);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as VerifyReport;
    expect(report).toMatchObject({ acceptable: true, verified: true, bundle: { size: good.size, sha256: good.sha256 }, manifest: { network: 'lab1', version: 1 }, cert: { cn: 'pc101' } });
    expect(report.files?.map((x) => x.name)).toContain('manifest.sig');
  });

  test.each<[string, () => Promise<string[]>, string]>([
    ['expired at --now', async () => [goodPath, '--anchor', anchor, '--node', f.nodeId, '--now', new Date(f.now.getTime() + 30 * DAY).toISOString()], 'MVPN_BUNDLE_EXPIRED'],
    ['for another node', async () => [goodPath, '--anchor', anchor, '--node', 'pc102', '--now', now], 'MVPN_BUNDLE_WRONG_NODE'],
    ['signed by another key', async () => [goodPath, '--anchor', anchorToString(generateSigningKey()), '--node', f.nodeId, '--now', now], 'MVPN_SIGNATURE_INVALID'],
    ['with a forbidden extra option', async () => [await file('opt.tgz', rawBundle(f, { spec: { ...makeSpec('lab1'), extra_options: [['up', '/bin/sh']] } })), '--anchor', anchor, '--node', f.nodeId, '--now', now], 'MVPN_OPTION_FORBIDDEN'],
    ['not the bundle the membership document names', async () => [await file('other.tgz', await makeBundle(f, { version: 2 }).then((b) => b.bytes)), '--anchor', anchor, '--node', f.nodeId, '--membership', membershipPath, '--now', now], 'MVPN_BUNDLE_'],
    ['a symlink inside', async () => [await file('link.tgz', rawBundle(f, { entries: (b) => [...b, { name: 'node.key', type: '2', linkname: '/etc/shadow' }] })), '--anchor', anchor, '--node', f.nodeId, '--now', now], 'MVPN_BUNDLE_UNSAFE_ENTRY'],
  ])('rejected (%s): exit 1 with the code and a one-line reason', async (_n, args, code) => {
    const r = await run(...(await args()));
    expect(r.code).toBe(1);
    const result = r.out.split('\n').find((l) => l.startsWith('result'));
    expect(result).toMatch(new RegExp(`^result\\s+rejected: ${code}\\S*: .+$`));
  });

  test('a rejected bundle still shows what it claims, marked unverified', async () => {
    const r = await run(goodPath, '--anchor', anchorToString(generateSigningKey()), '--node', f.nodeId, '--now', now);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^network\s+lab1 {2}version 1 {2}\(unverified\)$/m);
    const j = JSON.parse((await run(goodPath, '--anchor', anchorToString(generateSigningKey()), '--node', f.nodeId, '--now', now, '--json')).out) as VerifyReport;
    expect(j).toMatchObject({ acceptable: false, verified: false, error: { code: 'MVPN_SIGNATURE_INVALID' }, manifest: { network: 'lab1' } });
    expect(j.cert).toBeUndefined();
  });

  test.each<[string, string[]]>([
    ['no --anchor', [goodPath, '--node', 'pc101']],
    ['no --node', [goodPath, '--anchor', anchor]],
    ['an anchor that is not one', [goodPath, '--anchor', 'ed25519:AAAA', '--node', 'pc101']],
    ['an anchor file that does not exist', [goodPath, '--anchor', join(dir.path, 'nope'), '--node', 'pc101']],
    ['a bundle file that does not exist', [join(dir.path, 'missing.tgz'), '--anchor', anchor, '--node', 'pc101']],
    ['a bad --now', [goodPath, '--anchor', anchor, '--node', 'pc101', '--now', 'yesterday']],
    ['a bad node id', [goodPath, '--anchor', anchor, '--node', '../x']],
  ])('usage error (%s): exit 2', async (_n, args) => {
    const r = await run(...args);
    expect(r.code).toBe(2);
    expect(r.err).not.toBe('');
  });
});
