/**
 * Enrollment (DESIGN.md §3): the key pair is made here, on the node; only a
 * CSR and the one-time token go to the server (`POST /v1/enroll`), which
 * answers with the node's API identity certificate and the API CA.
 *
 * - The token file is consumed: removed after a successful enrollment, so a
 *   token never sits on disk after it has done its job.
 * - A token the server refuses for good (used, expired, unknown) is
 *   remembered by its hash, so `run` does not retry it on every start; the
 *   explicit `mvpn-client enroll` always tries.
 * - Re-enrollment replaces the key and is explicit only (`enroll --force`).
 */
import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { loadUndici } from '../util/undici.ts';
import { z } from 'zod';
import { MvpnError, isMvpnError, type ErrorCode } from '../errors.ts';
import { createCsr } from '../pki/csr.ts';
import { generateKeyPairPem, type KeyAlg } from '../pki/keys.ts';
import { certMatchesKey, verifyCert } from '../pki/verify.ts';
import { writeFileAtomic } from '../util/fs-atomic.ts';
import { parseJsonBounded } from '../util/json.ts';
import { identityPaths, loadIdentity, saveIdentity, type Identity } from './identity.ts';
import { fetchErrorFrom } from './sources.ts';
import { connectOption } from './via.ts';
import { parseWireError } from '../util/wire-error.ts';

export interface EnrollOptions {
  readonly nodeId: string;
  /** Server base URL (`https://host:port/`); the request goes to `v1/enroll` under it. */
  readonly url: string;
  /** `HOST:PORT` of a TCP relay to dial instead of the URL's host; TLS is still verified for the URL's host (via.ts). */
  readonly via?: string;
  readonly tokenFile: string;
  /** Pinned CA of the server's TLS certificate; undefined = system CAs. */
  readonly serverCaPem?: string;
  readonly stateDir: string;
  /** Replace an existing identity (new key). */
  readonly force?: boolean;
  readonly now: Date;
  readonly timeoutMs?: number;
  readonly keyAlg?: KeyAlg;
}

/** Server answers that mean "this token will never work": do not retry it. */
const PERMANENT: ReadonlySet<string> = new Set([
  'MVPN_TOKEN_USED',
  'MVPN_TOKEN_EXPIRED',
  'MVPN_TOKEN_INVALID',
  'MVPN_API_BAD_REQUEST',
  'MVPN_CSR_INVALID',
  'MVPN_KEY_INVALID',
  'MVPN_CERT_WRONG_CN',
  'MVPN_NOT_FOUND',
  'MVPN_API_FORBIDDEN',
]);

export function isPermanentEnrollError(e: MvpnError): boolean {
  return PERMANENT.has(e.code) || e.code === 'MVPN_ALREADY_EXISTS';
}

/** The reply of `POST /v1/enroll` and `POST /v1/renew`. */
export const IdentityReplySchema = z.strictObject({
  node: z.string().max(128),
  identity_cert: z.string().min(1).max(64 * 1024),
  api_ca: z.string().min(1).max(64 * 1024),
});

/** `route` (e.g. `v1/enroll`) under the server's API base URL. */
export function apiUrl(base: string, route: string): URL {
  const u = new URL(base);
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return new URL(route, u);
}

function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

async function readToken(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new MvpnError('MVPN_ENROLL_FAILED', `cannot read the enrollment token ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      context: { path },
      hint: 'get a token from the server admin (`mvpn-client server node token NODE`) and write it to that file',
      cause: err,
    });
  }
  const token = text.trim();
  if (token.length === 0 || token.length > 1024 || /\s/.test(token)) {
    throw new MvpnError('MVPN_ENROLL_FAILED', `the enrollment token file ${path} does not hold one token`, { context: { path } });
  }
  return token;
}

/** True when `run` should try to enroll: not enrolled, a token is there, and it was not refused before. */
export async function shouldAutoEnroll(stateDir: string, tokenFile: string): Promise<{ yes: boolean; reason: string }> {
  if (await loadIdentity(stateDir)) return { yes: false, reason: 'already enrolled' };
  let token: string;
  try {
    token = (await readFile(tokenFile, 'utf8')).trim();
  } catch {
    return { yes: false, reason: `no enrollment token at ${tokenFile}` };
  }
  const rejected = await readFile(identityPaths(stateDir).rejectedToken, 'utf8').catch(() => '');
  if (rejected.trim() === tokenHash(token)) {
    return { yes: false, reason: `the token in ${tokenFile} was refused before; put a new one there or run \`mvpn-client enroll\`` };
  }
  return { yes: true, reason: '' };
}

function tokenMessage(code: string, file: string, serverMessage: string): string {
  switch (code) {
    case 'MVPN_TOKEN_USED':
      return `the enrollment token in ${file} was already used; a token works once`;
    case 'MVPN_TOKEN_EXPIRED':
      return `the enrollment token in ${file} has expired`;
    case 'MVPN_TOKEN_INVALID':
      return `the server does not know the enrollment token in ${file} (or it is for another node)`;
    default:
      return `the server refused the enrollment: ${serverMessage}`;
  }
}

/** TLS material of an API POST: pinned CA, and the node's identity for the mTLS routes (renewal). */
export interface PostTls {
  readonly ca?: string | undefined;
  readonly cert?: string;
  readonly key?: string;
}

