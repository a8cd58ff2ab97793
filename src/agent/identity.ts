/**
 * The node's identity in the state dir (ARCHITECTURE.md, node layout):
 *
 *   <state>/identity/            0700
 *     node.key                   0600  private key made at enrollment, never sent anywhere
 *     node-<12 hex>.key          0600  a key made by an automatic renewal (renew.ts)
 *     identity.crt               0644  API identity certificate (mTLS client cert, CN = node)
 *     api-ca.crt                 0644  the server's API CA as returned at enrollment
 *     enroll-rejected            0600  sha256 of a token the server refused for good
 *     renew-pending              0600  a renewal the server has not been told is complete
 *
 * The identity's key is whichever key file matches identity.crt; the same
 * key is the openvpn key of every network whose bundle says key_origin
 * "node" (the server issues each network's node.crt for the key of the
 * node's latest CSR), and install.json records the key path per bundle.
 *
 * Why renewed keys get their own file instead of replacing node.key: an
 * installed bundle's openvpn.conf names its key file, so the bundles still
 * running the old certificates keep a matching key on disk until the new
 * bundles are installed; identity.crt is replaced by one atomic rename after
 * the new key is on disk, so a crash at any point leaves a certificate whose
 * key exists (the old pair or the new one), never a mismatch.
 */
import { createHash, createPublicKey } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { MvpnError } from '../errors.ts';
import { certMatchesKey } from '../pki/verify.ts';
import { ensureDir, writeFileAtomic } from '../util/fs-atomic.ts';
import { readTextIfExists } from '../util/read-file.ts';

export interface IdentityPaths {
  readonly dir: string;
  /** The enrollment key; the identity's actual key file is `Identity.paths.key`. */
  readonly key: string;
  readonly cert: string;
  readonly ca: string;
  readonly rejectedToken: string;
  readonly renewPending: string;
}

export function identityPaths(stateDir: string): IdentityPaths {
  const dir = join(stateDir, 'identity');
  return {
    dir,
    key: join(dir, 'node.key'),
    cert: join(dir, 'identity.crt'),
    ca: join(dir, 'api-ca.crt'),
    rejectedToken: join(dir, 'enroll-rejected'),
    renewPending: join(dir, 'renew-pending'),
  };
}

export interface Identity {
  readonly keyPem: string;
  readonly certPem: string;
  readonly caPem: string;
  /** `key` is the file this identity's key is in (node.key or a renewed node-<hex>.key). */
  readonly paths: IdentityPaths;
}

const RENEWED_KEY_RE = /^node-[0-9a-f]{12}\.key$/;

/** Every key file of the identity dir: node.key first, then renewed keys. */
async function keyFiles(paths: IdentityPaths): Promise<string[]> {
  const names = await readdir(paths.dir).catch(() => [] as string[]);
  return [paths.key, ...names.filter((n) => RENEWED_KEY_RE.test(n)).sort().map((n) => join(paths.dir, n))];
}

/**
 * The stored identity, or undefined when the node is not enrolled (or no
 * key file matches the certificate, e.g. after a crash halfway through a
 * re-enrollment: then the node enrolls again).
 */
export async function loadIdentity(stateDir: string): Promise<Identity | undefined> {
  const paths = identityPaths(stateDir);
  const [certPem, caPem] = await Promise.all([readTextIfExists(paths.cert), readTextIfExists(paths.ca)]);
  if (certPem === undefined || caPem === undefined) return undefined;
  for (const file of await keyFiles(paths)) {
    const keyPem = await readTextIfExists(file);
    if (keyPem === undefined) continue;
    try {
      if (await certMatchesKey(certPem, keyPem)) return { keyPem, certPem, caPem, paths: { ...paths, key: file } };
    } catch {
      // not a key (or not this one); try the next
    }
  }
  return undefined;
}

/** Write a new identity. The certificate goes last, so a crash leaves a mismatch loadIdentity rejects, never a half identity it accepts. */
export async function saveIdentity(stateDir: string, id: { keyPem: string; certPem: string; caPem: string }): Promise<Identity> {
  const paths = identityPaths(stateDir);
  await ensureDir(stateDir, 0o700);
  await ensureDir(paths.dir, 0o700);
  await writeFileAtomic(paths.key, id.keyPem, 0o600);
  await writeFileAtomic(paths.ca, id.caPem, 0o644);
  await writeFileAtomic(paths.cert, id.certPem, 0o644);
  return { ...id, paths };
}

/** Stores a key made for a renewal under a name of its own (sha256 of its public key); returns the path. Fsync'd before it returns. */
export async function saveRenewalKey(stateDir: string, keyPem: string): Promise<string> {
  const paths = identityPaths(stateDir);
  const spki = createPublicKey(keyPem).export({ type: 'spki', format: 'der' });
  const file = join(paths.dir, `node-${createHash('sha256').update(spki).digest('hex').slice(0, 12)}.key`);
  await writeFileAtomic(file, keyPem, 0o600);
  return file;
}

/**
 * Switches to a renewed identity certificate whose key `saveRenewalKey`
 * stored: one atomic rename, after the "renewal pending" marker (the serial
 * of the identity it replaces), so a crash right after still confirms.
 */
export async function switchIdentity(stateDir: string, cert: { certPem: string; caPem: string; replacedSerial: string }): Promise<Identity> {
  const paths = identityPaths(stateDir);
  await writeFileAtomic(paths.renewPending, cert.replacedSerial + '\n', 0o600);
  await writeFileAtomic(paths.ca, cert.caPem, 0o644);
  await writeFileAtomic(paths.cert, cert.certPem, 0o644);
  const id = await loadIdentity(stateDir);
  if (!id || id.certPem !== cert.certPem) {
    throw new MvpnError('MVPN_RENEW_FAILED', `the renewed identity certificate has no key file beside it in ${paths.dir}`, {
      hint: 'the agent renews again with a new key; if this repeats, check that the state directory is writable',
    });
  }
  return id;
}

export async function renewalPending(stateDir: string): Promise<boolean> {
  return (await readTextIfExists(identityPaths(stateDir).renewPending)) !== undefined;
}

/**
 * After the server confirmed a renewal: drop the marker and every key file
 * that neither the identity nor an installed bundle (`inUse`) uses.
 */
export async function finishRenewal(stateDir: string, current: Identity, inUse: readonly string[]): Promise<string[]> {
  const paths = identityPaths(stateDir);
  const keep = new Set([current.paths.key, ...inUse]);
  const removed: string[] = [];
  for (const f of await keyFiles(paths)) {
    if (keep.has(f)) continue;
    await rm(f, { force: true });
    removed.push(f);
  }
  await rm(paths.renewPending, { force: true });
  return removed;
}
