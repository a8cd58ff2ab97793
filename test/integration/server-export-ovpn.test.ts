/**
 * `server export --format ovpn` (issue 18) through the CLI on a real store:
 * one standalone profile per node with real trust material inline (the
 * certificate is for the inline key and signed by the inline CA, the CRL is
 * the network's current one and lists the certificate it superseded),
 * written 0600, no bundle or document beside it; the membership is recorded
 * as agentless (node list, --json and the table) until the node enrolls or
 * gets a bundle export again; `--all --out-dir` writes NODE.ovpn for every
 * member; revoke works for an agentless node. That a stock openvpn joins
 * with the profile is test/e2e/agentless.test.ts.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCrl } from '../../src/pki/crl.ts';
import { normaliseSerial } from '../../src/pki/common.ts';
import { certMatchesKey, verifyCert } from '../../src/pki/verify.ts';
import { makeServer, type TestServer } from '../helpers/server-fixtures.ts';

let srv: TestServer;

/** The body of `<tag>…</tag>` in a profile. */
function block(profile: string, tag: string): string {
  const m = new RegExp(`^<${tag}>\\n([\\s\\S]*?)</${tag}>$`, 'm').exec(profile);
  if (!m) throw new Error(`no <${tag}> block`);
  return m[1]!;
}

type Listed = { node: string; memberships: { network: string; agentless: boolean; key_origin: string | null; cert_serial: string | null; state: string }[] }[];
const membershipOf = async (node: string) => (await srv.json<Listed>(['node', 'list', '--network', 'lan'])).find((e) => e.node === node)!.memberships[0]!;

beforeAll(async () => {
  srv = await makeServer({ label: 'ovpn' });
  await srv.run(['network', 'create', 'lan']);
  for (const n of ['n1', 'n2', 'n3']) await srv.run(['node', 'add', n, '--network', 'lan']);
}, 120_000);

afterAll(async () => srv?.remove());

describe('server export --format ovpn', () => {
  it('writes one inline profile with real material and records the node as agentless', async () => {
    // a bundle export first, so the profile's export supersedes a certificate
    await srv.run(['export', 'n1', '--network', 'lan', '--out', join(srv.dir, 'n1.tar.gz')]);
    const first = await membershipOf('n1');
    expect(first).toMatchObject({ agentless: false, key_origin: 'central' });

    const out = join(srv.dir, 'n1.ovpn');
    const r = await srv.json<Record<string, unknown>>(['export', 'n1', '--network', 'lan', '--format', 'ovpn', '--out', out]);
    expect(r).toMatchObject({ node: 'n1', network: 'lan', format: 'ovpn', profile: out, agentless: true, key_origin: 'central' });
    expect(r['membership']).toBeUndefined();
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    await expect(stat(join(srv.dir, 'n1.membership.json'))).resolves.toBeDefined(); // the earlier bundle export's, untouched
    const profile = await readFile(out, 'utf8');
    expect(profile).toMatch(/^remote 127\.0\.0\.1 \d+$/m);

    const ca = block(profile, 'ca');
    const cert = block(profile, 'cert');
    expect(await certMatchesKey(cert, block(profile, 'key'))).toBe(true);
    await expect(verifyCert({ certPem: cert, caCertPem: ca, usage: 'client', now: new Date(), expectCn: 'n1' })).resolves.toBeDefined();
    expect(block(profile, 'tls-crypt-v2')).toMatch(/^-----BEGIN OpenVPN tls-crypt-v2 client key-----\n/);
    const crl = await checkCrl({ crlPem: block(profile, 'crl-verify'), caCertPem: ca, now: new Date() });
    expect(crl.revokedSerials).toContain(normaliseSerial(first.cert_serial!));

    const now = await membershipOf('n1');
    expect(now).toMatchObject({ agentless: true, key_origin: 'central', state: 'active' });
    expect(now.cert_serial).not.toBe(first.cert_serial);
    expect((await srv.run(['node', 'list'])).out).toMatch(/^n1\s+lan\s+\S+\s+active\s+no\s+agentless\s*$/m);
    expect((await srv.run(['node', 'list'])).out).toMatch(/^n2\s+lan\s+\S+\s+pending\s+no\s+agent\s*$/m);
  });

  it('--all --out-dir writes NODE.ovpn for every member; a later bundle export makes a node an agent node again', async () => {
    const dir = join(srv.dir, 'profiles');
    const rs = await srv.json<{ node: string; profile: string }[]>(['export', '--all', '--network', 'lan', '--format', 'ovpn', '--out-dir', dir]);
    expect(rs.map((x) => x.node)).toEqual(['n1', 'n2', 'n3']);
    expect((await readdir(dir)).sort()).toEqual(['n1.ovpn', 'n2.ovpn', 'n3.ovpn']);
    for (const n of ['n1', 'n2', 'n3']) expect(await membershipOf(n)).toMatchObject({ agentless: true });
    await srv.run(['export', 'n3', '--network', 'lan', '--out', join(srv.dir, 'n3.tar.gz')]);
    expect(await membershipOf('n3')).toMatchObject({ agentless: false });
  });

  it('revoke works for an agentless node: revoked, and its certificate is on the CRL of a fresh export of another node', async () => {
    const before = await membershipOf('n2');
    await srv.run(['node', 'revoke', 'n2', '--network', 'lan']);
    expect(await membershipOf('n2')).toMatchObject({ state: 'revoked', agentless: true });
    const out = join(srv.dir, 'n1-again.ovpn');
    await srv.run(['export', 'n1', '--network', 'lan', '--format', 'ovpn', '--out', out]);
    const profile = await readFile(out, 'utf8');
    const crl = await checkCrl({ crlPem: block(profile, 'crl-verify'), caCertPem: block(profile, 'ca'), now: new Date() });
    expect(crl.revokedSerials).toContain(normaliseSerial(before.cert_serial!));
  });
});
