/**
 * issueCert writes certificates with its own DER writer (src/pki/der.ts)
 * instead of @peculiar/x509's generator. These tests hold it to the
 * library's output: for the same inputs the TBSCertificate is byte for byte
 * what X509CertificateGenerator makes (for RSA, whose PKCS#1 v1.5
 * signatures are deterministic, the whole certificate is), the library and
 * openssl read the same fields, and openssl verifies the chain with the
 * purpose openvpn's `remote-cert-tls` checks.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { createCa, type CaMaterial } from '../../src/pki/ca.ts';
import { issueCert, type CertUsage } from '../../src/pki/cert.ts';
import { childrenOf, encodingOf, oid, readElement, time, unsignedInteger } from '../../src/pki/der.ts';
import { generateKeyPairPem, importSigningKey, signingAlgorithm, type KeyAlg, type KeyPairPem } from '../../src/pki/keys.ts';
import { OID } from '../../src/pki/x509.ts';
// The reference library, loaded the way src/pki/x509.ts loads it.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
x509.cryptoProvider.set(globalThis.crypto);
import { tmpDir } from '../helpers/tmp.ts';

const run = promisify(execFile);

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[A-Z0-9 ]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

/** The TBSCertificate's encoding: the first element of the outer SEQUENCE. */
function tbsOf(der: Buffer): Buffer {
  return encodingOf(der, childrenOf(der, readElement(der, 0))[0]!);
}

interface Case {
  readonly name: string;
  readonly cn: string;
  readonly usage: CertUsage;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly dnsNames?: string[];
  readonly ipAddresses?: string[];
}

const CASES: readonly Case[] = [
  { name: 'node (clientAuth)', cn: 'pc42.exp.proj', usage: 'client', notBefore: new Date('2030-01-01T00:00:00Z'), notAfter: new Date('2031-01-01T00:00:00Z') },
  {
    name: 'server (serverAuth) with DNS, IPv4 and IPv6 subjectAltNames',
    cn: 'mvpn-server-net1',
    usage: 'server',
    notBefore: new Date('2030-01-01T00:00:00Z'),
    notAfter: new Date('2040-01-01T00:00:00Z'),
    dnsNames: ['vpn.example.org', 'metavpn.example'],
    ipAddresses: ['192.0.2.10', '2001:db8::1', '2001:db8:1:2:3:4:5:6'],
  },
  // "_" and "@" are outside PrintableString: the CN becomes a UTF8String.
  { name: 'CN outside PrintableString', cn: 'node_7@exp', usage: 'client', notBefore: new Date('2030-01-01T00:00:00Z'), notAfter: new Date('2031-01-01T00:00:00Z') },
  // After 2049 RFC 5280 needs GeneralizedTime.
  { name: 'notAfter after 2049', cn: 'long-lived', usage: 'server', notBefore: new Date('2049-12-31T23:59:59Z'), notAfter: new Date('2050-01-01T00:00:00Z') },
];

const worlds = new Map<KeyAlg, { ca: CaMaterial; node: KeyPairPem; caCert: x509.X509Certificate }>();

beforeAll(async () => {
  for (const alg of ['ec-p256', 'rsa-2048'] as const) {
    const ca = await createCa({ cn: 'net1 CA', alg, notBefore: new Date('2029-01-01T00:00:00Z'), notAfter: new Date('2060-01-01T00:00:00Z') });
    worlds.set(alg, { ca, node: await generateKeyPairPem(alg), caCert: new x509.X509Certificate(ca.certPem) });
  }
}, 60_000);

/** The same certificate made by @peculiar/x509's generator: the reference the DER writer must match. */
async function reference(alg: KeyAlg, c: Case, serialHex: string): Promise<x509.X509Certificate> {
  const { ca, node, caCert } = worlds.get(alg)!;
  const publicKey = new x509.PublicKey(node.publicKeyPem);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, false),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([c.usage === 'server' ? OID.serverAuth : OID.clientAuth], false),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
  ];
  const san = [...(c.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })), ...(c.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value }))];
  if (san.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(san, false));
  return x509.X509CertificateGenerator.create({
    serialNumber: serialHex,
    subject: new x509.Name([{ CN: [c.cn] }]),
    issuer: caCert.subjectName,
    notBefore: c.notBefore,
    notAfter: c.notAfter,
    publicKey,
    signingKey: (await importSigningKey(ca.keyPem)).cryptoKey,
    signingAlgorithm: signingAlgorithm(alg),
    extensions,
  });
}

async function openssl(args: string[]): Promise<string> {
  return (await run('openssl', args)).stdout;
}

