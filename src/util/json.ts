import { MvpnError } from '../errors.ts';

/**
 * JSON from outside the trust boundary: size-capped before parsing and
 * depth-capped after, so a hostile document cannot exhaust memory or the
 * stack of later walkers. Schema validation (zod) comes after this.
 */
export interface JsonLimits {
  readonly maxBytes: number;
  readonly maxDepth: number;
}

export const defaultJsonLimits: JsonLimits = { maxBytes: 1 << 20, maxDepth: 16 };

export function parseJsonBounded(input: Uint8Array | string, limits: JsonLimits = defaultJsonLimits, what = 'document'): unknown {
  const size = typeof input === 'string' ? Buffer.byteLength(input) : input.byteLength;
  if (size > limits.maxBytes) {
    throw new MvpnError('MVPN_JSON_TOO_LARGE', `${what} is ${size} bytes, more than the limit of ${limits.maxBytes}`, {
      context: { size, limit: limits.maxBytes },
    });
  }
  const text = typeof input === 'string' ? input : new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(input);
  // Reject deep nesting before JSON.parse builds it: count brackets outside strings.
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > limits.maxDepth) {
        throw new MvpnError('MVPN_JSON_TOO_LARGE', `${what} nests deeper than ${limits.maxDepth} levels`, { context: { limit: limits.maxDepth } });
      }
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new MvpnError('MVPN_JSON_INVALID', `${what} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}
