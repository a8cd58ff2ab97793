/**
 * The local control API on real unix sockets, driven by the real CLI as a
 * child process — as root and as `nobody` — against a daemon stand-in that
 * implements only the handlers (the daemon itself is tested in agent-e2e).
 */
import { chmod, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startControlApi, type ControlApi, type ControlHandlers, type NetworkVerb } from '../../src/agent/control-api.ts';
import { daemonRequest } from '../../src/agent/control-client.ts';
import type { AgentStatus, NetworkStatus } from '../../src/agent/status.ts';
import { DaemonError, ExitCode } from '../../src/errors.ts';
import { MAIN, NODE_BIN, runCli } from '../helpers/agent-fixtures.ts';
import { sh } from '../helpers/netns.ts';
import { promtool } from '../helpers/promtool.ts';
import { tmpDir } from '../helpers/tmp.ts';


function net(id: string, state: NetworkStatus['state'], over: Partial<NetworkStatus> = {}): NetworkStatus {
  return {
    id,
    name: `net ${id}`,
    state,
    admin_down: false,
    admin_down_since: null,
    pid: null,
    tunnel_address: state === 'connected' ? '198.51.100.10/24' : null,
    server: state === 'connected' ? '198.18.0.1:1194' : null,
    uptime_s: state === 'connected' ? 3725 : null,
    connected_since: state === 'connected' ? '2030-01-01T00:00:00.000Z' : null,
    bytes_in: 123_456,
    bytes_out: 789,
    restarts: 0,
    last_error: null,
    bundle_version: 1,
    bundle_expires_at: '2030-02-01T00:00:00.000Z',
    cert_expires_at: '2032-04-05T00:00:00.000Z',
    ...over,
  };
}

class FakeDaemon implements ControlHandlers {
  networks: NetworkStatus[] = [net('alpha', 'connected'), net('beta', 'connected')];
  renewal: AgentStatus['renewal'] = null;
  lastOkAt: string | null = null;
  identityExpiresAt: string | null = null;
  calls: string[] = [];
  status(): AgentStatus {
    return {
      version: 'test',
      node: 'pc1',
      started_at: '2030-01-01T00:00:00.000Z',
      ready: true,
      membership: null,
      reconcile: { last_at: null, last_ok_at: this.lastOkAt, last_error: null },
      identity_expires_at: this.identityExpiresAt,
      networks: this.networks,
      renewal: this.renewal,
    };
  }
  async network(id: string, verb: NetworkVerb): Promise<void> {
    if (!this.networks.some((n) => n.id === id)) throw new DaemonError('MVPN_NETWORK_UNKNOWN', `this node is not in network ${id}`);
    this.calls.push(`${verb} ${id}`);
  }
  reloadError: { code: string; message: string } | undefined;
  async reload(): Promise<{ ok: boolean; error?: { code: string; message: string } }> {
    this.calls.push('reload');
    return this.reloadError ? { ok: false, error: this.reloadError } : { ok: true };
  }
}

const cli = (args: string[], opts: { asNobody?: boolean } = {}) => runCli(args, opts);

