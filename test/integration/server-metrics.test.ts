/**
 * The server's Prometheus metrics, scraped by a real Prometheus: the daemon
 * (`mvpn-client server run`) runs inside a server namespace with two
 * networks up and two nodes in each (real openvpn clients from exported
 * bundles, in their own namespaces); Prometheus runs in the same server
 * namespace with its own config and a data dir in a temp dir, scrapes only
 * that namespace's loopback, and is stopped by pid with the lab. The test
 * asks Prometheus' HTTP API (through curl inside the namespace) for the
 * series and their values. `promtool` checks the exposition and the shipped
 * alerting rules.
 *
 * Underlay 198.18.0.0/24; tunnels from the test pool 198.19.0.0/16. Time
 * bounds are generous hang guards only.
 */
import type { ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, waitFor, type Netns } from '../helpers/netns.ts';
import { PROMETHEUS, promtool } from '../helpers/promtool.ts';
import { makeServer, startVpnClient, type TestServer, type VpnClient } from '../helpers/server-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

const ROOT = resolve(import.meta.dirname, '../..');
// Inside the server namespace: its own loopback, so fixed ports meet nobody else.
const METRICS = '127.0.0.1:9474';
const PROM = '127.0.0.1:9090';

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

describe('server metrics scraped by a real Prometheus', { timeout: 300_000 }, () => {
  const lab = new Lab();
  let s: TestServer;
  let srv: Netns;
  let nsA: Netns;
  let nsB: Netns;
  let daemon: ChildProcess | undefined;
  let prom: ChildProcess | undefined;
  let log = '';
  const clients: VpnClient[] = [];
  /** network → pc2's tunnel address (the second host of the subnet; the server is the first, pc1 the next). */
  const pc2Addr: Record<string, string> = {};
  const dirs: { remove: () => Promise<void> }[] = [];

  /** One instant query; the samples, or [] while Prometheus is not answering yet. */
  const query = async (expr: string): Promise<Sample[]> => {
    const r = await srv.exec('curl', ['-sf', '--max-time', '5', '--data-urlencode', `query=${expr}`, `http://${PROM}/api/v1/query`], { allowFail: true });
    if (r.code !== 0) return [];
    const body = JSON.parse(r.stdout) as { status: string; data: { result: Sample[] } };
    return body.status === 'success' ? body.data.result : [];
  };
  const value = async (expr: string): Promise<number | undefined> => {
    const r = await query(expr);
    return r.length === 1 ? Number(r[0]!.value[1]) : undefined;
  };
  const byNetwork = async (expr: string): Promise<Record<string, number>> =>
    Object.fromEntries((await query(expr)).map((x) => [x.metric['network'] ?? '', Number(x.value[1])]));

  beforeAll(async () => {
    if (!PROMETHEUS) throw new Error('prometheus is not installed (apt-get install prometheus, or run ./build.sh as root)');
    const sw = await lab.ns('sw');
    srv = await lab.ns('srv');
    nsA = await lab.ns('a');
    nsB = await lab.ns('b');
    const ports: string[] = [];
    for (const [ns, ip] of [
      [srv, '198.18.0.1/24'],
      [nsA, '198.18.0.2/24'],
      [nsB, '198.18.0.3/24'],
    ] as const) {
      const [, port] = await lab.link(ns, sw, { aName: 'eth0', aAddr: ip });
      ports.push(port);
    }
    await lab.bridge(sw, 'br0', ports);
    await srv.up('lo');

    s = await makeServer({ label: 'metrics', address: '198.18.0.1', metricsListen: METRICS, extra: ['--vpn-listen', '198.18.0.1'] });
    for (const net of ['red', 'blue']) {
      const created = await s.json<{ subnet: string }>(['network', 'create', net, '--remote', '198.18.0.1']);
      pc2Addr[net] = created.subnet.replace(/\.0\/24$/, '.3');
      for (const n of ['pc1', 'pc2']) {
        await s.run(['node', 'add', n, '--network', net]);
        await s.run(['export', n, '--network', net, '--out', join(s.dir, `${n}-${net}.tar.gz`)]);
      }
      await s.run(['network', 'up', net]);
    }
    daemon = srv.spawn(process.execPath, [join(ROOT, 'src/main.ts'), 'server', 'run', '--state-dir', s.stateDir], { cwd: ROOT });
    daemon.stderr?.on('data', (d: Buffer) => (log += d.toString('utf8')));
    expect(await waitFor(() => log.includes('Prometheus metrics on'), 60_000), log).toBe(true);

    const promDir = await tmpDir('prom');
    dirs.push(promDir);
    const config = join(promDir.path, 'prometheus.yml');
    await writeFile(config, `global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: mvpn\n    static_configs:\n      - targets: ['${METRICS}']\n`);
    prom = srv.spawn(PROMETHEUS, [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(promDir.path, 'data')}`,
      `--web.listen-address=${PROM}`,
      '--log.level=warn',
    ]);
    prom.stderr?.on('data', (d: Buffer) => (log += `[prometheus] ${d.toString('utf8')}`));

    for (const [ns, node] of [
      [nsA, 'pc1'],
      [nsB, 'pc2'],
    ] as const) {
      for (const net of ['red', 'blue']) {
        const work = await tmpDir(`cl-${node}-${net}`);
        dirs.push(work);
        clients.push(await startVpnClient(ns, { bundlePath: join(s.dir, `${node}-${net}.tar.gz`), anchorPath: join(s.stateDir, 'trust-anchor'), node, workDir: work.path }));
      }
    }
  });

  afterAll(async () => {
    for (const c of clients) await c.stop().catch(() => undefined);
    for (const p of [prom, daemon]) {
      if (p && p.exitCode === null && p.signalCode === null) {
        const exited = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
      }
    }
    await lab.destroy();
    for (const d of dirs) await d.remove();
    await s?.remove();
  });

  it('Prometheus sees both networks up with 2 clients each, and the API, CRL and build series', async () => {
    const both = await waitFor(async () => {
      const c = await byNetwork('mvpn_network_clients');
      return c['red'] === 2 && c['blue'] === 2;
    }, 120_000, 1_000);
    expect(both, `${JSON.stringify(await byNetwork('mvpn_network_clients'))}\n${log.slice(-3000)}`).toBe(true);
    expect(await byNetwork('mvpn_network_up')).toEqual({ red: 1, blue: 1 });
    expect(await byNetwork('mvpn_network_state{state="connected"}')).toEqual({ red: 1, blue: 1 });
    expect(await byNetwork('mvpn_network_members')).toEqual({ red: 2, blue: 2 });
    // The CRL is valid for crl_days (7 by default): it expires between 3.5 and 7 days from now.
    for (const left of Object.values(await byNetwork('mvpn_network_crl_expiry_timestamp_seconds - time()'))) {
      expect(left).toBeGreaterThan(3.5 * 86_400 - 60);
      expect(left).toBeLessThanOrEqual(7 * 86_400);
    }
    expect(await value('up{job="mvpn"}')).toBe(1);
    expect((await query('mvpn_build_info'))[0]?.metric['version']).toMatch(/^\d+\.\d+\.\d+/);
    expect(await value('sum(mvpn_api_enrollments_total)')).toBe(0);
    // No node label unless metrics_per_client is on.
    expect(await query('{__name__=~"mvpn_.*", node!=""}')).toEqual([]);
  });

  it('the bytes of a network grow with a ping stream across it, and only that network\'s', async () => {
    // Let a few scrapes of the idle state land first.
    await new Promise((r) => setTimeout(r, 3_000));
    const before = await byNetwork('mvpn_network_received_bytes');
    expect(Object.keys(before).sort()).toEqual(['blue', 'red']);
    // 40 × 1200-byte pings from pc1 to pc2 over red: the server relays them both ways (L2), ~100 KB in and out.
    await nsA.exec('ping', ['-n', '-q', '-c', '40', '-i', '0.05', '-s', '1200', pc2Addr['red']!]);
    const STREAM = 2 * 40 * 1200;
    const grown = await waitFor(async () => ((await byNetwork('mvpn_network_received_bytes'))['red'] ?? 0) > before['red']! + STREAM, 60_000, 1_000);
    const after = await byNetwork('mvpn_network_received_bytes');
    expect(grown, JSON.stringify({ before, after })).toBe(true);
    // blue carried only keepalives meanwhile.
    expect(after['blue']! - before['blue']!).toBeLessThan(STREAM / 4);
    expect((await byNetwork('mvpn_network_sent_bytes'))['red']).toBeGreaterThan(STREAM);
  });

  it('revoking a node drops its network\'s client count; the other network keeps 2', async () => {
    await s.run(['node', 'revoke', 'pc2', '--network', 'red']);
    const dropped = await waitFor(async () => {
      const c = await byNetwork('mvpn_network_clients');
      return c['red'] === 1 && c['blue'] === 2;
    }, 120_000, 1_000);
    expect(dropped, `${JSON.stringify(await byNetwork('mvpn_network_clients'))}\n${log.slice(-3000)}`).toBe(true);
  });

  it('promtool accepts the exposition and the shipped alerting rules; the metrics listener serves nothing else', async () => {
    const text = await srv.exec('curl', ['-sf', '--max-time', '5', `http://${METRICS}/metrics`]);
    expect(text.stdout).toContain('# TYPE mvpn_api_requests_total counter');
    const metrics = await promtool(['check', 'metrics'], text.stdout);
    expect(metrics.out).toBe('');
    expect(metrics.code).toBe(0);
    const rules = await promtool(['check', 'rules', join(ROOT, 'packaging/mvpn-alerts.yml')]);
    expect(rules.out, rules.out).toContain('SUCCESS');
    expect(rules.code).toBe(0);
    expect(await srv.exec('curl', ['-sf', '--max-time', '5', `http://${METRICS}/other`], { allowFail: true })).toMatchObject({ code: 22 });
  });
});
