/**
 * One supervised openvpn per network (DESIGN.md §6). This module owns the
 * map network id → Supervisor and the operator's "down" marks; it never
 * decides *what* should run (reconcile.ts does), only makes it so.
 *
 * - Runtime files follow src/openvpn/process.ts runtimePaths
 *   (`<runtime>/openvpn-<id>.sock|.pid`), so cleanupLeftovers at the next
 *   start recognises whatever a crashed agent left.
 * - The interface is `mv-<id>` (network ids are at most 12 characters).
 * - A supervisor's spec is fixed; when a new bundle changes what the spec
 *   holds (the expected address), the old supervisor is stopped and a new one
 *   started. Otherwise a restart is the supervisor's own restart().
 * - A network an operator took down is never started here, whoever asks
 *   (a reconcile that planned before the `down` arrived included). The
 *   marks are persisted (state.ts admin.json, through `persistDown`) before
 *   they take effect, so a `down` survives agent restarts and reboots; a
 *   mark that cannot be recorded is not applied and the caller gets the
 *   error. Writes are queued, each writing the marks as they are then.
 * - Operations on one network run one at a time (reconcile and the control
 *   API may ask at once); two supervisors for one network would leave one
 *   openvpn untracked. After stopAll() (shutdown) nothing starts any more.
 */
import type { InstalledBundle } from '../bundle/install.ts';
import { runtimePaths } from '../openvpn/process.ts';
import { LAN_MTU } from '../openvpn/mtu.ts';
import type { InstanceSpec, InstanceStatus } from '../openvpn/supervisor-state.ts';

/** What the runner needs of a supervisor (src/openvpn/supervisor.ts Supervisor fits). */
export interface SupervisorLike {
  start(): void;
  stop(): Promise<void>;
  restart(): void;
  reload(): void;
  status(): InstanceStatus;
  on(event: 'change', listener: (s: InstanceStatus) => void): unknown;
}

export type SupervisorFactory = (spec: InstanceSpec) => SupervisorLike;

export function deviceName(networkId: string): string {
  return `mv-${networkId}`;
}

export function instanceSpec(b: InstalledBundle, runtimeDir: string, openvpnPath: string): InstanceSpec {
  return {
    id: b.network,
    role: 'client',
    configPath: b.configPath,
    cwd: b.dir,
    ...runtimePaths(runtimeDir, b.network),
    dev: deviceName(b.network),
    expectedAddress: b.spec.address.ipv4,
    pushFiltered: true,
    retryServerRestart: b.spec.remotes.length === 1,
    // L2 only: a tun network's server address answers at L3, and full frames are the tap's promise.
    ...(b.spec.dev_type === 'tap' && b.spec.server_tunnel_ip !== undefined ? { frameProbe: { peer: b.spec.server_tunnel_ip, mtu: b.spec.mtu ?? LAN_MTU } } : {}),
    openvpnPath,
  };
}

function sameSpec(a: InstanceSpec, b: InstanceSpec): boolean {
  return (
    a.configPath === b.configPath &&
    a.cwd === b.cwd &&
    a.mgmtSocket === b.mgmtSocket &&
    a.pidFile === b.pidFile &&
    a.dev === b.dev &&
    a.expectedAddress === b.expectedAddress &&
    a.pushFiltered === b.pushFiltered &&
    a.retryServerRestart === b.retryServerRestart &&
    a.frameProbe?.peer === b.frameProbe?.peer &&
    a.frameProbe?.mtu === b.frameProbe?.mtu &&
    a.openvpnPath === b.openvpnPath
  );
}

interface Entry {
  readonly spec: InstanceSpec;
  readonly sup: SupervisorLike;
}

export class NetworkRunner {
  private readonly entries = new Map<string, Entry>();
  /** Network id → when the operator took it down (ms). */
  private readonly down = new Map<string, number>();
  private persisting: Promise<void> = Promise.resolve();
  private readonly persistDown: (down: ReadonlyMap<string, number>) => Promise<void>;
  private readonly locks = new Map<string, Promise<unknown>>();
  private closed = false;
  private readonly runtimeDir: string;
  private readonly openvpnPath: string;
  private readonly factory: SupervisorFactory;
  private readonly onChange: (id: string, s: InstanceStatus) => void;

  constructor(opts: {
    runtimeDir: string;
    openvpnPath: string;
    factory: SupervisorFactory;
    onChange: (id: string, s: InstanceStatus) => void;
    /** Records the operator's marks (state.ts saveAdminDown); none: they live in memory only. */
    persistDown?: (down: ReadonlyMap<string, number>) => Promise<void>;
  }) {
    this.persistDown = opts.persistDown ?? (async () => undefined);
    this.runtimeDir = opts.runtimeDir;
    this.openvpnPath = opts.openvpnPath;
    this.factory = opts.factory;
    this.onChange = opts.onChange;
  }

  ids(): string[] {
    return [...this.entries.keys()];
  }

  /** A supervisor exists and is not stopped (it may be connecting, in backoff or failed). */
  isRunning(id: string): boolean {
    const e = this.entries.get(id);
    return e !== undefined && e.sup.status().state !== 'stopped';
  }

