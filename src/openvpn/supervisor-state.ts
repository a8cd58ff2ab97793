/**
 * The supervisor's pure part: instance states, the events that move them,
 * the actions a transition asks for (`nextState`), and the management-socket
 * poll schedule. No I/O here; supervisor.ts performs the actions.
 *
 *   stopped ─start→ starting ─mgmt ready→ connecting ─CONNECTED→ connected ⇄ degraded
 *                      │  ▲                    │                     │
 *        exit / hung / │  └──── backoff ◄──────┴─────────────────────┘
 *        unhealthy     └────────►  (delay with jitter, then starting again)
 *   any running state ─stop→ stopping → stopped;  permanent spawn failure → failed
 *
 *   connecting / connected / degraded ─reload→ reloading ─openvpn leaves CONNECTED→ connecting
 *     (SIGUSR1 through the management socket: the same process and tap device
 *     reconnect with the certificate and key files read again; client-config.ts
 *     has no persist-key for that. `starting` reloads by restarting; a reload
 *     that cannot be signalled restarts too.)
 */
import type { MvpnError } from '../errors.ts';
import type { HealthVerdict } from './health.ts';

export type InstanceState = 'stopped' | 'starting' | 'connecting' | 'connected' | 'degraded' | 'reloading' | 'backoff' | 'stopping' | 'failed';

export interface InstanceSpec {
  /** Network id; names the instance in logs and status. */
  readonly id: string;
  readonly role: 'client' | 'server';
  readonly configPath: string;
  /** Working directory for openvpn (the bundle directory, so relative paths in the config resolve). */
  readonly cwd?: string;
  /** Use runtimePaths() from process.ts for these two. */
  readonly mgmtSocket: string;
  readonly pidFile: string;
  /** The tun/tap device the config names (`dev mv-<id>`). */
  readonly dev: string;
  /** Client: the address that must be on `dev` once connected (`a.b.c.d/len` or `a.b.c.d`). */
  readonly expectedAddress?: string;
  /**
   * Client: the config filters the server's push (push-policy.ts, the
   * agent's template); a line openvpn removed makes the network `degraded`
   * with the refused lines as reason. Off for configs that filter pushes for
   * convenience (a federation link ignores the server's `ping`).
   */
  readonly pushFiltered?: boolean;
  /**
   * Client with a single `remote`: after its server's RESTART, fresh
   * handshakes find the restarted server sooner (Supervisor
   * retryAfterServerRestart). Not with more remotes: after a RESTART openvpn
   * has not connected yet, and each SIGUSR1 in that state moves it on to the
   * next remote, away from the operator's order (a connected client keeps
   * its remote across SIGUSR1: node-server-cut.test.ts shows both).
   */
  readonly retryServerRestart?: boolean;
  /** Client, tap: probe that full frames reach the server (health.ts `probeFullFrames`). */
  readonly frameProbe?: FrameProbe;
  readonly openvpnPath?: string;
}

/** Where and how large: the server's LAN address and the LAN MTU (the frame's IP packet size). */
export interface FrameProbe {
  readonly peer: string;
  readonly mtu: number;
}

/**
 * `lost`: full-size DF pings to the server vanish while small ones answer;
 * `unreachable`: small ones vanish too but the server's LAN address resolves
 * (it ignores pings: no verdict); `silent`: it does not even resolve (nothing crosses the LAN).
 */
export type FrameVerdict = 'ok' | 'lost' | 'unreachable' | 'silent';

export interface ErrorInfo {
  readonly code: string;
  readonly message: string;
}

export interface InstanceStatus {
  readonly id: string;
  readonly role: 'client' | 'server';
  readonly state: InstanceState;
  /** ms timestamp (deps.clock) of entering `state`. */
  readonly since: number;
  readonly pid?: number;
  readonly connectedSince?: number;
  /** `addr/len` as found on `dev` by the health check; before the first check, the bare address openvpn reported. */
  readonly tunnelAddress?: string;
  /** `ip:port` of the server (client role), from openvpn's CONNECTED state. */
  readonly remote?: string;
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** Processes started after the first one (crash, hang, health or restart()). */
  readonly restarts: number;
  /** Client with a frame probe: whether full frames reached the server at the last probe. */
  readonly frames?: FrameVerdict;
  /** Server role: clients in the last `status 3`. */
  readonly clients?: number;
  readonly lastError?: ErrorInfo;
}

export type SupervisorEvent =
  | { readonly type: 'start' }
  /** `quick`: a server's exit notice gets 0.3 s, not openvpn's 2 s (it must be gone by a deadline: a lost lease). */
  | { readonly type: 'stop'; readonly quick?: boolean }
  | { readonly type: 'restart' }
  /** Take new credential files without a new process (soft restart); see the diagram. */
  | { readonly type: 'reload' }
  | { readonly type: 'reload-failed'; readonly error: ErrorInfo }
  | { readonly type: 'spawned'; readonly pid: number }
  | { readonly type: 'spawn-failed'; readonly error: ErrorInfo; readonly permanent: boolean }
  | { readonly type: 'mgmt-ready' }
  | { readonly type: 'mgmt-failed'; readonly error: ErrorInfo }
  | { readonly type: 'openvpn-state'; readonly name: string }
  | { readonly type: 'health'; readonly verdict: HealthVerdict; readonly reason: string; readonly error?: ErrorInfo }
  | { readonly type: 'exited'; readonly code: number | null; readonly signal: string | null; readonly error?: ErrorInfo }
  | { readonly type: 'backoff-elapsed' }
  | { readonly type: 'stopped' };

export type SupervisorAction =
  | 'spawn'
  | 'connect-mgmt'
  | 'start-health'
  | 'stop-health'
  | 'close-mgmt'
  | 'terminate'
  /** SIGUSR1 to the running process through its management socket (its answer or failure comes back as an event). */
  | 'signal-reload'
  | 'schedule-backoff'
  | 'cancel-backoff'
  | 'finish-stop';

