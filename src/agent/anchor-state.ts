/**
 * The pinned anchor chain: `<state>/anchor.json` (0600, written atomically)
 * holds the rotation statements this node applied, in order. The config's
 * `anchor` stays the first link; on every start the chain is walked again
 * from it (followChain), so the current anchor is derived from signed
 * statements, never from a field anyone could edit. The file is written
 * before the new anchor is used, so a restart never falls back to a retired
 * anchor. A file that exists but cannot be walked stops the agent: falling
 * back to the config's anchor would be exactly the rollback the chain
 * prevents.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { followChain, initialTrust, MAX_CHAIN_LINKS, type TrustState } from '../bundle/anchor-chain.ts';
import type { Anchor } from '../bundle/sign.ts';
import { DocumentError, toMvpnError } from '../errors.ts';
import { ensureDir, writeFileAtomic } from '../util/fs-atomic.ts';
import { parseJsonBounded } from '../util/json.ts';
import { readIfExists } from '../util/read-file.ts';

const FileSchema = z.strictObject({
  schema: z.literal(1),
  statements_b64: z.array(z.string().max(16 * 1024)).max(MAX_CHAIN_LINKS),
});

export function anchorStatePath(stateDir: string): string {
  return join(stateDir, 'anchor.json');
}

export async function savePinnedChain(stateDir: string, trust: TrustState): Promise<void> {
  await ensureDir(stateDir, 0o700);
  const body: z.infer<typeof FileSchema> = { schema: 1, statements_b64: trust.applied.map((s) => s.toString('base64')) };
  await writeFileAtomic(anchorStatePath(stateDir), JSON.stringify(body, null, 2) + '\n', 0o600);
}

/** The trust this node has: the config's anchor followed through the pinned statements. */
export async function loadTrust(stateDir: string, configAnchor: Anchor): Promise<TrustState> {
  const start = initialTrust(configAnchor);
  const bytes = await readIfExists(anchorStatePath(stateDir));
  if (bytes === undefined) return start;
  try {
    const f = FileSchema.parse(parseJsonBounded(bytes, { maxBytes: 2 << 20, maxDepth: 4 }, 'anchor.json'));
    return followChain(
      start,
      f.statements_b64.map((s) => Buffer.from(s, 'base64')),
    );
  } catch (err) {
    throw new DocumentError('MVPN_ANCHOR_STATEMENT_INVALID', `${anchorStatePath(stateDir)}: the pinned anchor chain cannot be walked from the config's anchor: ${toMvpnError(err).message}`, {
      context: { path: anchorStatePath(stateDir) },
      hint: 'restore the file from a backup, or, if this node must start over, remove it and put the current anchor (`mvpn-client server anchor`) in the config',
      cause: err,
    });
  }
}
