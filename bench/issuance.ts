/**
 * Issuance benchmark: how fast the server can make per-node credentials
 * natively (src/pki) compared with easy-rsa, the tool MetaVPN used.
 *
 * Per node, natively:
 *   export path  — make an EC P-256 key (as an offline export does), issue
 *                  the node certificate, wrap a tls-crypt-v2 client key;
 *   enroll path  — check the node's CSR (made beforehand, on "the node",
 *                  untimed), issue the certificate, wrap a tls-crypt-v2 key.
 * For a sample, easy-rsa `build-client-full NAME nopass` (EC prime256v1) in
 * a throwaway PKI, and `openvpn --genkey tls-crypt-v2-client` (what a
 * non-native tls-crypt-v2 path would spawn per node).
 *
 * Run: node_modules/.bin/node bench/issuance.ts [--count 1000] [--sample 20] [--out bench/results/issuance.json]
 * Writes JSON to --out and prints a summary. No assertions: timings only.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { createCa } from '../src/pki/ca.ts';
import { issueCert } from '../src/pki/cert.ts';
import { createCsr, parseCsr } from '../src/pki/csr.ts';
import { generateKeyPairPem } from '../src/pki/keys.ts';
import { generateTlsCryptV2ServerKey, wrapTlsCryptV2ClientKey } from '../src/pki/tls-crypt-v2.ts';
import { flag, msStats as stats, timed, type MsStats as Stats } from './lib/stats.ts';

const run = promisify(execFile);
const EASYRSA = '/usr/share/easy-rsa/easyrsa';

async function main(): Promise<void> {
  const count = Number(flag('count', '1000'));
  const sample = Number(flag('sample', '20'));
  const out = flag('out', join(import.meta.dirname, 'results', 'issuance.json'));
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(sample) || sample < 1) throw new Error('--count and --sample must be positive integers');

  const now = new Date();
  const notAfter = new Date(now.getTime() + 365 * 86_400_000);
  const ca = await createCa({ cn: 'bench CA', notBefore: now, notAfter });
  const tc2Server = generateTlsCryptV2ServerKey();
  // Warm up (JIT, CA import cache) so the first sample is not an outlier of setup.
  for (let i = 0; i < 5; i++) {
    const kp = await generateKeyPairPem('ec-p256');
    await issueCert({ ca, publicKeyPem: kp.publicKeyPem, cn: `warm${i}`, usage: 'client', notBefore: now, notAfter });
  }

  process.stderr.write(`native export path: ${count} nodes...\n`);
  const exportCert: number[] = [];
  const exportTotal: number[] = [];
  const tc2: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const [tCert] = await timed(async () => {
      const kp = await generateKeyPairPem('ec-p256');
      return issueCert({ ca, publicKeyPem: kp.publicKeyPem, cn: `node${i}`, usage: 'client', notBefore: now, notAfter });
    });
    const [tWrap] = await timed(() => wrapTlsCryptV2ClientKey(tc2Server));
    exportCert.push(tCert);
    tc2.push(tWrap);
    exportTotal.push(tCert + tWrap);
  }
  const exportWallS = (performance.now() - t0) / 1000;

  process.stderr.write(`native enroll path: making ${count} CSRs (untimed), then issuing...\n`);
  const csrs: string[] = [];
  for (let i = 0; i < count; i++) csrs.push(await createCsr({ keyPair: await generateKeyPairPem('ec-p256'), cn: `node${i}` }));
  const enrollCert: number[] = [];
  const enrollTotal: number[] = [];
  const t1 = performance.now();
  for (let i = 0; i < count; i++) {
    const [tCert] = await timed(async () => {
      const req = await parseCsr(csrs[i]!, { expectCn: `node${i}`, allowedAlgs: ['ec-p256'] });
      return issueCert({ ca, publicKeyPem: req.publicKeyPem, cn: req.cn, usage: 'client', notBefore: now, notAfter });
    });
    const [tWrap] = await timed(() => wrapTlsCryptV2ClientKey(tc2Server));
    enrollCert.push(tCert);
    enrollTotal.push(tCert + tWrap);
  }
  const enrollWallS = (performance.now() - t1) / 1000;

  process.stderr.write(`easy-rsa build-client-full: ${sample} certificates...\n`);
  const dir = await mkdtemp(join(tmpdir(), 'mvpn-bench-'));
  const easy: number[] = [];
  const ovpnTc2: number[] = [];
  const env = { ...process.env, EASYRSA_PKI: join(dir, 'pki'), EASYRSA_BATCH: '1', EASYRSA_ALGO: 'ec', EASYRSA_CURVE: 'prime256v1' };
  const easyVersion = (await run(EASYRSA, ['--version'], { env })).stdout.match(/Version:\s*(\S+)/)?.[1] ?? 'unknown';
  try {
    await run(EASYRSA, ['init-pki'], { env, cwd: dir });
    // The CA's CN only for build-ca: build-client-full refuses an external CN.
    await run(EASYRSA, ['build-ca', 'nopass'], { env: { ...env, EASYRSA_REQ_CN: 'bench CA' }, cwd: dir });
    for (let i = 0; i < sample; i++) {
      const [t] = await timed(() => run(EASYRSA, ['build-client-full', `node${i}`, 'nopass'], { env, cwd: dir }));
      easy.push(t);
    }
    const srvKey = join(dir, 'tc2-server.key');
    await writeFile(srvKey, tc2Server, { mode: 0o600 });
    for (let i = 0; i < sample; i++) {
      const [t] = await timed(() => run('openvpn', ['--tls-crypt-v2', srvKey, '--genkey', 'tls-crypt-v2-client', join(dir, `c${i}.key`)]));
      ovpnTc2.push(t);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }

  const nativeExport = stats(exportCert);
  const nativeEnroll = stats(enrollCert);
  const easyrsa = stats(easy);
  const result = {
    benchmark: 'issuance',
    date: new Date().toISOString(),
    machine: { node: process.version, cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', openvpn: (await run('openvpn', ['--version']).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? '' }))).stdout.split('\n')[0], easyrsa: easyVersion },
    params: { count, sample, keyType: 'ec-p256' },
    native: {
      exportPath: { certificate: nativeExport, withTlsCryptV2: stats(exportTotal), wallSeconds: Math.round(exportWallS * 100) / 100 },
      enrollPath: { certificate: nativeEnroll, withTlsCryptV2: stats(enrollTotal), wallSeconds: Math.round(enrollWallS * 100) / 100 },
      tlsCryptV2Wrap: stats(tc2),
    },
    easyrsa: { buildClientFull: easyrsa },
    openvpnGenkeyTlsCryptV2Client: stats(ovpnTc2),
    ratios: {
      easyrsaOverNativeExportMedian: Math.round((easyrsa.medianMs / nativeExport.medianMs) * 10) / 10,
      easyrsaOverNativeEnrollMedian: Math.round((easyrsa.medianMs / nativeEnroll.medianMs) * 10) / 10,
      openvpnGenkeyOverNativeWrapMedian: Math.round((stats(ovpnTc2).medianMs / stats(tc2).medianMs) * 10) / 10,
    },
  };
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify(result, null, 2) + '\n');

  const line = (name: string, s: Stats): string =>
    `${name.padEnd(44)} n=${String(s.n).padStart(5)}  median ${s.medianMs.toFixed(2).padStart(8)} ms  min ${s.minMs.toFixed(2).padStart(8)}  max ${s.maxMs.toFixed(2).padStart(8)}  ${String(s.perSecond).padStart(8)}/s`;
  console.log(line('native export (EC key + cert)', nativeExport));
  console.log(line('native export + tls-crypt-v2', result.native.exportPath.withTlsCryptV2));
  console.log(line('native enroll (CSR check + cert)', nativeEnroll));
  console.log(line('native enroll + tls-crypt-v2', result.native.enrollPath.withTlsCryptV2));
  console.log(line('native tls-crypt-v2 wrap', result.native.tlsCryptV2Wrap));
  console.log(line('easy-rsa build-client-full (EC)', easyrsa));
  console.log(line('openvpn --genkey tls-crypt-v2-client', result.openvpnGenkeyTlsCryptV2Client));
  console.log(`ratio easy-rsa / native (median): export ${result.ratios.easyrsaOverNativeExportMedian}x, enroll ${result.ratios.easyrsaOverNativeEnrollMedian}x; openvpn genkey / native wrap ${result.ratios.openvpnGenkeyOverNativeWrapMedian}x`);
  console.log(`wall: ${count} export-path nodes in ${result.native.exportPath.wallSeconds}s, ${count} enroll-path nodes in ${result.native.enrollPath.wallSeconds}s; results in ${out}`);
}

await main();
