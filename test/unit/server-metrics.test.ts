/**
 * The server's metrics, short of a real Prometheus (server-metrics.test.ts
 * has that): config rules for metrics_listen, and what ServerMetrics makes of
 * a status snapshot and API events — including that per-node series appear
 * only when asked for.
 */
import { describe, expect, it } from 'vitest';
import { parseAgentConfig } from '../../src/agent/config.ts';
import { checkConfig, defaultConfig, metricsListen, DEFAULT_METRICS_LISTEN } from '../../src/server/config.ts';
import { ServerMetrics } from '../../src/server/metrics.ts';
import type { StatusSnapshot } from '../../src/server/status.ts';

const ANCHOR = 'ed25519:' + Buffer.alloc(32, 7).toString('base64');
const base = { ...defaultConfig('/tmp/state'), listen: '0.0.0.0:8443' };

describe('metrics_listen', () => {
  it('defaults to loopback 9474 when absent, and null turns metrics off', () => {
    expect(metricsListen(checkConfig(base, 'config.json'))).toBe(DEFAULT_METRICS_LISTEN);
    expect(DEFAULT_METRICS_LISTEN).toBe('127.0.0.1:9474');
    expect(metricsListen(checkConfig({ ...base, metrics_listen: null }, 'config.json'))).toBeNull();
    expect(metricsListen(checkConfig({ ...base, metrics_listen: '198.18.0.1:9100', metrics_allow_remote: true }, 'config.json'))).toBe('198.18.0.1:9100');
  });

  it('a non-loopback metrics_listen needs metrics_allow_remote, refused with the agent\'s words', () => {
    for (const listen of ['198.18.0.1:9100', '0.0.0.0:9474', '[::]:9474']) {
      const server = () => checkConfig({ ...base, metrics_listen: listen }, 'config.json');
      expect(server).toThrow(expect.objectContaining({ code: 'MVPN_CONFIG_INVALID', message: `config.json: metrics_listen: ${listen} is not a loopback address; the metrics would be readable by anyone who reaches it` }) as Error);
      const agent = () => parseAgentConfig({ node: { id: 'pc1' }, sources: [{ type: 'https', url: 'https://metavpn.example.test:8443' }], anchor: ANCHOR, metrics_listen: listen }, 'config.json');
      expect(agent).toThrow(expect.objectContaining({ code: 'MVPN_CONFIG_INVALID', message: `config config.json: metrics_listen: ${listen} is not a loopback address; the metrics would be readable by anyone who reaches it` }) as Error);
    }
    expect(metricsListen(checkConfig({ ...base, metrics_listen: '[::1]:9474' }, 'config.json'))).toBe('[::1]:9474');
  });

  it.each([
    ['the API listener itself', '0.0.0.0:8443'],
    ['the API port on an address the wildcard API listener covers', '127.0.0.1:8443'],
    ['not ADDR:PORT', 'localhost'],
    ['a port out of range', '127.0.0.1:70000'],
  ])('refuses %s with MVPN_CONFIG_INVALID', (_what, listen) => {
    // metrics_allow_remote: the collision itself is what is refused, not the address.
    expect(() => checkConfig({ ...base, metrics_listen: listen, metrics_allow_remote: true }, 'config.json')).toThrow(expect.objectContaining({ code: 'MVPN_CONFIG_INVALID' }) as Error);
  });
});

const snapshot: StatusSnapshot = {
  pid: 1,
  started_at: '2030-01-01T00:00:00.000Z',
  updated_at: '2030-01-01T00:01:00.000Z',
  listen: '127.0.0.1:8443',
  networks: {
    red: {
      state: 'connected',
      since: '2030-01-01T00:00:00.000Z',
      restarts: 3,
      clients: [
        { cn: 'pc1', real_address: '198.18.0.2:1194', virtual_address: '', bytes_in: 100, bytes_out: 1000, connected_since: '2030-01-01T00:00:00.000Z' },
        { cn: 'pc2', real_address: '198.18.0.3:1194', virtual_address: '', bytes_in: 20, bytes_out: 200, connected_since: '2030-01-01T00:00:00.000Z' },
      ],
    },
    blue: { state: 'backoff', since: '2030-01-01T00:00:00.000Z', restarts: 0, clients: [] },
  },
  links: {},
};
const facts = [{ id: 'red', crlNextUpdate: Date.parse('2030-01-08T00:00:00.000Z'), crlNumber: 4, bundleVersion: 12, members: 2 }];

const lines = async (m: ServerMetrics) => (await m.registry.metrics()).split('\n');

describe('ServerMetrics', () => {
  it('turns the snapshot and the store facts into per-network series', async () => {
    const l = await lines(new ServerMetrics({ snapshot: () => snapshot, networks: () => facts, counters: () => ({ 'issued.enroll': 3, 'issued.link': 3, 'crl.published': 2 }) }));
    for (const want of [
      'mvpn_network_up{network="red"} 1',
      'mvpn_network_up{network="blue"} 0',
      'mvpn_network_state{network="blue",state="backoff"} 1',
      'mvpn_network_clients{network="red"} 2',
      'mvpn_network_received_bytes{network="red"} 120',
      'mvpn_network_sent_bytes{network="red"} 1200',
      'mvpn_network_openvpn_restarts{network="red"} 3',
      `mvpn_network_crl_expiry_timestamp_seconds{network="red"} ${Date.parse('2030-01-08T00:00:00.000Z') / 1000}`,
      'mvpn_network_bundle_version{network="red"} 12',
      `mvpn_server_start_time_seconds ${Date.parse('2030-01-01T00:00:00.000Z') / 1000}`,
      'mvpn_api_enrollments_total{result="refused"} 0',
      'mvpn_certificates_issued_total{kind="enroll"} 3',
      'mvpn_certificates_issued_total{kind="link"} 3',
      // Every kind from the first scrape, so rate() and alerts work before the first issuance.
      'mvpn_certificates_issued_total{kind="export"} 0',
      'mvpn_crl_publications_total 2',
    ]) expect(l).toContain(want);
    expect(l.some((x) => x.includes('node="'))).toBe(false);
  });

  it('adds per-node series only with metrics_per_client', async () => {
    const l = await lines(new ServerMetrics({ snapshot: () => snapshot, networks: () => facts, counters: () => ({}) }, { perClient: true }));
    expect(l).toContain('mvpn_client_received_bytes{network="red",node="pc2"} 20');
    expect(l).toContain('mvpn_client_sent_bytes{network="red",node="pc1"} 1000');
  });

  it('counts API requests by route and code, enrollments by result, and TLS failures', async () => {
    const m = new ServerMetrics({ snapshot: () => snapshot, networks: () => [], counters: () => ({}) });
    m.request('enroll', 200, 0.02);
    m.enrollment(true);
    m.request('enroll', 401, 0.01);
    m.enrollment(false);
    m.request('other', 404, 0.001);
    m.tlsFailure();
    const l = await lines(m);
    for (const want of [
      'mvpn_api_requests_total{route="enroll",code="200"} 1',
      'mvpn_api_requests_total{route="enroll",code="401"} 1',
      'mvpn_api_requests_total{route="other",code="404"} 1',
      'mvpn_api_enrollments_total{result="ok"} 1',
      'mvpn_api_enrollments_total{result="refused"} 1',
      'mvpn_api_tls_handshake_failures_total 1',
      'mvpn_api_request_duration_seconds_count{route="enroll"} 2',
    ]) expect(l).toContain(want);
  });
});
