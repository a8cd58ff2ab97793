import { describe, expect, it } from 'vitest';
import { nextReconcileDelay } from '../../src/agent/daemon.ts';

const MIN = 60_000;

describe('next reconcile delay', () => {
  it.each([
    ['success, random at the bottom', 0, 0, 240_000],
    ['success, random in the middle', 0, 0.5, 300_000],
    ['success, random at the top', 0, 0.999999, 360_000],
    ['first failure, full jitter', 1, 0.5, 2_500],
    ['first failure, floor', 1, 0, 1_000],
    ['third failure', 3, 0.5, 10_000],
    ['many failures: capped at the interval', 20, 0.999999, 300_000],
  ])('%s', (_n, failures, r, want) => {
    expect(nextReconcileDelay(failures, 5 * MIN, 0.2, () => r)).toBe(want);
  });

  it('spreads a testbed of nodes across the jitter window', () => {
    let seed = 1;
    const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const delays = Array.from({ length: 1000 }, () => nextReconcileDelay(0, 5 * MIN, 0.2, rand));
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(240_000);
    expect(Math.max(...delays)).toBeLessThanOrEqual(360_000);
    // not in lockstep: more than a few distinct seconds
    expect(new Set(delays.map((d) => Math.floor(d / 1000))).size).toBeGreaterThan(50);
  });
});
