/**
 * Keeping "a document serial never names two different documents" true
 * across upgrades of the server.
 *
 * Documents and bundles are built on demand from the store, and are
 * deterministic for one build of mvpn-client. A new build that makes them
 * differently (another gzip level, a new spec field, a fixed tar header)
 * would sign a *different* document under a serial nodes already hold, and
 * every agent would rightly refuse it as equivocation until the serial next
 * moved (days later, at renewal).
 *
 * So the daemon builds a canary at start: a bundle and a signed document
 * from fixed inputs (a fixed Ed25519 key, fixed records), hashed into this
 * build's fingerprint. When it differs from the one recorded in the state
 * directory — or none is recorded, the first start of a build with this
 * check — every node's document moves to a new serial (one transaction),
 * and only then is the new fingerprint recorded; a crash in between bumps
 * again next time, which is harmless. Bundle versions stay: a new document
 * naming the same version with a new hash makes agents fetch it again.
 */
import { createHash, createPrivateKey, createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { keyIdOf, type SigningKey } from '../bundle/sign.ts';
import { writeFileAtomic } from '../util/fs-atomic.ts';
import { buildNodeBundle, membershipDoc, signMembership } from './documents.ts';
import { Bumps, nowOf, type ServerContext } from './ops/context.ts';
import { newNetworkRecord, type MembershipRecord, type NetworkRecord } from './store/store.ts';

export const FINGERPRINT_FILE = 'build-fingerprint';

/** PKCS#8 DER prefix of an Ed25519 private key; the 32-byte seed follows. */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** A fixed key: the canary is signed, since signing is part of how documents are made. Not a secret. */
function canaryKey(): SigningKey {
  const privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, Buffer.alloc(32, 0x6d)]), format: 'der', type: 'pkcs8' });
  const publicKey = createPublicKey(privateKey);
  return { privateKey, publicKey, keyId: keyIdOf(publicKey) };
}

const T0 = Date.UTC(2026, 0, 1);
const pem = (label: string) => `-----BEGIN ${label}-----\nY2FuYXJ5\n-----END ${label}-----\n`;

const NETWORK: NetworkRecord = newNetworkRecord(
  {
    id: 'canary',
    name: 'canary',
    devType: 'tap',
    proto: 'udp',
    port: 1194,
    subnet: '198.19.0.0/24',
    state: 'up',
    remotes: [{ host: '192.0.2.1' }, { host: '198.51.100.1', port: 1195 }],
    keyAlg: 'ec-p256',
    caCertPem: pem('CERTIFICATE'),
    caKeyPem: '',
    serverCertPem: pem('CERTIFICATE'),
    serverKeyPem: '',
    tlsCryptV2ServerKey: '',
    crlPem: pem('X509 CRL'),
    crlNumber: 1,
    crlNextUpdate: T0 + 7 * 86_400_000,
  },
  T0,
);

const MEMBERSHIP: MembershipRecord = {
  network: 'canary',
  node: 'canary-node',
  address: '198.19.0.2',
  certPem: pem('CERTIFICATE'),
  certSerial: '01',
  keyOrigin: 'node',
  tlsCryptV2ClientKey: pem('OpenVPN tls-crypt-v2 client key'),
  revoked: false,
  remotes: null,
  bundleVersion: 1,
  bundleCreatedAt: T0,
  addedAt: T0,
};

/** The L3 shape of the same network, with a node of its own remotes. */
const TUN_NETWORK: NetworkRecord = { ...NETWORK, id: 'canary-tun', name: 'canary-tun', devType: 'tun', proto: 'tcp', port: 443, subnet: '198.19.1.0/24' };
const TUN_MEMBERSHIP: MembershipRecord = { ...MEMBERSHIP, network: 'canary-tun', address: '198.19.1.9', remotes: [{ host: '203.0.113.5', port: 8443 }] };

/** This build's fingerprint: sha256 of the canary bundles (tap, tun, central key) and document (hex). */
export async function buildFingerprint(): Promise<string> {
  const key = canaryKey();
  const tap = await buildNodeBundle(key, NETWORK, MEMBERSHIP);
  const tun = await buildNodeBundle(key, TUN_NETWORK, TUN_MEMBERSHIP);
  const central = await buildNodeBundle(key, NETWORK, { ...MEMBERSHIP, keyOrigin: 'central' }, pem('PRIVATE KEY'));
  const doc = signMembership(
    membershipDoc({ id: MEMBERSHIP.node, docSerial: 1, docIssuedAt: T0, docExpiresAt: T0 + 86_400_000 }, [
      { net: NETWORK, m: MEMBERSHIP, bundle: tap },
      { net: TUN_NETWORK, m: TUN_MEMBERSHIP, bundle: tun },
    ]),
    key,
  );
  const h = createHash('sha256');
  for (const part of [tap.bytes, tun.bytes, central.bytes, doc]) h.update(part);
  return h.digest('hex');
}

export interface FingerprintCheck {
  readonly fingerprint: string;
  /** What was recorded before (null: nothing). */
  readonly previous: string | null;
  /** Nodes whose document moved to a new serial. */
  readonly bumped: number;
}

/** At daemon start: a changed (or first) fingerprint moves every node's document to a new serial, then records it. */
export async function checkBuildFingerprint(ctx: ServerContext): Promise<FingerprintCheck> {
  const fingerprint = await buildFingerprint();
  const file = join(ctx.paths.stateDir, FINGERPRINT_FILE);
  let previous: string | null = null;
  try {
    previous = (await readFile(file, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (previous === fingerprint) return { fingerprint, previous, bumped: 0 };
  const now = nowOf(ctx);
  const bumped = ctx.store.write((tx) => {
    const nodes = tx.listNodes();
    const b = new Bumps();
    for (const n of nodes) b.doc(n.id);
    b.apply(tx, now, ctx.config.membership_days);
    return nodes.length;
  });
  await writeFileAtomic(file, fingerprint + '\n', 0o600);
  return { fingerprint, previous, bumped };
}