for (const alg of ['ec-p256', 'rsa-2048'] as const) {
  describe(`issueCert matches @peculiar/x509 (${alg})`, () => {
    for (const c of CASES) {
      it(c.name, async () => {
        const { ca, node, caCert } = worlds.get(alg)!;
        const serialHex = '3f066fa8e41176bfaeb93b942c03e3dd';
        const mine = await issueCert({ ca, publicKeyPem: node.publicKeyPem, serialHex, ...c });
        const ref = await reference(alg, c, serialHex);
        const mineDer = pemToDer(mine.certPem);
        const refDer = Buffer.from(ref.rawData);

        expect(mine.serialHex).toBe(serialHex);
        expect(tbsOf(mineDer).toString('hex')).toBe(tbsOf(refDer).toString('hex'));
        // Same signature algorithm after the TBS; RSA PKCS#1 v1.5 is deterministic, so everything is equal.
        if (alg === 'rsa-2048') expect(mineDer.toString('hex')).toBe(refDer.toString('hex'));

        const parsed = new x509.X509Certificate(mineDer);
        expect(await parsed.verify({ publicKey: caCert, signatureOnly: true })).toBe(true);
        expect(parsed.subject).toBe(ref.subject);
        expect(parsed.issuer).toBe(caCert.subject);
        expect(parsed.notBefore.getTime()).toBe(c.notBefore.getTime());
        expect(parsed.notAfter.getTime()).toBe(c.notAfter.getTime());
        expect(parsed.extensions.map((e) => [e.type, e.critical])).toEqual(ref.extensions.map((e) => [e.type, e.critical]));

        // openssl: the same text apart from the signature value, and a chain that verifies for openvpn's purpose.
        const dir = (await tmpDir()).path;
        await writeFile(join(dir, 'ca.pem'), ca.certPem);
        await writeFile(join(dir, 'mine.pem'), mine.certPem);
        await writeFile(join(dir, 'ref.pem'), ref.toString('pem'));
        const text = (f: string) => openssl(['x509', '-noout', '-text', '-certopt', 'no_sigdump', '-in', join(dir, f)]);
        expect(await text('mine.pem')).toBe(await text('ref.pem'));
        const purpose = c.usage === 'server' ? 'sslserver' : 'sslclient';
        // -attime: the cases lie in the future; openssl checks validity at a moment inside the validity period.
        const attime = String(Math.floor((c.notBefore.getTime() + c.notAfter.getTime()) / 2000));
        expect(await openssl(['verify', '-attime', attime, '-purpose', purpose, '-CAfile', join(dir, 'ca.pem'), join(dir, 'mine.pem')])).toContain('mine.pem: OK');
      });
    }
  });
}

describe('DER writer details', () => {
  it('drops fractions of a second (UTCTime and GeneralizedTime are whole seconds)', async () => {
    const { ca, node } = worlds.get('ec-p256')!;
    const notBefore = new Date('2030-01-01T00:00:00.678Z');
    const cert = await issueCert({ ca, publicKeyPem: node.publicKeyPem, cn: 'n1', usage: 'client', notBefore, notAfter: new Date('2055-06-01T12:00:00.999Z') });
    const parsed = new x509.X509Certificate(cert.certPem);
    expect(parsed.notBefore.toISOString()).toBe('2030-01-01T00:00:00.000Z');
    expect(parsed.notAfter.toISOString()).toBe('2055-06-01T12:00:00.000Z');
  });

  it('encodes times, OIDs and integers as X.690 says', () => {
    expect(time(new Date('1950-01-01T00:00:00Z')).toString('latin1').slice(2)).toBe('500101000000Z');
    expect(time(new Date('2049-12-31T23:59:59Z'))[0]).toBe(0x17);
    expect(time(new Date('2050-01-01T00:00:00Z')).toString('latin1').slice(2)).toBe('20500101000000Z');
    expect(time(new Date('1949-12-31T23:59:59Z')).toString('latin1').slice(2)).toBe('19491231235959Z');
    expect(oid('1.2.840.113549.1.1.11').toString('hex')).toBe('06092a864886f70d01010b');
    expect(oid('2.5.29.19').toString('hex')).toBe('0603551d13');
    expect(unsignedInteger(Uint8Array.of(0, 0, 0x80)).toString('hex')).toBe('02020080');
    expect(unsignedInteger(Uint8Array.of(0, 0x7f)).toString('hex')).toBe('02017f');
    expect(unsignedInteger(Uint8Array.of()).toString('hex')).toBe('020100');
  });

  it('uses long-form lengths above 127 bytes (RSA keys, long SAN lists)', async () => {
    const { ca, node } = worlds.get('rsa-2048')!;
    const dnsNames = Array.from({ length: 40 }, (_, i) => `host${i}.example.org`);
    const cert = await issueCert({ ca, publicKeyPem: node.publicKeyPem, cn: 'many', usage: 'server', notBefore: new Date('2030-01-01T00:00:00Z'), notAfter: new Date('2031-01-01T00:00:00Z'), dnsNames });
    const san = new x509.X509Certificate(cert.certPem).getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(san.names.items.map((n) => n.value)).toEqual(dnsNames);
  });

  // @peculiar/x509 2.2.0 itself encodes this form wrongly (it reads "198" as a hex group), so openssl is the judge.
  it('encodes an IPv4-mapped IPv6 address as its 16 bytes', async () => {
    const { ca, node } = worlds.get('ec-p256')!;
    const cert = await issueCert({ ca, publicKeyPem: node.publicKeyPem, cn: 's', usage: 'server', notBefore: new Date('2030-01-01T00:00:00Z'), notAfter: new Date('2031-01-01T00:00:00Z'), ipAddresses: ['::ffff:198.51.100.7', '::', '1::'] });
    const dir = (await tmpDir()).path;
    await writeFile(join(dir, 'c.pem'), cert.certPem);
    const text = await openssl(['x509', '-noout', '-ext', 'subjectAltName', '-in', join(dir, 'c.pem')]);
    expect(text).toContain('IP Address:0:0:0:0:0:FFFF:C633:6407, IP Address:0:0:0:0:0:0:0:0, IP Address:1:0:0:0:0:0:0:0');
  });

  it('refuses an IPv6 address with a zone id', async () => {
    const { ca, node } = worlds.get('ec-p256')!;
    const err = await issueCert({ ca, publicKeyPem: node.publicKeyPem, cn: 's', usage: 'server', notBefore: new Date('2030-01-01T00:00:00Z'), notAfter: new Date('2031-01-01T00:00:00Z'), ipAddresses: ['fe80::1%eth0'] }).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('MVPN_CERT_INVALID');
  });
});
