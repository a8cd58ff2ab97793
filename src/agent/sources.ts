/**
 * Discovery: getting the signed membership document and the bundles it
 * names, from an ordered list of sources (DESIGN.md §5).
 *
 * Design notes:
 * - The signature, not the channel, carries the trust, so any source may
 *   serve the document (MetaVPN host, a boss/CM relay, a file from the
 *   startup tarball). Sources are tried in order; the first whose document
 *   *verifies* wins. A source that answers with a bad document is skipped
 *   and the reason recorded — a relay with a stale copy must not stop the
 *   agent from asking the next one.
 * - Every network operation is bounded: a per-request timeout (undici
 *   headersTimeout/bodyTimeout, connect timeout), an overall deadline for the
 *   whole discovery (one AbortSignal shared by all requests and backoff
 *   sleeps), and byte caps (undici `maxResponseSize` on the dispatcher, plus
 *   Content-Length checked before reading).
 * - Transient failures (connection errors, timeouts, 5xx, 429) are retried
 *   with exponential backoff and full jitter, because a whole testbed swaps
 *   in at once; 4xx and bad documents are not retried.
 * - ETag / If-None-Match: a 304 from the source that gave the last accepted
 *   document means "still that one"; the caller re-verifies the stored copy
 *   (it may have expired since).
 * - An https source URL ending in `/` is a base: the document is at
 *   `<base>v1/membership` (the server API). Any other URL is the document
 *   itself (a relay may serve it anywhere). Bundle URLs in the document
 *   resolve against the URL or file the document came from.
 * - An https source with `via` is dialled at the relay, TLS verified for the
 *   URL's host (via.ts). Its bundles on the same origin go the same way; a
 *   bundle URL on another origin is that server's, reached directly.
 */
import { constants, type Stats } from 'node:fs';
import { lstat, open, realpath, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type * as Undici from 'undici';
import type { Agent, Dispatcher } from 'undici';
import { loadedUndici, loadUndici } from '../util/undici.ts';
import { FetchError, isMvpnError, MvpnError, toMvpnError, type ErrorCode } from '../errors.ts';
import { backoffDelay, type BackoffPolicy } from '../util/backoff.ts';
import { readAtMost } from '../util/read-file.ts';
import type { FetchLimits, SourceConfig } from './config.ts';
import { connectOption, viaLabel } from './via.ts';
import { parseWireError } from '../util/wire-error.ts';

/** TLS material for https sources: pinned CA, and the identity cert once enrolled. */
export interface TlsMaterial {
  /** PEM of the CA that must have issued the server's certificate; undefined = system CAs. */
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

/** One try at one source, kept for status and logs. */
export interface SourceAttempt {
  readonly source: string;
  readonly ok: boolean;
  readonly code?: string;
  readonly message?: string;
}

export interface FetchedDoc {
  readonly kind: 'doc';
  readonly bytes: Buffer;
  readonly etag?: string;
}
export interface NotModified {
  readonly kind: 'not-modified';
}

/** Where a document came from: its label for status, and the base for its bundle URLs. */
export interface DocOrigin {
  readonly label: string;
  readonly base: URL;
  /** The source's relay (`HOST:PORT`), for requests to the base's origin. */
  readonly via?: string;
}

export interface DiscoverOptions<T> {
  /** ETag to send to this source (only the source that produced the stored document). */
  readonly etagFor: (origin: DocOrigin) => string | undefined;
  /** Verify fresh bytes; throw (any MvpnError) to reject the document. */
  readonly accept: (bytes: Buffer, origin: DocOrigin) => T | Promise<T>;
  /** The stored document for a 304; throw if it can no longer be accepted. */
  readonly reuse: (origin: DocOrigin) => T;
  readonly signal?: AbortSignal;
}

export interface Discovered<T> {
  readonly value: T;
  readonly origin: DocOrigin;
  readonly etag?: string;
  readonly notModified: boolean;
  readonly attempts: readonly SourceAttempt[];
}

export interface SourceDeps {
  readonly random: () => number;
  /** Abortable sleep; rejects with the signal's reason. */
  readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  readonly backoff: BackoffPolicy;
}

const defaultDeps: SourceDeps = {
  random: Math.random,
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason as Error);
      const t = setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = (): void => {
        clearTimeout(t);
        reject(signal.reason as Error);
      };
      signal.addEventListener('abort', onAbort, { once: true });
    }),
  backoff: { initialMs: 1_000, maxMs: 30_000, factor: 2, jitter: 1, minMs: 250 },
};

