/**
 * Exponential backoff with full jitter. A whole testbed swaps in at once, so
 * retries and restarts must spread out instead of arriving in lockstep
 * (AWS "full jitter": delay = random(0, min(max, initial * factor^attempt)),
 * with a floor so a restart loop never spins).
 */
export interface BackoffPolicy {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly factor: number;
  /** Fraction of the delay that is randomised, 0 (none) .. 1 (full jitter). */
  readonly jitter: number;
  /** Smallest delay ever returned. */
  readonly minMs: number;
}

export const defaultBackoff: BackoffPolicy = { initialMs: 1_000, maxMs: 60_000, factor: 2, jitter: 0.5, minMs: 200 };

/** Delay before retry number `attempt` (0-based). `random` returns [0, 1). Pure. */
export function backoffDelay(attempt: number, policy: BackoffPolicy = defaultBackoff, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxMs, policy.initialMs * policy.factor ** Math.max(0, Math.min(attempt, 64)));
  const jittered = exp * (1 - policy.jitter) + exp * policy.jitter * random();
  return Math.max(policy.minMs, Math.round(jittered));
}
