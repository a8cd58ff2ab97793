/**
 * The pure state machine: every state × every event it can meet. A row
 * that is not listed for a state must be ignored there (checked below), so
 * a new transition cannot slip in without a row in this table.
 */
import { describe, expect, it } from 'vitest';
import { nextState, type InstanceState, type SupervisorAction, type SupervisorEvent } from '../../src/openvpn/supervisor-state.ts';

const err = { code: 'X', message: 'x' };
const E = {
  start: { type: 'start' },
  stop: { type: 'stop' },
  restart: { type: 'restart' },
  reload: { type: 'reload' },
  reloadFailed: { type: 'reload-failed', error: err },
  spawned: { type: 'spawned', pid: 10 },
  spawnFailed: { type: 'spawn-failed', error: err, permanent: false },
  spawnFailedPermanent: { type: 'spawn-failed', error: err, permanent: true },
  mgmtReady: { type: 'mgmt-ready' },
  mgmtFailed: { type: 'mgmt-failed', error: err },
  connectedState: { type: 'openvpn-state', name: 'CONNECTED' },
  reconnectingState: { type: 'openvpn-state', name: 'RECONNECTING' },
  waitState: { type: 'openvpn-state', name: 'WAIT' },
  healthOk: { type: 'health', verdict: 'ok', reason: 'ok' },
  healthPending: { type: 'health', verdict: 'pending', reason: 'p' },
  healthDegraded: { type: 'health', verdict: 'degraded', reason: 'd' },
  healthFailed: { type: 'health', verdict: 'failed', reason: 'f', error: err },
  exited: { type: 'exited', code: 1, signal: null, error: err },
  backoffElapsed: { type: 'backoff-elapsed' },
  stopped: { type: 'stopped' },
} satisfies Record<string, SupervisorEvent>;
type EventName = keyof typeof E;

const STOP: SupervisorAction[] = ['cancel-backoff', 'stop-health', 'terminate', 'finish-stop'];
const CRASHED: SupervisorAction[] = ['stop-health', 'close-mgmt', 'schedule-backoff'];
const KILL_THEN_BACKOFF: SupervisorAction[] = ['stop-health', 'terminate', 'schedule-backoff'];
const RESTART_NOW: SupervisorAction[] = ['cancel-backoff', 'stop-health', 'terminate', 'spawn'];

type Row = [InstanceState, EventName, InstanceState, SupervisorAction[]];

// Shared by every state in which a process is being started or runs.
const running = (s: InstanceState): Row[] => [
  [s, 'stop', 'stopping', STOP],
  [s, 'restart', 'starting', RESTART_NOW],
  [s, 'exited', 'backoff', CRASHED],
  // A reload that could not be signalled falls back to a restart.
  [s, 'reloadFailed', 'starting', RESTART_NOW],
];
// A process that is set up: a reload signals it (same process, same device).
const settled = (s: InstanceState): Row[] => [...running(s), [s, 'reload', 'reloading', ['signal-reload']]];

const table: Row[] = [
  ['stopped', 'start', 'starting', ['spawn']],
  ['stopped', 'restart', 'starting', ['spawn']],

  ['failed', 'start', 'starting', ['spawn']],
  ['failed', 'restart', 'starting', ['spawn']],
  ['failed', 'stop', 'stopped', []],

  ...running('starting'),
  // not set up yet (it may have read the old files): a new process reads the new ones
  ['starting', 'reload', 'starting', RESTART_NOW],
  ['starting', 'spawned', 'starting', ['connect-mgmt']],
  ['starting', 'spawnFailed', 'backoff', ['schedule-backoff']],
  ['starting', 'spawnFailedPermanent', 'failed', []],
  ['starting', 'mgmtReady', 'connecting', ['start-health']],
  ['starting', 'mgmtFailed', 'backoff', KILL_THEN_BACKOFF],

  ...settled('connecting'),
  ['connecting', 'connectedState', 'connected', []],
  ['connecting', 'healthOk', 'connected', []],
  ['connecting', 'healthFailed', 'backoff', KILL_THEN_BACKOFF],

  ...settled('connected'),
  ['connected', 'reconnectingState', 'connecting', []],
  ['connected', 'waitState', 'connecting', []],
  ['connected', 'healthDegraded', 'degraded', []],
  ['connected', 'healthPending', 'connecting', []],
  ['connected', 'healthFailed', 'backoff', KILL_THEN_BACKOFF],

  ...settled('degraded'),
  ['degraded', 'reconnectingState', 'connecting', []],
  ['degraded', 'waitState', 'connecting', []],
  ['degraded', 'healthOk', 'connected', []],
  ['degraded', 'healthPending', 'connecting', []],
  ['degraded', 'healthFailed', 'backoff', KILL_THEN_BACKOFF],

  // Signalled; CONNECTED (stale: before the signal took effect) and health other than failed change nothing,
  // the restart openvpn reports moves on, so `connected` afterwards is the new session.
  ...settled('reloading'),
  ['reloading', 'reconnectingState', 'connecting', []],
  ['reloading', 'waitState', 'connecting', []],
  ['reloading', 'healthFailed', 'backoff', KILL_THEN_BACKOFF],

  ['backoff', 'backoffElapsed', 'starting', ['spawn']],
  ['backoff', 'restart', 'starting', ['cancel-backoff', 'spawn']],
  ['backoff', 'stop', 'stopping', STOP],

  ['stopping', 'stopped', 'stopped', []],
];

const states: InstanceState[] = ['stopped', 'starting', 'connecting', 'connected', 'degraded', 'reloading', 'backoff', 'stopping', 'failed'];

describe('nextState', () => {
  for (const [from, ev, to, actions] of table) {
    it(`${from} + ${ev} -> ${to} [${actions.join(', ')}]`, () => {
      expect(nextState(from, E[ev])).toEqual({ next: to, actions, ignored: false });
    });
  }

  // Everything not in the table is ignored: no state change, no action.
  for (const s of states) {
    const listed = new Set(table.filter(([from]) => from === s).map(([, ev]) => ev));
    const rest = (Object.keys(E) as EventName[]).filter((ev) => !listed.has(ev));
    it(`${s} ignores ${rest.join(', ')}`, () => {
      for (const ev of rest) expect(nextState(s, E[ev]), ev).toEqual({ next: s, actions: [], ignored: true });
    });
  }

  it('never spawns without first terminating a running process', () => {
    for (const [from, ev] of table) {
      const t = nextState(from, E[ev]);
      const spawnAt = t.actions.indexOf('spawn');
      if (spawnAt === -1) continue;
      const hadProcess = from === 'starting' || from === 'connecting' || from === 'connected' || from === 'degraded' || from === 'reloading';
      if (hadProcess) expect(t.actions.slice(0, spawnAt), `${from}+${ev}`).toContain('terminate');
    }
  });

  it('a reload never starts a new process while the one that runs can be signalled, and keeps its health checks', () => {
    for (const s of ['connecting', 'connected', 'degraded', 'reloading'] as const) {
      const t = nextState(s, E.reload);
      expect(t.actions, s).toEqual(['signal-reload']);
      expect(t.next, s).toBe('reloading');
    }
  });

  it('every way out of a running state into backoff or stopping stops the health checks', () => {
    for (const [from, ev] of table) {
      const t = nextState(from, E[ev]);
      if ((from === 'connecting' || from === 'connected' || from === 'degraded' || from === 'reloading') && (t.next === 'backoff' || t.next === 'stopping')) {
        expect(t.actions, `${from}+${ev}`).toContain('stop-health');
      }
    }
  });
});
