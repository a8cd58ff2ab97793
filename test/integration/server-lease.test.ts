/**
 * Network leases (src/server/lease.ts) on both engines: one owner at a time,
 * expiry on the database's clock, the epoch as fencing token, and a host
 * that cannot renew stopping before its lease can expire elsewhere; on
 * PostgreSQL, lease passes commit without waking the other hosts.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isMvpnError } from '../../src/errors.ts';
import { Leases } from '../../src/server/lease.ts';
import { PostgresStore } from '../../src/server/store/postgres.ts';
import { SqliteStore } from '../../src/server/store/sqlite.ts';
import { newNetworkRecord, type Store } from '../../src/server/store/store.ts';
import { waitFor } from '../helpers/netns.ts';
import { startPostgres, type PgCluster } from '../helpers/postgres.ts';
import { tmpDir } from '../helpers/tmp.ts';

interface Engine {
  readonly name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  /** Two connections to one fresh store (two hosts). */
  pair(): Promise<[Store, Store]>;
}

const sqlite = (): Engine => {
  let dir: { path: string; remove: () => Promise<void> };
  let n = 0;
  return {
    name: 'sqlite',
    setup: async () => void (dir = await tmpDir('lease')),
    teardown: async () => dir.remove(),
    pair: async () => {
      const path = join(dir.path, `s${++n}.db`);
      return [SqliteStore.open(path, { create: true }), SqliteStore.open(path)];
    },
  };
};

const postgres = (): Engine => {
  let cluster: PgCluster;
  return {
    name: 'postgres',
    setup: async () => void (cluster = await startPostgres('leasepg')),
    teardown: async () => cluster.stop(),
    pair: async () => {
      const url = await cluster.createDatabase();
      return [PostgresStore.open(url, { create: true }), PostgresStore.open(url)];
    },
  };
};