export function membershipUrl(source: string): URL {
  const u = new URL(source);
  return u.pathname.endsWith('/') ? new URL('v1/membership', u) : u;
}

export function originOf(source: SourceConfig): DocOrigin {
  if (source.type === 'file') return { label: source.path, base: pathToFileURL(source.path) };
  const url = membershipUrl(source.url);
  return { label: viaLabel(url.href, source.via), base: url, ...(source.via === undefined ? {} : { via: source.via }) };
}

/**
 * Where the anchor chain (trust-anchor rotation statements) lives for a
 * source: `anchor-chain.json` beside the document — `<api>/v1/anchor-chain.json`
 * for the server API, the same directory for a file source or a relay.
 */
export function anchorChainUrl(origin: DocOrigin): URL {
  return new URL('anchor-chain.json', origin.base);
}

/** The relay for `url` when it is on the document's own origin; other origins are dialled directly. */
export function viaFor(url: URL, origin: DocOrigin): string | undefined {
  return origin.via !== undefined && url.origin === origin.base.origin ? origin.via : undefined;
}

/**
 * Resolve a bundle URL from a membership document against where the document
 * came from. https documents may only point at https; file documents at
 * files or https (an offline tarball next to its membership file).
 */
export function resolveBundleUrl(ref: string, origin: DocOrigin): URL {
  let url: URL;
  try {
    url = new URL(ref, origin.base);
  } catch (err) {
    throw new FetchError('MVPN_FETCH_FAILED', `bundle url ${JSON.stringify(ref)} is not a valid URL`, { cause: err });
  }
  const allowed = origin.base.protocol === 'file:' ? ['file:', 'https:'] : ['https:'];
  if (!allowed.includes(url.protocol)) {
    throw new FetchError('MVPN_BUNDLE_URL_INVALID', `bundle url ${url.href} uses ${url.protocol}, not allowed for a document from ${origin.label}`, {
      context: { url: url.href, permanent: true },
    });
  }
  if (url.protocol === 'file:') {
    // A local bundle is named relative to its document, never by an absolute path or URL, never with "..".
    const segments = ref.split(/[/\\]/).map((x) => {
      try {
        return decodeURIComponent(x);
      } catch {
        return x;
      }
    });
    if (/^[a-z][a-z0-9+.-]*:/i.test(ref) || ref.startsWith('/') || ref.startsWith('\\') || segments.includes('..') || url.search !== '' || url.hash !== '') {
      throw new FetchError('MVPN_BUNDLE_URL_INVALID', `bundle url ${JSON.stringify(ref)} in ${origin.label} must be a relative path below the document's directory (no absolute path, no "..")`, {
        context: { url: ref, permanent: true },
      });
    }
  }
  return url;
}

const TRANSIENT_HTTP = new Set([408, 425, 429, 500, 502, 503, 504]);

/** Failures to get any answer (as opposed to an answer that was refused): discovery reports these as MVPN_SOURCES_UNREACHABLE. */
const TRANSPORT_CODES: ReadonlySet<string> = new Set(['MVPN_FETCH_FAILED', 'MVPN_FETCH_TIMEOUT', 'MVPN_FETCH_HTTP_STATUS']);

function isTransient(e: MvpnError): boolean {
  if (e.code === 'MVPN_FETCH_TIMEOUT' || e.code === 'MVPN_FETCH_FAILED') return e.context['permanent'] !== true;
  if (e.code === 'MVPN_FETCH_HTTP_STATUS') return TRANSIENT_HTTP.has(Number(e.context['status']));
  return false;
}

/**
 * The https side: one undici Agent per (CA, byte cap), with mTLS when the
 * node is enrolled. Make one per reconcile and close it afterwards, so a new
 * identity or CA is picked up and no idle sockets linger.
 */
export class HttpFetcher {
  private readonly agents = new Map<string, Agent>();
  private readonly tls: TlsMaterial;
  private readonly limits: FetchLimits;

