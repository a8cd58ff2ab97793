/**
 * sd_notify for a Type=notify service.
 *
 * Node has no AF_UNIX/SOCK_DGRAM sockets, so each notification is sent by
 * running systemd's own `systemd-notify` with `VAR=VALUE` arguments (Debian
 * 12 ships systemd 252, whose systemd-notify accepts arbitrary VAR=VALUE
 * pairs). Details that matter:
 * - systemd-notify sends with its parent's pid (us) as the sender
 *   credential, and afterwards waits on a BARRIER=1 round trip (at most 5 s)
 *   until systemd has processed the message, so the message is attributed to
 *   our unit even though the helper exits at once. We keep that barrier (no
 *   `--no-block`): without it a short-lived sender's message can be dropped.
 *   The unit needs NotifyAccess=all, because the sender process is not the
 *   main pid.
 * - RELOADING=1 is sent with MONOTONIC_USEC= (CLOCK_MONOTONIC in µs), which
 *   systemd ≥ 253 requires for Type=notify-reload and 252 ignores.
 * - Sends are serialized (one systemd-notify at a time, in order), identical
 *   queued notifications are coalesced (a slow manager never builds a pile
 *   of WATCHDOG=1), and the queue is bounded. The newest queued send is
 *   replaced by one that sets every field it sets (a STATUS line superseded
 *   before it went out, READY=1 with STATUS after a STATUS): the manager
 *   ends in the same state with one process less. Each send is a fork of
 *   this process and the networks of a join each change the STATUS line:
 *   at 16 networks that was ~170 ms of the agent's CPU during the join
 *   (issue 14).
 * - A failed send is logged, never thrown: notification trouble must not
 *   take the daemon down with it.
 *
 * Why not the `systemd-notify` npm package: it spawns this same CLI but only
 * knows READY / STATUS / MAINPID, so WATCHDOG=1, RELOADING=1 with
 * MONOTONIC_USEC, and STOPPING=1 would need this code anyway; and it is a
 * dependency in a binary we ship as one file.
 */
import { execFile } from 'node:child_process';
import { createLogger, nullLogger, type Logger, type LoggerOptions } from '../log.ts';
import { systemClock, type Clock } from '../util/clock.ts';
import { systemdFormatters, type SystemdEvent } from './events.ts';

export interface Notifier {
  /** Sends these fields in one datagram. Resolves when sent (or when the failure is logged); never rejects. */
  send(fields: Record<string, string>): Promise<void>;
  ready(status?: string): Promise<void>;
  status(text: string): Promise<void>;
  watchdog(): Promise<void>;
  reloading(): Promise<void>;
  stopping(): Promise<void>;
}

/** Runs systemd-notify; resolves with its exit code and stderr. Injected so tests can fail a send on demand. */
export type NotifyRunner = (command: string, args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs: number) => Promise<{ code: number; stderr: string }>;

const defaultRunner: NotifyRunner = (command, args, env, timeoutMs) =>
  new Promise((resolve, reject) => {
    execFile(command, [...args], { env, timeout: timeoutMs, encoding: 'utf8' }, (err, _stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === 'string') {
        reject(err);
        return;
      }
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr });
    });
  });

export interface NotifierOptions {
  readonly command?: string;
  readonly run?: NotifyRunner;
  readonly logger?: Logger<SystemdEvent>;
  /** CLOCK_MONOTONIC in microseconds (process.hrtime is CLOCK_MONOTONIC on Linux). */
  readonly monotonicUsec?: () => bigint;
  readonly timeoutMs?: number;
  readonly maxPending?: number;
  /** Base environment for systemd-notify (NOTIFY_SOCKET is set from the notifier's socket). */
  readonly env?: NodeJS.ProcessEnv;
}

const KEY = /^[A-Z_][A-Z0-9_]*$/;

/** A send waiting its turn; its fields may still be replaced by a newer send (see createNotifier). */
interface Queued {
  args: string[];
  key: string;
  names: string[];
  readonly done: Promise<void>;
}

/** `KEY=VALUE` arguments; values lose line breaks (a datagram field is one line). */
export function notifyArgs(fields: Record<string, string>): string[] {
  return Object.entries(fields).map(([k, v]) => {
    if (!KEY.test(k)) throw new Error(`sd_notify field name ${JSON.stringify(k)} is not VARIABLE-shaped`);
    return `${k}=${v.replace(/[\r\n]+/g, ' ')}`;
  });
}

