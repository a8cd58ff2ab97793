/**
 * `server anchor rotate`: a new Ed25519 signing key, and a rotation
 * statement (bundle/anchor-chain.ts) signed by the old key and co-signed by
 * the new one, appended to `anchor-chain.json`, which the API serves to every
 * node (`/v1/anchor-chain.json`) for as long as the state directory lives.
 *
 * Commit order, so a crash at any point leaves a server that still signs
 * with a key its nodes can reach:
 *   1. reserve the serial floor (store sequence): every document signed from
 *      now on has a larger serial;
 *   2. the new key goes to `signing.key.next` (0600, fsynced);
 *   3. the chain with the new statement replaces `anchor-chain.json`;
 *   4. `signing.key.next` is renamed over `signing.key`; `trust-anchor` is
 *      rewritten (new startup tarballs carry the new anchor);
 *   5. every node's document is bumped, so the running daemon (which
 *      reloads the key when signing.key changes) re-signs all of them.
 * A crash between 3 and 4 is finished by completeRotation() at the next
 * start or rotation: the chain already names the next key, so it must
 * become the signing key. The old key is not kept: a retired key can only
 * do harm.
 */
import { readFile, rename, rm } from 'node:fs/promises';
import { buildRotation, MAX_CHAIN_LINKS, parseChain, readStatement, serializeChain } from '../bundle/anchor-chain.ts';
import { ConfigError, StoreError } from '../errors.ts';
import { anchorToString, generateSigningKey, signingKeyFromPem, signingKeyToPem, type SigningKey } from '../bundle/sign.ts';
import { writeFileAtomic } from '../util/fs-atomic.ts';
import { readIfExists } from '../util/read-file.ts';
import type { ServerPaths } from './config.ts';
import { Bumps, nowOf, type ServerContext } from './ops/context.ts';

export interface RotationResult {
  readonly version: number;
  readonly previous: string;
  readonly anchor: string;
  readonly keyId: string;
  readonly serialFloor: number;
  readonly nodes: number;
}

/**
 * The server's signing key from `signing.key`, the one way every command and
 * the daemon load it (re-read each time: a rotation replaces the file).
 */
export async function loadSigningKey(paths: Pick<ServerPaths, 'signingKey'>): Promise<SigningKey> {
  let pem: string;
  try {
    pem = await readFile(paths.signingKey, 'utf8');
  } catch (err) {
    throw new ConfigError('MVPN_CONFIG_MISSING', `cannot read ${paths.signingKey}: ${(err as Error).message}`, {
      hint: 'is the state directory complete? (server init)',
      cause: err,
    });
  }
  return signingKeyFromPem(pem);
}

/** The statements so far (empty before the first rotation). */
export async function readChain(paths: Pick<ServerPaths, 'anchorChain'>): Promise<Buffer[]> {
  const bytes = await readIfExists(paths.anchorChain);
  return bytes === undefined ? [] : parseChain(bytes);
}

/** Finishes a rotation that crashed after the chain was written (step 3 → 4). */
export async function completeRotation(paths: ServerPaths): Promise<void> {
  const nextPem = await readIfExists(paths.signingKeyNext);
  if (nextPem === undefined) return;
  const next = signingKeyFromPem(nextPem.toString('utf8'));
  const chain = await readChain(paths);
  const last = chain.length === 0 ? undefined : readStatement(chain[chain.length - 1]!);
  if (last?.anchor === anchorToString(next)) {
    await rename(paths.signingKeyNext, paths.signingKey);
    await writeFileAtomic(paths.trustAnchor, anchorToString(next) + '\n', 0o644);
  } else {
    // The chain was never written: the rotation did not happen.
    await rm(paths.signingKeyNext, { force: true });
  }
}

export async function rotateAnchor(ctx: ServerContext): Promise<RotationResult> {
  const { paths } = ctx;
  await completeRotation(paths);
  const previous = await loadSigningKey(paths);
  const chain = await readChain(paths);
  if (chain.length >= MAX_CHAIN_LINKS) {
    throw new StoreError('MVPN_STORE_CONFLICT', `the anchor chain already holds ${chain.length} statements, the most agents accept`, {
      hint: 'give nodes the current anchor (`server anchor`) in their config (a new startup tarball); they place it in the chain themselves',
    });
  }
  const version = chain.length === 0 ? 2 : readStatement(chain[chain.length - 1]!).version + 1;
  const serialFloor = ctx.store.write((tx) => tx.nextSeq());
  const next = generateSigningKey();
  const statement = buildRotation({ version, previous, next, serialFloor, issuedAt: new Date(nowOf(ctx)) });
  await writeFileAtomic(paths.signingKeyNext, signingKeyToPem(next), 0o600);
  await writeFileAtomic(paths.anchorChain, serializeChain([...chain, statement]), 0o644);
  await completeRotation(paths);
  const now = nowOf(ctx);
  const nodes = ctx.store.write((tx) => {
    const bumps = new Bumps();
    const all = tx.listNodes();
    for (const n of all) bumps.doc(n.id);
    bumps.apply(tx, now, ctx.config.membership_days);
    return all.length;
  });
  return { version, previous: anchorToString(previous), anchor: anchorToString(next), keyId: next.keyId, serialFloor, nodes };
}