  constructor(tls: TlsMaterial, limits: FetchLimits) {
    this.tls = tls;
    this.limits = limits;
  }

  private agent(undici: typeof Undici, maxBytes: number, ca: string | undefined, route: { via: string; target: URL } | undefined): Agent {
    // A via route is one origin's (via.ts), so it gets its own Agent.
    const key = `${maxBytes}\0${ca ?? ''}${route ? `\0${route.via}\0${route.target.origin}` : ''}`;
    let a = this.agents.get(key);
    if (a === undefined) {
      const tls = {
        timeout: Math.min(this.limits.requestTimeoutMs, 10_000),
        ...(ca === undefined ? {} : { ca }),
        ...(this.tls.cert !== undefined && this.tls.key !== undefined ? { cert: this.tls.cert, key: this.tls.key } : {}),
      };
      a = new undici.Agent({
        headersTimeout: this.limits.requestTimeoutMs,
        bodyTimeout: this.limits.requestTimeoutMs,
        maxResponseSize: maxBytes,
        connect: connectOption(undici, tls, route),
      });
      this.agents.set(key, a);
    }
    return a;
  }

  /** GET with a byte cap; 304 when `etag` still matches. With `via`, the connection goes to that relay (never directly). */
  async get(
    url: URL,
    opts: { maxBytes: number; etag?: string; ca?: string; via?: string; signal: AbortSignal; accept: string },
  ): Promise<FetchedDoc | NotModified> {
    // Two dispatchers per CA (membership cap, bundle cap) rather than one per size.
    const cap = opts.maxBytes <= this.limits.maxMembershipBytes ? this.limits.maxMembershipBytes : Math.max(opts.maxBytes, this.limits.maxBundleBytes);
    const undici = await loadUndici();
    const { request } = undici;
    const dispatcher: Dispatcher = this.agent(undici, cap, opts.ca ?? this.tls.ca, opts.via === undefined ? undefined : { via: opts.via, target: url });
    const headers: Record<string, string> = { accept: opts.accept };
    if (opts.etag !== undefined) headers['if-none-match'] = opts.etag;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, { method: 'GET', headers, dispatcher, signal: opts.signal });
    } catch (err) {
      throw fetchErrorFrom(err, url);
    }
    try {
      if (res.statusCode === 304) {
        await res.body.dump();
        return { kind: 'not-modified' };
      }
      const len = Number(res.headers['content-length']);
      if (Number.isFinite(len) && len > opts.maxBytes) {
        throw new FetchError('MVPN_FETCH_TOO_LARGE', `${url.href} announces ${len} bytes, more than the limit of ${opts.maxBytes}`, {
          context: { url: url.href, size: len, limit: opts.maxBytes, permanent: true },
        });
      }
      const bytes = Buffer.from(await res.body.arrayBuffer());
      if (res.statusCode !== 200) throw httpStatusError(url, res.statusCode, bytes);
      if (bytes.length > opts.maxBytes) {
        throw new FetchError('MVPN_FETCH_TOO_LARGE', `${url.href} sent ${bytes.length} bytes, more than the limit of ${opts.maxBytes}`, {
          context: { url: url.href, size: bytes.length, limit: opts.maxBytes, permanent: true },
        });
      }
      const etag = res.headers['etag'];
      return { kind: 'doc', bytes, ...(typeof etag === 'string' ? { etag } : {}) };
    } catch (err) {
      // Destroying an unread body emits an AbortError on it; nobody waits for that one.
      res.body.on('error', () => undefined);
      res.body.destroy();
      if (isMvpnError(err)) throw err;
      throw fetchErrorFrom(err, url);
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.close().catch(() => undefined)));
    this.agents.clear();
  }
}

function httpStatusError(url: URL, status: number, body: Buffer): FetchError {
  const e = parseWireError(body); // not JSON: the status says enough
  const detail = e.code !== undefined && e.message !== undefined ? `: ${e.code}: ${e.message.slice(0, 300)}` : '';
  return new FetchError('MVPN_FETCH_HTTP_STATUS', `${url.href} answered HTTP ${status}${detail}`, { context: { url: url.href, status } });
}

