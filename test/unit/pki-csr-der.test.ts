/**
 * parseCsr reads CSRs with src/pki/der.ts and verifies them with
 * node:crypto. These tests hold it to @peculiar/x509's reading of the same
 * requests (ours and openssl's, EC and RSA, SHA-256 and SHA-384), and treat
 * it as the parser of untrusted input it is: every truncation and every
 * single-byte change of a valid CSR is refused with a typed error.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { createCsr, parseCsr } from '../../src/pki/csr.ts';
import { bitString, explicit, oid, seq, tlv, TAG } from '../../src/pki/der.ts';
import { generateKeyPairPem, loadPublicKey } from '../../src/pki/keys.ts';
import { derToPem } from '../../src/pki/x509.ts';
// The reference library, loaded the way src/pki/x509.ts loads it.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
x509.cryptoProvider.set(globalThis.crypto);
import { tmpDir } from '../helpers/tmp.ts';

const run = promisify(execFile);
const ANY = { allowedAlgs: ['ec-p256', 'rsa-2048'] as const };

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[A-Z0-9 ]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

/** A CSR made by openssl req (the key and the request are openssl's own). */
async function opensslCsr(dir: string, name: string, keyArgs: string[], reqArgs: string[]): Promise<string> {
  const key = join(dir, `${name}.key`);
  await run('openssl', ['genpkey', ...keyArgs, '-out', key]);
  await run('openssl', ['req', '-new', '-key', key, ...reqArgs, '-out', join(dir, `${name}.csr`)]);
  return readFile(join(dir, `${name}.csr`), 'utf8');
}

const csrs = new Map<string, string>();

beforeAll(async () => {
  const dir = (await tmpDir()).path;
  csrs.set('ours ec-p256', await createCsr({ keyPair: await generateKeyPairPem('ec-p256'), cn: 'pc42.exp' }));
  csrs.set('ours rsa-2048', await createCsr({ keyPair: await generateKeyPairPem('rsa-2048'), cn: 'pc42.exp' }));
  csrs.set('openssl ec-p256 sha256, O and CN', await opensslCsr(dir, 'ec', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['-subj', '/O=testbed/CN=pc42.exp', '-sha256']));
  csrs.set('openssl ec-p256 sha384', await opensslCsr(dir, 'ec384', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['-subj', '/CN=pc42.exp', '-sha384']));
  csrs.set('openssl rsa-2048 sha256, UTF8String CN', await opensslCsr(dir, 'rsa', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'], ['-subj', '/CN=pc42.exp', '-utf8', '-sha256']));
}, 60_000);

describe('parseCsr reads what @peculiar/x509 reads', () => {
  it.each(['ours ec-p256', 'ours rsa-2048', 'openssl ec-p256 sha256, O and CN', 'openssl ec-p256 sha384', 'openssl rsa-2048 sha256, UTF8String CN'])('%s', async (name) => {
    const pem = csrs.get(name)!;
    const ref = new x509.Pkcs10CertificateRequest(pem);
    expect(await ref.verify()).toBe(true);
    const got = await parseCsr(pem, { ...ANY, expectCn: 'pc42.exp' });
    expect(got.cn).toBe(ref.subjectName.getField('CN')[0]);
    expect(got.publicKeyPem).toBe(derToPem('PUBLIC KEY', ref.publicKey.rawData));
    expect(got.alg).toBe(loadPublicKey(got.publicKeyPem).alg);
    expect(got.alg).toBe(name.includes('rsa') ? 'rsa-2048' : 'ec-p256');
  });

  it('refuses an Ed25519 CSR for its key type, after checking its signature', async () => {
    const dir = (await tmpDir()).path;
    const pem = await opensslCsr(dir, 'ed', ['-algorithm', 'ED25519'], ['-subj', '/CN=pc42.exp']);
    const err = await parseCsr(pem, ANY).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('MVPN_KEY_INVALID');
  });
});

describe('parseCsr on damaged input', () => {
  async function codeOf(der: Buffer): Promise<string> {
    try {
      await parseCsr(derToPem('CERTIFICATE REQUEST', der), ANY);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === undefined) throw err; // an untyped error is a bug
      return code;
    }
    return 'accepted';
  }

  it.each(['ours ec-p256', 'openssl rsa-2048 sha256, UTF8String CN'])('%s: every truncation is MVPN_CSR_INVALID', async (name) => {
    const der = pemToDer(csrs.get(name)!);
    for (let n = 1; n < der.length; n++) expect(await codeOf(der.subarray(0, n))).toBe('MVPN_CSR_INVALID');
    // Trailing bytes after the request are refused too.
    expect(await codeOf(Buffer.concat([der, Buffer.of(0)]))).toBe('MVPN_CSR_INVALID');
  });

  it('a correctly signed request whose subject is not a Name is MVPN_CSR_INVALID', async () => {
    const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const info = seq(tlv(TAG.integer, Uint8Array.of(0)), seq(tlv(TAG.integer, Uint8Array.of(5))), keys.publicKey.export({ type: 'spki', format: 'der' }), explicit(0));
    const der = seq(info, seq(oid('1.2.840.10045.4.3.2')), bitString(sign('sha256', info, keys.privateKey)));
    expect(await codeOf(der)).toBe('MVPN_CSR_INVALID');
  });

  it('every single-byte change is refused with a typed error', async () => {
    const der = pemToDer(csrs.get('ours ec-p256')!);
    const accepted: number[] = [];
    for (let i = 0; i < der.length; i++) {
      for (const mask of [0x01, 0x80]) {
        const bad = Buffer.from(der);
        bad[i] = bad[i]! ^ mask;
        if ((await codeOf(bad)) === 'accepted') accepted.push(i);
      }
    }
    expect(accepted).toEqual([]);
  });
});
