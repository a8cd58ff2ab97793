/**
 * The node's identity in the state dir (ARCHITECTURE.md, node layout):
 *
 *   <state>/identity/            0700
 *     node.key                   0600  private key, made on the node, never sent anywhere
 *     identity.crt               0644  API identity certificate (mTLS client cert, CN = node)
 *     api-ca.crt                 0644  the server's API CA as returned at enrollment
 *     enroll-rejected            0600  sha256 of a token the server refused for good
 *
 * The same node.key is the openvpn key of every network whose bundle says
 * key_origin "node": the server issues each network's node.crt for the
 * public key it got in the enrollment CSR.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { certMatchesKey } from '../pki/verify.ts';
import { ensureDir, writeFileAtomic } from '../util/fs-atomic.ts';

export interface IdentityPaths {
  readonly dir: string;
  readonly key: string;
  readonly cert: string;
  readonly ca: string;
  readonly rejectedToken: string;
}

export function identityPaths(stateDir: string): IdentityPaths {
  const dir = join(stateDir, 'identity');
  return { dir, key: join(dir, 'node.key'), cert: join(dir, 'identity.crt'), ca: join(dir, 'api-ca.crt'), rejectedToken: join(dir, 'enroll-rejected') };
}

export interface Identity {
  readonly keyPem: string;
  readonly certPem: string;
  readonly caPem: string;
  readonly paths: IdentityPaths;
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * The stored identity, or undefined when the node is not enrolled (or the
 * files do not belong together, e.g. after a crash halfway through a
 * re-enrollment: then the node enrolls again).
 */
export async function loadIdentity(stateDir: string): Promise<Identity | undefined> {
  const paths = identityPaths(stateDir);
  const [keyPem, certPem, caPem] = await Promise.all([readOptional(paths.key), readOptional(paths.cert), readOptional(paths.ca)]);
  if (keyPem === undefined || certPem === undefined || caPem === undefined) return undefined;
  try {
    if (!(await certMatchesKey(certPem, keyPem))) return undefined;
  } catch {
    return undefined;
  }
  return { keyPem, certPem, caPem, paths };
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
