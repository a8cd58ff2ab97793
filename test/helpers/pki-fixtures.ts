/**
 * A complete small PKI for tests, made with the real src/pki code: a CA,
 * a server certificate, client (node) certificates, the tls-crypt-v2 server
 * key and one wrapped client key per client, and a valid CRL (listing the
 * clients named in `revoked`). `writeTestPki` lays it out the way openvpn
 * configs in tests reference it.
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCa, type CaMaterial } from '../../src/pki/ca.ts';
import { issueCert } from '../../src/pki/cert.ts';
import { createCrl } from '../../src/pki/crl.ts';
import { generateKeyPairPem, type KeyAlg } from '../../src/pki/keys.ts';
import { generateTlsCryptV2ServerKey, wrapTlsCryptV2ClientKey } from '../../src/pki/tls-crypt-v2.ts';

export interface TestLeaf {
  readonly cn: string;
  readonly certPem: string;
  readonly keyPem: string;
  readonly serialHex: string;
}

export interface TestClient extends TestLeaf {
  /** PEM client key for `tls-crypt-v2`, wrapped with `TestPki.tlsCryptV2ServerKey`. */
  readonly tlsCryptV2Key: string;
}

export interface TestPki {
  readonly alg: KeyAlg;
  readonly ca: CaMaterial;
  readonly server: TestLeaf;
  /** By client name (= CN). */
  readonly clients: Readonly<Record<string, TestClient>>;
  readonly tlsCryptV2ServerKey: string;
  /** Valid from an hour ago for 30 days; lists the clients named in `revoked`. */
  readonly crlPem: string;
  readonly revokedSerials: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface TestPkiPaths {
  readonly dir: string;
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly tlsCryptV2Server: string;
  readonly crl: string;
  readonly clients: Readonly<Record<string, { readonly cert: string; readonly key: string; readonly tlsCryptV2: string }>>;
}

export interface TestPkiOptions {
  /** Client CNs; default ["client1"]. */
  readonly clients?: readonly string[];
  /** Default "ec-p256". */
  readonly alg?: KeyAlg;
  /** Default "server". */
  readonly serverCn?: string;
  /** The CA's CN; default "mvpn test CA". Bundles need a network's own name, `mvpn-ca-<network>` (src/bundle/names.ts). */
  readonly caCn?: string;
  /** Client names whose certificates the CRL lists. */
  readonly revoked?: readonly string[];
  /** Reference time (default: now); certificates are valid from an hour before it for 30 days. */
  readonly now?: Date;
  /** subjectAltName entries for the server certificate. */
  readonly serverDnsNames?: readonly string[];
  readonly serverIpAddresses?: readonly string[];
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export async function makeTestPki(opts: TestPkiOptions = {}): Promise<TestPki> {
  const alg = opts.alg ?? 'ec-p256';
  const now = opts.now ?? new Date();
  const notBefore = new Date(now.getTime() - HOUR);
  const notAfter = new Date(now.getTime() + 30 * DAY);
  const ca = await createCa({ cn: opts.caCn ?? 'mvpn test CA', alg, notBefore, notAfter: new Date(notAfter.getTime() + DAY) });

  const leaf = async (cn: string, usage: 'server' | 'client', extra: { dnsNames?: readonly string[]; ipAddresses?: readonly string[] } = {}): Promise<TestLeaf> => {
    const kp = await generateKeyPairPem(alg);
    const { certPem, serialHex } = await issueCert({
      ca,
      publicKeyPem: kp.publicKeyPem,
      cn,
      usage,
      notBefore,
      notAfter,
      ...(extra.dnsNames ? { dnsNames: [...extra.dnsNames] } : {}),
      ...(extra.ipAddresses ? { ipAddresses: [...extra.ipAddresses] } : {}),
    });
    return { cn, certPem, keyPem: kp.privateKeyPem, serialHex };
  };

  const server = await leaf(opts.serverCn ?? 'server', 'server', { dnsNames: opts.serverDnsNames, ipAddresses: opts.serverIpAddresses });
  const tlsCryptV2ServerKey = generateTlsCryptV2ServerKey();
  const clients: Record<string, TestClient> = {};
  for (const name of opts.clients ?? ['client1']) {
    clients[name] = { ...(await leaf(name, 'client')), tlsCryptV2Key: wrapTlsCryptV2ClientKey(tlsCryptV2ServerKey, undefined, { now }) };
  }
  const revokedSerials = (opts.revoked ?? []).map((name) => {
    const c = clients[name];
    if (!c) throw new Error(`makeTestPki: revoked client ${name} is not in clients`);
    return c.serialHex;
  });
  const crlPem = await createCrl({
    ca,
    revoked: revokedSerials.map((serialHex) => ({ serialHex, revokedAt: notBefore })),
    thisUpdate: notBefore,
    nextUpdate: notAfter,
    crlNumber: 1,
  });
  return { alg, ca, server, clients, tlsCryptV2ServerKey, crlPem, revokedSerials, notBefore, notAfter };
}

async function put(path: string, data: string, mode: number): Promise<string> {
  await writeFile(path, data, { mode });
  await chmod(path, mode);
  return path;
}

/**
 * Writes ca.crt, server.crt, server.key, tls-crypt-v2-server.key, crl.pem and
 * per client <name>.crt, <name>.key, <name>.tc2 into `dir` (created if
 * needed). Private keys are 0600, the rest 0644.
 */
export async function writeTestPki(pki: TestPki, dir: string): Promise<TestPkiPaths> {
  await mkdir(dir, { recursive: true });
  const clients: Record<string, { cert: string; key: string; tlsCryptV2: string }> = {};
  for (const [name, c] of Object.entries(pki.clients)) {
    clients[name] = {
      cert: await put(join(dir, `${name}.crt`), c.certPem, 0o644),
      key: await put(join(dir, `${name}.key`), c.keyPem, 0o600),
      tlsCryptV2: await put(join(dir, `${name}.tc2`), c.tlsCryptV2Key, 0o600),
    };
  }
  return {
    dir,
    ca: await put(join(dir, 'ca.crt'), pki.ca.certPem, 0o644),
    serverCert: await put(join(dir, 'server.crt'), pki.server.certPem, 0o644),
    serverKey: await put(join(dir, 'server.key'), pki.server.keyPem, 0o600),
    tlsCryptV2Server: await put(join(dir, 'tls-crypt-v2-server.key'), pki.tlsCryptV2ServerKey, 0o600),
    crl: await put(join(dir, 'crl.pem'), pki.crlPem, 0o644),
    clients,
  };
}
