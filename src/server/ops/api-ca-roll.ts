/**
 * Rolling the server's API CA (issue 19): the CA that signs the HTTPS
 * listener's certificate and every node's API identity (mTLS). The same
 * shape as a network CA roll (ca-roll.ts), with an overlap in which both
 * CAs are trusted, and the same proof: a cross-certificate for the new CA
 * signed by the old CA key, which each agent checks against the API CA it
 * pinned (src/agent/api-ca.ts) — never trust on first use.
 *
 * Files (`<state>/api/`, besides ca.crt/ca.key/server.crt/server.key):
 *   ca-prev.crt   the previous CA, during the overlap only: client
 *                 certificates of both CAs are accepted;
 *   ca-roll.crt   the cross-certificate, then the CA it replaced; kept
 *                 after the finish for agents that were offline;
 *   roll.json     when the running roll started and its overlap ends.
 *
 * 1. `rollApiCa` (start): a new CA `mvpn-api-ca.<n+1>` becomes ca.crt/ca.key
 *    (every enrollment and renewal is issued by it from now on), the old
 *    one moves to ca-prev.crt. The listener keeps its old-CA certificate, so
 *    every agent, followed or not, still verifies it. Agents see the roll in
 *    `GET /v1/api-ca.json` at their next reconcile, pin both CAs, and renew
 *    their identity at once (new key) through POST /v1/renew.
 * 2. `finishApiCaRoll` (`--finish`, or the daemon once the overlap is over
 *    and no node is left behind): a listener certificate from the new CA,
 *    served with the cross-certificate as its chain (an agent that still
 *    pins only the old CA verifies it through the cross-certificate and gets
 *    a clear refusal instead of a TLS error); ca-prev.crt goes, so old-CA
 *    identities are refused (MVPN_API_CA_RETIRED). Refused while a node
 *    still holds an old-CA identity, unless forced: those nodes then have to
 *    enroll again.
 *
 * Key and certificate of a pair are replaced through `.next` files and two
 * renames; `completeApiFiles` finishes a pair a crash left half-renamed (a
 * key without its certificate is dropped: the step never happened).
 */
import { X509Certificate } from 'node:crypto';
import { readFile, rename, rm, stat } from 'node:fs/promises';
import { z } from 'zod';
import { apiCaCn, apiCaGeneration } from '../../bundle/names.ts';
import { ConfigError, StoreError } from '../../errors.ts';
import { createCa, crossCertify, type CaMaterial } from '../../pki/ca.ts';
import { caFacts, certMatchesKey } from '../../pki/verify.ts';
import { writeFileAtomic } from '../../util/fs-atomic.ts';
import { fileStamp, readTextIfExists } from '../../util/read-file.ts';
import { parseJsonBounded } from '../../util/json.ts';
import type { ServerPaths } from '../config.ts';
import { isPeerNode } from '../federation/mirror.ts';
import { issueListenerCert } from '../init.ts';
import { BACKDATE, CA_YEARS, DEFAULT_OVERLAP_MS } from './ca-roll.ts';
import { DAY, nowOf, type ServerContext } from './context.ts';

const RollStateSchema = z.strictObject({
  schema: z.literal(1),
  previous: z.string().max(64),
  ca: z.string().max(64),
  started_at: z.number().int(),
  overlap_until: z.number().int(),
});
type RollState = z.infer<typeof RollStateSchema>;

/** What the API listener runs on: read by the daemon at start and again whenever the files change. */
export interface ApiCaState {
  /** The CA that issues identities now (ca.crt/ca.key). */
  readonly issuer: CaMaterial;
  /** Client certificates of these CAs are accepted: the previous CA (overlap) and the current one. */
  readonly trustedPems: readonly string[];
  /** The listener's certificate (with the cross-certificate as its chain after a roll's finish) and key. */
  readonly listener: { readonly certPem: string; readonly keyPem: string };
  /** ca-roll.crt: the cross-certificate of the last roll, then the CA it replaced. */
  readonly rollPem?: string;
  /** The running roll, while it overlaps. */
  readonly roll?: { readonly previous: string; readonly startedAt: number; readonly overlapUntil: number };
}

function refuse(message: string, hint?: string): StoreError {
  return new StoreError('MVPN_CA_ROLL_REFUSED', message, { context: { ca: 'api' }, ...(hint ? { hint } : {}) });
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}

/** Replace a key and its certificate: both `.next` files first (fsync'd), then the key's rename, then the certificate's. */
async function replacePair(keyPath: string, certPath: string, keyPem: string, certPem: string): Promise<void> {
  await writeFileAtomic(`${keyPath}.next`, keyPem, 0o600);
  await writeFileAtomic(`${certPath}.next`, certPem, 0o644);
  await rename(`${keyPath}.next`, keyPath);
  await rename(`${certPath}.next`, certPath);
}

