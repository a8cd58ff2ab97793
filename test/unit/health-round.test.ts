/**
 * The shared health round (src/openvpn/health-round.ts), driven by a
 * ManualClock: one timer for all members, a member's first check at least
 * half an interval after it joined, no second check of a member while its
 * previous one runs, one read of the interfaces per round, and no timer once
 * the last member left.
 */
import { describe, expect, it } from 'vitest';
import { HealthRound, type Interfaces } from '../../src/openvpn/health-round.ts';
import { ManualClock } from '../../src/util/clock.ts';
import type { ExecFn } from '../../src/util/exec.ts';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

function counting(): { reads: number; read: () => Interfaces } {
  const c = {
    reads: 0,
    read: (): Interfaces => {
      c.reads++;
      return { lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal: true, cidr: '127.0.0.1/8' }] };
    },
  };
  return c;
}

describe('HealthRound', () => {
  it('checks every member at each round on one timer; a member that joined less than half an interval before a round waits for the next', async () => {
    const clock = new ManualClock(0);
    const round = new HealthRound(clock, 1_000);
    const at: Record<string, number[]> = { a: [], b: [] };
    round.join(async () => void at['a']!.push(clock.now()));
    clock.advance(700);
    round.join(async () => void at['b']!.push(clock.now()));
    clock.advance(300);
    for (let i = 0; i < 2; i++) {
      await tick();
      clock.advance(1_000);
    }
    await tick();
    // a: rounds at 1000, 2000, 3000; b joined at 700, so not at 1000 (300 ms later) but at 2000 and 3000.
    expect(at).toEqual({ a: [1_000, 2_000, 3_000], b: [2_000, 3_000] });
  });

  it('skips a member whose previous check is still running, and checks it again once that finished', async () => {
    const clock = new ManualClock(0);
    const round = new HealthRound(clock, 1_000);
    let release: () => void = () => undefined;
    let started = 0;
    round.join(() => {
      started++;
      return new Promise<void>((r) => (release = r));
    });
    clock.advance(3_000);
    await tick();
    expect(started).toBe(1);
    release();
    await tick();
    clock.advance(1_000);
    await tick();
    expect(started).toBe(2);
  });

  it('a failing check does not stop the round', async () => {
    const clock = new ManualClock(0);
    const round = new HealthRound(clock, 1_000);
    let n = 0;
    round.join(async () => {
      n++;
      throw new Error('boom');
    });
    for (let i = 0; i < 3; i++) {
      clock.advance(1_000);
      await tick();
    }
    expect(n).toBe(3);
  });

  it('reads the interfaces once per round for all checks, and again for a check that comes more than a second into it', async () => {
    const clock = new ManualClock(0);
    const c = counting();
    const round = new HealthRound(clock, 5_000, c.read);
    const seen: string[][] = [];
    for (let i = 0; i < 16; i++) round.join(async () => void seen.push(Object.keys(round.interfaces())));
    clock.advance(5_000);
    await tick();
    expect(seen).toHaveLength(16);
    expect(seen.every((k) => k.join() === 'lo')).toBe(true);
    expect(c.reads).toBe(1);
    clock.advance(900);
    round.interfaces();
    expect(c.reads).toBe(1);
    clock.advance(200);
    round.interfaces();
    expect(c.reads).toBe(2);
    // A new round reads afresh.
    clock.advance(3_900);
    await tick();
    expect(c.reads).toBe(3);
  });

  it('stops checking a member that left, and runs no timer without members', async () => {
    const clock = new ManualClock(0);
    const round = new HealthRound(clock, 1_000);
    let n = 0;
    const leave = round.join(async () => void n++);
    clock.advance(1_000);
    await tick();
    leave();
    clock.advance(5_000);
    await tick();
    expect(n).toBe(1);
    // Joining again arms the timer again.
    round.join(async () => void n++);
    clock.advance(1_000);
    await tick();
    expect(n).toBe(2);
  });

  it('runs the frame probes asked for within 50 ms of each other as one shell, and a later one on its own', async () => {
    const clock = new ManualClock(0);
    const runs: string[][] = [];
    const exec: ExecFn = async (cmd, args) => {
      runs.push([cmd, ...args.slice(3)]);
      // One answer line per target (dev peer size triples after sh -c SCRIPT NAME), in its order.
      const targets = args.length - 3;
      return { code: 0, stdout: Array.from({ length: targets / 3 }, (_, i) => `${i} ${args[3 + i * 3] === 'mv-b' ? 'lost' : 'ok'}`).join('\n'), stderr: '' };
    };
    const round = new HealthRound(clock, 5_000, undefined, exec);
    const a = round.probeFrames({ dev: 'mv-a', peer: '198.19.1.1', mtu: 1500 });
    clock.advance(30);
    const b = round.probeFrames({ dev: 'mv-b', peer: '198.19.2.1', mtu: 1400 });
    clock.advance(20);
    expect(await Promise.all([a, b])).toEqual(['ok', 'lost']);
    expect(runs).toEqual([['sh', 'mv-a', '198.19.1.1', '1472', 'mv-b', '198.19.2.1', '1372']]);
    const c = round.probeFrames({ dev: 'mv-c', peer: '198.19.3.1', mtu: 1500 });
    clock.advance(50);
    expect(await c).toBe('ok');
    expect(runs).toHaveLength(2);
    expect(runs[1]).toEqual(['sh', 'mv-c', '198.19.3.1', '1472']);
  });

  it('refuses an interval that is not positive', () => {
    expect(() => new HealthRound(new ManualClock(0), 0)).toThrow(/must be positive/);
  });
});
