/**
 * What a Supervisor talks to (spawn, management socket, `ip`, clock, kill,
 * timings) and the defaults that wire it to the real system; tests pass
 * their own.
 */
import { spawn as nodeSpawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { nullLogger, type Logger } from '../log.ts';
import { defaultBackoff, type BackoffPolicy } from '../util/backoff.ts';
import { systemClock, type Clock } from '../util/clock.ts';
import { execCommand, type ExecFn } from '../util/exec.ts';
import { defaultHealthPolicy, readDevice, readDeviceInProcess, type DeviceInfo, type FrameProbeTarget, type HealthPolicy } from './health.ts';
import type { HealthRound } from './health-round.ts';
import { ManagementClient, type ManagementOptions } from './management.ts';
import { findRunning } from './process.ts';
import type { OpenvpnUser } from './unpriv.ts';
import type { OpenvpnEvent } from './events.ts';
import type { FrameVerdict } from './supervisor-state.ts';

/** The narrow process handle the supervisor needs (node's ChildProcess fits). */
export interface SpawnedProcess {
  readonly pid?: number | undefined;
  readonly stdout: NodeJS.ReadableStream | null;
  readonly stderr: NodeJS.ReadableStream | null;
  once(event: 'exit', listener: (code: number | null, signal: NodeJS.Signals | null) => void): unknown;
  once(event: 'error', listener: (err: Error) => void): unknown;
}

export type SpawnFn = (cmd: string, args: readonly string[], opts: { cwd?: string }) => SpawnedProcess;

export interface SupervisorDeps {
  readonly spawn: SpawnFn;
  readonly connectManagement: (socketPath: string, opts: ManagementOptions) => Promise<ManagementClient>;
  /** Runs `ip` for the health check (tests in a namespace wrap it in `ip netns exec`). */
  readonly exec: ExecFn;
  /** The health check's read of the device; absent: readDevice with `exec`. */
  readonly readDevice?: (dev: string, timeoutMs: number) => Promise<DeviceInfo>;
  /** The health check's frame probe; absent: probeFullFrames with `exec`, one network at a time. */
  readonly probeFrames?: (target: FrameProbeTarget) => Promise<FrameVerdict>;
  readonly clock: Clock;
  readonly random: () => number;
  readonly logger: Logger<OpenvpnEvent>;
  readonly kill: (pid: number, signal: NodeJS.Signals) => void;
  /** A live openvpn already holding these files (see process.ts findRunning). */
  readonly findRunning: (files: { pidFile: string; mgmtSocket: string }) => Promise<number | undefined>;
  readonly removeFile: (path: string) => Promise<void>;
  readonly backoff: BackoffPolicy;
  readonly health: HealthPolicy;
  /**
   * Shared by every supervisor of a daemon: one timer for all their health
   * checks and one read of the interfaces per round (health-round.ts). Its
   * interval replaces `health.intervalMs`. Absent: a timer per supervisor.
   */
  readonly healthRound?: HealthRound;
  /** Connected this long resets the backoff attempt counter. */
  readonly stableMs: number;
  /** SIGTERM → SIGKILL. */
  readonly graceMs: number;
  /**
   * Server restart: SIGTERM → a second SIGTERM. The first makes openvpn send
   * RESTART to its clients and wait 2 s before it exits (explicit-exit-notify),
   * ignoring every reconnect meanwhile; the second ends that wait once the
   * RESTART messages are out, so the new server is listening when the
   * clients' retry comes.
   */
  readonly notifyGraceMs: number;
  /**
   * Client: after the server sent RESTART, fresh handshakes this long after
   * it while openvpn has had no answer (Supervisor.retryAfterServerRestart).
   */
  readonly serverRestartRetryMs: readonly number[];
  /** After SIGKILL, how long to wait before reporting the process stuck. */
  readonly killWaitMs: number;
  /** How long openvpn may take to open its management socket after spawn. */
  readonly mgmtConnectTimeoutMs: number;
  /**
   * Retry delays while waiting for that socket: the first after
   * `mgmtFirstPollMs`, doubling up to `mgmtPollMs` (see mgmtPollDelay).
   */
  readonly mgmtFirstPollMs: number;
  readonly mgmtPollMs: number;
  /** Timeout of setup commands (state on, bytecount, hold release, status 3). */
  readonly commandTimeoutMs: number;
  readonly bytecountSeconds: number;
  /** Passed as --management-client-user so only we (same user) can use the socket; undefined leaves it out. */
  readonly managementUser: string | undefined;
  /**
   * The user and group openvpn drops to once its device and management socket
   * exist (`--user`/`--group`, see unpriv.ts); undefined keeps it as we are.
   * The daemons set it from ensureOpenvpnUser().
   */
  readonly runAs: OpenvpnUser | undefined;
  /**
   * Prepended to the openvpn and `ip` command lines of the default spawn and
   * exec, e.g. `['ip', 'netns', 'exec', NS]` to run an instance inside a
   * network namespace (tests, demos). `ip netns exec` execs the command, so
   * the pid we see is openvpn's own.
   */
  readonly commandPrefix: readonly string[];
}

function currentUser(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined;
  }
}

