/**
 * The wire error, `{"error":{"code":"MVPN_…","message":"…","hint"?:"…"}}`:
 * what the server's HTTPS API, the agent's control API and a `--json` CLI
 * failure print. One builder and one parser, so every side agrees on it.
 */
import type { ErrorCode } from '../errors.ts';

export interface WireError {
  readonly code: string;
  readonly message: string;
  readonly hint?: string;
}

export function wireError(code: string, message: string, hint?: string): { readonly error: WireError } {
  return { error: { code, message, ...(hint ? { hint } : {}) } };
}

const CODE_RE = /^MVPN_[A-Z0-9_]+$/;
/** An error body is small; a longer one is cut before parsing (then it is no wire error). */
const MAX_BYTES = 64 * 1024;

/**
 * What a reply body (parsed JSON, or its bytes/text) says as a wire error:
 * `code` only when it is an MVPN_ code, `message`/`hint` only when strings.
 * Anything else (not JSON, another shape) gives an empty result.
 */
export function parseWireError(body: unknown): { readonly code?: ErrorCode; readonly message?: string; readonly hint?: string } {
  let json = body;
  if (typeof body === 'string' || body instanceof Uint8Array) {
    try {
      json = JSON.parse(Buffer.from(body).subarray(0, MAX_BYTES).toString('utf8'));
    } catch {
      return {};
    }
  }
  const e = typeof json === 'object' && json !== null ? (json as { error?: unknown }).error : undefined;
  if (typeof e !== 'object' || e === null) return {};
  const { code, message, hint } = e as Record<string, unknown>;
  return {
    ...(typeof code === 'string' && CODE_RE.test(code) ? { code: code as ErrorCode } : {}),
    ...(typeof message === 'string' ? { message } : {}),
    ...(typeof hint === 'string' ? { hint } : {}),
  };
}
