/**
 * Two server hosts on one PostgreSQL store (issue 21), on real parts: two
 * `mvpn-client server run` daemons, each in its own namespace with its own
 * state directory (the second set up with `server init --join -` from the
 * first's `server join-material`), a PostgreSQL cluster of the test's own on
 * a unix socket, real openvpn servers under the daemons and four real
 * openvpn clients from exported bundles.
 *
 * Checked: the network runs on the lease holder only (both hosts' openvpn
 * processes are sampled throughout: never two at once); a revocation made on
 * the other host reaches the owner's CRL, and after the failover an
 * enrollment made on the old host reaches the new owner, within a second
 * (printed; the bounds are hang guards); when the owner is
 * killed (SIGKILL to its daemon and its openvpn, its link cut) every node is
 * back on the LAN through the other host, and nothing committed before the
 * kill is lost. The failover time is printed (BENCHMARKS.md "HA failover").
 * When the owner's database connection hangs (its backend and the
 * postmaster stopped: a partition, not a refusal), the owner's openvpn is
 * gone before its lease can expire in the database, and it takes the
 * network back once the database answers again.
 *
 *   srv-a 198.18.0.1 ─┐
 *   srv-b 198.18.0.2 ─┼─ sw (bridge) ─ n1..n4 198.18.0.11-14
 */
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor, type Netns } from '../helpers/netns.ts';
import { pgBinDir } from '../../src/demo/postgres.ts';
import { startPostgres, type PgCluster } from '../helpers/postgres.ts';
import { cli, makeServer, startVpnClient, type TestServer, type VpnClient } from '../helpers/server-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const NODES = ['n1', 'n2', 'n3', 'n4'] as const;

interface Host {
  readonly name: string;
  readonly ns: Netns;
  readonly stateDir: string;
  daemon?: ChildProcess;
  log: string;
}

