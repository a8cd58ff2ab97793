/**
 * src/pki: round trips for EC P-256 and RSA 2048, and every refusal with its
 * own code. Time is injected (`now`), never waited for.
 */
import { generateKeyPairSync, webcrypto } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../src/errors.ts';
import { createCa, type CaMaterial } from '../../src/pki/ca.ts';
import { issueCert, type IssueCertOptions } from '../../src/pki/cert.ts';
import { createCrl, checkCrl } from '../../src/pki/crl.ts';
import { createCsr, parseCsr } from '../../src/pki/csr.ts';
import { detectKeyAlg, generateKeyPairPem, type KeyAlg, type KeyPairPem } from '../../src/pki/keys.ts';
import { certMatchesKey, verifyCert } from '../../src/pki/verify.ts';
import { derToPem } from '../../src/pki/x509.ts';
// The reference library, loaded the way src/pki/x509.ts loads it.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
x509.cryptoProvider.set(globalThis.crypto);

const T0 = new Date('2030-01-01T00:00:00Z');
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const at = (ms: number): Date => new Date(T0.getTime() + ms);

/** Runs `fn` and returns the error code it threw (fails the test if it did not throw). */
async function codeOf(fn: () => unknown): Promise<ErrorCode> {
  try {
    await fn();
  } catch (err) {
    const code = (err as { code?: ErrorCode }).code;
    if (code === undefined) throw err;
    return code;
  }
  throw new Error('expected an error, got none');
}

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[A-Z0-9 ]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

interface World {
  alg: KeyAlg;
  ca: CaMaterial;
  node: KeyPairPem;
  client: { certPem: string; serialHex: string };
  server: { certPem: string; serialHex: string };
}

const worlds = new Map<KeyAlg, World>();
let otherCaSameName: CaMaterial;
let otherCaOtherName: CaMaterial;

beforeAll(async () => {
  for (const alg of ['ec-p256', 'rsa-2048'] as const) {
    const ca = await createCa({ cn: 'net1 CA', alg, notBefore: at(-DAY), notAfter: at(365 * DAY) });
    const node = await generateKeyPairPem(alg);
    const client = await issueCert({ ca, publicKeyPem: node.publicKeyPem, cn: 'pc42.exp.proj', usage: 'client', notBefore: at(-HOUR), notAfter: at(30 * DAY) });
    const server = await issueCert({
      ca,
      publicKeyPem: node.publicKeyPem,
      cn: 'server',
      usage: 'server',
      notBefore: at(-HOUR),
      notAfter: at(30 * DAY),
      dnsNames: ['vpn.example.org'],
      ipAddresses: ['192.0.2.10'],
    });
    worlds.set(alg, { alg, ca, node, client, server });
  }
  otherCaSameName = await createCa({ cn: 'net1 CA', notBefore: at(-DAY), notAfter: at(365 * DAY) });
  otherCaOtherName = await createCa({ cn: 'net2 CA', notBefore: at(-DAY), notAfter: at(365 * DAY) });
}, 60_000);

const w = (alg: KeyAlg): World => worlds.get(alg)!;

describe('keys', () => {
  it.each(['ec-p256', 'rsa-2048'] as const)('%s: generated PEMs are PKCS#8/SPKI and detected as their type', async (alg) => {
    const kp = w(alg).node;
    expect(kp.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(kp.publicKeyPem).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);
    expect(detectKeyAlg(kp.privateKeyPem)).toBe(alg);
    expect(detectKeyAlg(kp.publicKeyPem)).toBe(alg);
  });

  it('accepts the traditional "EC PRIVATE KEY" form openssl and easy-rsa write', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    expect(detectKeyAlg(privateKey.export({ type: 'sec1', format: 'pem' }).toString())).toBe('ec-p256');
  });

  it.each([
    ['P-384', () => generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()],
    ['RSA 1024', () => generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString()],
    ['Ed25519', () => generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()],
    ['garbage', () => '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'],
    ['empty', () => ''],
  ])('refuses %s with MVPN_KEY_INVALID', async (_name, make) => {
    expect(await codeOf(() => detectKeyAlg(make()))).toBe('MVPN_KEY_INVALID');
  });
});

