/**
 * util/serial.ts (the server daemon's reconcile) and util/clock.ts every():
 * one pass at a time, requests during a pass coalesce into one more pass with
 * the latest cause, a failing pass is reported and does not stop the next,
 * nothing runs after close; every() repeats until cancelled or told to stop.
 */
import { describe, expect, test } from 'vitest';
import { every, ManualClock } from '../../src/util/clock.ts';
import { SerialTask } from '../../src/util/serial.ts';

function gate(): { wait: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

describe('SerialTask', () => {
  test('requests during a pass coalesce into one more pass with the latest cause', async () => {
    const seen: string[] = [];
    let running = 0;
    const first = gate();
    const task = new SerialTask(async (cause) => {
      running++;
      expect(running).toBe(1);
      seen.push(cause);
      if (cause === 'a') await first.wait;
      running--;
    }, () => undefined);
    const done = task.run('a');
    void task.run('b');
    const last = task.run('c');
    first.open();
    await done;
    await last;
    await task.close();
    expect(seen).toEqual(['a', 'c']);
  });

  test('a failing pass is reported and the next one still runs; nothing runs after close', async () => {
    const failures: unknown[] = [];
    const seen: string[] = [];
    const task = new SerialTask(async (cause) => {
      seen.push(cause);
      if (cause === 'bad') throw new Error('boom');
    }, (err) => failures.push(err));
    await task.run('bad');
    await task.run('good');
    await task.close();
    await task.run('late');
    expect(failures.map((e) => (e as Error).message)).toEqual(['boom']);
    expect(seen).toEqual(['bad', 'good']);
  });
});

describe('every', () => {
  test('repeats every interval until cancelled, or until the callback returns false', () => {
    const clock = new ManualClock(0);
    let n = 0;
    const cancel = every(clock, 100, () => void n++);
    clock.advance(350);
    expect(n).toBe(3);
    cancel();
    clock.advance(500);
    expect(n).toBe(3);
    let m = 0;
    every(clock, 100, () => ++m < 2);
    clock.advance(1_000);
    expect(m).toBe(2);
  });
});