/** One JSON POST to the server's API (enrollment, renewal): bounded reply, status and parsed body; transport failures as fetch errors. */
export async function postJson(url: URL, body: unknown, tls: PostTls, timeoutMs: number, via: string | undefined): Promise<{ status: number; json: unknown }> {
  const undici = await loadUndici();
  const { Agent, request } = undici;
  const dispatcher = new Agent({
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    maxResponseSize: 256 * 1024,
    connect: connectOption(
      undici,
      {
        timeout: Math.min(timeoutMs, 10_000),
        ...(tls.ca === undefined ? {} : { ca: tls.ca }),
        ...(tls.cert === undefined || tls.key === undefined ? {} : { cert: tls.cert, key: tls.key }),
      },
      via === undefined ? undefined : { via, target: url },
    ),
  });
  try {
    const res = await request(url, {
      method: 'POST',
      dispatcher,
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs * 2),
    });
    const bytes = Buffer.from(await res.body.arrayBuffer());
    let json: unknown = {};
    try {
      json = parseJsonBounded(bytes, { maxBytes: 256 * 1024, maxDepth: 8 }, `reply from ${url.pathname}`);
    } catch (err) {
      if (res.statusCode === 200) throw err;
    }
    return { status: res.statusCode, json };
  } catch (err) {
    throw fetchErrorFrom(err, url);
  } finally {
    await dispatcher.close().catch(() => undefined);
  }
}

/**
 * Enroll this node. Resolves to the stored identity; throws MvpnError with
 * the server's code (MVPN_TOKEN_USED, ...) or MVPN_ENROLL_FAILED.
 */
export async function enroll(opts: EnrollOptions): Promise<Identity> {
  if (!opts.force && (await loadIdentity(opts.stateDir))) {
    throw new MvpnError('MVPN_ALREADY_EXISTS', `node ${opts.nodeId} is already enrolled (${identityPaths(opts.stateDir).cert})`, {
      hint: 're-enrolling makes a new key; do it explicitly with `mvpn-client enroll --force`',
    });
  }
  const token = await readToken(opts.tokenFile);
  const keyPair = await generateKeyPairPem(opts.keyAlg ?? 'ec-p256');
  const csr = await createCsr({ keyPair, cn: opts.nodeId });
  const url = apiUrl(opts.url, 'v1/enroll');
  const timeoutMs = opts.timeoutMs ?? 30_000;

  let reply: { status: number; json: unknown };
  try {
    reply = await postJson(url, { node: opts.nodeId, token, csr }, { ca: opts.serverCaPem }, timeoutMs, opts.via);
  } catch (err) {
    const e = isMvpnError(err) ? err : fetchErrorFrom(err, url);
    throw new MvpnError('MVPN_ENROLL_FAILED', `cannot reach the enrollment endpoint${opts.via === undefined ? '' : ` (via ${opts.via})`}: ${e.message}`, {
      context: { url: url.href, cause: e.code, ...(opts.via === undefined ? {} : { via: opts.via }) },
      cause: e,
    });
  }

  if (reply.status !== 200) {
    const err = parseWireError(reply.json);
    const code = err.code ?? 'MVPN_ENROLL_FAILED';
    const serverMessage = err.message?.slice(0, 300) ?? `HTTP ${reply.status}`;
    if (PERMANENT.has(code)) {
      await writeFileAtomic(identityPaths(opts.stateDir).rejectedToken, tokenHash(token) + '\n', 0o600).catch(() => undefined);
      throw new MvpnError(code as ErrorCode, tokenMessage(code, opts.tokenFile, serverMessage), {
        context: { url: url.href, status: reply.status },
        hint: 'ask the server admin for a new token (`mvpn-client server node token NODE`), write it to the token file and run `mvpn-client enroll`',
      });
    }
    throw new MvpnError('MVPN_ENROLL_FAILED', `enrollment at ${url.href} failed: HTTP ${reply.status}: ${serverMessage}`, {
      context: { url: url.href, status: reply.status, serverCode: code },
    });
  }

  const parsed = IdentityReplySchema.safeParse(reply.json);
  if (!parsed.success || parsed.data.node !== opts.nodeId) {
    throw new MvpnError('MVPN_ENROLL_FAILED', `the enrollment reply from ${url.href} is not an identity for node ${opts.nodeId}`, { context: { url: url.href } });
  }
  const { identity_cert: certPem, api_ca: caPem } = parsed.data;
  try {
    await verifyCert({ certPem, caCertPem: caPem, usage: 'client', now: opts.now, expectCn: opts.nodeId });
    if (!(await certMatchesKey(certPem, keyPair.privateKeyPem))) throw new MvpnError('MVPN_CERT_KEY_MISMATCH', 'the identity certificate is not for the key this node sent');
  } catch (err) {
    const e = isMvpnError(err) ? err : new MvpnError('MVPN_CERT_INVALID', String(err));
    throw new MvpnError('MVPN_ENROLL_FAILED', `the server returned an unusable identity certificate: ${e.message}`, { context: { cause: e.code }, cause: e });
  }
  const identity = await saveIdentity(opts.stateDir, { keyPem: keyPair.privateKeyPem, certPem, caPem });
  // The token has done its job; it must not be reused.
  await rm(opts.tokenFile, { force: true });
  await rm(identityPaths(opts.stateDir).rejectedToken, { force: true });
  return identity;
}
