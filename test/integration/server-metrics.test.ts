/**
 * Metrics scraped by a real Prometheus: the server daemon (`mvpn-client
 * server run`) runs inside a server namespace with two networks up; two
 * real agent daemons (`mvpn-client run`), each in its own namespace, enroll
 * with one-time tokens into both networks and connect. Prometheus runs in
 * the server namespace with its own config and a data dir in a temp dir; it
 * scrapes the server's metrics on that namespace's loopback and the agents'
 * metrics listeners on their underlay addresses (198.18.0.2/3, served there
 * with metrics_allow_remote), and nothing else. It is stopped by pid with
 * the lab. The test asks Prometheus' HTTP API (through curl inside the
 * namespace) for the series and their values. `promtool` checks both
 * endpoints' exposition and the shipped alerting rules.
 *
 * Underlay 198.18.0.0/24; tunnels from the test pool 198.19.0.0/16. Time
 * bounds are generous hang guards only.
 */
import type { ChildProcess } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAIN, NODE_BIN, runCli, startAgentIn, type AgentProcess } from '../helpers/agent-fixtures.ts';
import { Lab, waitFor, type Netns } from '../helpers/netns.ts';
import { PROMETHEUS, promtool } from '../helpers/promtool.ts';
import { makeServer, type TestServer } from '../helpers/server-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const SERVER = '198.18.0.1';
// Inside the server namespace: its own loopback, so fixed ports meet nobody else.
const METRICS = '127.0.0.1:9474';
const PROM = '127.0.0.1:9090';
const NETS = ['red', 'blue'] as const;
/** node → its namespace's underlay address; its agent serves metrics on ADDRESS:9475. */
const NODES = { pc1: '198.18.0.2', pc2: '198.18.0.3' } as const;
type Node = keyof typeof NODES;
const agentTarget = (node: Node): string => `${NODES[node]}:9475`;

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

