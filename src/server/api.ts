/**
 * The HTTPS API v1 (ARCHITECTURE.md "Server HTTPS API v1"): enrollment,
 * signed membership documents and bundles. Nothing else — admin operations
 * are never on this listener.
 *
 * Authentication: the TLS layer asks every client for a certificate but
 * lets the handshake finish without one (`requestCert`, not
 * `rejectUnauthorized`), because enrollment is the one route for nodes that
 * have none yet. Every other route requires a certificate that chains to the
 * API CA (`socket.authorized`) and whose serial is the node's current
 * identity serial in the store (or the one an unconfirmed renewal replaced,
 * see ops/renew.ts) — so a superseded or revoked identity is refused even
 * though its signature is still good. The node is the
 * certificate's CN; a node reads only its own documents.
 *
 * Robustness: bodies are capped (413) before they are read in full, only
 * exact paths match (no decoding, no traversal), wrong methods get 405, and
 * every failure is a JSON error with a stable code; nothing a client sends
 * can throw past the handler.
 */
import { serializeChain } from '../bundle/anchor-chain.ts';
import { readChain } from './anchor-rotation.ts';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { z } from 'zod';
import { MvpnError, toMvpnError, type ErrorCode } from '../errors.ts';
import type { Logger } from '../log.ts';
import { NETWORK_ID_RE } from '../bundle/schema.ts';
import { apiCaGeneration } from '../bundle/names.ts';
import { parseJsonBounded } from '../util/json.ts';
import type { DocumentService } from './doc-service.ts';
import type { ServerEvent } from './events.ts';
import { linkState } from './federation/links.ts';
import type { ApiCaState } from './ops/api-ca-roll.ts';
import { enroll } from './ops/enroll.ts';
import { confirmRenewal, identityRole, renew } from './ops/renew.ts';
import type { ServerContext } from './ops/context.ts';
import { wireError } from '../util/wire-error.ts';

export interface ApiLimits {
  readonly maxBodyBytes: number;
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly maxHeaderBytes: number;
}

export const defaultApiLimits: ApiLimits = {
  maxBodyBytes: 64 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  maxHeaderBytes: 16 * 1024,
};

export interface ApiDeps {
  readonly ctx: ServerContext;
  readonly docs: DocumentService;
  /** The API CA files as of now (ops/api-ca-roll.ts); read per request, the daemon reloads them after a roll. */
  readonly apiCa: () => ApiCaState;
  readonly logger: Logger<ServerEvent>;
  readonly limits?: Partial<ApiLimits>;
  /**
   * Called after the API itself changed the store (an enrollment). The
   * daemon's data_version poll does not see commits made on its own
   * connection, so without this a new node's ccd file would wait for the
   * periodic pass and every connection until then would be refused.
   */
  readonly onStoreChanged?: (cause: string) => void;
  /**
   * Called before a membership document is served: the daemon checks whether
   * `server anchor rotate` replaced the signing key (one stat), so no node
   * that already followed the new chain is handed a document by the old key.
   */
  readonly beforeDocument?: () => Promise<void>;
  /** Told about every request, enrollment and failed TLS handshake (the metrics); absent when metrics are off. */
  readonly observer?: ApiObserver;
}

/** Routes as metric labels: a fixed set, so a client cannot create series by inventing paths. */
export type ApiRoute = 'enroll' | 'renew' | 'anchor' | 'membership' | 'bundle' | 'link' | 'other';

export interface ApiObserver {
  request(route: ApiRoute, status: number, seconds: number): void;
  enrollment(ok: boolean): void;
  tlsFailure(): void;
}

function routeOf(path: string): ApiRoute {
  if (path === '/v1/enroll') return 'enroll';
  if (path === '/v1/renew' || path === '/v1/renew/confirm') return 'renew';
  if (path === '/v1/anchor-chain.json' || path === '/v1/api-ca.json') return 'anchor';
  if (path === '/v1/membership') return 'membership';
  if (BUNDLE_RE.test(path)) return 'bundle';
  if (LINK_RE.test(path)) return 'link';
  return 'other';
}

const EnrollSchema = z.strictObject({
  node: z.string().min(1).max(128),
  token: z.string().min(1).max(256),
  csr: z.string().min(1).max(16 * 1024),
});

const RenewSchema = z.strictObject({ csr: z.string().min(1).max(16 * 1024) });
const ConfirmSchema = z.strictObject({});