/** Map undici / socket errors to typed fetch errors. */
export function fetchErrorFrom(err: unknown, url: URL): MvpnError {
  if (isMvpnError(err)) return err;
  const e = err as Error & { code?: string };
  const where = url.href;
  const undiciErrors = loadedUndici()?.errors;
  if (undiciErrors && e instanceof undiciErrors.ResponseExceededMaxSizeError) {
    return new FetchError('MVPN_FETCH_TOO_LARGE', `${where} sent more bytes than the limit`, { context: { url: where, permanent: true }, cause: err });
  }
  if (
    (undiciErrors &&
      (e instanceof undiciErrors.HeadersTimeoutError || e instanceof undiciErrors.BodyTimeoutError || e instanceof undiciErrors.ConnectTimeoutError)) ||
    e.name === 'TimeoutError' ||
    e.name === 'AbortError'
  ) {
    return new FetchError('MVPN_FETCH_TIMEOUT', `${where}: timed out (${e.message})`, { context: { url: where }, cause: err });
  }
  const code = typeof e.code === 'string' ? e.code : undefined;
  return new FetchError('MVPN_FETCH_FAILED', `${where}: ${code ?? ''}${code ? ' ' : ''}${e.message}`, { context: { url: where, errno: code }, cause: err });
}

/** What a path turned out to be, for the error that refuses anything but a regular file. */
function kindOf(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isDirectory()) return 'a directory';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return st.isFile() ? 'a regular file' : 'not a regular file';
}

export interface ReadFileOptions {
  /** Follow a symlink as the last component (a path from the agent's own config); never for paths a document names. */
  readonly follow?: boolean;
  /** Abort (reconcile deadline, shutdown): the read is abandoned, never waited on. */
  readonly signal?: AbortSignal;
  /** Confine `path` to this directory first (confinedBundlePath), inside the same abandonable work. */
  readonly within?: string;
}

/**
 * Read a local file with a size cap (never more than `maxBytes` + 1 bytes
 * into memory), the one way discovery reads files (membership documents and
 * file-source bundles).
 *
 * Only a regular file is ever opened: (l)stat first, so a FIFO never blocks
 * an open() and a device never sees one (a watchdog reboots on open); then
 * open with O_NONBLOCK (and O_NOFOLLOW unless `follow`), and fstat must show
 * the same regular file within the cap (it may have been swapped in between).
 * The whole read races `signal`: a read stuck on a hung file system is left
 * behind, and neither reconcile nor shutdown waits on it. Errors name the
 * path and what it is, never its size or content.
 */
export async function readFileCapped(path: string, maxBytes: number, opts: ReadFileOptions = {}): Promise<Buffer> {
  const { within } = opts;
  const work = within === undefined ? readCapped(path, maxBytes, opts.follow ?? false) : confinedBundlePath(path, within).then((p) => readCapped(p, maxBytes, false));
  const { signal } = opts;
  if (signal === undefined) return work;
  work.catch(() => undefined); // settles after an abort with nobody waiting
  if (signal.aborted) throw readAborted(path, signal);
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(readAborted(path, signal));
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([work, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort!);
  }
}

function readAborted(path: string, signal: AbortSignal): FetchError {
  const why = isMvpnError(signal.reason) ? signal.reason.message : 'the reconcile deadline passed';
  return new FetchError('MVPN_FETCH_TIMEOUT', `reading ${path} was abandoned: ${why}`, { context: { path } });
}

function notReadable(path: string, err: unknown): FetchError {
  const code = (err as NodeJS.ErrnoException).code;
  const what = code === 'ELOOP' ? 'it is a symbolic link' : (code ?? (err as Error).message);
  return new FetchError('MVPN_FETCH_FAILED', `cannot read ${path}: ${what}`, {
    context: { path, permanent: code === 'ENOENT' || code === 'EACCES' || code === 'ELOOP' },
    cause: err,
  });
}

function notRegular(path: string, st: Stats): FetchError {
  return new FetchError('MVPN_FETCH_FAILED', `${path} is ${kindOf(st)}; only a regular file is read`, { context: { path, permanent: true } });
}

function tooLarge(path: string, maxBytes: number): FetchError {
  return new FetchError('MVPN_FETCH_TOO_LARGE', `${path} is larger than the limit of ${maxBytes} bytes`, { context: { path, limit: maxBytes, permanent: true } });
}

