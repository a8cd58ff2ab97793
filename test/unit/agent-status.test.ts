import { describe, expect, it } from 'vitest';
import { formatBytes, formatDuration, statusExitCode, summaryLine, type NetworkState } from '../../src/agent/status.ts';

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
