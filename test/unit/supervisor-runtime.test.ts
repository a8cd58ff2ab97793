/**
 * The Supervisor's timing and process handling, driven by a ManualClock:
 * backoff delays, the stable-period reset, SIGTERM → SIGKILL escalation,
 * hang detection, refusal to run an instance twice, and stale events from a
 * retired process. The openvpn process is a fake (crashes and hangs on
 * demand); the management interface is the real client against a scripted
 * peer on a real unix socket. Real openvpn: test/integration/supervisor.test.ts.
 */
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { memoryLogger } from '../../src/log.ts';
import type { OpenvpnEvent } from '../../src/openvpn/events.ts';
import { ManagementClient } from '../../src/openvpn/management.ts';
import { Supervisor } from '../../src/openvpn/supervisor.ts';
import { HealthRound } from '../../src/openvpn/health-round.ts';
import type { SpawnedProcess, SupervisorDeps } from '../../src/openvpn/supervisor-deps.ts';
import { mgmtPollDelay, type InstanceSpec } from '../../src/openvpn/supervisor-state.ts';
import { ManualClock } from '../../src/util/clock.ts';
import type { ExecFn } from '../../src/util/exec.ts';
import { defaultResponder, startFakeManagement, type FakeManagement, type Responder } from '../helpers/fake-management.ts';

class FakeProc extends EventEmitter implements SpawnedProcess {
  readonly pid: number;
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  readonly signals: string[] = [];
  exited = false;
  /** A stopped or stubborn process ignores SIGTERM; SIGKILL always works. */
  ignoresTerm = false;
  constructor(pid: number) {
    super();
    this.pid = pid;
  }
  /** Dying but not yet reaped: signals still reach it (like a real pid until its exit is seen). */
  private dying = false;
  die(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.dying) return;
    this.dying = true;
    setImmediate(() => {
      this.exited = true;
      this.emit('exit', code, signal);
    });
  }
}

interface Harness {
  sup: Supervisor;
  clock: ManualClock;
  procs: FakeProc[];
  fake: FakeManagement;
  logger: ReturnType<typeof memoryLogger<OpenvpnEvent>>;
  removed: string[];
}

const harnesses: Harness[] = [];
afterEach(async () => {
  for (const h of harnesses.splice(0)) {
    for (const p of h.procs) p.die(0, 'SIGKILL');
    await h.fake.close();
  }
});

const ipOk: ExecFn = async () => ({
  code: 0,
  stderr: '',
  stdout: JSON.stringify([{ ifname: 'mv-t', addr_info: [{ family: 'inet', local: '198.51.100.2', prefixlen: 24 }] }]),
});

async function harness(over: Partial<SupervisorDeps> = {}, spec: Partial<InstanceSpec> = {}, responder?: Responder): Promise<Harness> {
  const clock = new ManualClock(1_000_000);
  const fake = await startFakeManagement(responder === undefined ? {} : { responder });
  const procs: FakeProc[] = [];
  const removed: string[] = [];
  const logger = memoryLogger<OpenvpnEvent>();
  let nextPid = 5000;
  const deps: Partial<SupervisorDeps> = {
    clock,
    random: () => 0.5,
    logger,
    spawn: () => {
      const p = new FakeProc(nextPid++);
      procs.push(p);
      return p;
    },
    kill: (pid, sig) => {
      const p = procs.find((x) => x.pid === pid);
      if (!p || p.exited) throw Object.assign(new Error('ESRCH'), { code: 'ESRCH' });
      p.signals.push(sig);
      if (sig === 'SIGKILL') p.die(null, 'SIGKILL');
      else if (sig === 'SIGTERM' && !p.ignoresTerm) p.die(0, null);
    },
    connectManagement: (_path, opts) => ManagementClient.connect(fake.path, opts),
    exec: ipOk,
    findRunning: async () => undefined,
    removeFile: async (path) => void removed.push(path),
    backoff: { initialMs: 1_000, maxMs: 60_000, factor: 2, jitter: 0.5, minMs: 200 },
    health: { intervalMs: 1e9, mgmtTimeoutMs: 300, hungLimit: 2, addressMissingLimit: 3, stallLimit: 0 },
    stableMs: 60_000,
    graceMs: 5_000,
    killWaitMs: 5_000,
    mgmtConnectTimeoutMs: 2_000,
    mgmtPollMs: 100,
    commandTimeoutMs: 2_000,
    managementUser: undefined,
    ...over,
  };
  const sup = new Supervisor(
    {
      id: 't',
      role: 'client',
      configPath: '/nonexistent/client.conf',
      mgmtSocket: `/nonexistent/openvpn-t-${Math.random()}.sock`,
      pidFile: '/nonexistent/openvpn-t.pid',
      dev: 'mv-t',
      expectedAddress: '198.51.100.2/24',
      ...spec,
    },
    deps,
  );
  const h = { sup, clock, procs, fake, logger, removed };
  harnesses.push(h);
  return h;
}

