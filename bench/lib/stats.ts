/**
 * Summary statistics for benchmark samples. Medians with min/max are what the
 * tables show (the machines are shared and noisy: a mean is pulled by one
 * slow outlier, a median is not); p99 for latency distributions.
 */

export interface Summary {
  readonly n: number;
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly mean: number;
  readonly p90: number;
  readonly p99: number;
}

const round = (x: number, digits = 3): number => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

/** Nearest-rank percentile of sorted samples, p in [0, 1]. */
function rank(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[i]!;
}

export function summarize(samples: readonly number[], digits = 3): Summary {
  const s = [...samples].sort((a, b) => a - b);
  if (s.length === 0) return { n: 0, median: NaN, min: NaN, max: NaN, mean: NaN, p90: NaN, p99: NaN };
  const median = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  return {
    n: s.length,
    median: round(median, digits),
    min: round(s[0]!, digits),
    max: round(s[s.length - 1]!, digits),
    mean: round(mean, digits),
    p90: round(rank(s, 0.9), digits),
    p99: round(rank(s, 0.99), digits),
  };
}

/** "123 (100–150)" — median with min and max, for tables. */
export function fmtRange(s: Summary | undefined, unit = '', digits = 0): string {
  if (s === undefined || s.n === 0 || !Number.isFinite(s.median)) return 'n/a';
  const f = (x: number): string => x.toFixed(digits);
  return s.n === 1 ? `${f(s.median)}${unit}` : `${f(s.median)}${unit} (${f(s.min)}–${f(s.max)})`;
}

export { round };

/** Per-operation timings in ms, the shape the standalone benches write to their JSON results. */
export interface MsStats {
  readonly n: number;
  readonly medianMs: number;
  readonly minMs: number;
  readonly maxMs: number;
  readonly meanMs: number;
  readonly p95Ms: number;
  /** Operations per second at the mean. */
  readonly perSecond: number;
}

export function msStats(samples: readonly number[]): MsStats {
  const s = [...samples].sort((a, b) => a - b);
  const median = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  return {
    n: s.length,
    medianMs: round(median),
    minMs: round(s[0]!),
    maxMs: round(s[s.length - 1]!),
    meanMs: round(mean),
    p95Ms: round(s[Math.min(s.length - 1, Math.floor(0.95 * s.length))]!),
    perSecond: Math.round((1000 / mean) * 10) / 10,
  };
}

/** `--name VALUE` from the command line, or `fallback`. */
export function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

/** Wall time of one call, in ms, with its result. */
export async function timed<T>(fn: () => Promise<T> | T): Promise<[number, T]> {
  const t0 = performance.now();
  const v = await fn();
  return [performance.now() - t0, v];
}