/** Finishes a replacePair a crash interrupted; `beforeRename` runs when both `.next` files were written. */
async function completePair(keyPath: string, certPath: string, beforeRename?: () => Promise<void>): Promise<void> {
  const [keyNext, certNext] = await Promise.all([exists(`${keyPath}.next`), exists(`${certPath}.next`)]);
  if (!certNext) {
    // The certificate was never written: the replacement did not happen.
    if (keyNext) await rm(`${keyPath}.next`, { force: true });
    return;
  }
  if (keyNext) {
    await beforeRename?.();
    await rename(`${keyPath}.next`, keyPath);
  }
  await rename(`${certPath}.next`, certPath);
}

/** Completes what a crashed roll or finish left half-done (by the CLI before it reads the files, and at daemon start). */
export async function completeApiFiles(paths: ServerPaths): Promise<void> {
  // A start that wrote the new CA pair: the old CA must be ca-prev.crt before ca.crt is replaced.
  await completePair(paths.apiCaKey, paths.apiCaCert, async () => {
    if (!(await exists(paths.apiCaPrev))) await writeFileAtomic(paths.apiCaPrev, await readFile(paths.apiCaCert, 'utf8'), 0o644);
  });
  await completePair(paths.apiKey, paths.apiCert);
}

async function readRollState(paths: ServerPaths): Promise<RollState | undefined> {
  const text = await readTextIfExists(paths.apiCaRollState);
  return text === undefined ? undefined : RollStateSchema.parse(parseJsonBounded(Buffer.from(text), { maxBytes: 4096, maxDepth: 2 }, paths.apiCaRollState));
}

/**
 * The API CA files. `complete` (default) first finishes what a crashed roll
 * left; the running daemon reads with `complete: false`, because a roll
 * another process is writing at that moment looks just like a crashed one.
 * A key that does not belong to its certificate (a pair read between its
 * two renames) is refused, so the caller keeps what it had and reads again.
 */
export async function loadApiCaState(paths: ServerPaths, opts: { complete?: boolean } = {}): Promise<ApiCaState> {
  if (opts.complete !== false) await completeApiFiles(paths);
  const [caCert, caKey, cert, key, prev, roll] = await Promise.all([
    readFile(paths.apiCaCert, 'utf8'),
    readFile(paths.apiCaKey, 'utf8'),
    readFile(paths.apiCert, 'utf8'),
    readFile(paths.apiKey, 'utf8'),
    readTextIfExists(paths.apiCaPrev),
    readTextIfExists(paths.apiCaRoll),
  ]);
  const pairs: [string, string, string][] = [[caCert, caKey, 'ca'], [firstPem(cert), key, 'server']];
  for (const [pairCert, pairKey, what] of pairs) {
    if (!(await certMatchesKey(pairCert, pairKey))) {
      throw new ConfigError('MVPN_CERT_KEY_MISMATCH', `${paths.apiDir}/${what}.key does not belong to ${what}.crt`, { hint: 'an API CA roll may be being written; if this persists, run mvpn-client server api roll-ca --finish or restore the api directory' });
    }
  }
  const state = prev === undefined ? undefined : await readRollState(paths);
  // A proof is served only for the CA it certifies (a start that crashed before its new CA was in place left one for no CA).
  const proves = roll !== undefined && certifies(roll, caCert);
  return {
    issuer: { alg: 'ec-p256', certPem: caCert, keyPem: caKey },
    trustedPems: prev === undefined ? [caCert] : [prev, caCert],
    listener: { certPem: cert, keyPem: key },
    ...(proves ? { rollPem: roll } : {}),
    ...(prev === undefined ? {} : { roll: { previous: (await caFacts(prev)).cn, startedAt: state?.started_at ?? 0, overlapUntil: state?.overlap_until ?? 0 } }),
  };
}

function firstPem(pem: string): string {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/)?.[0] ?? pem;
}

/** Whether the first certificate of `proofPem` is for the key of `caPem`. */
function certifies(proofPem: string, caPem: string): boolean {
  try {
    const spki = (pem: string): Buffer => new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
    return spki(proofPem).equals(spki(caPem));
  } catch {
    return false;
  }
}

/** A stamp of the files loadApiCaState reads: the daemon reloads the listener when it changes. */
export async function apiCaStamp(paths: ServerPaths): Promise<string> {
  const parts = await Promise.all(
    [paths.apiCaCert, paths.apiCaKey, paths.apiCert, paths.apiKey, paths.apiCaPrev, paths.apiCaRoll].map((p) => fileStamp(p).catch(() => '-')),
  );
  return parts.join('|');
}

/** Nodes whose API identity is not from `issuerPem`: they still have to renew onto it. */
export function nodesBehind(ctx: ServerContext, issuerPem: string): string[] {
  const issuer = new X509Certificate(issuerPem);
  return ctx.store
    .read((tx) => tx.listNodes())
    .filter((n) => n.identityCertPem !== null && n.identitySerial !== null && !new X509Certificate(n.identityCertPem).checkIssued(issuer))
    .map((n) => n.id)
    .sort();
}

export interface ApiCaRollResult {
  readonly ca: string;
  readonly previous: string;
  readonly overlapUntil: number;
  /** Enrolled nodes; each renews onto the new CA at its next reconcile. */
  readonly nodes: number;
}

