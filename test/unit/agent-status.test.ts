import { describe, expect, it } from 'vitest';
import { formatBytes, formatDuration, formatMtu, printable, statusExitCode, summaryLine, terminalSafeJson, type NetworkState } from '../../src/agent/status.ts';

describe('status formatting', () => {
  it.each([
    [0, '0s'],
    [59, '59s'],
    [61, '1m01s'],
    [3725, '1h02m'],
    [90_061, '1d01h'],
  ])('duration %i → %s', (s, want) => expect(formatDuration(s)).toBe(want));

  it.each([
    [0, '0B'],
    [1023, '1023B'],
    [1536, '1.5KiB'],
    [123_456, '121KiB'],
    [5 * 1024 ** 3, '5.0GiB'],
  ])('bytes %i → %s', (n, want) => expect(formatBytes(n)).toBe(want));

  it.each([
    [{ mtu: 1500, fragment: 1280, full_frames: 'ok' as const }, '1500 frag 1280 ok'],
    [{ mtu: 1500, fragment: 1280, full_frames: 'lost' as const }, '1500 frag 1280 lost'],
    [{ mtu: 1500, fragment: null, full_frames: null }, '1500'],
    [{ mtu: null, fragment: null, full_frames: null }, '-'],
    [{}, '-'],
  ])('MTU column %j → %s', (n, want) => expect(formatMtu(n)).toBe(want));

  const nets = (...states: NetworkState[]) => ({ networks: states.map((state) => ({ state })) as never });
  it.each([
    [[], 0, '0/0 networks connected'],
    [['connected', 'connected'], 0, '2/2 networks connected'],
    [['connected', 'backoff'], 1, '1/2 networks connected'],
    [['stopped'], 1, '0/1 networks connected'],
  ] as [NetworkState[], number, string][])('%j → exit %i', (states, code, line) => {
    expect(statusExitCode(nets(...states))).toBe(code);
    expect(summaryLine(nets(...states))).toBe(line);
  });
});

describe('terminal-safe output', () => {
  it.each([
    ['plain text and ünïcödé stay', 'net-1: bad ü 日本', 'net-1: bad ü 日本'],
    ['C0 (ESC, BEL, NUL, tab, newline)', '\u001b[2J\u0007\u0000\t\n', String.raw`\x1b[2J\x07\x00\x09\x0a`],
    ['DEL and C1 (CSI U+009B, NEL U+0085)', '\u007f\u009b31m\u0085', String.raw`\x7f\x9b31m\x85`],
    ['line and paragraph separators', 'a\u2028b\u2029c', String.raw`a\u2028b\u2029c`],
    ['bidi embeddings, overrides and isolates', '\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069', String.raw`\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069`],
    ['zero-width and soft hyphen', '\u200b\u200d\u00ad\ufeff', String.raw`\u200b\u200d\xad\ufeff`],
    ['lone surrogate and a tag character', '\ud800x\u{e0041}', String.raw`\ud800x\u{e0041}`],
  ])('printable: %s', (_what, raw, want) => expect(printable(raw)).toBe(want));

  it('terminalSafeJson keeps the JSON value and leaves no C1, separator or bidi character raw', () => {
    const value = { m: 'x\u009b2J\u0085\u2028\u202e\u2066\u{e0041}é', n: [1, 'ok'] };
    const text = terminalSafeJson(JSON.stringify(value, null, 2));
    expect(JSON.parse(text)).toEqual(value);
    expect(text).not.toMatch(/[\u0080-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]|\u{e0041}/u);
    expect(text).toContain('é');
  });
});