describe('agent control API over unix sockets', () => {
  let dir: { path: string; remove: () => Promise<void> };
  let api: ControlApi | undefined;
  let daemon: FakeDaemon;

  beforeEach(async () => {
    dir = await tmpDir('ctl');
    await chmod(dir.path, 0o755); // like /run/mvpn-client (RuntimeDirectoryMode=0755)
    daemon = new FakeDaemon();
    api = await startControlApi(dir.path, daemon);
  });
  afterEach(async () => {
    await api?.close();
    await dir.remove();
  });

  it('creates status.sock 0666 and control.sock 0600', async () => {
    expect((await stat(join(dir.path, 'status.sock'))).mode & 0o777).toBe(0o666);
    expect((await stat(join(dir.path, 'control.sock'))).mode & 0o777).toBe(0o600);
  });

  it('status prints an aligned table and exits 0 when every network is connected', async () => {
    const r = await cli(['status', '--runtime-dir', dir.path]);
    expect(r.code).toBe(ExitCode.ok);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NETWORK\s+STATE\s+ADDRESS\s+SERVER\s+UPTIME\s+RX\s+TX\s+MTU\s+LAST-ERROR$/);
    expect(lines[1]).toMatch(/^alpha\s+connected\s+198\.51\.100\.10\/24\s+198\.18\.0\.1:1194\s+1h02m\s+121KiB\s+789B\s+-\s+-$/);
    expect(lines).toHaveLength(3);
    // columns line up: STATE starts at the same offset in every line
    const col = lines[0]!.indexOf('STATE');
    for (const l of lines.slice(1)) expect(l.slice(col)).toMatch(/^connected/);
    expect(r.stderr).toContain('2/2 networks connected');
  });

  it('status exits 1 when a network is not connected and shows its last error', async () => {
    daemon.networks = [
      net('alpha', 'connected'),
      net('beta', 'backoff', { last_error: { code: 'MVPN_BUNDLE_HASH_MISMATCH', message: 'bundle sha256 differs' } }),
    ];
    const r = await cli(['status', '--runtime-dir', dir.path]);
    expect(r.code).toBe(ExitCode.notAllConnected);
    expect(r.stdout).toMatch(/beta\s+backoff\s+-\s+-\s+-\s+121KiB\s+789B\s+-\s+MVPN_BUNDLE_HASH_MISMATCH: bundle sha256 differs/);
  });

  it('status shows a failed renewal under the table; the exit code still follows the networks', async () => {
    daemon.renewal = {
      state: 'failed',
      due_at: null,
      last_renewed_at: null,
      next_retry_at: '2030-01-01T00:05:00.000Z',
      last_error: { code: 'MVPN_RENEW_FAILED', message: 'cannot reach https://198.18.0.1:8443/v1/renew' },
    };
    const r = await cli(['status', '--runtime-dir', dir.path]);
    expect(r.code).toBe(ExitCode.ok);
    expect(r.stdout.trimEnd().split('\n').at(-1)).toBe(
      'renewal failed (retry 2030-01-01T00:05:00.000Z): MVPN_RENEW_FAILED: cannot reach https://198.18.0.1:8443/v1/renew',
    );
    // text a hostile server chose is escaped
    daemon.renewal = { ...daemon.renewal, last_error: { code: 'MVPN_RENEW_FAILED', message: 'refused: \u001b[2Jgone\u202e' } };
    expect((await cli(['status', '--runtime-dir', dir.path])).stdout).toContain('refused: \\x1b[2Jgone\\u202e');
    daemon.renewal = { ...daemon.renewal, state: 'idle', last_error: null, next_retry_at: null };
    expect((await cli(['status', '--runtime-dir', dir.path])).stdout).not.toContain('renewal');
  });

  it('status --json prints the status object as is', async () => {
    const r = await cli(['status', '--json', '--runtime-dir', dir.path]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(daemon.status());
  });

  // Text a hostile server chose reaches status through error messages; none of it may drive the terminal.
  const HOSTILE = 'bad\u009b2J\u001b[31m\u0085x\u2028y\u2029z\u202eevil\u2066\u2069\u200b\u007f\u0000';
  // eslint-disable-next-line no-control-regex -- finding control characters is the point
  const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200b]/u;

  it('status escapes every non-printable character a server could put into an error (table and --json)', async () => {
    daemon.networks = [net('alpha', 'failed', { name: `n${HOSTILE}`, last_error: { code: 'MVPN_SIGNATURE_INVALID', message: HOSTILE } })];
    const table = await cli(['status', '--runtime-dir', dir.path]);
    expect(table.stdout).not.toMatch(RAW_CONTROL);
    expect(table.stdout).toContain(String.raw`bad\x9b2J\x1b[31m\x85x\u2028y\u2029z\u202eevil\u2066\u2069\u200b\x7f\x00`);
    const json = await cli(['status', '--json', '--runtime-dir', dir.path]);
    expect(json.stdout).not.toMatch(RAW_CONTROL);
    expect(JSON.parse(json.stdout)).toEqual(daemon.status()); // the same value, only written with escapes
  });

  it('reload prints a refused document\'s code and an escaped message', async () => {
    daemon.reloadError = { code: 'MVPN_MEMBERSHIP_ROLLBACK', message: HOSTILE };
    const r = await cli(['reload', '--runtime-dir', dir.path]);
    expect(r.code).toBe(ExitCode.failure);
    expect(r.stderr).toContain('[MVPN_MEMBERSHIP_ROLLBACK]');
    expect(r.stderr).not.toMatch(RAW_CONTROL);
  });

  it('status --prometheus prints the metrics once, for any user, and promtool accepts them', async () => {
    daemon.networks = [
      net('alpha', 'connected', { restarts: 2 }),
      net('beta', 'backoff', { last_error: { code: 'MVPN_BUNDLE_HASH_MISMATCH', message: 'bundle sha256 differs' }, bundle_version: 7, cert_expires_at: null }),
    ];
    daemon.lastOkAt = '2030-01-01T00:05:00.000Z';
    daemon.identityExpiresAt = '2032-04-06T00:00:00.000Z';
    daemon.renewal = { state: 'failed', due_at: null, last_renewed_at: null, next_retry_at: '2030-01-01T00:06:00.000Z', last_error: { code: 'MVPN_FETCH_TIMEOUT', message: 'no answer' } };
    const r = await cli(['status', '--prometheus', '--runtime-dir', dir.path], { asNobody: true });
    expect(r.code).toBe(0); // the networks' state is in the metrics, not the exit code
    const lines = r.stdout.split('\n');
    for (const want of [
      'mvpn_agent_network_up{network="alpha"} 1',
      'mvpn_agent_network_up{network="beta"} 0',
      'mvpn_agent_network_state{network="beta",state="backoff"} 1',
      'mvpn_agent_network_state{network="beta",state="connected"} 0',
      'mvpn_agent_network_received_bytes{network="alpha"} 123456',
      'mvpn_agent_network_sent_bytes{network="alpha"} 789',
      'mvpn_agent_network_openvpn_restarts{network="alpha"} 2',
      'mvpn_agent_network_error{network="beta",code="MVPN_BUNDLE_HASH_MISMATCH"} 1',
      'mvpn_agent_network_bundle_version{network="beta"} 7',
      `mvpn_agent_network_bundle_expiry_timestamp_seconds{network="alpha"} ${Date.parse('2030-02-01T00:00:00.000Z') / 1000}`,
      'mvpn_agent_ready 1',
      `mvpn_agent_network_certificate_expiry_timestamp_seconds{network="alpha"} ${Date.parse('2032-04-05T00:00:00.000Z') / 1000}`,
      `mvpn_agent_identity_certificate_expiry_timestamp_seconds ${Date.parse('2032-04-06T00:00:00.000Z') / 1000}`,
      `mvpn_agent_reconcile_success_timestamp_seconds ${Date.parse('2030-01-01T00:05:00.000Z') / 1000}`,
      'mvpn_agent_renewal_error{code="MVPN_FETCH_TIMEOUT"} 1',
    ]) expect(lines).toContain(want);
    // beta has no installed certificate: no series rather than a made-up time.
    expect(r.stdout).not.toContain('mvpn_agent_network_certificate_expiry_timestamp_seconds{network="beta"}');
    expect(r.stdout).not.toContain('mvpn_agent_network_error{network="alpha"');
    expect(r.stdout).not.toContain('mvpn_agent_reconcile_error{'); // no failure, no series
    const check = await promtool(['check', 'metrics'], r.stdout);
    expect(check.out).toBe('');
    expect(check.code).toBe(0);
  });

  it('GET /v1/metrics answers on the status socket in the text format; other methods are refused', async () => {
    const text = await daemonRequest({ runtimeDir: dir.path, socket: 'status', method: 'GET', path: '/v1/metrics', action: 'metrics', text: true });
    expect(text).toContain('# TYPE mvpn_agent_network_up gauge');
    await expect(daemonRequest({ runtimeDir: dir.path, socket: 'status', method: 'POST', path: '/v1/metrics', action: 'metrics' })).rejects.toMatchObject({
      code: 'MVPN_API_BAD_REQUEST',
    });
  });

  // Start-up cost: prom-client is resolved only by the metrics paths. A resolve hook reports every load of it.
  it('prom-client is not loaded by status, status --json, status --prometheus (the daemon renders), nor by importing either daemon', async () => {
    const traced = (args: string[]) => sh(NODE_BIN, ['--import', './test/helpers/trace-prom-client.mjs', ...args], { allowFail: true, timeoutMs: 60_000 });
    const MARK = 'TRACE-LOADED prom-client';
    for (const extra of [[], ['--json'], ['--prometheus']]) {
      const r = await traced([MAIN, 'status', ...extra, '--runtime-dir', dir.path]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).not.toContain(MARK);
    }
    const daemons = await traced(['-e', "await import('./src/agent/daemon.ts'); await import('./src/server/daemon.ts'); await import('./src/cli/main.ts')"]);
    expect(daemons.code, daemons.stderr).toBe(0);
    expect(daemons.stderr).not.toContain(MARK);
    // The hook does see it on the path that needs it.
    const metrics = await traced(['-e', "await import('./src/agent/metrics.ts')"]);
    expect(metrics.stderr).toContain(MARK);
  });

  it('status exits 3 with a hint when no daemon is running', async () => {
    await api!.close();
    api = undefined;
    const r = await cli(['status', '--runtime-dir', dir.path]);
    expect(r.code).toBe(ExitCode.daemonUnreachable);
    expect(r.stderr).toContain('MVPN_DAEMON_UNREACHABLE');
    expect(r.stderr).toContain('systemctl status mvpn-client');
  });

  it('down, up, restart and reload reach the daemon as root', async () => {
    for (const verb of ['down', 'up', 'restart']) expect((await cli([verb, 'alpha', '--runtime-dir', dir.path])).code).toBe(0);
    expect((await cli(['reload', '--runtime-dir', dir.path])).code).toBe(0);
    expect(daemon.calls).toEqual(['down alpha', 'up alpha', 'restart alpha', 'reload']);
  });

  it('an unknown network is refused with MVPN_NETWORK_UNKNOWN', async () => {
    const r = await cli(['down', 'gamma', '--runtime-dir', dir.path]);
    expect(r.code).toBe(ExitCode.failure);
    expect(r.stderr).toContain('MVPN_NETWORK_UNKNOWN');
    expect(daemon.calls).toEqual([]);
  });

  it('a non-root user can run status but is refused for down', async () => {
    const s = await cli(['status', '--runtime-dir', dir.path], { asNobody: true });
    expect(s.stderr).toBe('2/2 networks connected\n');
    expect(s.code).toBe(0);
    const d = await cli(['down', 'alpha', '--runtime-dir', dir.path], { asNobody: true });
    expect(d.code).toBe(ExitCode.permissionDenied);
    expect(d.stderr).toContain('permission denied: down alpha needs root (try sudo)');
    expect(daemon.calls).toEqual([]);
  });

  it('the status socket refuses control requests', async () => {
    const raw = await import('undici').then(
      ({ Client }) => new Client('http://localhost', { connect: { socketPath: join(dir.path, 'status.sock') } }),
    );
    try {
      const res = await raw.request({ method: 'POST', path: '/v1/networks/alpha/down' });
      expect(res.statusCode).toBe(403);
      expect(await res.body.json()).toMatchObject({ error: { code: 'MVPN_PERMISSION_DENIED' } });
    } finally {
      await raw.close();
    }
    expect(daemon.calls).toEqual([]);
  });

  it('a second daemon on the same runtime dir refuses to start; a stale socket is replaced', async () => {
    await expect(startControlApi(dir.path, daemon)).rejects.toMatchObject({ code: 'MVPN_DAEMON_RUNNING' });
    // the first one still answers
    expect(await daemonRequest({ runtimeDir: dir.path, socket: 'status', method: 'GET', path: '/v1/status', action: 'status' })).toMatchObject({
      node: 'pc1',
    });
  });
});