describe('metrics of a server and two agents scraped by a real Prometheus', { timeout: 400_000 }, () => {
  const lab = new Lab();
  let s: TestServer;
  let srv: Netns;
  const ns = {} as Record<Node, Netns>;
  const agents = {} as Record<Node, AgentProcess>;
  const runtimeDir = {} as Record<Node, string>;
  let daemon: ChildProcess | undefined;
  let prom: ChildProcess | undefined;
  let log = '';
  /** network → pc2's tunnel address there. */
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
  /** The samples keyed by the values of `labels` joined with "/" (e.g. "198.18.0.2:9475/red"). */
  const by = async (expr: string, ...labels: string[]): Promise<Record<string, number>> =>
    Object.fromEntries((await query(expr)).map((x) => [labels.map((l) => x.metric[l] ?? '').join('/'), Number(x.value[1])]));
  const byNetwork = (expr: string) => by(expr, 'network');
  const agentLogs = (): string => Object.entries(agents).map(([n, a]) => `--- agent ${n}\n${a.log().slice(-2000)}`).join('\n');

  beforeAll(async () => {
    if (!PROMETHEUS) throw new Error('prometheus is not installed (apt-get install prometheus, or run ./build.sh as root)');
    const sw = await lab.ns('sw');
    srv = await lab.ns('srv');
    ns.pc1 = await lab.ns('a');
    ns.pc2 = await lab.ns('b');
    const ports: string[] = [];
    for (const [n, ip] of [
      [srv, SERVER],
      [ns.pc1, NODES.pc1],
      [ns.pc2, NODES.pc2],
    ] as const) {
      const [, port] = await lab.link(n, sw, { aName: 'eth0', aAddr: `${ip}/24` });
      ports.push(port);
    }
    await lab.bridge(sw, 'br0', ports);
    for (const n of [srv, ns.pc1, ns.pc2]) await n.up('lo');

    s = await makeServer({ label: 'metrics', address: SERVER, listen: `${SERVER}:8443`, metricsListen: METRICS, extra: ['--vpn-listen', SERVER] });
    for (const net of NETS) {
      await s.run(['network', 'create', net, '--remote', SERVER]);
      for (const node of Object.keys(NODES)) await s.run(['node', 'add', node, '--network', net]);
      await s.run(['network', 'up', net]);
      const shown = await s.json<{ members: { node: string; address: string }[] }>(['network', 'show', net]);
      pc2Addr[net] = shown.members.find((m) => m.node === 'pc2')!.address.split('/')[0]!;
    }
    daemon = srv.spawn(NODE_BIN, [MAIN, 'server', 'run', '--state-dir', s.stateDir], { cwd: ROOT });
    daemon.stderr?.on('data', (d: Buffer) => (log += d.toString('utf8')));
    expect(await waitFor(() => log.includes('Prometheus metrics on'), 60_000), log).toBe(true);
    expect(await waitFor(async () => (await srv.exec('ss', ['-Htln', 'sport = :8443'], { allowFail: true })).stdout.includes('8443'), 60_000, 200), log).toBe(true);

    // Two real agents, each enrolling with its own one-time token, metrics on their underlay address.
    for (const node of Object.keys(NODES) as Node[]) {
      const dir = await tmpDir(`agent-${node}`);
      dirs.push(dir);
      await chmod(dir.path, 0o755);
      const { token } = await s.json<{ token: string }>(['node', 'token', node]);
      await writeFile(join(dir.path, 'token'), token + '\n', { mode: 0o600 });
      runtimeDir[node] = join(dir.path, 'run');
      const config = {
        node: { id: node },
        sources: [{ type: 'https', url: `https://${SERVER}:8443/` }],
        anchor: join(s.stateDir, 'trust-anchor'),
        server_ca: join(s.stateDir, 'api', 'ca.crt'),
        enroll: { token_file: 'token' },
        state_dir: 'state',
        runtime_dir: 'run',
        reconcile_interval_s: 3600,
        metrics_listen: agentTarget(node),
        metrics_allow_remote: true,
        fetch: { request_timeout_s: 5, deadline_s: 30, retries: 1 },
      };
      await writeFile(join(dir.path, 'config.json'), JSON.stringify(config, null, 2));
      agents[node] = startAgentIn(lab, ns[node], join(dir.path, 'config.json'));
    }

    const promDir = await tmpDir('prom');
    dirs.push(promDir);
    const promConfig = join(promDir.path, 'prometheus.yml');
    await writeFile(
      promConfig,
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        'scrape_configs:',
        '  - job_name: mvpn',
        '    static_configs:',
        `      - targets: ['${METRICS}']`,
        '  - job_name: mvpn-agent',
        '    static_configs:',
        `      - targets: ['${agentTarget('pc1')}', '${agentTarget('pc2')}']`,
        '',
      ].join('\n'),
    );
    prom = srv.spawn(PROMETHEUS, [`--config.file=${promConfig}`, `--storage.tsdb.path=${join(promDir.path, 'data')}`, `--web.listen-address=${PROM}`, '--log.level=warn']);
    prom.stderr?.on('data', (d: Buffer) => (log += `[prometheus] ${d.toString('utf8')}`));
  });

  afterAll(async () => {
    for (const a of Object.values(agents)) await a.stop().catch(() => undefined);
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

  it('Prometheus sees both networks up with 2 clients each, and the API, issuance, CRL and build series', async () => {
    const both = await waitFor(async () => {
      const c = await byNetwork('mvpn_network_clients');
      return c['red'] === 2 && c['blue'] === 2;
    }, 180_000, 1_000);
    expect(both, `${JSON.stringify(await byNetwork('mvpn_network_clients'))}\n${log.slice(-3000)}\n${agentLogs()}`).toBe(true);
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
    // Each agent enrolled once: an API identity plus a certificate for each of its two networks.
    expect(await by('mvpn_api_enrollments_total', 'result')).toEqual({ ok: 2, refused: 0 });
    expect(await by('mvpn_certificates_issued_total', 'kind')).toEqual({ enroll: 6, renew: 0, export: 0, membership: 0, ca_roll: 0, link: 0 });
    expect(await value('sum(mvpn_api_requests_total{route="enroll",code="200"})')).toBe(2);
    // No node label on the server unless metrics_per_client is on (an agent's build_info names its own node).
    expect(await query('{job="mvpn", __name__=~"mvpn_.*", node!=""}')).toEqual([]);
  });

  it("Prometheus sees each agent connected to both networks, with no restarts and certificates valid for months", async () => {
    const connected = await waitFor(async () => Object.values(await by('mvpn_agent_network_state{state="connected"}', 'instance', 'network')).filter((v) => v === 1).length === 4, 120_000, 1_000);
    expect(connected, `${JSON.stringify(await by('mvpn_agent_network_state == 1', 'instance', 'network', 'state'))}\n${agentLogs()}`).toBe(true);
    const every = (v: number): Record<string, number> =>
      Object.fromEntries((Object.keys(NODES) as Node[]).flatMap((n) => NETS.map((net) => [`${agentTarget(n)}/${net}`, v])));
    expect(await by('up{job="mvpn-agent"}', 'instance')).toEqual({ [agentTarget('pc1')]: 1, [agentTarget('pc2')]: 1 });
    expect(await by('mvpn_agent_network_up', 'instance', 'network')).toEqual(every(1));
    expect(await by('mvpn_agent_network_openvpn_restarts', 'instance', 'network')).toEqual(every(0));
    expect((await query('mvpn_agent_network_error')).length).toBe(0);
    expect((await query('mvpn_agent_reconcile_error')).length).toBe(0);
    expect(await by('mvpn_agent_ready', 'instance')).toEqual({ [agentTarget('pc1')]: 1, [agentTarget('pc2')]: 1 });
    expect((await query('mvpn_agent_build_info'))[0]?.metric['node']).toMatch(/^pc[12]$/);
    // cert_days is 825 by default: the node-keyed network certificates and the API identity expire in about that long.
    const days = async (expr: string) => Object.values(await by(`(${expr} - time()) / 86400`, 'instance', 'network'));
    const certDays = await days('mvpn_agent_network_certificate_expiry_timestamp_seconds');
    expect(certDays).toHaveLength(4);
    for (const d of certDays) expect(d).toBeGreaterThan(800);
    const identityDays = await days('mvpn_agent_identity_certificate_expiry_timestamp_seconds');
    expect(identityDays).toHaveLength(2);
    for (const d of identityDays) expect(d).toBeGreaterThan(800);
    // Bundles expire (and are replaced) much sooner than certificates, but are valid now.
    for (const d of await days('mvpn_agent_network_bundle_expiry_timestamp_seconds')) expect(d).toBeGreaterThan(0);
    // The last successful reconcile was the start-up one, a few minutes ago at most.
    const since = Object.values(await by('time() - mvpn_agent_reconcile_success_timestamp_seconds', 'instance'));
    expect(since).toHaveLength(2);
    for (const t of since) expect(t).toBeLessThan(600);
  });

  it("the bytes of a network grow with a ping stream across it, on the server and on both agents, and only that network's", async () => {
    // Let a few scrapes of the idle state land first.
    await new Promise((r) => setTimeout(r, 3_000));
    const before = await byNetwork('mvpn_network_received_bytes');
    expect(Object.keys(before).sort()).toEqual(['blue', 'red']);
    const agentBefore = await by('mvpn_agent_network_received_bytes', 'instance', 'network');
    // 40 × 1200-byte pings from pc1 to pc2 over red: the server relays them both ways (L2), ~100 KB in and out.
    await ns.pc1.exec('ping', ['-n', '-q', '-c', '40', '-i', '0.05', '-s', '1200', pc2Addr['red']!]);
    const STREAM = 2 * 40 * 1200;
    const grown = await waitFor(async () => ((await byNetwork('mvpn_network_received_bytes'))['red'] ?? 0) > before['red']! + STREAM, 60_000, 1_000);
    const after = await byNetwork('mvpn_network_received_bytes');
    expect(grown, JSON.stringify({ before, after })).toBe(true);
    // blue carried only keepalives meanwhile.
    expect(after['blue']! - before['blue']!).toBeLessThan(STREAM / 4);
    expect((await byNetwork('mvpn_network_sent_bytes'))['red']).toBeGreaterThan(STREAM);
    // Each agent received the other's half of the stream (echo requests at pc2, replies at pc1) on red.
    const key = (n: Node, net: string) => `${agentTarget(n)}/${net}`;
    const agentGrown = await waitFor(async () => {
      const now = await by('mvpn_agent_network_received_bytes', 'instance', 'network');
      return (['pc1', 'pc2'] as const).every((n) => now[key(n, 'red')]! > agentBefore[key(n, 'red')]! + STREAM / 2);
    }, 60_000, 1_000);
    const agentAfter = await by('mvpn_agent_network_received_bytes', 'instance', 'network');
    expect(agentGrown, JSON.stringify({ agentBefore, agentAfter })).toBe(true);
    for (const n of ['pc1', 'pc2'] as const) expect(agentAfter[key(n, 'blue')]! - agentBefore[key(n, 'blue')]!).toBeLessThan(STREAM / 4);
  });

  it("revoking a node drops its network's client count and its agent's state there; the other network keeps 2", async () => {
    const crls = (await value('mvpn_crl_publications_total')) ?? NaN;
    await s.run(['node', 'revoke', 'pc2', '--network', 'red']);
    const dropped = await waitFor(async () => {
      const c = await byNetwork('mvpn_network_clients');
      return c['red'] === 1 && c['blue'] === 2;
    }, 120_000, 1_000);
    expect(dropped, `${JSON.stringify(await byNetwork('mvpn_network_clients'))}\n${log.slice(-3000)}`).toBe(true);
    // The revocation published a new CRL.
    expect(await waitFor(async () => ((await value('mvpn_crl_publications_total')) ?? 0) > crls, 30_000, 1_000)).toBe(true);
    // pc2's openvpn on red lost its session and cannot get it back with a revoked certificate.
    const down = await waitFor(async () => (await by('mvpn_agent_network_up', 'instance', 'network'))[`${agentTarget('pc2')}/red`] === 0, 180_000, 1_000);
    expect(down, `${JSON.stringify(await by('mvpn_agent_network_state == 1', 'instance', 'network', 'state'))}\n${agentLogs()}`).toBe(true);
    expect((await by('mvpn_agent_network_up', 'instance', 'network'))[`${agentTarget('pc2')}/blue`]).toBe(1);
  });

  it('promtool accepts both endpoints, status --prometheus and the shipped alerting rules; the metrics listeners serve nothing else', async () => {
    const server = await srv.exec('curl', ['-sf', '--max-time', '5', `http://${METRICS}/metrics`]);
    expect(server.stdout).toContain('# TYPE mvpn_api_requests_total counter');
    expect(server.stdout).toContain('# TYPE mvpn_certificates_issued_total counter');
    const agent = await srv.exec('curl', ['-sf', '--max-time', '5', `http://${agentTarget('pc1')}/metrics`]);
    expect(agent.stdout).toContain('mvpn_agent_network_certificate_expiry_timestamp_seconds{network="red"}');
    // The textfile-collector path: the same exposition from the status socket, printed once.
    const printed = await runCli(['status', '--prometheus', '--runtime-dir', runtimeDir.pc1], { ns: ns.pc1.name });
    expect(printed.code, printed.stderr).toBe(0);
    const names = (text: string) => [...new Set(text.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]))].sort();
    expect(names(printed.stdout)).toEqual(names(agent.stdout));
    for (const [what, text] of [
      ['server', server.stdout],
      ['agent listener', agent.stdout],
      ['status --prometheus', printed.stdout],
    ] as const) {
      const checked = await promtool(['check', 'metrics'], text);
      expect(checked.out, what).toBe('');
      expect(checked.code, what).toBe(0);
    }
    const rules = await promtool(['check', 'rules', join(ROOT, 'packaging/mvpn-alerts.yml')]);
    expect(rules.out, rules.out).toContain('SUCCESS');
    expect(rules.code).toBe(0);
    for (const target of [METRICS, agentTarget('pc1')]) {
      expect(await srv.exec('curl', ['-sf', '--max-time', '5', `http://${target}/other`], { allowFail: true })).toMatchObject({ code: 22 });
    }
  });
});