/**
 * The environment openvpn runs with: ours minus the systemd service-manager
 * variables. Debian's openvpn is linked with libsystemd and calls
 * sd_notify("READY=1") itself when NOTIFY_SOCKET is set; with
 * NotifyAccess=all that would tell systemd *our* service is ready (and
 * overwrite STATUS=) the moment any one network connects.
 */
export function openvpnEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) {
    if (k === 'NOTIFY_SOCKET' || k.startsWith('WATCHDOG_') || k.startsWith('LISTEN_')) continue;
    out[k] = v;
  }
  return out;
}

export function defaultSupervisorDeps(commandPrefix: readonly string[] = [], healthRound?: HealthRound): SupervisorDeps {
  const wrap = (cmd: string, args: readonly string[]): [string, string[]] =>
    commandPrefix.length === 0 ? [cmd, [...args]] : [commandPrefix[0]!, [...commandPrefix.slice(1), cmd, ...args]];
  return {
    spawn: (cmd, args, opts) => {
      const [c, a] = wrap(cmd, args);
      return nodeSpawn(c, a, { cwd: opts.cwd, env: openvpnEnv(process.env), stdio: ['ignore', 'pipe', 'pipe'] });
    },
    connectManagement: (path, opts) => ManagementClient.connect(path, opts),
    exec: (cmd, args, opts) => execCommand(...wrap(cmd, args), opts),
    // openvpn in our own namespace: no `ip` process per health check (issue 14), and with a round one read of the
    // interfaces and one frame-probe process for all its checks; in another namespace, `ip netns exec … ip`.
    ...(commandPrefix.length === 0
      ? {
          readDevice: (dev: string, timeoutMs: number) =>
            readDeviceInProcess(dev, () => readDevice((c, a, o) => execCommand(c, a, o), dev, timeoutMs), healthRound === undefined ? undefined : () => healthRound.interfaces()),
          ...(healthRound === undefined ? {} : { probeFrames: (target: FrameProbeTarget) => healthRound.probeFrames(target) }),
        }
      : {}),
    clock: systemClock,
    random: Math.random,
    logger: nullLogger(),
    kill: (pid, sig) => process.kill(pid, sig),
    findRunning: (files) => findRunning(files),
    removeFile: (path) => rm(path, { force: true }),
    backoff: defaultBackoff,
    health: defaultHealthPolicy,
    stableMs: 60_000,
    graceMs: 5_000,
    notifyGraceMs: 300,
    serverRestartRetryMs: [500, 1_000, 1_500],
    killWaitMs: 5_000,
    mgmtConnectTimeoutMs: 15_000,
    mgmtFirstPollMs: 5,
    mgmtPollMs: 100,
    commandTimeoutMs: 10_000,
    bytecountSeconds: 5,
    managementUser: currentUser(),
    runAs: undefined,
    commandPrefix,
  };
}
