/**
 * What the agent keeps across restarts besides its installs: the last
 * accepted membership document and the operator's `down` marks (below).
 *
 * The last accepted membership document, persisted so rollback protection
 * (serial and payload hash, DESIGN.md §4) survives restarts and a node that
 * boots without any reachable source still knows its networks' names.
 *
 * `<state>/membership.json` (0600, written atomically) holds the envelope
 * exactly as received (base64) and where it came from. On load the envelope
 * is opened again with the anchor, so serial and hash are derived from signed
 * bytes, not from a field anyone could edit; only `source`, `etag` and
 * `fetched_at` are taken as written.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { openEnvelope } from '../bundle/envelope.ts';
import { parseMembershipDoc, sha256Hex } from '../bundle/membership.ts';
import { NETWORK_ID_RE, type MembershipDoc } from '../bundle/schema.ts';
import type { Anchor } from '../bundle/sign.ts';
import { ensureDir, writeFileAtomic } from '../util/fs-atomic.ts';
import { parseJsonBounded } from '../util/json.ts';
import { readIfExists } from '../util/read-file.ts';

export interface StoredMembership {
  readonly doc: MembershipDoc;
  readonly envelope: Buffer;
  readonly payloadSha256: string;
  /** URL or path the document came from. */
  readonly source: string;
  /** ETag that source gave for it (only sent back to that source). */
  readonly etag?: string;
  /** Last time a source confirmed it (new document or 304). */
  readonly fetchedAt: number;
}

const FileSchema = z.strictObject({
  schema: z.literal(1),
  envelope_b64: z.string().max(1 << 20),
  source: z.string().max(4096),
  etag: z.string().max(1024).optional(),
  fetched_at: z.string().max(64),
});

export function membershipPath(stateDir: string): string {
  return join(stateDir, 'membership.json');
}

export async function saveMembership(stateDir: string, m: StoredMembership): Promise<void> {
  await ensureDir(stateDir, 0o700);
  const body: z.infer<typeof FileSchema> = {
    schema: 1,
    envelope_b64: m.envelope.toString('base64'),
    source: m.source,
    ...(m.etag === undefined ? {} : { etag: m.etag }),
    fetched_at: new Date(m.fetchedAt).toISOString(),
  };
  await writeFileAtomic(membershipPath(stateDir), JSON.stringify(body, null, 2) + '\n', 0o600);
}

/**
 * The stored document, or undefined when there is none. Throws when the file
 * exists but cannot be used (the caller logs it and starts without one).
 */
export async function loadMembership(stateDir: string, anchor: Anchor): Promise<StoredMembership | undefined> {
  const bytes = await readIfExists(membershipPath(stateDir));
  if (bytes === undefined) return undefined;
  const f = FileSchema.parse(parseJsonBounded(bytes, { maxBytes: 2 << 20, maxDepth: 4 }, 'membership.json'));
  const envelope = Buffer.from(f.envelope_b64, 'base64');
  const payload = openEnvelope(envelope, 'membership', anchor);
  const doc = parseMembershipDoc(payload);
  const fetchedAt = Date.parse(f.fetched_at);
  return {
    doc,
    envelope,
    payloadSha256: sha256Hex(payload),
    source: f.source,
    ...(f.etag === undefined ? {} : { etag: f.etag }),
    fetchedAt: Number.isFinite(fetchedAt) ? fetchedAt : 0,
  };
}

/**
 * Networks the operator took down (`mvpn-client down NET`), kept in
 * `<state>/admin.json` (0600, written atomically) so the mark survives agent
 * restarts and reboots until `mvpn-client up NET` (or the network leaves the
 * membership). Maps network id → when it was taken down (ms).
 */
const AdminFileSchema = z.strictObject({
  schema: z.literal(1),
  down: z
    .record(z.string().regex(NETWORK_ID_RE), z.iso.datetime())
    .refine((r) => Object.keys(r).length <= 4096, 'at most 4096 networks'),
});

export function adminStatePath(stateDir: string): string {
  return join(stateDir, 'admin.json');
}

export async function saveAdminDown(stateDir: string, down: ReadonlyMap<string, number>): Promise<void> {
  await ensureDir(stateDir, 0o700);
  const body: z.infer<typeof AdminFileSchema> = {
    schema: 1,
    down: Object.fromEntries([...down].sort(([a], [b]) => a.localeCompare(b)).map(([id, at]) => [id, new Date(at).toISOString()])),
  };
  await writeFileAtomic(adminStatePath(stateDir), JSON.stringify(body, null, 2) + '\n', 0o600);
}

/** The stored marks (empty when there is no file); throws when the file exists but cannot be used. */
export async function loadAdminDown(stateDir: string): Promise<Map<string, number>> {
  const bytes = await readIfExists(adminStatePath(stateDir));
  if (bytes === undefined) return new Map();
  const f = AdminFileSchema.parse(parseJsonBounded(bytes, { maxBytes: 1 << 20, maxDepth: 3 }, 'admin.json'));
  return new Map(Object.entries(f.down).map(([id, at]) => [id, Date.parse(at)]));
}