export async function rollApiCa(ctx: ServerContext, opts: { overlapMs?: number } = {}): Promise<ApiCaRollResult> {
  const { paths } = ctx;
  const cur = await loadApiCaState(paths);
  if (cur.roll) {
    throw refuse(`the API CA is already rolling from ${cur.roll.previous} (overlap until ${new Date(cur.roll.overlapUntil).toISOString()})`, 'finish it first: mvpn-client server api roll-ca --finish');
  }
  const nodes = ctx.store.read((tx) => tx.listNodes());
  if (nodes.some((n) => isPeerNode(n.id))) {
    throw refuse('this server has server-to-server links, whose API identities cannot renew themselves; rolling the API CA is not supported with links yet', 'remove the links (server link remove), roll, then export them again');
  }
  const now = nowOf(ctx);
  const overlapMs = opts.overlapMs ?? DEFAULT_OVERLAP_MS;
  const old = await caFacts(cur.issuer.certPem);
  const cn = apiCaCn((apiCaGeneration(old.cn) ?? 1) + 1);
  const ca = await createCa({ cn, alg: 'ec-p256', notBefore: new Date(now - BACKDATE), notAfter: new Date(now + CA_YEARS * 365 * DAY) });
  const proof = (await crossCertify(cur.issuer, ca.certPem, new Date(now - BACKDATE))) + cur.issuer.certPem;
  const state: RollState = { schema: 1, previous: old.cn, ca: cn, started_at: now, overlap_until: now + overlapMs };
  await writeFileAtomic(paths.apiCaRollState, JSON.stringify(state, null, 2) + '\n', 0o600);
  await writeFileAtomic(paths.apiCaRoll, proof, 0o644);
  // ca-prev.crt before ca.crt changes: completeApiFiles relies on that order too.
  await writeFileAtomic(`${paths.apiCaKey}.next`, ca.keyPem, 0o600);
  await writeFileAtomic(`${paths.apiCaCert}.next`, ca.certPem, 0o644);
  await writeFileAtomic(paths.apiCaPrev, cur.issuer.certPem, 0o644);
  await completeApiFiles(paths);
  return { ca: cn, previous: old.cn, overlapUntil: state.overlap_until, nodes: nodes.filter((n) => n.identityCertPem !== null).length };
}

export interface ApiCaFinishResult {
  readonly ca: string;
  readonly previous: string;
  /** Nodes still on the old CA when the finish was forced: they must enroll again. */
  readonly dropped: readonly string[];
}

/** Ends the overlap: listener certificate from the new CA, old CA no longer accepted. */
export async function finishApiCaRoll(ctx: ServerContext, opts: { force?: boolean } = {}): Promise<ApiCaFinishResult> {
  const { paths } = ctx;
  const cur = await loadApiCaState(paths);
  if (!cur.roll) throw refuse('the API CA is not rolling', 'start a roll with mvpn-client server api roll-ca');
  const ca = (await caFacts(cur.issuer.certPem)).cn;
  const behind = nodesBehind(ctx, cur.issuer.certPem);
  if (behind.length > 0 && opts.force !== true) {
    const list = behind.slice(0, 10).join(', ') + (behind.length > 10 ? `, … (${behind.length} in all)` : '');
    throw refuse(`${behind.length} node(s) still hold an API identity from ${cur.roll.previous}: ${list}; finishing now would lock them out`, `nodes that are up renew onto ${ca} at their next reconcile; wait for them, or finish anyway with --force (those nodes must then enroll again: server node token NODE, then mvpn-client enroll --force on the node)`);
  }
  const now = nowOf(ctx);
  const caEnd = (await caFacts(cur.issuer.certPem)).notAfter;
  const listener = await issueListenerCert(cur.issuer, ctx.config, new Date(now - BACKDATE), caEnd);
  // The chain after the leaf: the cross-certificate, so an agent that pins only the old CA still verifies the listener.
  const cross = cur.rollPem === undefined ? '' : firstPem(cur.rollPem);
  await replacePair(paths.apiKey, paths.apiCert, listener.keyPem, listener.certPem + cross);
  await rm(paths.apiCaPrev, { force: true });
  await rm(paths.apiCaRollState, { force: true });
  return { ca, previous: cur.roll.previous, dropped: behind };
}

/**
 * The daemon's periodic pass: finishes a roll whose overlap is over once no
 * node is left on the old CA. Nodes left behind keep the overlap open (and
 * caExpiries warns about them daily) until they renew or the operator
 * forces the finish. Undefined when there is nothing to finish.
 */
export async function finishDueApiCaRoll(ctx: ServerContext): Promise<ApiCaFinishResult | undefined> {
  const cur = await loadApiCaState(ctx.paths, { complete: false });
  if (!cur.roll || cur.roll.overlapUntil > nowOf(ctx)) return undefined;
  if (nodesBehind(ctx, cur.issuer.certPem).length > 0) return undefined;
  return finishApiCaRoll(ctx);
}