export interface Transition {
  readonly next: InstanceState;
  readonly actions: readonly SupervisorAction[];
  /** True when the event means nothing in this state (no state change, no action). */
  readonly ignored: boolean;
}

const STOP: readonly SupervisorAction[] = ['cancel-backoff', 'stop-health', 'terminate', 'finish-stop'];
const CRASHED: readonly SupervisorAction[] = ['stop-health', 'close-mgmt', 'schedule-backoff'];
const KILL_THEN_BACKOFF: readonly SupervisorAction[] = ['stop-health', 'terminate', 'schedule-backoff'];
const RESTART_NOW: readonly SupervisorAction[] = ['cancel-backoff', 'stop-health', 'terminate', 'spawn'];

/** The state machine. Pure: same input, same output, no side effects. */
export function nextState(current: InstanceState, event: SupervisorEvent): Transition {
  const go = (next: InstanceState, actions: readonly SupervisorAction[] = []): Transition => ({ next, actions, ignored: false });
  const ignore: Transition = { next: current, actions: [], ignored: true };

  switch (current) {
    case 'stopped':
      return event.type === 'start' || event.type === 'restart' ? go('starting', ['spawn']) : ignore;
    case 'failed':
      if (event.type === 'start' || event.type === 'restart') return go('starting', ['spawn']);
      return event.type === 'stop' ? go('stopped') : ignore;
    case 'stopping':
      return event.type === 'stopped' ? go('stopped') : ignore;
    case 'backoff':
      if (event.type === 'backoff-elapsed') return go('starting', ['spawn']);
      if (event.type === 'restart') return go('starting', ['cancel-backoff', 'spawn']);
      if (event.type === 'stop') return go('stopping', STOP);
      return ignore;
    case 'starting':
    case 'connecting':
    case 'connected':
    case 'degraded':
    case 'reloading':
      break;
  }

  // A process is (being) started: the events every running state shares.
  switch (event.type) {
    case 'stop':
      return go('stopping', STOP);
    case 'restart':
      return go('starting', RESTART_NOW);
    case 'exited':
      return go('backoff', CRASHED);
    case 'reload':
      // A process still being set up may have read the old files already: a new one reads the new ones.
      return current === 'starting' ? go('starting', RESTART_NOW) : go('reloading', ['signal-reload']);
    case 'reload-failed':
      return go('starting', RESTART_NOW);
    case 'health':
      if (current === 'starting') return ignore;
      if (event.verdict === 'failed') return go('backoff', KILL_THEN_BACKOFF);
      break;
    default:
      break;
  }

  switch (current) {
    case 'starting':
      switch (event.type) {
        case 'spawned':
          return go('starting', ['connect-mgmt']);
        case 'spawn-failed':
          return event.permanent ? go('failed') : go('backoff', ['schedule-backoff']);
        case 'mgmt-ready':
          return go('connecting', ['start-health']);
        case 'mgmt-failed':
          return go('backoff', KILL_THEN_BACKOFF);
        default:
          return ignore;
      }
    case 'connecting':
      if (event.type === 'openvpn-state' && event.name === 'CONNECTED') return go('connected');
      if (event.type === 'health' && event.verdict === 'ok') return go('connected');
      return ignore;
    case 'connected':
      if (event.type === 'openvpn-state' && event.name !== 'CONNECTED') return go('connecting');
      if (event.type === 'health' && event.verdict === 'degraded') return go('degraded');
      if (event.type === 'health' && event.verdict === 'pending') return go('connecting');
      return ignore;
    case 'degraded':
      if (event.type === 'openvpn-state' && event.name !== 'CONNECTED') return go('connecting');
      if (event.type === 'health' && event.verdict === 'ok') return go('connected');
      if (event.type === 'health' && event.verdict === 'pending') return go('connecting');
      return ignore;
    case 'reloading':
      // Until openvpn reports the restart the signal caused, CONNECTED (a
      // notification or a poll answered before the signal) is the old session:
      // only a state other than CONNECTED moves on, so `connected` afterwards
      // means connected with the new certificate.
      if (event.type === 'openvpn-state' && event.name !== 'CONNECTED') return go('connecting');
      return ignore;
  }
}

/**
 * The wait before the next try to connect to a just-started openvpn's
 * management socket, after `failed` failed tries: `firstMs`, doubling, at
 * most `maxMs`. openvpn opens the socket some 20–40 ms after it starts (more
 * on a loaded machine): short first waits find it soon after it appears, the
 * cap keeps a slow start from costing a connect attempt every few ms. Pure.
 */
export function mgmtPollDelay(failed: number, firstMs: number, maxMs: number): number {
  if (failed < 0 || !Number.isInteger(failed)) throw new RangeError(`mgmtPollDelay: failed must be a non-negative integer, got ${failed}`);
  return Math.min(maxMs, firstMs * 2 ** Math.min(failed, 30));
}

/** One line for the log: what happened to the instance. */
export function describeEvent(e: SupervisorEvent): string {
  switch (e.type) {
    case 'spawned':
      return `spawned pid ${e.pid}`;
    case 'spawn-failed':
    case 'mgmt-failed':
      return `${e.type}: ${e.error.message}`;
    case 'openvpn-state':
      return `openvpn state ${e.name}`;
    case 'health':
      return `health ${e.verdict}: ${e.reason}`;
    case 'exited':
      return e.error?.message ?? `exited (${e.signal ?? `code ${String(e.code)}`})`;
    default:
      return e.type;
  }
}

export function errorInfo(err: MvpnError): ErrorInfo {
  return { code: err.code, message: err.message };
}