async function readCapped(path: string, maxBytes: number, follow: boolean): Promise<Buffer> {
  let before: Stats;
  try {
    before = follow ? await stat(path) : await lstat(path);
  } catch (err) {
    throw notReadable(path, err);
  }
  if (!before.isFile()) throw notRegular(path, before);
  if (before.size > maxBytes) throw tooLarge(path, maxBytes);
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY | (follow ? 0 : constants.O_NOFOLLOW));
  } catch (err) {
    throw notReadable(path, err);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.dev !== before.dev || st.ino !== before.ino) throw notRegular(path, st);
    if (st.size > maxBytes) throw tooLarge(path, maxBytes);
    const data = await readAtMost(fh, maxBytes);
    if (data.length > maxBytes) throw tooLarge(path, maxBytes);
    return data;
  } finally {
    await fh.close();
  }
}

/**
 * The local path of a file-source bundle, confined to `root` (the directory
 * of the membership document that named it): no `..`, no absolute path, and
 * no symlinked directory leading out (realpath of its directory stays under
 * realpath of `root`). The file itself is opened with O_NOFOLLOW
 * (readFileCapped), so a symlink as the last component is refused too.
 */
export async function confinedBundlePath(path: string, root: string): Promise<string> {
  const refuse = (why: string): FetchError =>
    new FetchError('MVPN_BUNDLE_URL_INVALID', `bundle ${path} ${why}; a file-source bundle must lie in ${root}, the membership document's directory`, {
      context: { path, root, permanent: true },
    });
  const rel = relative(root, path);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) throw refuse('is outside that directory');
  let realRoot: string;
  let realDir: string;
  try {
    realRoot = await realpath(root);
    realDir = await realpath(dirname(path));
  } catch (err) {
    throw notReadable(path, err);
  }
  const realRel = relative(realRoot, realDir);
  if (realRel.startsWith('..') || isAbsolute(realRel)) throw refuse('is reached through a symbolic link out of that directory');
  return join(realDir, basename(path));
}

/** Run `fn` with retries for transient errors, within the shared deadline signal. */
async function withRetries<T>(fn: () => Promise<T>, retries: number, signal: AbortSignal, deps: SourceDeps): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const e = toMvpnError(err);
      if (attempt >= retries || !isTransient(e) || signal.aborted) throw e;
      try {
        await deps.sleep(backoffDelay(attempt, deps.backoff, deps.random), signal);
      } catch {
        throw e;
      }
    }
  }
}

export interface SourceSet {
  readonly sources: readonly SourceConfig[];
  readonly limits: FetchLimits;
  readonly http: Pick<HttpFetcher, 'get'>;
}

/**
 * Try the sources in order; the first whose document is accepted wins.
 * When none gives an acceptable document (the caller then keeps what runs),
 * throws listing every source's reason: MVPN_SOURCES_UNREACHABLE when no
 * source answered, else the code of the first refused document
 * (MVPN_SIGNATURE_INVALID, MVPN_MEMBERSHIP_ROLLBACK, _EQUIVOCATION,
 * _EXPIRED, _WRONG_NODE, MVPN_FETCH_TOO_LARGE, ...).
 */