const until = (fn: () => void): Promise<void> => vi.waitFor(fn, { timeout: 5_000, interval: 5 });

/** Advance the manual clock in steps, letting real I/O (the unix socket) run in between. */
async function advance(clock: ManualClock, ms: number, step = 100): Promise<void> {
  for (let done = 0; done < ms; done += step) {
    clock.advance(Math.min(step, ms - done));
    await new Promise((r) => setImmediate(r));
  }
}

describe('Supervisor with a ManualClock', () => {
  it('starts: spawn with the management flags, state on, bytecount, hold release, then connected', async () => {
    const spawned: string[][] = [];
    const h = await harness({
      spawn: (cmd, args) => {
        spawned.push([cmd, ...args]);
        const p = new FakeProc(7000);
        h.procs.push(p);
        return p;
      },
      managementUser: 'root',
    });
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(spawned[0]).toEqual([
      'openvpn',
      '--config',
      '/nonexistent/client.conf',
      '--management',
      h.sup.spec.mgmtSocket,
      'unix',
      '--management-hold',
      '--management-client-user',
      'root',
      '--writepid',
      '/nonexistent/openvpn-t.pid',
    ]);
    expect(h.fake.commands.slice(0, 5)).toEqual(['state on', 'bytecount 5', 'hold off', 'hold release', 'state']);
    expect(h.sup.status()).toMatchObject({ pid: 7000, restarts: 0, remote: '192.0.2.1:1194', tunnelAddress: '198.51.100.2', connectedSince: 1_000_000 });
    const transitions = h.logger.events.filter((e) => e.kind === 'openvpn.transition').map((e) => `${e.from}->${e.to}`);
    expect(transitions).toEqual(['stopped->starting', 'starting->connecting', 'connecting->connected']);
  });

  it('with runAs, openvpn is told to drop to that user and group once started (--user/--group)', async () => {
    const spawned: string[][] = [];
    const h = await harness({
      spawn: (cmd, args) => {
        spawned.push([cmd, ...args]);
        const p = new FakeProc(7100);
        h.procs.push(p);
        return p;
      },
      runAs: { user: 'mvpn-openvpn', group: 'mvpn-openvpn', uid: 999, gid: 995 },
    });
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(spawned[0]!.slice(-4)).toEqual(['--user', 'mvpn-openvpn', '--group', 'mvpn-openvpn']);
  });

  it('a crash restarts after the backoff delay, with exponential growth and a reset after a stable period', async () => {
    const h = await harness();
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));

    // Crash 1: delay(attempt 0) = 1000 * (0.5 + 0.5 * 0.5) = 750 ms.
    h.procs[0]!.die(1, null);
    await until(() => expect(h.sup.status().state).toBe('backoff'));
    expect(h.sup.status().lastError).toMatchObject({ code: 'MVPN_OPENVPN_EXITED' });
    await advance(h.clock, 749, 749);
    expect(h.procs).toHaveLength(1);
    await advance(h.clock, 1, 1);
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(h.procs).toHaveLength(2);
    expect(h.sup.status().restarts).toBe(1);

    // Crash 2 right away: attempt 1 → 1500 ms.
    h.procs[1]!.die(1, null);
    await until(() => expect(h.sup.status().state).toBe('backoff'));
    await advance(h.clock, 1_499, 1_499);
    expect(h.procs).toHaveLength(2);
    await advance(h.clock, 1, 1);
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(h.sup.status().restarts).toBe(2);

    // Connected for the stable period: the next crash starts over at 750 ms.
    await advance(h.clock, 60_000, 10_000);
    h.procs[2]!.die(null, 'SIGKILL');
    await until(() => expect(h.sup.status().state).toBe('backoff'));
    await advance(h.clock, 749, 749);
    expect(h.procs).toHaveLength(3);
    await advance(h.clock, 1, 1);
    await until(() => expect(h.sup.status().state).toBe('connected'));
    const delays = h.logger.events.filter((e) => e.kind === 'openvpn.backoff').map((e) => e.delayMs);
    expect(delays).toEqual([750, 1500, 750]);
  });

  it('a hung process (management does not answer) goes degraded, then is killed and restarted', async () => {
    const h = await harness({ health: { intervalMs: 1_000, mgmtTimeoutMs: 200, hungLimit: 2, addressMissingLimit: 3, stallLimit: 0 } });
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    h.fake.hung = true;
    h.procs[0]!.ignoresTerm = true;
    await advance(h.clock, 1_000, 1_000);
    await until(() => expect(h.sup.status().state).toBe('degraded'));
    await advance(h.clock, 1_000, 1_000);
    await until(() => expect(h.sup.status().state).toBe('backoff'));
    expect(h.sup.status().lastError?.code).toBe('MVPN_OPENVPN_HUNG');
    expect(h.procs[0]!.signals).toEqual(['SIGTERM', 'SIGCONT']);
    // It ignores SIGTERM: SIGKILL after the grace period.
    await advance(h.clock, 5_000, 1_000);
    await until(() => expect(h.procs[0]!.signals).toEqual(['SIGTERM', 'SIGCONT', 'SIGKILL']));
    h.fake.hung = false;
    await advance(h.clock, 1_000, 250);
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(h.sup.status().restarts).toBe(1);
  });

  it('with a shared HealthRound: the checks run at its rounds, and a hung process is still found and restarted', async () => {
    const clock = new ManualClock(1_000_000);
    const round = new HealthRound(clock, 1_000);
    const h = await harness({ clock, healthRound: round, health: { intervalMs: 1e9, mgmtTimeoutMs: 200, hungLimit: 2, addressMissingLimit: 3, stallLimit: 0 } });
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    const asked = h.fake.commands.length;
    await advance(clock, 1_000, 1_000);
    await until(() => expect(h.logger.events.filter((e) => e.kind === 'openvpn.health')).toHaveLength(1));
    expect(h.fake.commands.slice(asked)).toEqual(['state']);
    h.fake.hung = true;
    h.procs[0]!.ignoresTerm = true;
    await advance(clock, 1_000, 1_000);
    await until(() => expect(h.sup.status().state).toBe('degraded'));
    await advance(clock, 1_000, 1_000);
    await until(() => expect(h.sup.status().state).toBe('backoff'));
    expect(h.sup.status().lastError?.code).toBe('MVPN_OPENVPN_HUNG');
    await advance(clock, 5_000, 1_000);
    await until(() => expect(h.procs[0]!.signals).toEqual(['SIGTERM', 'SIGCONT', 'SIGKILL']));
    h.fake.hung = false;
    await advance(clock, 1_000, 250);
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(h.sup.status().restarts).toBe(1);
  });

  it('a new process is not spawned before the old one has exited, and the old one\'s exit is not a crash', async () => {
    const h = await harness();
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    h.procs[0]!.ignoresTerm = true;
    h.sup.restart();
    expect(h.sup.status().state).toBe('starting');
    await advance(h.clock, 4_900, 700);
    expect(h.procs).toHaveLength(1);
    await advance(h.clock, 100, 100); // grace over: SIGKILL, exit, then spawn
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(h.procs).toHaveLength(2);
    expect(h.procs[0]!.signals).toContain('SIGKILL');
    const exited = h.logger.events.filter((e) => e.kind === 'openvpn.exited');
    expect(exited).toEqual([expect.objectContaining({ pid: h.procs[0]!.pid, expected: true })]);
    expect(h.logger.events.filter((e) => e.kind === 'openvpn.backoff')).toEqual([]);
  });

  it('a server restart or quick stop cuts openvpn\'s exit-notify wait with a second SIGTERM after notifyGraceMs; a plain server stop and a client restart do not', async () => {
    const h = await harness({ notifyGraceMs: 300 }, { role: 'server' });
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    // The first SIGTERM only makes openvpn tell its clients RESTART and wait 2 s.
    const old = h.procs[0]!;
    old.ignoresTerm = true;
    h.sup.restart();
    await advance(h.clock, 200, 100);
    expect(old.signals).toEqual(['SIGTERM', 'SIGCONT']);
    old.ignoresTerm = false;
    await advance(h.clock, 100, 100);
    await until(() => expect(old.signals).toEqual(['SIGTERM', 'SIGCONT', 'SIGTERM']));
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(h.procs).toHaveLength(2);

    // Stopping keeps openvpn's wait (its clients get the RESTART retransmitted meanwhile).
    h.procs[1]!.ignoresTerm = true;
    const stopped = h.sup.stop();
    await advance(h.clock, 1_000, 100);
    expect(h.procs[1]!.signals).toEqual(['SIGTERM', 'SIGCONT']);
    await advance(h.clock, 4_000, 500);
    await stopped;
    expect(h.procs[1]!.signals).toEqual(['SIGTERM', 'SIGCONT', 'SIGKILL']);

    // A quick stop (a lost lease: the server must be gone by a deadline) cuts the wait like a restart.
    const q = await harness({ notifyGraceMs: 300 }, { role: 'server' });
    q.sup.start();
    await until(() => expect(q.sup.status().state).toBe('connected'));
    q.procs[0]!.ignoresTerm = true;
    const quick = q.sup.stop({ quick: true });
    await advance(q.clock, 200, 100);
    expect(q.procs[0]!.signals).toEqual(['SIGTERM', 'SIGCONT']);
    q.procs[0]!.ignoresTerm = false;
    await advance(q.clock, 100, 100);
    await quick;
    expect(q.procs[0]!.signals).toEqual(['SIGTERM', 'SIGCONT', 'SIGTERM']);
    expect(q.sup.status().state).toBe('stopped');

    const c = await harness({ notifyGraceMs: 300 });
    c.sup.start();
    await until(() => expect(c.sup.status().state).toBe('connected'));
    c.procs[0]!.ignoresTerm = true;
    c.sup.restart();
    await advance(c.clock, 1_000, 100);
    expect(c.procs[0]!.signals).toEqual(['SIGTERM', 'SIGCONT']);
  });

  it('stop(): SIGTERM, wait for exit, remove socket and pid file, state stopped', async () => {
    const h = await harness();
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    await h.sup.stop();
    expect(h.sup.status().state).toBe('stopped');
    expect(h.procs[0]!.exited).toBe(true);
    expect(h.procs[0]!.signals).toEqual(['SIGTERM', 'SIGCONT']);
    expect(h.removed).toEqual(expect.arrayContaining([h.sup.spec.mgmtSocket, h.sup.spec.pidFile]));
    expect(h.sup.status().pid).toBeUndefined();
  });

  it('stop() during backoff cancels the restart', async () => {
    const h = await harness();
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    h.procs[0]!.die(1, null);
    await until(() => expect(h.sup.status().state).toBe('backoff'));
    await h.sup.stop();
    await advance(h.clock, 120_000, 10_000);
    expect(h.procs).toHaveLength(1);
    expect(h.sup.status().state).toBe('stopped');
  });

  it('refuses to start while a previous openvpn still runs this instance (failed, MVPN_OPENVPN_ALREADY_RUNNING)', async () => {
    const h = await harness({ findRunning: async () => 4321 });
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('failed'));
    expect(h.procs).toHaveLength(0);
    expect(h.sup.status().lastError?.code).toBe('MVPN_OPENVPN_ALREADY_RUNNING');
  });

  it('two supervisors for the same socket: the second refuses', async () => {
    const h = await harness();
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    const twin = new Supervisor(h.sup.spec, { clock: h.clock, findRunning: async () => undefined, spawn: () => { throw new Error('must not spawn'); } });
    twin.start();
    await until(() => expect(twin.status().state).toBe('failed'));
    expect(twin.status().lastError?.code).toBe('MVPN_OPENVPN_ALREADY_RUNNING');
    // Once the first has stopped, the second may run.
    await h.sup.stop();
    expect(h.sup.status().state).toBe('stopped');
  });

  it('a replacement supervisor started while the old one is stopping waits for it instead of refusing', async () => {
    const h = await harness();
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    h.procs[0]!.ignoresTerm = true;
    const stopping = h.sup.stop();
    expect(h.sup.status().state).toBe('stopping');
    const spawned: number[] = [];
    const next = new Supervisor(h.sup.spec, {
      clock: h.clock,
      findRunning: async () => undefined,
      removeFile: async () => undefined,
      connectManagement: (_p, o) => ManagementClient.connect(h.fake.path, o),
      exec: ipOk,
      managementUser: undefined,
      health: { intervalMs: 1e9, mgmtTimeoutMs: 300, hungLimit: 2, addressMissingLimit: 3, stallLimit: 0 },
      spawn: () => {
        const p = new FakeProc(9000 + spawned.length);
        spawned.push(p.pid);
        h.procs.push(p);
        return p;
      },
      kill: (pid, sig) => {
        const p = h.procs.find((x) => x.pid === pid);
        if (sig === 'SIGTERM' || sig === 'SIGKILL') p?.die(0, null);
      },
    });
    next.start();
    await advance(h.clock, 1_000, 500);
    expect(spawned).toEqual([]);
    await advance(h.clock, 4_500, 500); // grace over: the old process is killed, the old supervisor stops
    await stopping;
    await until(() => expect(next.status().state).toBe('connected'));
    expect(spawned).toHaveLength(1);
    await next.stop();
  });

  it('a missing openvpn binary is a permanent failure, not a restart loop', async () => {
    const h = await harness({
      spawn: () => {
        throw Object.assign(new Error('spawn openvpn ENOENT'), { code: 'ENOENT' });
      },
    });
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('failed'));
    expect(h.sup.status().lastError?.code).toBe('MVPN_OPENVPN_SPAWN_FAILED');
  });

  it('management socket never appears: killed and retried with backoff', async () => {
    const h = await harness({ connectManagement: () => Promise.reject(new Error('ENOENT')), mgmtConnectTimeoutMs: 1_000 });
    h.sup.start();
    await until(() => expect(h.procs).toHaveLength(1));
    await advance(h.clock, 1_200, 50);
    await until(() => expect(h.sup.status().state).toBe('backoff'));
    expect(h.sup.status().lastError?.code).toBe('MVPN_MGMT_CONNECT_FAILED');
    expect(h.procs[0]!.signals[0]).toBe('SIGTERM');
  });

  it('a management socket that appears late is still connected to: retries after 5, 10, 20, 40, 80 ms, then every mgmtPollMs', async () => {
    const tries: number[] = [];
    const h: Harness = await harness({
      mgmtFirstPollMs: 5,
      mgmtPollMs: 100,
      mgmtConnectTimeoutMs: 2_000,
      connectManagement: (_path, opts) => {
        tries.push(h.clock.now());
        // No socket for the first 8 tries (~455 ms), as with an openvpn slow to start.
        return tries.length <= 8 ? Promise.reject(new Error('ENOENT')) : ManagementClient.connect(h.fake.path, opts);
      },
    });
    h.sup.start();
    await until(() => expect(h.procs).toHaveLength(1));
    await advance(h.clock, 600, 1);
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(tries.slice(1).map((t, i) => t - tries[i]!)).toEqual([5, 10, 20, 40, 80, 100, 100, 100]);
    expect(h.sup.status().restarts).toBe(0);
    expect(h.fake.commands.slice(0, 4)).toEqual(['state on', 'bytecount 5', 'hold off', 'hold release']);
  });

  it('connected without the expected address for 3 checks: degraded, then restarted (MVPN_OPENVPN_UNHEALTHY)', async () => {
    let present = true;
    const exec: ExecFn = async (...a) =>
      present ? ipOk(...a) : { code: 0, stderr: '', stdout: JSON.stringify([{ ifname: 'mv-t', addr_info: [] }]) };
    const h = await harness({ exec, health: { intervalMs: 1_000, mgmtTimeoutMs: 500, hungLimit: 2, addressMissingLimit: 3, stallLimit: 0 } });
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    present = false;
    await advance(h.clock, 1_000, 1_000);
    await until(() => expect(h.sup.status().state).toBe('degraded'));
    await advance(h.clock, 1_000, 1_000);
    await until(() => expect(h.logger.events.filter((e) => e.kind === 'openvpn.health' && e.verdict === 'degraded')).toHaveLength(2));
    expect(h.sup.status().state).toBe('degraded');
    await advance(h.clock, 1_000, 1_000);
    await until(() => expect(h.sup.status().state).toBe('backoff'));
    expect(h.sup.status().lastError?.code).toBe('MVPN_OPENVPN_UNHEALTHY');
    present = true;
    await advance(h.clock, 1_000, 250);
    await until(() => expect(h.sup.status().state).toBe('connected'));
  });

  it('a degraded check that recovers goes back to connected without a restart', async () => {
    let present = true;
    const exec: ExecFn = async (...a) =>
      present ? ipOk(...a) : { code: 1, stderr: 'Device "mv-t" does not exist.', stdout: '' };
    const h = await harness({ exec, health: { intervalMs: 1_000, mgmtTimeoutMs: 500, hungLimit: 2, addressMissingLimit: 3, stallLimit: 0 } });
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    present = false;
    await advance(h.clock, 1_000, 1_000);
    await until(() => expect(h.sup.status().state).toBe('degraded'));
    present = true;
    await advance(h.clock, 1_000, 1_000);
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(h.procs).toHaveLength(1);
  });

  it('a state reply overtaken by a >STATE: CONNECTED notification does not flip connected back to connecting', async () => {
    // openvpn may write a real-time notification between the lines of a
    // `state` reply; the reply then describes the older state. The agent
    // reported connected, then connecting for a health-check interval.
    let stateCalls = 0;
    const responder: Responder = (cmd, peer) => {
      if (cmd !== 'state') return defaultResponder(cmd, peer);
      stateCalls++;
      if (stateCalls > 1) return defaultResponder(cmd, peer);
      return ['1700000000,ASSIGN_IP,,198.51.100.2,,,,', '>STATE:1700000001,CONNECTED,SUCCESS,198.51.100.2,192.0.2.1,1194,,', 'END'];
    };
    const h = await harness({}, {}, responder);
    h.sup.start();
    await until(() => expect(stateCalls).toBe(1));
    await until(() => expect(h.sup.status().state).toBe('connected'));
    await new Promise((r) => setTimeout(r, 200));
    expect(h.sup.status().state).toBe('connected');
    const transitions = h.logger.events.filter((e) => e.kind === 'openvpn.transition').map((e) => `${e.from}->${e.to}`);
    expect(transitions).toEqual(['stopped->starting', 'starting->connecting', 'connecting->connected']);
  });

  it('a health check whose state reply a >STATE: CONNECTED overtook while `ip` ran does not send the network back to connecting', async () => {
    // Seen in bench/recovery.ts after a server restart: the check asked
    // `state` while openvpn reconnected (WAIT), CONNECTED arrived while the
    // check ran `ip`, and the stale WAIT then made it "connecting" for a
    // whole health interval.
    let reconnecting = false;
    let race = false;
    const responder: Responder = (cmd, peer) =>
      cmd === 'state' && reconnecting ? ['1700000002,WAIT,,,,,,', 'END'] : defaultResponder(cmd, peer);
    const h: Harness = await harness(
      {
        health: { intervalMs: 1_000, mgmtTimeoutMs: 300, hungLimit: 2, addressMissingLimit: 3, stallLimit: 0 },
        exec: async (cmd, args, opts) => {
          if (race) {
            race = false;
            reconnecting = false;
            h.fake.broadcast('>STATE:1700000003,CONNECTED,SUCCESS,198.51.100.2,192.0.2.1,1194,,\n');
            await until(() => expect(h.sup.status().state).toBe('connected'));
          }
          return ipOk(cmd, args, opts);
        },
      },
      {},
      responder,
    );
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    reconnecting = true;
    h.fake.broadcast('>STATE:1700000001,RECONNECTING,ping-restart,,,,,\n');
    await until(() => expect(h.sup.status().state).toBe('connecting'));
    race = true;
    await advance(h.clock, 1_000, 1_000);
    await until(() => expect(race).toBe(false));
    // Let the check finish, then look at every transition it made.
    await until(() => expect(h.logger.events.filter((e) => e.kind === 'openvpn.health')).not.toHaveLength(0));
    await new Promise((r) => setTimeout(r, 100));
    const transitions = h.logger.events.filter((e) => e.kind === 'openvpn.transition').map((e) => `${e.from}->${e.to}`);
    expect(transitions).toEqual(['stopped->starting', 'starting->connecting', 'connecting->connected', 'connected->connecting', 'connecting->connected']);
    expect(h.sup.status().state).toBe('connected');
  });

  it('openvpn reconnecting on its own (RECONNECTING) is connecting, not a restart', async () => {
    const h = await harness();
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    h.fake.broadcast('>STATE:1700000100,RECONNECTING,ping-restart,,,,,\n');
    await until(() => expect(h.sup.status().state).toBe('connecting'));
    h.fake.broadcast('>STATE:1700000110,CONNECTED,SUCCESS,198.51.100.2,192.0.2.1,1194,,\n');
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(h.procs).toHaveLength(1);
  });

  it('a client told RESTART by its server tries a fresh handshake at each serverRestartRetryMs while it has no answer, and stops once the server answers', async () => {
    const h = await harness({ serverRestartRetryMs: [500, 1_000, 1_500] }, { retryServerRestart: true });
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    const signals = (): number => h.fake.commands.filter((c) => c === 'signal SIGUSR1').length;
    // A restart for another reason (ping-restart, our own reload) is openvpn's to retry.
    h.fake.broadcast('>STATE:1700000100,RECONNECTING,ping-restart,,,,,\n');
    await until(() => expect(h.sup.status().state).toBe('connecting'));
    await advance(h.clock, 2_000, 100);
    expect(signals()).toBe(0);

    h.fake.broadcast('>STATE:1700000101,RECONNECTING,server-pushed-connection-reset,,,,,\n');
    h.fake.broadcast('>STATE:1700000102,WAIT,,,,,,\n');
    await new Promise((r) => setTimeout(r, 50));
    await advance(h.clock, 400, 100);
    expect(signals()).toBe(0);
    await advance(h.clock, 100, 100);
    await until(() => expect(signals()).toBe(1));
    // The new server answered: the handshake under way is left alone.
    h.fake.broadcast('>STATE:1700000103,AUTH,,,,,,\n');
    await new Promise((r) => setTimeout(r, 50));
    await advance(h.clock, 1_500, 100);
    expect(signals()).toBe(1);
    h.fake.broadcast('>STATE:1700000104,CONNECTED,SUCCESS,198.51.100.2,192.0.2.1,1194,,\n');
    await until(() => expect(h.sup.status().state).toBe('connected'));

    // Two restarts close together: the first one's sequence ends when the node connected, the second starts afresh.
    h.fake.broadcast('>STATE:1700000105,RECONNECTING,server-pushed-connection-reset,,,,,\n');
    await new Promise((r) => setTimeout(r, 50));
    await advance(h.clock, 500, 100);
    await until(() => expect(signals()).toBe(2));
    h.fake.broadcast('>STATE:1700000106,CONNECTED,SUCCESS,198.51.100.2,192.0.2.1,1194,,\n');
    await until(() => expect(h.sup.status().state).toBe('connected'));
    await advance(h.clock, 300, 100);
    h.fake.broadcast('>STATE:1700000107,RECONNECTING,server-pushed-connection-reset,,,,,\n');
    await new Promise((r) => setTimeout(r, 50));
    await advance(h.clock, 400, 100);
    expect(signals()).toBe(2);
    await advance(h.clock, 100, 100);
    await until(() => expect(signals()).toBe(3));
    expect(h.procs).toHaveLength(1);
    expect(h.procs[0]!.signals).toEqual([]);

    // A client with several remotes is left to openvpn: a SIGUSR1 would move it to the next remote.
    const multi = await harness({ serverRestartRetryMs: [500, 1_000, 1_500] });
    multi.sup.start();
    await until(() => expect(multi.sup.status().state).toBe('connected'));
    multi.fake.broadcast('>STATE:1700000101,RECONNECTING,server-pushed-connection-reset,,,,,\n');
    await new Promise((r) => setTimeout(r, 50));
    await advance(multi.clock, 2_000, 100);
    expect(multi.fake.commands.filter((c) => c === 'signal SIGUSR1')).toEqual([]);
  });

  it('reload(): SIGUSR1 through management, same process; CONNECTED only after openvpn reported the restart', async () => {
    const h = await harness();
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    h.sup.reload();
    expect(h.sup.status().state).toBe('reloading');
    await until(() => expect(h.fake.commands).toContain('signal SIGUSR1'));
    // A CONNECTED that openvpn sent before it acted on the signal (or a poll's answer) is the old session.
    h.fake.broadcast('>STATE:1700000100,CONNECTED,SUCCESS,198.51.100.2,192.0.2.1,1194,,\n');
    await new Promise((r) => setTimeout(r, 50));
    expect(h.sup.status().state).toBe('reloading');
    h.fake.broadcast('>STATE:1700000101,RECONNECTING,SIGUSR1,,,,,\n');
    await until(() => expect(h.sup.status().state).toBe('connecting'));
    h.fake.broadcast('>STATE:1700000102,CONNECTED,SUCCESS,198.51.100.2,192.0.2.1,1194,,\n');
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(h.procs).toHaveLength(1);
    expect(h.procs[0]!.signals).toEqual([]);
    expect(h.sup.status()).toMatchObject({ pid: h.procs[0]!.pid, restarts: 0 });
  });

  it('a reload openvpn refuses falls back to a restart (new process), with the reason as last error', async () => {
    const responder: Responder = (cmd, peer) => (cmd.startsWith('signal ') ? 'ERROR: signal not allowed' : defaultResponder(cmd, peer));
    const h = await harness({}, {}, responder);
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    h.sup.reload();
    await until(() => expect(h.procs).toHaveLength(2));
    expect(h.procs[0]!.signals).toContain('SIGTERM');
    await until(() => expect(h.sup.status().state).toBe('connected'));
    expect(h.sup.status()).toMatchObject({ pid: h.procs[1]!.pid, restarts: 1 });
    expect(h.sup.status().lastError?.message).toMatch(/reload \(SIGUSR1\) failed, restarting instead/);
  });

  it('counts bytes from >BYTECOUNT', async () => {
    const h = await harness();
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    h.fake.broadcast('>BYTECOUNT:1234,5678\n');
    await until(() => expect(h.sup.status()).toMatchObject({ bytesIn: 1234, bytesOut: 5678 }));
  });

  it('emits change with the status on every transition', async () => {
    const h = await harness();
    const seen: string[] = [];
    h.sup.on('change', (s) => seen.push(s.state));
    h.sup.start();
    await until(() => expect(h.sup.status().state).toBe('connected'));
    await h.sup.stop();
    expect(seen).toEqual(['starting', 'connecting', 'connected', 'stopping', 'stopped']);
  });
});

describe('mgmtPollDelay', () => {
  it.each([
    [0, 5, 100, 5],
    [1, 5, 100, 10],
    [3, 5, 100, 40],
    [4, 5, 100, 80],
    [5, 5, 100, 100],
    [1_000, 5, 100, 100],
    [0, 100, 100, 100],
    [0, 200, 100, 100],
  ])('after %i failed tries (first %i ms, max %i ms): %i ms', (failed, first, max, want) => {
    expect(mgmtPollDelay(failed, first, max)).toBe(want);
  });
  it('rejects a negative or fractional count', () => {
    expect(() => mgmtPollDelay(-1, 5, 100)).toThrow(RangeError);
    expect(() => mgmtPollDelay(0.5, 5, 100)).toThrow(RangeError);
  });
});