describe('two server hosts on one PostgreSQL: leases and failover', () => {
  const lab = new Lab();
  let pg: PgCluster;
  let url: string;
  let a: Host;
  let b: Host;
  let sA: TestServer;
  let bDir: { path: string; remove: () => Promise<void> };
  const nodeNs = new Map<string, Netns>();
  const clients: VpnClient[] = [];
  const dirs: { remove: () => Promise<void> }[] = [];
  /** Samples of which hosts run an openvpn (the only openvpn in a host's namespace is its network's server). */
  const overlaps: string[] = [];
  let sampling = true;
  let sampler: Promise<void> | undefined;

  const openvpnPids = async (ns: Netns): Promise<number[]> => {
    const out: number[] = [];
    for (const pid of await ns.pids()) {
      const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
      if (comm.trim() === 'openvpn') out.push(pid);
    }
    return out;
  };

  const startDaemon = (h: Host): void => {
    const d = h.ns.spawn(process.execPath, [join(ROOT, 'src/main.ts'), 'server', 'run', '--state-dir', h.stateDir], { cwd: ROOT });
    d.stderr?.on('data', (x: Buffer) => (h.log += x.toString('utf8')));
    d.stdout?.on('data', (x: Buffer) => (h.log += x.toString('utf8')));
    h.daemon = d;
  };

  const stopDaemon = async (h: Host | undefined): Promise<void> => {
    const d = h?.daemon;
    if (!d || d.exitCode !== null || d.signalCode !== null) return;
    const exited = new Promise((r) => d.once('exit', r));
    d.kill('SIGTERM');
    await exited;
  };

  /** The tunnel address of each node (from its tap). */
  const tunnelIps = async (): Promise<Map<string, string>> => {
    const ips = new Map<string, string>();
    for (const n of NODES) {
      const r = await nodeNs.get(n)!.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'mv-lan'], { allowFail: true });
      const m = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(r.stdout);
      if (m) ips.set(n, m[1]!);
    }
    return ips;
  };

  /** The network's memberships as host `stateDir` reads them from the store. */
  const members = async (stateDir: string): Promise<Map<string, { state: string; cert_serial: string | null }>> => {
    const r = await cli(['server', 'node', 'list', '--network', 'lan', '--json', '--state-dir', stateDir]);
    const nodes = r.json<{ node: string; memberships: { state: string; cert_serial: string | null }[] }[]>();
    return new Map(nodes.map((n) => [n.node, n.memberships[0]!]));
  };

  /** Every node answers every other node over the LAN. */
  const matrix = async (ips: Map<string, string>): Promise<boolean> => {
    const checks = NODES.flatMap((x) => NODES.filter((y) => y !== x).map((y) => nodeNs.get(x)!.ping(ips.get(y)!, { count: 1, timeoutS: 1 })));
    return (await Promise.all(checks)).every(Boolean);
  };

  beforeAll(async () => {
    pg = await startPostgres('hapg');
    url = await pg.createDatabase('ha');
    const sw = await lab.ns('sw');
    const ports: string[] = [];
    const link = async (ns: Netns, ip: string) => ports.push((await lab.link(ns, sw, { aName: 'eth0', aAddr: `${ip}/24` }))[1]);
    const nsA = await lab.ns('srva');
    const nsB = await lab.ns('srvb');
    await link(nsA, '198.18.0.1');
    await link(nsB, '198.18.0.2');
    for (const [i, n] of NODES.entries()) {
      const ns = await lab.ns(n);
      nodeNs.set(n, ns);
      await link(ns, `198.18.0.${11 + i}`);
    }
    await lab.bridge(sw, 'br0', ports);

    // Host A: a new store. Host B: joins it with A's join material (over stdin, as over ssh).
    sA = await makeServer({ label: 'ha-a', address: '198.18.0.1', store: 'sqlite', extra: ['--vpn-listen', '198.18.0.1', '--store-url', url] });
    a = { name: 'a', ns: nsA, stateDir: sA.stateDir, log: '' };
    const material = await cli(['server', 'join-material', '--state-dir', a.stateDir]);
    expect(material.code, material.err).toBe(0);
    bDir = await tmpDir('ha-b');
    const bState = join(bDir.path, 'state');
    const joined = await cli(
      ['server', 'init', '--join=-', '--host-id', 'b', '--state-dir', bState, '--address', '198.18.0.2', '--vpn-listen', '198.18.0.2', '--listen', '127.0.0.1:0', '--metrics-listen', 'off'],
      material.out,
    );
    expect(joined.code, joined.err).toBe(0);
    b = { name: 'b', ns: nsB, stateDir: bState, log: '' };

    // A network made now knows both hosts; one more node is revoked later on B, one added just before the kill.
    await sA.run(['network', 'create', 'lan']);
    for (const n of [...NODES, 'n5', 'n6']) await sA.run(['node', 'add', n, '--network', 'lan']);
    await sA.run(['network', 'up', 'lan']);
    for (const n of [...NODES, 'n6']) await sA.run(['export', n, '--network', 'lan', '--out', join(sA.dir, `${n}.tar.gz`)]);

    // A first, so it holds the lease; B waits for it.
    startDaemon(a);
    expect(await waitFor(async () => (await openvpnPids(a.ns)).length === 1, 60_000), a.log).toBe(true);
    startDaemon(b);
    expect(await waitFor(() => /server: ready/.test(b.log), 60_000), b.log).toBe(true);

    sampler = (async () => {
      while (sampling) {
        const [pa, pb] = await Promise.all([openvpnPids(a.ns), openvpnPids(b.ns)]);
        if (pa.length > 0 && pb.length > 0) overlaps.push(`${new Date().toISOString()} a:${pa.join(',')} b:${pb.join(',')}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    for (const n of NODES) {
      const work = await tmpDir(`ha-${n}`);
      dirs.push(work);
      clients.push(await startVpnClient(nodeNs.get(n)!, { bundlePath: join(sA.dir, `${n}.tar.gz`), anchorPath: join(a.stateDir, 'trust-anchor'), node: n, workDir: work.path }));
    }
  }, 240_000);

  afterAll(async () => {
    sampling = false;
    await sampler;
    for (const c of clients) await c.stop().catch(() => undefined);
    await stopDaemon(a).catch(() => undefined);
    await stopDaemon(b).catch(() => undefined);
    await lab.destroy();
    await pg?.stop();
    for (const d of dirs) await d.remove();
    await sA?.remove();
    await bDir?.remove();
  }, 120_000);

  it('gives the joined host the same trust anchor and API CA, its own listener certificate, and both hosts as remotes', async () => {
    const read = (dir: string, f: string) => readFile(join(dir, f), 'utf8');
    expect(await read(b.stateDir, 'trust-anchor')).toBe(await read(a.stateDir, 'trust-anchor'));
    expect(await read(b.stateDir, 'api/ca.crt')).toBe(await read(a.stateDir, 'api/ca.crt'));
    expect(await read(b.stateDir, 'api/server.crt')).not.toBe(await read(a.stateDir, 'api/server.crt'));
    const text = execFileSync('openssl', ['x509', '-noout', '-ext', 'subjectAltName', '-in', join(b.stateDir, 'api/server.crt')]).toString();
    expect(text).toContain('198.18.0.2');
    const verify = execFileSync('openssl', ['verify', '-CAfile', join(a.stateDir, 'api/ca.crt'), join(b.stateDir, 'api/server.crt')]).toString();
    expect(verify).toContain(': OK');
    const show = await sA.json<{ remotes: { host: string }[] }>(['network', 'show', 'lan']);
    expect(show.remotes.map((r) => r.host)).toEqual(['198.18.0.1', '198.18.0.2']);
    // Joining again under a taken id is refused.
    const again = await cli(['server', 'init', '--join=-', '--host-id', 'b', '--state-dir', join(bDir.path, 'again'), '--address', '198.18.0.3'], (await cli(['server', 'join-material', '--state-dir', a.stateDir])).out);
    expect(again.code).not.toBe(0);
    expect(again.err).toContain('MVPN_ALREADY_EXISTS');
  });

  it('runs the network on the lease holder only; all four nodes reach each other', async () => {
    const ips = await waitFor(async () => (await tunnelIps()).size === NODES.length, 60_000, 500);
    expect(ips, clients.map((c) => c.output()).join('\n---\n')).toBe(true);
    const addrs = await tunnelIps();
    expect(await waitFor(() => matrix(addrs), 60_000, 500), a.log).toBe(true);
    expect(await openvpnPids(a.ns)).toHaveLength(1);
    expect(await openvpnPids(b.ns)).toHaveLength(0);
    expect((await sA.json<{ lease: { owner: string; epoch: number } }>(['network', 'show', 'lan'])).lease).toMatchObject({ owner: 'primary', epoch: 1 });
  }, 150_000);

  it('applies a revocation made on the other host to the owner\'s CRL within a second', async () => {
    const crlOf = () => execFileSync('openssl', ['crl', '-noout', '-text', '-in', join(a.stateDir, 'networks/lan/crl.pem')]).toString();
    const serial = (await members(a.stateDir)).get('n6')?.cert_serial;
    expect(serial).toBeTruthy();
    const revoke = await cli(['server', 'node', 'revoke', 'n6', '--state-dir', b.stateDir]);
    expect(revoke.code, revoke.err).toBe(0);
    const t0 = performance.now();
    const seen = await waitFor(() => crlOf().toUpperCase().replace(/:/g, '').includes(serial!.toUpperCase().replace(/:/g, '')), 10_000, 20);
    const ms = performance.now() - t0;
    console.log(`HA: a revocation on host b reached host a's CRL after ${ms.toFixed(0)} ms`);
    expect(seen).toBe(true);
    expect(ms).toBeLessThan(5_000);
  }, 30_000);

  it('fails over when the owner is killed: every node back on the LAN through the other host, nothing committed lost', async () => {
    // Committed just before the kill: a new member's certificate (export), to be served by the new owner.
    await sA.run(['export', 'n5', '--network', 'lan', '--out', join(sA.dir, 'n5.tar.gz')]);
    const addrs = await tunnelIps();
    const victims = [a.daemon!.pid!, ...(await openvpnPids(a.ns))];
    const t0 = performance.now();
    for (const pid of victims) process.kill(pid, 'SIGKILL');
    await a.ns.exec('ip', ['link', 'set', 'eth0', 'down']);
    const back = await waitFor(() => matrix(addrs), 90_000, 250);
    const seconds = (performance.now() - t0) / 1000;
    console.log(`HA failover: every pair answers again ${seconds.toFixed(1)} s after the kill`);
    expect(back, `b:\n${b.log}\n${clients.map((c) => c.output().slice(-2000)).join('\n---\n')}`).toBe(true);
    expect(seconds).toBeLessThan(30);
    expect(await openvpnPids(b.ns)).toHaveLength(1);
    const lease = (await cli(['server', 'network', 'show', 'lan', '--json', '--state-dir', b.stateDir])).json<{ lease: { owner: string; epoch: number } }>().lease;
    expect(lease).toMatchObject({ owner: 'b', epoch: 2 });
    // The new owner serves what was committed before the kill: n5's client config, n6 on its CRL.
    expect(await readFile(join(b.stateDir, 'networks/lan/ccd/n5'), 'utf8')).toBeTruthy();
    const crl = execFileSync('openssl', ['crl', '-noout', '-text', '-in', join(b.stateDir, 'networks/lan/crl.pem')]).toString();
    const onB = await members(b.stateDir);
    expect(onB.get('n6')?.state).toBe('revoked');
    expect(onB.get('n5')?.cert_serial).toBeTruthy();
    expect(crl).toContain('Serial Number');
    expect(overlaps, 'both hosts ran an openvpn server for the network at once').toEqual([]);
  }, 150_000);

  it('applies an enrollment made on the other host to the new owner within a second', async () => {
    // Host a's daemon is gone; its CLI still reaches the store. The new member's client config appears on b, the owner now.
    await sA.run(['node', 'add', 'n7', '--network', 'lan']);
    await sA.run(['export', 'n7', '--network', 'lan', '--out', join(sA.dir, 'n7.tar.gz')]);
    const t0 = performance.now();
    const seen = await waitFor(() => readFile(join(b.stateDir, 'networks/lan/ccd/n7'), 'utf8').then(() => true, () => false), 10_000, 20);
    const ms = performance.now() - t0;
    console.log(`HA: an enrollment on host a reached host b's openvpn files after ${ms.toFixed(0)} ms`);
    expect(seen).toBe(true);
    expect(ms).toBeLessThan(5_000);
  }, 30_000);

  it("stops the owner's server before its lease can expire when its database connection hangs, and takes the network back after", async () => {
    const psql = (sql: string) => execFileSync(join(pgBinDir(), 'psql'), ['--dbname', url, '-Atc', sql]).toString().trim();
    // Host b's daemon names itself in pg_stat_activity; its backend and the postmaster (no new connection either) stop answering.
    const backends = psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'mvpn-server b'").split('\n').filter(Boolean).map(Number);
    expect(backends.length).toBeGreaterThan(0);
    expect(await openvpnPids(b.ns)).toHaveLength(1);
    const addrs = await tunnelIps();
    const frozen = [...backends, pg.pid()];
    // The lease's expiry as the database has it now; a renewal in the moments before the freeze only moves it later.
    const expiresAt = Number(psql("SELECT expires_at FROM leases WHERE network = 'lan'"));
    const t0 = Date.now();
    let goneAt: number;
    try {
      for (const pid of frozen) process.kill(pid, 'SIGSTOP');
      const gone = await waitFor(async () => (await openvpnPids(b.ns)).length === 0, 40_000, 100);
      goneAt = Date.now();
      expect(gone, b.log.slice(-4000)).toBe(true);
    } finally {
      for (const pid of frozen) process.kill(pid, 'SIGCONT');
    }
    console.log(`HA partition: host b's server gone ${((goneAt - t0) / 1000).toFixed(1)} s after its database stopped answering, ${((expiresAt - goneAt) / 1000).toFixed(1)} s before its lease expired`);
    expect(goneAt, b.log.slice(-4000)).toBeLessThan(expiresAt);
    // The database answers again: b renews (its held-up renewal may still land before the expiry), runs the network, the LAN is back.
    expect(await waitFor(async () => (await openvpnPids(b.ns)).length === 1, 60_000, 250), b.log.slice(-4000)).toBe(true);
    expect(await waitFor(() => matrix(addrs), 90_000, 250), b.log.slice(-4000)).toBe(true);
    // Its own lease: renewed at the same epoch if it had not expired yet, else taken again at the next.
    expect(psql("SELECT owner || ' ' || epoch FROM leases WHERE network = 'lan'")).toMatch(/^b [23]$/);
    expect(b.log).toContain('lan: stopping its openvpn server (its lease ran out while the state store did not answer)');
    expect(overlaps).toEqual([]);
  }, 240_000);
});
