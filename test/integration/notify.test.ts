/**
 * sd_notify through the real systemd-notify into a real unix datagram socket
 * (the listener stands in for systemd's notify socket).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../src/log.ts';
import type { SystemdEvent } from '../../src/systemd/events.ts';
import { createNotifier, notifierFromEnv, startWatchdog, systemdFromEnv } from '../../src/systemd/notify.ts';
import { startNotifyListener, type NotifyListener } from '../helpers/notify-listener.ts';

let listener: NotifyListener;
beforeEach(async () => {
  listener = await startNotifyListener();
});
afterEach(async () => {
  await listener.stop();
});

describe('sd_notify via systemd-notify', () => {
  it('notifierFromEnv is undefined without NOTIFY_SOCKET', () => {
    expect(notifierFromEnv({})).toBeUndefined();
    expect(notifierFromEnv({ NOTIFY_SOCKET: '' })).toBeUndefined();
  });

  it('READY, STATUS, RELOADING (with MONOTONIC_USEC), STOPPING arrive in order, sent as this process', async () => {
    const n = notifierFromEnv({ ...process.env, NOTIFY_SOCKET: listener.socket })!;
    await n.ready('0/2 networks connected');
    await n.status('2/2 networks connected');
    await n.reloading();
    await n.ready();
    await n.stopping();
    const msgs = listener.messages();
    expect(msgs.map((m) => m.fields)).toEqual([
      { READY: '1', STATUS: '0/2 networks connected' },
      { STATUS: '2/2 networks connected' },
      { RELOADING: '1', MONOTONIC_USEC: expect.stringMatching(/^\d+$/) as unknown as string },
      { READY: '1' },
      { STOPPING: '1' },
    ]);
    // systemd attributes messages by the sender credential: it must be us.
    for (const m of msgs) expect(m.pid).toBe(process.pid);
    // MONOTONIC_USEC is CLOCK_MONOTONIC: close to ours, not wall-clock time.
    const mono = BigInt(msgs[2]!.fields['MONOTONIC_USEC']!);
    const now = process.hrtime.bigint() / 1000n;
    expect(mono <= now && now - mono < 60_000_000n).toBe(true);
    // systemd-notify waited for the barrier each time (BARRIER=1 with an fd).
    expect(listener.received.filter((d) => d.fields['BARRIER'] === '1' && d.fds === 1).length).toBe(5);
  });

  it('STATUS text with line breaks stays one field', async () => {
    const n = createNotifier(listener.socket);
    await n.status('line one\nline two');
    expect(listener.messages()[0]?.fields).toEqual({ STATUS: 'line one line two' });
  });

  it('sends are serialized and identical queued ones coalesce', async () => {
    const n = createNotifier(listener.socket);
    const all = [n.status('a'), n.watchdog(), n.watchdog(), n.watchdog(), n.status('b')];
    await Promise.all(all);
    const raw = listener.messages().map((m) => m.raw);
    // The first WATCHDOG=1 is queued behind STATUS=a; the next two join it.
    expect(raw).toEqual(['STATUS=a', 'WATCHDOG=1', 'STATUS=b']);
  });

  it('a queued STATUS line is replaced by a newer send that sets it again, never moved past another send', async () => {
    const n = createNotifier(listener.socket);
    // A join: every network that connects changes the line, then READY=1 carries the last one.
    await Promise.all([n.status('0/3 connected'), n.status('1/3 connected'), n.status('2/3 connected'), n.ready('3/3 connected')]);
    expect(listener.messages().map((m) => m.raw)).toEqual(['READY=1\nSTATUS=3/3 connected']);
    // A send in between keeps its place: only the newest queued one is replaced.
    await Promise.all([n.status('a'), n.watchdog(), n.status('b'), n.status('c'), n.stopping()]);
    expect(listener.messages().map((m) => m.raw).slice(1)).toEqual(['STATUS=a', 'WATCHDOG=1', 'STATUS=c', 'STOPPING=1']);
  });

  it('a failing systemd-notify is logged, never thrown', async () => {
    const logger = memoryLogger<SystemdEvent>();
    const gone = createNotifier(`${listener.socket}.missing`, { logger });
    await expect(gone.ready()).resolves.toBeUndefined();
    const missingBinary = createNotifier(listener.socket, { logger, command: '/nonexistent/systemd-notify' });
    await expect(missingBinary.watchdog()).resolves.toBeUndefined();
    expect(logger.events.map((e) => e.kind)).toEqual(['notify.failed', 'notify.failed']);
  });

  it('what the run commands use logs a failing sd_notify as a warning line through the systemd formatters', async () => {
    const lines: string[] = [];
    const sink = { write: (l: string) => void lines.push(l) };
    expect(systemdFromEnv({}, { sink }).notifier).toBeUndefined();
    expect(systemdFromEnv({}, { sink }).startWatchdog()).toBeUndefined();
    const { notifier } = systemdFromEnv({ ...process.env, NOTIFY_SOCKET: `${listener.socket}.missing` }, { sink, journal: true });
    await expect(notifier!.ready('1/1 networks connected')).resolves.toBeUndefined();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^<4>sd_notify READY=1 STATUS=1\/1 networks connected failed: /);
  });

  it('startWatchdog sends WATCHDOG=1 at about half of WATCHDOG_USEC', async () => {
    const n = createNotifier(listener.socket);
    // 400 ms watchdog → a ping every 200 ms; over ~3 s expect roughly 15.
    const stop = startWatchdog(n, { WATCHDOG_USEC: '400000', WATCHDOG_PID: String(process.pid) })!;
    expect(stop).toBeTypeOf('function');
    await new Promise((r) => setTimeout(r, 3_000));
    stop();
    await n.status('flush'); // queued behind any in-flight watchdog
    const count = listener.messages().filter((m) => m.fields['WATCHDOG'] === '1').length;
    // Generous: catches "never sent" and "sent in a tight loop", not scheduling jitter.
    expect(count).toBeGreaterThanOrEqual(4);
    expect(count).toBeLessThanOrEqual(20);
    const after = listener.messages().length;
    await new Promise((r) => setTimeout(r, 600));
    expect(listener.messages().length).toBe(after); // stopped means stopped
  });

  it('startWatchdog does nothing without WATCHDOG_USEC or when WATCHDOG_PID is another process', () => {
    const n = createNotifier(listener.socket);
    expect(startWatchdog(n, {})).toBeUndefined();
    expect(startWatchdog(n, { WATCHDOG_USEC: 'x' })).toBeUndefined();
    expect(startWatchdog(n, { WATCHDOG_USEC: '1000000', WATCHDOG_PID: String(process.pid + 1) })).toBeUndefined();
  });
});
