/**
 * Time as a dependency (Tailscale's tstime.Clock): production code asks the
 * clock, tests pass one they control. Verification functions take `now`
 * directly instead (Nebula's VerifyCertificate(now, cert)).
 */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): Cancel;
}

export type Cancel = () => void;

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

/** Calls `fn` every `ms` (the first time after `ms`) until cancelled or `fn` returns false. */
export function every(clock: Clock, ms: number, fn: () => unknown): Cancel {
  let cancelled = false;
  let cancel: Cancel = () => undefined;
  const tick = (): void => {
    if (cancelled || fn() === false) return;
    cancel = clock.setTimeout(tick, ms);
  };
  cancel = clock.setTimeout(tick, ms);
  return () => {
    cancelled = true;
    cancel();
  };
}

/** A clock that moves only when told to, for table tests of timers. */
export class ManualClock implements Clock {
  private t: number;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private nextId = 0;
  constructor(start = 0) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): Cancel {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, fn, id });
    return () => {
      this.timers = this.timers.filter((x) => x.id !== id);
    };
  }
  /** Move time forward, firing due timers in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }
}