const addNetwork = (s: Store, id: string) =>
  s.write((tx) =>
    tx.insertNetwork(
      newNetworkRecord(
        {
          id,
          name: id,
          devType: 'tap',
          proto: 'udp',
          port: 1194,
          subnet: '198.19.0.0/24',
          remotes: [],
          keyAlg: 'ec-p256',
          caCertPem: 'c',
          caKeyPem: 'k',
          serverCertPem: 'sc',
          serverKeyPem: 'sk',
          tlsCryptV2ServerKey: 't',
          crlPem: 'crl',
          crlNumber: 1,
          crlNextUpdate: 0,
        },
        0,
      ),
    ),
  );

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each([sqlite(), postgres()])('network leases on $name', (engine) => {
  beforeAll(async () => engine.setup());
  afterAll(async () => engine.teardown());

  it('has one owner at a time; a taker waits for expiry on the database clock and gets the next epoch', async () => {
    const [a, b] = await engine.pair();
    try {
      addNetwork(a, 'lan');
      const ttl = 1_500;
      expect(a.write((tx) => tx.claimLease('lan', 'host-a', ttl))).toBe(1);
      expect(b.write((tx) => tx.claimLease('lan', 'host-b', ttl))).toBeUndefined();
      // Renewing keeps the epoch.
      expect(a.write((tx) => tx.claimLease('lan', 'host-a', ttl))).toBe(1);
      expect(b.read((tx) => tx.holdsLease('lan', 'host-a', 1))).toBe(true);
      await sleep(ttl + 300);
      expect(a.read((tx) => tx.holdsLease('lan', 'host-a', 1))).toBe(false);
      expect(b.write((tx) => tx.claimLease('lan', 'host-b', ttl))).toBe(2);
      // The old owner cannot renew what it lost, nor pass the fence with its epoch.
      expect(a.write((tx) => tx.claimLease('lan', 'host-a', ttl))).toBeUndefined();
      expect(a.read((tx) => tx.holdsLease('lan', 'host-a', 1))).toBe(false);
      expect(a.read((tx) => tx.holdsLease('lan', 'host-b', 2))).toBe(true);
      // A release hands it over at once, with the next epoch.
      b.write((tx) => tx.releaseLease('lan', 'host-b'));
      expect(a.write((tx) => tx.claimLease('lan', 'host-a', ttl))).toBe(3);
      expect(b.read((tx) => tx.listLeases())).toMatchObject([{ network: 'lan', owner: 'host-a', epoch: 3 }]);
    } finally {
      a.close();
      b.close();
    }
  });

  it('fences an old owner: its write as owner fails with MVPN_LEASE_LOST and changes nothing', async () => {
    const [a, b] = await engine.pair();
    try {
      addNetwork(a, 'lan');
      const clock = { now: () => 0 };
      const la = new Leases({ store: a, hostId: 'host-a', clock, ttlMs: 1_000, stopMarginMs: 400 });
      const lb = new Leases({ store: b, hostId: 'host-b', clock, ttlMs: 1_000, stopMarginMs: 400 });
      expect(la.renew(['lan'])).toBe(true);
      const epoch = la.epoch('lan');
      expect(epoch).toBe(1);
      expect(lb.renew(['lan'])).toBe(false);
      expect(lb.running().size).toBe(0);
      await sleep(1_300);
      expect(lb.renew(['lan'])).toBe(true);
      expect(lb.epoch('lan')).toBe(2);
      // host-a acts on the epoch it had: refused inside the transaction, which rolls back.
      let err: unknown;
      try {
        a.write((tx) => {
          tx.updateNetwork('lan', { crlNumber: 99 });
          la.fence(tx, 'lan', epoch);
        });
      } catch (e) {
        err = e;
      }
      expect(isMvpnError(err) && err.code).toBe('MVPN_LEASE_LOST');
      expect(a.read((tx) => tx.getNetwork('lan'))?.crlNumber).toBe(1);
      // The new owner passes.
      b.write((tx) => {
        lb.fence(tx, 'lan', lb.epoch('lan'));
        tx.updateNetwork('lan', { crlNumber: 2 });
      });
      expect(a.read((tx) => tx.getNetwork('lan'))?.crlNumber).toBe(2);
    } finally {
      a.close();
      b.close();
    }
  });

  it('gives a network up locally before its lease can expire when renewals fail, and not after one failure', async () => {
    const [a, b] = await engine.pair();
    try {
      addNetwork(a, 'lan');
      let now = 0;
      let down = false;
      // The host's clock is a test clock (expiry is the database's); `down` makes every renewal fail as an unreachable store would.
      const flaky: Store = { ...a, write: (fn) => (down ? (() => { throw new Error('store unreachable'); })() : a.write(fn)), read: (fn) => a.read(fn), dataVersion: () => a.dataVersion(), close: () => a.close() };
      const la = new Leases({ store: flaky, hostId: 'host-a', clock: { now: () => now }, ttlMs: 10_000, stopMarginMs: 4_000 });
      expect(la.renew(['lan'])).toBe(true);
      down = true;
      now = 2_000;
      expect(la.renew(['lan'])).toBe(false);
      now = 4_000;
      expect(la.renew(['lan'])).toBe(false);
      expect(la.running()).toEqual(new Set(['lan']));
      now = 6_000;
      // The third pass without a renewal: 4 s before the lease can expire anywhere, this host lets go.
      expect(la.renew(['lan'])).toBe(true);
      expect(la.running().size).toBe(0);
      expect(la.epoch('lan')).toBeUndefined();
      // Meanwhile the database still says host-a: nobody else runs it yet either.
      expect(b.write((tx) => tx.claimLease('lan', 'host-b', 10_000))).toBeUndefined();
    } finally {
      a.close();
      b.close();
    }
  });
});

describe('lease passes on PostgreSQL', () => {
  const engine = postgres();
  beforeAll(async () => engine.setup());
  afterAll(async () => engine.teardown());

  it('wake no other host (no NOTIFY every 2 s), while any other write still does at once', async () => {
    const [a, b] = await engine.pair();
    const events: string[] = [];
    b.watch?.((e) => events.push(e.kind));
    try {
      addNetwork(a, 'lan');
      expect(await waitFor(async () => events.includes('changed'), 5_000, 20)).toBe(true);
      events.length = 0;
      const versionBefore = b.dataVersion();
      const la = new Leases({ store: a, hostId: 'host-a', clock: { now: () => Date.now() } });
      expect(la.renew(['lan'])).toBe(true);
      for (let i = 0; i < 5; i++) la.renew(['lan']);
      la.releaseAll();
      await sleep(500);
      expect(events).toEqual([]);
      expect(b.dataVersion()).toBe(versionBefore);
      // The lease passes did commit: B sees host-a's lease, and its end.
      expect(b.read((tx) => tx.listLeases())).toMatchObject([{ network: 'lan', owner: 'host-a', epoch: 1 }]);
      expect(b.write((tx) => tx.claimLease('lan', 'host-b', 10_000))).toBe(2);
      // Any other write on A still wakes B.
      a.write((tx) => tx.putHost({ id: 'host-a', remotes: [], joinedAt: 0 }));
      expect(await waitFor(async () => events.includes('changed'), 5_000, 20)).toBe(true);
    } finally {
      a.close();
      b.close();
    }
  });
});