describe('CA and issued certificates', () => {
  it.each(['ec-p256', 'rsa-2048'] as const)('%s CA: critical CA:TRUE, keyCertSign+cRLSign, subject key id, self-signed', async (alg) => {
    const ca = new x509.X509Certificate(pemToDer(w(alg).ca.certPem));
    const bc = ca.getExtension(x509.BasicConstraintsExtension)!;
    expect([bc.ca, bc.critical]).toEqual([true, true]);
    const ku = ca.getExtension(x509.KeyUsagesExtension)!;
    expect(ku.usages).toBe(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    expect(ku.critical).toBe(true);
    expect(ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId).toMatch(/^[0-9a-f]{40}$/);
    expect(await ca.isSelfSigned()).toBe(true);
    expect(detectKeyAlg(w(alg).ca.keyPem)).toBe(alg);
  });

  it.each([
    ['ec-p256', 'client', x509.ExtendedKeyUsage.clientAuth],
    ['ec-p256', 'server', x509.ExtendedKeyUsage.serverAuth],
    ['rsa-2048', 'client', x509.ExtendedKeyUsage.clientAuth],
    ['rsa-2048', 'server', x509.ExtendedKeyUsage.serverAuth],
  ] as const)('%s %s certificate: CN, EKU, critical digitalSignature, not a CA, AKI = CA SKI', (alg, usage, eku) => {
    const world = w(alg);
    const cert = new x509.X509Certificate(pemToDer(usage === 'client' ? world.client.certPem : world.server.certPem));
    const ca = new x509.X509Certificate(pemToDer(world.ca.certPem));
    expect(cert.subject).toBe(usage === 'client' ? 'CN=pc42.exp.proj' : 'CN=server');
    expect(cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual([eku]);
    const ku = cert.getExtension(x509.KeyUsagesExtension)!;
    expect([ku.usages, ku.critical]).toEqual([x509.KeyUsageFlags.digitalSignature, true]);
    expect(cert.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(false);
    expect(cert.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId).toBe(ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId);
    expect(cert.signatureAlgorithm.hash.name).toBe('SHA-256');
  });

  it('puts DNS names and IP addresses into the server certificate subjectAltName', () => {
    const cert = new x509.X509Certificate(pemToDer(w('ec-p256').server.certPem));
    const san = cert.getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(san.names.toJSON()).toEqual([
      { type: 'dns', value: 'vpn.example.org' },
      { type: 'ip', value: '192.0.2.10' },
    ]);
  });

  it('makes random positive 16-byte serials that read back exactly', async () => {
    const { ca, node } = w('ec-p256');
    const serials = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const { certPem, serialHex } = await issueCert({ ca, publicKeyPem: node.publicKeyPem, cn: `n${i}`, usage: 'client', notBefore: T0, notAfter: at(DAY) });
      expect(serialHex).toMatch(/^(?:0[1-9a-f]|[1-7][0-9a-f])[0-9a-f]{30}$/);
      expect(new x509.X509Certificate(pemToDer(certPem)).serialNumber.toLowerCase()).toBe(serialHex);
      serials.add(serialHex);
    }
    expect(serials.size).toBe(40);
  });

  it('uses a serial the caller chose', async () => {
    const { ca, node } = w('ec-p256');
    const r = await issueCert({ ca, publicKeyPem: node.publicKeyPem, cn: 'n', usage: 'client', notBefore: T0, notAfter: at(DAY), serialHex: '7F00AB' });
    expect(r.serialHex).toBe('7f00ab');
  });

  const base = (): IssueCertOptions => ({ ca: w('ec-p256').ca, publicKeyPem: w('ec-p256').node.publicKeyPem, cn: 'node1', usage: 'client', notBefore: T0, notAfter: at(DAY) });
  it.each<[string, () => Promise<Partial<IssueCertOptions>>, ErrorCode]>([
    ['CN with a slash', async () => ({ cn: '../etc/passwd' }), 'MVPN_CERT_WRONG_CN'],
    ['empty CN', async () => ({ cn: '' }), 'MVPN_CERT_WRONG_CN'],
    ['CN of 65 characters', async () => ({ cn: 'a'.repeat(65) }), 'MVPN_CERT_WRONG_CN'],
    ['notAfter before notBefore', async () => ({ notAfter: at(-1) }), 'MVPN_CERT_INVALID'],
    ['negative serial', async () => ({ serialHex: '80' }), 'MVPN_CERT_INVALID'],
    ['serial with a leading zero byte', async () => ({ serialHex: '0001' }), 'MVPN_CERT_INVALID'],
    ['serial that is not hex', async () => ({ serialHex: 'xyz1' }), 'MVPN_CERT_INVALID'],
    ['bad DNS name', async () => ({ usage: 'server', dnsNames: ['bad name'] }), 'MVPN_CERT_INVALID'],
    ['bad IP address', async () => ({ usage: 'server', ipAddresses: ['300.1.1.1'] }), 'MVPN_CERT_INVALID'],
    ['unknown usage', async () => ({ usage: 'both' as never }), 'MVPN_CERT_INVALID'],
    [
      'P-384 subject key',
      async () => ({ publicKeyPem: generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey.export({ type: 'spki', format: 'pem' }).toString() }),
      'MVPN_KEY_INVALID',
    ],
    ['CA key that does not match the CA certificate', async () => ({ ca: { ...w('ec-p256').ca, keyPem: otherCaSameName.keyPem } }), 'MVPN_CERT_KEY_MISMATCH'],
    ['CA "certificate" that is a leaf', async () => ({ ca: { alg: 'ec-p256', certPem: w('ec-p256').client.certPem, keyPem: w('ec-p256').node.privateKeyPem } }), 'MVPN_CERT_INVALID'],
  ])('issueCert refuses %s', async (_name, change, code) => {
    const opts = { ...base(), ...(await change()) };
    expect(await codeOf(() => issueCert(opts))).toBe(code);
  });
});

describe('verifyCert', () => {
  it.each(['ec-p256', 'rsa-2048'] as const)('%s: accepts client and server certificates and returns their facts', async (alg) => {
    const world = w(alg);
    const v = await verifyCert({ certPem: world.client.certPem, caCertPem: world.ca.certPem, usage: 'client', now: T0, expectCn: 'pc42.exp.proj' });
    expect(v).toMatchObject({ cn: 'pc42.exp.proj', serialHex: world.client.serialHex, notBefore: at(-HOUR), notAfter: at(30 * DAY) });
    expect(detectKeyAlg(v.publicKeyPem)).toBe(alg);
    expect(v.publicKeyPem.replace(/\s/g, '')).toBe(world.node.publicKeyPem.replace(/\s/g, ''));
    const s = await verifyCert({ certPem: world.server.certPem, caCertPem: world.ca.certPem, usage: 'server', now: T0, expectCn: 'server' });
    expect(s.cn).toBe('server');
  });

  type Case = [string, () => Parameters<typeof verifyCert>[0], ErrorCode];
  const ok = (): Parameters<typeof verifyCert>[0] => ({ certPem: w('ec-p256').client.certPem, caCertPem: w('ec-p256').ca.certPem, usage: 'client', now: T0 });
  it.each<Case>([
    ['garbage certificate', () => ({ ...ok(), certPem: 'hello' }), 'MVPN_CERT_INVALID'],
    ['truncated certificate', () => ({ ...ok(), certPem: derToPem('CERTIFICATE', pemToDer(ok().certPem).subarray(0, 100)) }), 'MVPN_CERT_INVALID'],
    ['two certificates in one PEM', () => ({ ...ok(), certPem: ok().certPem + ok().certPem }), 'MVPN_CERT_INVALID'],
    ['garbage CA', () => ({ ...ok(), caCertPem: '' }), 'MVPN_CERT_INVALID'],
    ['another CA with the same name', () => ({ ...ok(), caCertPem: otherCaSameName.certPem }), 'MVPN_CERT_WRONG_ISSUER'],
    ['another CA with another name', () => ({ ...ok(), caCertPem: otherCaOtherName.certPem }), 'MVPN_CERT_WRONG_ISSUER'],
    ['a leaf given as the CA', () => ({ ...ok(), caCertPem: w('ec-p256').server.certPem }), 'MVPN_CERT_WRONG_ISSUER'],
    ['the RSA CA for an EC network cert', () => ({ ...ok(), caCertPem: w('rsa-2048').ca.certPem }), 'MVPN_CERT_WRONG_ISSUER'],
    ['now after notAfter', () => ({ ...ok(), now: at(30 * DAY + 1000) }), 'MVPN_CERT_EXPIRED'],
    ['now before notBefore', () => ({ ...ok(), now: at(-2 * HOUR) }), 'MVPN_CERT_EXPIRED'],
    ['the CA expired', () => ({ ...ok(), now: at(366 * DAY) }), 'MVPN_CERT_EXPIRED'],
    ['revoked serial', () => ({ ...ok(), revokedSerials: ['01', w('ec-p256').client.serialHex] }), 'MVPN_CERT_REVOKED'],
    ['revoked serial in upper case with a 00 pad', () => ({ ...ok(), revokedSerials: [`00${w('ec-p256').client.serialHex.toUpperCase()}`] }), 'MVPN_CERT_REVOKED'],
    ['client certificate used as server', () => ({ ...ok(), usage: 'server' }), 'MVPN_CERT_WRONG_USAGE'],
    ['server certificate used as client', () => ({ ...ok(), certPem: w('ec-p256').server.certPem }), 'MVPN_CERT_WRONG_USAGE'],
    ['the CA certificate used as a leaf', () => ({ ...ok(), certPem: w('ec-p256').ca.certPem }), 'MVPN_CERT_WRONG_USAGE'],
    ['another node name', () => ({ ...ok(), expectCn: 'pc43.exp.proj' }), 'MVPN_CERT_WRONG_CN'],
  ])('refuses %s', async (_name, opts, code) => {
    expect(await codeOf(() => verifyCert(opts()))).toBe(code);
  });

  it('certMatchesKey tells the node key from another key', async () => {
    const world = w('ec-p256');
    expect(await certMatchesKey(world.client.certPem, world.node.privateKeyPem)).toBe(true);
    expect(await certMatchesKey(world.client.certPem, world.ca.keyPem)).toBe(false);
    expect(await certMatchesKey(w('rsa-2048').client.certPem, world.node.privateKeyPem)).toBe(false);
    expect(await codeOf(() => certMatchesKey(world.client.certPem, 'nope'))).toBe('MVPN_KEY_INVALID');
  });
});

describe('CSRs', () => {
  it.each(['ec-p256', 'rsa-2048'] as const)('%s: createCsr -> parseCsr -> issueCert round trip', async (alg) => {
    const world = w(alg);
    const csr = await createCsr({ keyPair: world.node, cn: 'pc7' });
    expect(csr).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----\n/);
    const parsed = await parseCsr(csr, { expectCn: 'pc7', allowedAlgs: ['ec-p256', 'rsa-2048'] });
    expect(parsed.cn).toBe('pc7');
    expect(parsed.alg).toBe(alg);
    const { certPem } = await issueCert({ ca: world.ca, publicKeyPem: parsed.publicKeyPem, cn: parsed.cn, usage: 'client', notBefore: T0, notAfter: at(DAY) });
    expect(await certMatchesKey(certPem, world.node.privateKeyPem)).toBe(true);
  });

  /** A CSR made straight with the library, for shapes createCsr refuses to make. */
  async function rawCsr(name: string, curve: 'P-256' | 'P-384' = 'P-256'): Promise<string> {
    const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: curve }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name, keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } });
    return derToPem('CERTIFICATE REQUEST', csr.rawData);
  }

  /** A valid CSR whose signed content was altered after signing (the CN node1 -> node9). */
  async function tamperedCsr(): Promise<string> {
    const der = pemToDer(await createCsr({ keyPair: w('ec-p256').node, cn: 'node1' }));
    const i = der.indexOf(Buffer.from('node1'));
    der[i + 4] = '9'.charCodeAt(0);
    return derToPem('CERTIFICATE REQUEST', der);
  }

  it.each<[string, () => Promise<string>, { expectCn?: string; allowedAlgs: KeyAlg[] }, ErrorCode]>([
    ['garbage', async () => 'not a csr', { allowedAlgs: ['ec-p256'] }, 'MVPN_CSR_INVALID'],
    ['a certificate instead of a CSR', async () => w('ec-p256').client.certPem, { allowedAlgs: ['ec-p256'] }, 'MVPN_CSR_INVALID'],
    ['base64 that is not ASN.1', async () => derToPem('CERTIFICATE REQUEST', Buffer.from('hello world')), { allowedAlgs: ['ec-p256'] }, 'MVPN_CSR_INVALID'],
    ['a bad self-signature', tamperedCsr, { allowedAlgs: ['ec-p256'] }, 'MVPN_CSR_INVALID'],
    ['an RSA key where only EC is allowed', async () => createCsr({ keyPair: w('rsa-2048').node, cn: 'node1' }), { allowedAlgs: ['ec-p256'] }, 'MVPN_KEY_INVALID'],
    ['a P-384 key', async () => rawCsr('CN=node1', 'P-384'), { allowedAlgs: ['ec-p256', 'rsa-2048'] }, 'MVPN_KEY_INVALID'],
    ['another node name', async () => createCsr({ keyPair: w('ec-p256').node, cn: 'node2' }), { expectCn: 'node1', allowedAlgs: ['ec-p256'] }, 'MVPN_CERT_WRONG_CN'],
    ['no CN', async () => rawCsr('O=testbed'), { allowedAlgs: ['ec-p256'] }, 'MVPN_CSR_INVALID'],
    ['two CNs', async () => rawCsr('CN=a, CN=b'), { allowedAlgs: ['ec-p256'] }, 'MVPN_CSR_INVALID'],
    ['a CN that is not a safe name', async () => rawCsr('CN=../../x'), { allowedAlgs: ['ec-p256'] }, 'MVPN_CSR_INVALID'],
  ])('parseCsr refuses %s', async (_name, make, opts, code) => {
    const pem = await make();
    expect(await codeOf(() => parseCsr(pem, opts))).toBe(code);
  });

  it('createCsr refuses an unsafe CN', async () => {
    expect(await codeOf(() => createCsr({ keyPair: w('ec-p256').node, cn: 'a b' }))).toBe('MVPN_CERT_WRONG_CN');
  });
});