export function createNotifier(socket: string, opts: NotifierOptions = {}): Notifier {
  const command = opts.command ?? 'systemd-notify';
  const run = opts.run ?? defaultRunner;
  const logger = opts.logger ?? nullLogger<SystemdEvent>();
  const monotonicUsec = opts.monotonicUsec ?? (() => process.hrtime.bigint() / 1000n);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const maxPending = opts.maxPending ?? 16;
  const env = { ...(opts.env ?? process.env), NOTIFY_SOCKET: socket };

  let tail: Promise<void> = Promise.resolve();
  // Queued (not yet started) sends by their argument line, for coalescing; `last` is the newest of them.
  const queued = new Map<string, Queued>();
  let last: Queued | undefined;

  const sendOnce = async (q: Queued): Promise<void> => {
    queued.delete(q.key);
    if (last === q) last = undefined;
    try {
      const r = await run(command, q.args, env, timeoutMs);
      if (r.code !== 0) logger.emit({ kind: 'notify.failed', fields: q.key, message: `${command} exited with ${r.code}: ${r.stderr.trim()}` });
    } catch (e) {
      logger.emit({ kind: 'notify.failed', fields: q.key, message: (e as Error).message });
    }
  };

  const send = (fields: Record<string, string>): Promise<void> => {
    let args: string[];
    try {
      args = notifyArgs(fields);
    } catch (e) {
      logger.emit({ kind: 'notify.failed', fields: Object.keys(fields).join(','), message: (e as Error).message });
      return Promise.resolve();
    }
    if (args.length === 0) return Promise.resolve();
    const key = args.join(' ');
    const same = queued.get(key);
    if (same) return same.done;
    const names = Object.keys(fields);
    if (last !== undefined && last.names.every((k) => names.includes(k))) {
      queued.delete(last.key);
      Object.assign(last, { args, key, names });
      queued.set(key, last);
      return last.done;
    }
    if (queued.size >= maxPending) {
      logger.emit({ kind: 'notify.dropped', fields: key, pending: queued.size });
      return Promise.resolve();
    }
    const q: Queued = { args, key, names, done: tail.then(() => sendOnce(q)) };
    queued.set(key, q);
    last = q;
    tail = q.done;
    return q.done;
  };

  return {
    send,
    ready: (status) => send(status === undefined ? { READY: '1' } : { READY: '1', STATUS: status }),
    status: (text) => send({ STATUS: text }),
    watchdog: () => send({ WATCHDOG: '1' }),
    reloading: () => send({ RELOADING: '1', MONOTONIC_USEC: monotonicUsec().toString() }),
    stopping: () => send({ STOPPING: '1' }),
  };
}

/** The notifier systemd asked for, or undefined when not started by systemd with Type=notify (NOTIFY_SOCKET unset). */
export function notifierFromEnv(env: NodeJS.ProcessEnv, opts: NotifierOptions = {}): Notifier | undefined {
  const socket = env['NOTIFY_SOCKET'];
  if (socket === undefined || socket === '') return undefined;
  return createNotifier(socket, { env, ...opts });
}

/**
 * Sends WATCHDOG=1 every WATCHDOG_USEC/2 from the event loop, so a blocked
 * event loop stops the pings and systemd restarts us. Only when the watchdog
 * is meant for this process (WATCHDOG_PID unset or our pid). Returns a stop
 * function, or undefined when no watchdog is configured.
 */
export function startWatchdog(
  n: Notifier,
  env: NodeJS.ProcessEnv,
  clock: Clock = systemClock,
  opts: { pid?: number; logger?: Logger<SystemdEvent> } = {},
): (() => void) | undefined {
  const logger = opts.logger ?? nullLogger<SystemdEvent>();
  const usec = Number(env['WATCHDOG_USEC'] ?? '');
  if (!Number.isSafeInteger(usec) || usec <= 0) return undefined;
  const wpid = env['WATCHDOG_PID'];
  if (wpid !== undefined && wpid !== '' && wpid !== String(opts.pid ?? process.pid)) {
    logger.emit({ kind: 'watchdog.not-ours', watchdogPid: wpid });
    return undefined;
  }
  const intervalMs = Math.max(1, Math.floor(usec / 2 / 1000));
  logger.emit({ kind: 'watchdog.started', intervalMs });
  let stopped = false;
  let cancel = (): void => undefined;
  const tick = (): void => {
    if (stopped) return;
    void n.watchdog();
    cancel = clock.setTimeout(tick, intervalMs);
  };
  tick();
  return () => {
    stopped = true;
    cancel();
  };
}

/**
 * What both daemons' `run` use: the notifier systemd asked for (undefined
 * outside systemd) and its watchdog, logging through a logger made with
 * `log` (the daemon's sink and level), so a failed or dropped notification
 * is a warning line in the journal, never an exception and never silent.
 */
export function systemdFromEnv(env: NodeJS.ProcessEnv, log: LoggerOptions): { notifier: Notifier | undefined; startWatchdog: () => (() => void) | undefined } {
  const logger = createLogger(systemdFormatters, log);
  const notifier = notifierFromEnv(env, { logger });
  return { notifier, startWatchdog: () => (notifier === undefined ? undefined : startWatchdog(notifier, env, systemClock, { logger })) };
}