  isAdminDown(id: string): boolean {
    return this.down.has(id);
  }

  /** When the operator took `id` down (ms), if it is down. */
  adminDownSince(id: string): number | undefined {
    return this.down.get(id);
  }

  /** The marks recorded by a previous run (agent start, before anything runs). */
  restoreAdminDown(marks: ReadonlyMap<string, number>): void {
    for (const [id, at] of marks) this.down.set(id, at);
  }

  /** Write the marks as they are when this write's turn comes. */
  private persist(): Promise<void> {
    const next = this.persisting.catch(() => undefined).then(() => this.persistDown(new Map(this.down)));
    this.persisting = next;
    return next;
  }

  /** Change the marks by `change`, record them, and undo the change when they cannot be recorded. */
  private async mark(id: string, change: () => void): Promise<void> {
    const before = this.down.get(id);
    change();
    try {
      await this.persist();
    } catch (err) {
      if (before === undefined) this.down.delete(id);
      else this.down.set(id, before);
      throw err;
    }
  }

  status(id: string): InstanceStatus | undefined {
    return this.entries.get(id)?.sup.status();
  }

  private create(spec: InstanceSpec): Entry {
    const sup = this.factory(spec);
    const entry = { spec, sup };
    sup.on('change', (s) => {
      if (this.entries.get(spec.id) === entry) this.onChange(spec.id, s);
    });
    this.entries.set(spec.id, entry);
    return entry;
  }

  /** Run `fn` after every earlier operation on network `id` has finished. */
  private serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    const tail = next.catch(() => undefined);
    this.locks.set(id, tail);
    void tail.then(() => {
      if (this.locks.get(id) === tail) this.locks.delete(id);
    });
    return next;
  }

  /** Make sure the installed bundle runs; a running supervisor with the same spec is left alone. */
  run(b: InstalledBundle): Promise<void> {
    return this.serial(b.network, () => this.runNow(b));
  }

  private async runNow(b: InstalledBundle): Promise<void> {
    if (this.closed || this.down.has(b.network)) return;
    const spec = instanceSpec(b, this.runtimeDir, this.openvpnPath);
    const e = this.entries.get(b.network);
    if (e !== undefined && sameSpec(e.spec, spec)) {
      const state = e.sup.status().state;
      if (state === 'stopped' || state === 'failed') e.sup.start();
      return;
    }
    if (e !== undefined) await this.stopNow(b.network);
    if (this.closed || this.down.has(b.network)) return;
    this.create(spec).sup.start();
  }

  /** Restart with a (possibly) new bundle: only this network's openvpn. */
  restart(b: InstalledBundle): Promise<void> {
    return this.serial(b.network, async () => {
      if (this.closed || this.down.has(b.network)) return;
      const spec = instanceSpec(b, this.runtimeDir, this.openvpnPath);
      const e = this.entries.get(b.network);
      if (e !== undefined && sameSpec(e.spec, spec)) {
        e.sup.restart();
        return;
      }
      await this.runNow(b);
    });
  }

  /**
   * New credential files under the same config (a renewal): the running
   * openvpn reconnects with them re-read, its device stays (Supervisor.reload).
   * Anything it cannot take that way starts as run() would.
   */
  reload(b: InstalledBundle): Promise<void> {
    return this.serial(b.network, async () => {
      if (this.closed || this.down.has(b.network)) return;
      const e = this.entries.get(b.network);
      const state = e?.sup.status().state;
      if (e !== undefined && sameSpec(e.spec, instanceSpec(b, this.runtimeDir, this.openvpnPath)) && state !== 'stopped' && state !== 'failed') {
        e.sup.reload();
        return;
      }
      await this.runNow(b);
    });
  }

  stop(id: string): Promise<void> {
    return this.serial(id, () => this.stopNow(id));
  }

  private async stopNow(id: string): Promise<void> {
    const e = this.entries.get(id);
    if (e === undefined) return;
    await e.sup.stop();
    if (this.entries.get(id) === e) this.entries.delete(id);
    this.onChange(id, e.sup.status());
  }

  /** `mvpn-client down`: record the mark, stop it and keep it stopped until `up`, across agent restarts. */
  async adminDown(id: string, now: number): Promise<void> {
    if (!this.down.has(id)) await this.mark(id, () => this.down.set(id, now));
    await this.stop(id);
  }

  /** `mvpn-client up`: clear the recorded mark and start the installed bundle, if any. */
  async adminUp(b: InstalledBundle | undefined, id: string): Promise<void> {
    if (this.down.has(id)) await this.mark(id, () => this.down.delete(id));
    if (b !== undefined) await this.run(b);
  }

  /** Forget a removed network's operator mark. */
  async forget(id: string): Promise<void> {
    if (this.down.has(id)) await this.mark(id, () => this.down.delete(id));
  }

  /** Stop every network (daemon shutdown), in parallel; each by its own pid. */
  async stopAll(): Promise<void> {
    this.closed = true;
    // Also networks with an operation in flight: it finishes first (and starts nothing now).
    const ids = new Set([...this.ids(), ...this.locks.keys()]);
    await Promise.all([...ids].map((id) => this.stop(id)));
  }
}