const STATUS: Partial<Record<ErrorCode, number>> = {
  MVPN_API_BAD_REQUEST: 400,
  MVPN_JSON_INVALID: 400,
  MVPN_JSON_TOO_LARGE: 400,
  MVPN_SCHEMA_INVALID: 400,
  MVPN_USAGE: 400,
  MVPN_CSR_INVALID: 400,
  MVPN_KEY_INVALID: 400,
  MVPN_CERT_WRONG_CN: 400,
  MVPN_ADDRESS_INVALID: 400,
  MVPN_API_UNAUTHORIZED: 401,
  MVPN_API_CA_RETIRED: 401,
  MVPN_TOKEN_INVALID: 401,
  MVPN_TOKEN_EXPIRED: 401,
  MVPN_TOKEN_USED: 401,
  MVPN_API_FORBIDDEN: 403,
  MVPN_NOT_FOUND: 404,
  MVPN_STORE_CONFLICT: 409,
  MVPN_RENEW_NOT_CURRENT: 409,
  MVPN_API_TOO_LARGE: 413,
  MVPN_STORE_UNREACHABLE: 503,
};

class ApiError extends MvpnError {
  readonly status: number;
  constructor(status: number, code: ErrorCode, message: string, headers?: Record<string, string>, hint?: string) {
    super(code, message, { ...(headers ? { context: { headers } } : {}), ...(hint === undefined ? {} : { hint }) });
    this.status = status;
  }
}

const LINK_RE = /^\/v1\/link\/([a-z][a-z0-9-]{0,11})$/;
const BUNDLE_RE = /^\/v1\/bundles\/([^/]+)\/([^/]+)$/;
const VERSION_RE = /^[1-9][0-9]{0,15}$/;

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const bytes = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(bytes.length), 'cache-control': 'no-store', ...headers });
  res.end(bytes);
}

