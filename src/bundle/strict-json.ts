/**
 * JSON parsing for signed documents: the bounded parser from util/json plus
 * the two things JSON.parse silently accepts and a trust boundary must not:
 * invalid UTF-8 (decoded with replacement characters) and duplicate keys
 * (the last one wins, so two parsers can disagree about what was signed).
 */
import { MvpnError } from '../errors.ts';
import { parseJsonBounded } from '../util/json.ts';

export function parseJsonStrict(input: Uint8Array, maxBytes: number, maxDepth: number, what: string): unknown {
  if (input.byteLength > maxBytes) {
    throw new MvpnError('MVPN_JSON_TOO_LARGE', `${what} is ${input.byteLength} bytes, more than the limit of ${maxBytes}`, {
      context: { size: input.byteLength, limit: maxBytes },
    });
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(input);
  } catch (err) {
    throw new MvpnError('MVPN_JSON_INVALID', `${what} is not valid UTF-8`, { cause: err });
  }
  const value = parseJsonBounded(text, { maxBytes, maxDepth }, what);
  rejectDuplicateKeys(text, what);
  return value;
}

/**
 * Walks text that JSON.parse has already accepted and throws on the first
 * object key that appears twice in the same object (compared after escape
 * decoding, so `"a"` and `"\u0061"` are the same key).
 */
function rejectDuplicateKeys(text: string, what: string): void {
  type Frame = { keys: Set<string>; expectKey: boolean } | null;
  const stack: Frame[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '{') stack.push({ keys: new Set(), expectKey: true });
    else if (c === '[') stack.push(null);
    else if (c === '}' || c === ']') stack.pop();
    else if (c === ',') {
      const top = stack[stack.length - 1];
      if (top) top.expectKey = true;
    } else if (c === '"') {
      const start = i;
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
      const top = stack[stack.length - 1];
      if (top?.expectKey) {
        const key = JSON.parse(text.slice(start, i + 1)) as string;
        if (top.keys.has(key)) {
          throw new MvpnError('MVPN_JSON_INVALID', `${what} has the key ${JSON.stringify(key)} twice in one object`, { context: { key } });
        }
        top.keys.add(key);
        top.expectKey = false;
      }
    }
  }
}
