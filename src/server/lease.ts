/**
 * Network ownership when several server hosts share one store (issue 21):
 * each network's openvpn server runs on one host at a time, the holder of
 * the network's lease (a `leases` row: owner, expiry, epoch).
 *
 * - Expiry is on the database's clock (`now()`), never a host's, so two
 *   hosts with skewed clocks agree on when a lease ran out. A host takes a
 *   lease only when it has none or it expired; taking it adds one to the
 *   epoch, the fencing token.
 * - The holder renews every RENEW_MS for LEASE_TTL_MS. Locally it counts
 *   the lease as its own only until the start of its last successful
 *   renewal + TTL − STOP_MARGIN_MS (on its monotonic clock, which runs
 *   at the database clock's rate): so after two failed renewals in a row
 *   it stops the network's openvpn (SIGTERM, waits for the exit) with
 *   STOP_MARGIN_MS to spare before any other host can take the lease.
 *   A single failed renewal (a database restart) drops nothing.
 * - Fencing: a write a host makes as the owner (a CRL it publishes) checks
 *   `holdsLease(network, host, epoch)` inside its own transaction
 *   (`fence`), so a host that lost its lease while preparing cannot
 *   overwrite the new owner's state.
 * - Why 2 s / 10 s: failover takes about TTL + one renewal period (the
 *   taker's next pass) + the openvpn start; 10 s keeps that well inside the
 *   30 s target while tolerating a renewal that stalls a few seconds
 *   (a database failover, a loaded host). A renewal is one short write per
 *   host every 2 s, whatever the number of networks.
 *
 * With SQLite there is one host: it always finds its own or an expired
 * lease, so the same path runs with no change in behaviour.
 */
import { StoreError } from '../errors.ts';
import type { Clock } from '../util/clock.ts';
import type { Store, StoreTx } from './store/store.ts';

export const LEASE_TTL_MS = 10_000;
export const RENEW_MS = 2_000;
/** Time kept back for stopping openvpn (SIGTERM, its exit) and clock rate differences. */
export const STOP_MARGIN_MS = 4_000;

/** The host id of a server whose config names none (a single host, or the first). */
export const DEFAULT_HOST_ID = 'primary';

export interface LeaseOptions {
  readonly store: Store;
  readonly hostId: string;
  readonly clock: Pick<Clock, 'now'>;
  readonly ttlMs?: number;
  readonly stopMarginMs?: number;
}

interface Held {
  readonly epoch: number;
  /** Local (clock) time until which this host may run the network. */
  readonly until: number;
}

export class Leases {
  private readonly o: LeaseOptions;
  private readonly ttl: number;
  private readonly margin: number;
  private held = new Map<string, Held>();
  /** What the last pass reported as running. */
  private reported = new Set<string>();

  constructor(o: LeaseOptions) {
    this.o = o;
    this.ttl = o.ttlMs ?? LEASE_TTL_MS;
    this.margin = o.stopMarginMs ?? STOP_MARGIN_MS;
    if (this.margin >= this.ttl) throw new StoreError('MVPN_INTERNAL', 'lease stop margin must be below its TTL');
  }

  get hostId(): string {
    return this.o.hostId;
  }

  /**
   * One pass: renew or take the lease of every network in `wanted`, end this
   * host's leases of the others. Returns whether the set this host may run
   * changed. A failed pass (store unreachable) keeps each lease only until
   * its local deadline.
   */
  renew(wanted: readonly string[]): boolean {
    const started = this.o.clock.now();
    let epochs: Map<string, number | undefined> | undefined;
    try {
      epochs = this.o.store.write(
        (tx) => {
          for (const l of tx.listLeases()) if (l.owner === this.o.hostId && !wanted.includes(l.network)) tx.releaseLease(l.network, this.o.hostId);
          return new Map(wanted.map((id) => [id, tx.claimLease(id, this.o.hostId, this.ttl)]));
        },
        { quiet: true },
      );
    } catch {
      epochs = undefined;
    }
    if (epochs) {
      const next = new Map<string, Held>();
      for (const [id, epoch] of epochs) if (epoch !== undefined) next.set(id, { epoch, until: started + this.ttl - this.margin });
      this.held = next;
    }
    const before = this.reported;
    this.reported = this.running();
    return !sameSet(before, this.reported);
  }

  /** The networks whose lease this host holds now (locally unexpired). */
  running(): Set<string> {
    const now = this.o.clock.now();
    return new Set([...this.held].filter(([, h]) => h.until > now).map(([id]) => id));
  }

  /** Local time until which this host may run `network` (its last successful renewal's start + TTL − margin; past once a renewal is overdue), if it ever held it. */
  until(network: string): number | undefined {
    return this.held.get(network)?.until;
  }

  /** The epoch of this host's unexpired lease on `network`, if any. */
  epoch(network: string): number | undefined {
    const h = this.held.get(network);
    return h && h.until > this.o.clock.now() ? h.epoch : undefined;
  }

  /** Inside an owner's write: throws MVPN_LEASE_LOST unless this host still holds `network`'s lease at the epoch it acted on. */
  fence(tx: StoreTx, network: string, epoch: number | undefined): void {
    if (epoch === undefined || !tx.holdsLease(network, this.o.hostId, epoch)) {
      throw new StoreError('MVPN_LEASE_LOST', `this host (${this.o.hostId}) no longer holds the lease of network ${network}; its new owner does this`);
    }
  }

  /** Ends every lease this host holds (a clean stop), so another host takes over at once. */
  releaseAll(): void {
    try {
      this.o.store.write(
        (tx) => {
          for (const id of this.held.keys()) tx.releaseLease(id, this.o.hostId);
        },
        { quiet: true },
      );
    } catch {
      // they expire by themselves
    }
    this.held.clear();
  }
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  return a.size === b.size && [...a].every((x) => b.has(x));
}