export async function discover<T>(set: SourceSet, opts: DiscoverOptions<T>, deps: Partial<SourceDeps> = {}): Promise<Discovered<T>> {
  const d = { ...defaultDeps, ...deps };
  const signal = opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(set.limits.deadlineMs)]) : AbortSignal.timeout(set.limits.deadlineMs);
  const attempts: SourceAttempt[] = [];
  for (const source of set.sources) {
    const origin = originOf(source);
    if (signal.aborted) {
      attempts.push({ source: origin.label, ok: false, code: 'MVPN_FETCH_TIMEOUT', message: 'overall discovery deadline passed' });
      continue;
    }
    try {
      const etag = opts.etagFor(origin);
      const got = await withRetries(
        async (): Promise<FetchedDoc | NotModified> => {
          if (source.type === 'file') return { kind: 'doc', bytes: await readFileCapped(source.path, set.limits.maxMembershipBytes, { follow: true, signal }) };
          return set.http.get(origin.base, {
            maxBytes: set.limits.maxMembershipBytes,
            ...(etag === undefined ? {} : { etag }),
            ...(source.ca === undefined ? {} : { ca: source.ca }),
            ...(source.via === undefined ? {} : { via: source.via }),
            signal,
            accept: 'application/json',
          });
        },
        set.limits.retries,
        signal,
        d,
      );
      const value = got.kind === 'not-modified' ? opts.reuse(origin) : await opts.accept(got.bytes, origin);
      attempts.push({ source: origin.label, ok: true });
      return {
        value,
        origin,
        notModified: got.kind === 'not-modified',
        attempts,
        ...(got.kind === 'doc' && got.etag !== undefined ? { etag: got.etag } : {}),
      };
    } catch (err) {
      const e = toMvpnError(err);
      attempts.push({ source: origin.label, ok: false, code: e.code, message: e.message });
    }
  }
  const reasons = attempts
    .map((a) => {
      const msg = a.message ?? 'failed';
      return `${msg.startsWith(a.source) ? msg : `${a.source}: ${msg}`}${a.code ? ` [${a.code}]` : ''}`;
    })
    .join('; ');
  // A source that answered with a document this agent refused (forged, rolled back, expired, another
  // node's, oversize) is not "unreachable": its code is the error's, so monitoring can tell the two apart.
  const firstBad = attempts.find((a) => a.code !== undefined && !TRANSPORT_CODES.has(a.code));
  throw new FetchError(firstBad ? (firstBad.code as ErrorCode) : 'MVPN_SOURCES_UNREACHABLE', `no source gave an acceptable membership document: ${reasons}`, {
    context: { attempts, ...(firstBad ? { rejected: firstBad.code } : {}) },
    hint: firstBad
      ? `a source answered with a document this node refuses (${firstBad.source}); installed networks keep running`
      : 'installed networks keep running; the agent retries on its next reconcile',
  });
}

/** The directory a file-source document's bundles must lie in; undefined for https documents. */
export function bundleRoot(origin: DocOrigin): string | undefined {
  return origin.base.protocol === 'file:' ? dirname(fileURLToPath(origin.base)) : undefined;
}

/**
 * Fetch one bundle (https or file), capped at the size the signed membership
 * gave. A file bundle is read only inside `ctx.root` (confinedBundlePath);
 * without a root, file URLs are refused.
 */
export async function fetchBundleBytes(
  url: URL,
  expect: { size: number },
  ctx: { http: Pick<HttpFetcher, 'get'>; limits: FetchLimits; signal: AbortSignal; ca?: string; via?: string; root?: string },
  deps: Partial<SourceDeps> = {},
): Promise<Buffer> {
  const d = { ...defaultDeps, ...deps };
  if (expect.size > ctx.limits.maxBundleBytes) {
    throw new FetchError('MVPN_FETCH_TOO_LARGE', `bundle ${url.href} is ${expect.size} bytes, more than max_bundle_bytes ${ctx.limits.maxBundleBytes}`, {
      context: { url: url.href, size: expect.size, limit: ctx.limits.maxBundleBytes },
    });
  }
  return withRetries(
    async () => {
      if (url.protocol === 'file:') {
        if (ctx.root === undefined) throw new FetchError('MVPN_BUNDLE_URL_INVALID', `bundle ${url.href} is a local file, but its document did not come from one`, { context: { url: url.href, permanent: true } });
        let path: string;
        try {
          path = fileURLToPath(url);
        } catch (err) {
          throw new FetchError('MVPN_BUNDLE_URL_INVALID', `bundle ${url.href} is not a local path: ${(err as Error).message}`, { context: { url: url.href, permanent: true }, cause: err });
        }
        return readFileCapped(path, expect.size, { signal: ctx.signal, within: ctx.root });
      }
      const got = await ctx.http.get(url, {
        maxBytes: expect.size,
        signal: ctx.signal,
        accept: 'application/gzip',
        ...(ctx.ca === undefined ? {} : { ca: ctx.ca }),
        ...(ctx.via === undefined ? {} : { via: ctx.via }),
      });
      if (got.kind !== 'doc') throw new FetchError('MVPN_FETCH_HTTP_STATUS', `${url.href} answered 304 without a conditional request`, { context: { status: 304 } });
      return got.bytes;
    },
    ctx.limits.retries,
    ctx.signal,
    d,
  );
}