/** Reads the body up to `max` bytes; 413 as soon as it is known to be larger. */
function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > max) {
    return Promise.reject(new ApiError(413, 'MVPN_API_TOO_LARGE', `request body of ${declared} bytes is over the limit of ${max}`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > max) {
        done = true;
        reject(new ApiError(413, 'MVPN_API_TOO_LARGE', `request body is over the limit of ${max} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (!done) {
        done = true;
        resolve(Buffer.concat(chunks));
      }
    });
    req.on('error', (e) => {
      if (!done) {
        done = true;
        reject(e);
      }
    });
  });
}

/** `format` of `GET /v1/api-ca.json`: `{ format, cas: [PEM, …] (the previous CA first during a roll's overlap, the issuing CA last), roll?: PEM }`. */
export const API_CA_FORMAT = 'mvpn-api-ca-v1';

/** The listener's TLS material: its certificate (and chain), key, and the CAs whose client certificates it accepts. */
export function apiTlsOptions(a: ApiCaState): { key: string; cert: string; ca: string[]; minVersion: 'TLSv1.2' } {
  return { key: a.listener.keyPem, cert: a.listener.certPem, ca: [...a.trustedPems], minVersion: 'TLSv1.2' };
}

export function createApiServer(deps: ApiDeps): Server {
  const limits = { ...defaultApiLimits, ...deps.limits };
  const { ctx, docs, logger } = deps;

  /** The authenticated node of this request, or a 401/403. */
  const authenticate = (req: IncomingMessage): string => {
    const socket = req.socket as TLSSocket;
    const cert = socket.getPeerCertificate();
    if (!cert || Object.keys(cert).length === 0) {
      throw new ApiError(401, 'MVPN_API_UNAUTHORIZED', 'this route needs a node certificate (enroll first)');
    }
    if (!socket.authorized) {
      const issuer = typeof cert.issuer?.CN === 'string' ? cert.issuer.CN : '';
      if (apiCaGeneration(issuer) !== undefined) {
        // Named like one of this server's API CAs but not accepted: one that a roll retired.
        throw new ApiError(
          401,
          'MVPN_API_CA_RETIRED',
          `this node's identity certificate was issued by the API CA ${issuer}, which this server retired when it rolled its API CA (it now accepts only identities it issued since); the node must enroll again`,
          undefined,
          'on the server: mvpn-client server node token NODE; on the node: put the token in the token file and run mvpn-client enroll --force',
        );
      }
      throw new ApiError(401, 'MVPN_API_UNAUTHORIZED', `the client certificate is not accepted: ${String(socket.authorizationError ?? 'unknown issuer')}`);
    }
    const cn = typeof cert.subject?.CN === 'string' ? cert.subject.CN : undefined;
    const serial = cert.serialNumber?.toLowerCase().replace(/^0+(?=.)/, '');
    if (!cn) throw new ApiError(401, 'MVPN_API_UNAUTHORIZED', 'the client certificate has no CN');
    const node = ctx.store.read((tx) => tx.getNode(cn));
    // During an unconfirmed renewal the replaced identity still works (ops/renew.ts), so a node that lost the new one is not locked out.
    if (serial === undefined || identityRole(node, serial) === undefined) {
      throw new ApiError(403, 'MVPN_API_FORBIDDEN', 'this node certificate is no longer valid (superseded or revoked); enroll again');
    }
    return cn;
  };

  /** The serial of the authenticated request's client certificate (call after `authenticate`). */
  const peerSerial = (req: IncomingMessage): string => ((req.socket as TLSSocket).getPeerCertificate().serialNumber ?? '').toLowerCase();

  const readJson = async <T>(req: IncomingMessage, schema: z.ZodType<T>, what: string): Promise<T> => {
    const body = await readBody(req, limits.maxBodyBytes);
    try {
      const r = schema.safeParse(parseJsonBounded(body, { maxBytes: limits.maxBodyBytes, maxDepth: 4 }, what));
      if (!r.success) throw new Error(r.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; '));
      return r.data;
    } catch (err) {
      throw new ApiError(400, 'MVPN_API_BAD_REQUEST', `${what}: ${(err as Error).message}`);
    }
  };

  const notModified = (req: IncomingMessage, etag: string): boolean => {
    const inm = req.headers['if-none-match'];
    return typeof inm === 'string' && inm.split(',').some((t) => t.trim() === etag || t.trim() === `W/${etag}`);
  };

  /** A served document or bundle: 304 when the client has this etag, else the bytes (none for HEAD). */
  const sendTagged = (req: IncomingMessage, res: ServerResponse, body: { etag: string; bytes: Uint8Array }, contentType: string, cacheControl: string): void => {
    const headers = { etag: body.etag, 'cache-control': cacheControl };
    if (notModified(req, body.etag)) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    res.writeHead(200, { ...headers, 'content-type': contentType, 'content-length': String(body.bytes.length) });
    res.end(req.method === 'HEAD' ? undefined : body.bytes);
  };

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<string | undefined> => {
    const rawUrl = req.url ?? '';
    const path = rawUrl.split('?')[0] ?? '';
    const method = req.method ?? '';
    const allow = (methods: string) => {
      if (!methods.split(', ').includes(method)) throw new ApiError(405, 'MVPN_API_BAD_REQUEST', `${method} is not allowed on ${path}`, { allow: methods });
    };

    if (path === '/v1/enroll') {
      allow('POST');
      const body = await readBody(req, limits.maxBodyBytes);
      let parsed: z.infer<typeof EnrollSchema>;
      try {
        const r = EnrollSchema.safeParse(parseJsonBounded(body, { maxBytes: limits.maxBodyBytes, maxDepth: 4 }, 'enrollment request'));
        if (!r.success) throw new Error(r.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; '));
        parsed = r.data;
      } catch (err) {
        throw new ApiError(400, 'MVPN_API_BAD_REQUEST', `enrollment request: ${(err as Error).message}`);
      }
      const { issuer } = deps.apiCa();
      const r = await enroll(ctx, issuer, parsed);
      logger.emit({ kind: 'api.enrolled', node: r.node, networks: r.networks });
      deps.onStoreChanged?.(`node ${r.node} enrolled`);
      sendJson(res, 200, { node: r.node, identity_cert: r.identityCertPem, api_ca: issuer.certPem });
      return r.node;
    }

    if (path === '/v1/renew') {
      allow('POST');
      const node = authenticate(req);
      const parsed = await readJson(req, RenewSchema, 'renewal request');
      const { issuer } = deps.apiCa();
      const r = await renew(ctx, issuer, { node, authSerial: peerSerial(req), csr: parsed.csr });
      logger.emit({ kind: 'api.renewed', node, networks: r.networks });
      deps.onStoreChanged?.(`node ${node} renewed its certificates`);
      sendJson(res, 200, { node, identity_cert: r.identityCertPem, api_ca: issuer.certPem });
      return node;
    }

    if (path === '/v1/renew/confirm') {
      allow('POST');
      const node = authenticate(req);
      await readJson(req, ConfirmSchema, 'renewal confirmation');
      const r = await confirmRenewal(ctx, node, peerSerial(req));
      if (r.identity || Object.keys(r.revoked).length > 0) {
        logger.emit({ kind: 'api.renew-confirmed', node, revoked: r.revoked });
        deps.onStoreChanged?.(`node ${node} confirmed its renewal`);
      }
      sendJson(res, 200, { node, revoked: r.revoked });
      return node;
    }

    if (path === '/v1/anchor-chain.json') {
      // Public keys and signatures only: served without a client certificate, so a node whose identity lapsed can still follow a rotation.
      allow('GET, HEAD');
      const bytes = serializeChain(await readChain(ctx.paths));
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(bytes.length), 'cache-control': 'no-cache' });
      res.end(method === 'HEAD' ? undefined : bytes);
      return undefined;
    }

    if (path === '/v1/api-ca.json') {
      // Certificates only, like the anchor chain: served without a client certificate. Agents accept
      // a new CA only through the roll proof signed by a CA they pinned (src/agent/api-ca.ts).
      allow('GET, HEAD');
      const a = deps.apiCa();
      const bytes = Buffer.from(JSON.stringify({ format: API_CA_FORMAT, cas: a.trustedPems, ...(a.rollPem === undefined ? {} : { roll: a.rollPem }) }));
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(bytes.length), 'cache-control': 'no-cache' });
      res.end(method === 'HEAD' ? undefined : bytes);
      return undefined;
    }

    if (path === '/v1/membership') {
      allow('GET, HEAD');
      const node = authenticate(req);
      await deps.beforeDocument?.();
      sendTagged(req, res, await docs.membership(node), 'application/json', 'no-cache');
      return node;
    }

    const m = BUNDLE_RE.exec(path);
    if (m) {
      allow('GET, HEAD');
      const node = authenticate(req);
      const [, network, version] = m as unknown as [string, string, string];
      if (!NETWORK_ID_RE.test(network) || !VERSION_RE.test(version) || Number(version) > Number.MAX_SAFE_INTEGER) {
        throw new ApiError(404, 'MVPN_NOT_FOUND', 'no such bundle');
      }
      sendTagged(req, res, await docs.bundle(node, network, Number(version)), 'application/gzip', 'private, max-age=31536000, immutable');
      return node;
    }

    const link = LINK_RE.exec(path);
    if (link) {
      // A peer server copying a hub network's members and CRL (src/server/federation/links.ts).
      allow('GET');
      const caller = authenticate(req);
      const state = NETWORK_ID_RE.test(link[1]!) ? linkState(ctx, caller, link[1]!) : undefined;
      if (!state) throw new ApiError(404, 'MVPN_NOT_FOUND', 'no link to this network for this caller');
      sendJson(res, 200, state);
      return caller;
    }

    throw new ApiError(404, 'MVPN_NOT_FOUND', `no route ${path.length > 200 ? path.slice(0, 200) + '…' : path}`);
  };

  const server = createServer(
    {
      ...apiTlsOptions(deps.apiCa()),
      requestCert: true,
      rejectUnauthorized: false,
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      // How often those two are enforced (node's default, 30 s, would let a slow client hold a socket that long).
      connectionsCheckingInterval: Math.max(250, Math.min(5_000, Math.floor(limits.headersTimeoutMs / 2))),
      keepAliveTimeout: limits.keepAliveTimeoutMs,
    },
    (req, res) => {
      const started = performance.now();
      const path = (req.url ?? '').split('?')[0]!.slice(0, 200);
      const observe = (status: number) => {
        const r = routeOf(path);
        deps.observer?.request(r, status, (performance.now() - started) / 1000);
        if (r === 'enroll' && req.method === 'POST') deps.observer?.enrollment(status === 200);
      };
      route(req, res).then(
        (node) => {
          observe(res.statusCode);
          logger.emit({ kind: 'api.request', method: req.method ?? '', path, status: res.statusCode, node, ms: Math.round(performance.now() - started) });
        },
        (err: unknown) => {
          const e = toMvpnError(err);
          const status = err instanceof ApiError ? err.status : (STATUS[e.code] ?? 500);
          observe(status);
          // 503: the store is away for a while (reconnecting); the agent retries. Other 5xx say nothing of our insides.
          const unavailable = status === 503;
          const message = unavailable ? 'the state store is unreachable; try again shortly' : status >= 500 ? 'internal error' : e.message;
          logger.emit({ kind: 'api.error', method: req.method ?? '', path, status, code: e.code, message: e.message });
          if (res.headersSent) {
            res.destroy();
            return;
          }
          const extra = err instanceof ApiError ? ((err.context['headers'] as Record<string, string> | undefined) ?? {}) : {};
          // A body we refused may still be arriving: answer, then close instead of draining it.
          const closing: Record<string, string> = status === 413 ? { connection: 'close' } : {};
          const retry: Record<string, string> = unavailable ? { 'retry-after': '5' } : {};
          sendJson(res, status, wireError(status >= 500 && !unavailable ? 'MVPN_INTERNAL' : e.code, message, status < 500 ? e.hint : undefined), { ...extra, ...closing, ...retry });
          if (status === 413) req.socket.end();
        },
      );
    },
  );
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    logger.emit({ kind: 'api.client-error', message: err.message });
    if (!socket.writable || err.code?.startsWith('ERR_SSL') || err.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    const [status, reason, message] =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', 'the request took too long']
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? [431, 'Request Header Fields Too Large', 'request headers are too large']
          : [400, 'Bad Request', 'malformed request'];
    const body = JSON.stringify(wireError('MVPN_API_BAD_REQUEST', message));
    socket.end(`HTTP/1.1 ${status} ${reason}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
  });
  server.on('tlsClientError', (err) => {
    deps.observer?.tlsFailure();
    logger.emit({ kind: 'api.client-error', message: `TLS: ${err.message}` });
  });
  return server;
}
