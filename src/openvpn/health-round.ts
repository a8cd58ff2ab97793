/**
 * One timer for the health checks of every supervisor in a process, and one
 * read of the interface addresses per round that they all share (issue 14).
 *
 * With a timer per supervisor, an idle agent of 16 networks woke 16 times per
 * interval at unrelated moments, and each check dumped every interface of the
 * host over netlink (`os.networkInterfaces()`: two netlink dumps and an
 * object per address, each time) to look at one of them: that dump and the
 * garbage it left were most of the agent's idle CPU. A round wakes once per
 * interval, starts the check of every member, and the first check that needs
 * the addresses reads them for all.
 *
 * - A member's first check comes at the first round at least half an interval
 *   after it joined: between 0.5 and 1.5 intervals, one on average, as with
 *   its own timer.
 * - A member whose previous check has not finished (a management query
 *   waiting on a hung openvpn, up to its timeout) is skipped, not queued: at
 *   most one check per member at a time, as before.
 * - The addresses of a round are read at most once, and a check that comes
 *   later than `SNAPSHOT_MAX_AGE_MS` into the round (it waited on a slow
 *   openvpn) reads them afresh: a verdict never rests on an old read.
 * - The timer runs only while there are members.
 * - Frame probes asked for within `PROBE_GATHER_MS` of each other run as one
 *   (health.ts probeFullFrames: one shell for all of them instead of a
 *   `ping` forked from this process per network). The checks of a round
 *   reach their probe within a few milliseconds of each other (after their
 *   management query), so the networks of a round share one process.
 */
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import type { Cancel, Clock } from '../util/clock.ts';
import { execCommand, type ExecFn } from '../util/exec.ts';
import { probeFullFrames, type FrameProbeTarget } from './health.ts';
import type { FrameVerdict } from './supervisor-state.ts';

export type Interfaces = NodeJS.Dict<NetworkInterfaceInfo[]>;

/** How long one read of the addresses answers the checks of a round. */
const SNAPSHOT_MAX_AGE_MS = 1_000;
/** How long the first frame probe of a batch waits for others to join it. */
const PROBE_GATHER_MS = 50;

interface Member {
  readonly check: () => Promise<void>;
  readonly joinedAt: number;
  busy: boolean;
}

export class HealthRound {
  readonly intervalMs: number;
  private readonly clock: Clock;
  private readonly readInterfaces: () => Interfaces;
  private readonly members = new Set<Member>();
  private cancel: Cancel | undefined;
  private snapshot: { readonly at: number; readonly value: Interfaces } | undefined;
  private readonly exec: ExecFn;
  /** Frame probes gathered for the next batch, and their callers. */
  private probes: { readonly target: FrameProbeTarget; readonly resolve: (v: FrameVerdict) => void }[] = [];

  constructor(clock: Clock, intervalMs: number, readInterfaces: () => Interfaces = networkInterfaces, exec: ExecFn = execCommand) {
    if (!(intervalMs > 0)) throw new RangeError(`health round interval must be positive, got ${intervalMs}`);
    this.clock = clock;
    this.intervalMs = intervalMs;
    this.readInterfaces = readInterfaces;
    this.exec = exec;
  }

  /** The frame probe of one network, run together with the others asked for at about the same time (see above). */
  probeFrames(target: FrameProbeTarget): Promise<FrameVerdict> {
    return new Promise((resolve) => {
      this.probes.push({ target, resolve });
      if (this.probes.length > 1) return;
      this.clock.setTimeout(() => {
        const batch = this.probes;
        this.probes = [];
        void probeFullFrames(
          this.exec,
          batch.map((p) => p.target),
        ).then((verdicts) => batch.forEach((p, i) => p.resolve(verdicts[i]!)));
      }, PROBE_GATHER_MS);
    });
  }

  /** Runs `check` at every round from the next one (see above); returns the function that removes it. */
  join(check: () => Promise<void>): () => void {
    const member: Member = { check, joinedAt: this.clock.now(), busy: false };
    this.members.add(member);
    this.arm();
    return () => {
      this.members.delete(member);
      if (this.members.size === 0) {
        this.cancel?.();
        this.cancel = undefined;
      }
    };
  }

  /** The host's interfaces and their addresses, read once for the checks of a round. */
  interfaces(): Interfaces {
    const now = this.clock.now();
    if (this.snapshot === undefined || now - this.snapshot.at > SNAPSHOT_MAX_AGE_MS) this.snapshot = { at: now, value: this.readInterfaces() };
    return this.snapshot.value;
  }

  private arm(): void {
    if (this.cancel !== undefined || this.members.size === 0) return;
    this.cancel = this.clock.setTimeout(() => {
      this.cancel = undefined;
      this.tick();
    }, this.intervalMs);
  }

  private tick(): void {
    this.snapshot = undefined;
    const now = this.clock.now();
    for (const m of this.members) {
      if (m.busy || now - m.joinedAt < this.intervalMs / 2) continue;
      m.busy = true;
      void m
        .check()
        .catch(() => undefined)
        .finally(() => {
          m.busy = false;
        });
    }
    this.arm();
  }
}