describe('CRLs', () => {
  it.each(['ec-p256', 'rsa-2048'] as const)('%s: v2, CRL number, AKI, dates; checkCrl returns the revoked serials', async (alg) => {
    const world = w(alg);
    const crlPem = await createCrl({
      ca: world.ca,
      revoked: [
        { serialHex: world.client.serialHex, revokedAt: T0 },
        { serialHex: '01', revokedAt: at(HOUR) },
      ],
      thisUpdate: T0,
      nextUpdate: at(7 * DAY),
      crlNumber: 300,
    });
    expect(crlPem).toMatch(/^-----BEGIN X509 CRL-----\n/);
    const crl = new x509.X509Crl(pemToDer(crlPem));
    expect(crl.version).toBe(1); // v2 is encoded as 1
    expect(Buffer.from(crl.getExtension('2.5.29.20')!.value).toString('hex')).toBe('0202012c');
    const ca = new x509.X509Certificate(pemToDer(world.ca.certPem));
    expect(crl.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId).toBe(ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId);
    const checked = await checkCrl({ crlPem, caCertPem: world.ca.certPem, now: at(DAY) });
    expect(checked).toEqual({ revokedSerials: [world.client.serialHex, '01'], thisUpdate: T0, nextUpdate: at(7 * DAY) });
    // The revoked list feeds verifyCert.
    expect(await codeOf(() => verifyCert({ certPem: world.client.certPem, caCertPem: world.ca.certPem, usage: 'client', now: at(DAY), revokedSerials: checked.revokedSerials }))).toBe(
      'MVPN_CERT_REVOKED',
    );
  });

  it('an empty CRL is valid and revokes nothing', async () => {
    const crlPem = await createCrl({ ca: w('ec-p256').ca, revoked: [], thisUpdate: T0, nextUpdate: at(DAY), crlNumber: 0 });
    expect((await checkCrl({ crlPem, caCertPem: w('ec-p256').ca.certPem, now: T0 })).revokedSerials).toEqual([]);
  });

  it.each<[string, number, ErrorCode | 'ok']>([
    ['at thisUpdate', 0, 'ok'],
    ['just before nextUpdate', DAY - 1000, 'ok'],
    ['at nextUpdate', DAY, 'MVPN_CRL_EXPIRED'],
    ['after nextUpdate', 2 * DAY, 'MVPN_CRL_EXPIRED'],
    ['before thisUpdate', -1000, 'MVPN_CRL_INVALID'],
  ])('checkCrl %s', async (_name, offset, want) => {
    const crlPem = await createCrl({ ca: w('ec-p256').ca, revoked: [], thisUpdate: T0, nextUpdate: at(DAY), crlNumber: 1 });
    const run = () => checkCrl({ crlPem, caCertPem: w('ec-p256').ca.certPem, now: at(offset) });
    if (want === 'ok') await expect(run()).resolves.toBeDefined();
    else expect(await codeOf(run)).toBe(want);
  });

  it.each<[string, () => Promise<string>, ErrorCode]>([
    ['missing', async () => '', 'MVPN_CRL_INVALID'],
    ['garbage', async () => '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n', 'MVPN_CRL_INVALID'],
    ['a certificate', async () => w('ec-p256').client.certPem, 'MVPN_CRL_INVALID'],
    ['signed by another CA with the same name', async () => createCrl({ ca: otherCaSameName, revoked: [], thisUpdate: T0, nextUpdate: at(DAY), crlNumber: 1 }), 'MVPN_CRL_INVALID'],
    ['signed by another CA', async () => createCrl({ ca: otherCaOtherName, revoked: [], thisUpdate: T0, nextUpdate: at(DAY), crlNumber: 1 }), 'MVPN_CRL_INVALID'],
    [
      'without nextUpdate',
      async () => {
        const ca = w('ec-p256').ca;
        const key = await webcrypto.subtle.importKey('pkcs8', pemToDer(ca.keyPem), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
        const crl = await x509.X509CrlGenerator.create({
          issuer: new x509.X509Certificate(pemToDer(ca.certPem)).subjectName,
          thisUpdate: T0,
          signingKey: key,
          signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams,
        });
        return derToPem('X509 CRL', crl.rawData);
      },
      'MVPN_CRL_INVALID',
    ],
  ])('checkCrl refuses a CRL that is %s', async (_name, make, code) => {
    const crlPem = await make();
    expect(await codeOf(() => checkCrl({ crlPem, caCertPem: w('ec-p256').ca.certPem, now: at(HOUR) }))).toBe(code);
  });

  it.each<[string, Partial<Parameters<typeof createCrl>[0]>]>([
    ['a negative CRL number', { crlNumber: -1 }],
    ['a fractional CRL number', { crlNumber: 1.5 }],
    ['nextUpdate not after thisUpdate', { nextUpdate: T0 }],
    ['a serial listed twice', { revoked: [{ serialHex: '0a', revokedAt: T0 }, { serialHex: '0A', revokedAt: T0 }] }],
  ])('createCrl refuses %s', async (_name, change) => {
    const opts = { ca: w('ec-p256').ca, revoked: [], thisUpdate: T0, nextUpdate: at(DAY), crlNumber: 1, ...change };
    expect(await codeOf(() => createCrl(opts))).toMatch(/^MVPN_(CRL|CERT)_INVALID$/);
  });
});
