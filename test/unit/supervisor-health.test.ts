import { describe, expect, it } from 'vitest';
import { parseOpenvpnVersion } from '../../src/openvpn/binary.ts';
import {
  assessHealth,
  freshHealthMemory,
  hasAddress,
  parseIpAddrJson,
  probeFullFrames,
  readDevice,
  readDeviceInProcess,
  type HealthMemory,
  type HealthObservation,
  type HealthPolicy,
  type HealthTarget,
} from '../../src/openvpn/health.ts';
import { isOpenvpnFor, isOpenvpnInDir, runtimePaths } from '../../src/openvpn/process.ts';
import { execCommand } from '../../src/util/exec.ts';

const policy: HealthPolicy = { intervalMs: 1_000, mgmtTimeoutMs: 1_000, hungLimit: 2, addressMissingLimit: 3, stallLimit: 0 };
const client: HealthTarget = { role: 'client', dev: 'mv-a', expectedAddress: '198.51.100.2/24' };
const server: HealthTarget = { role: 'server', dev: 'ms-a' };
const present = (...addresses: string[]): HealthObservation['device'] => ({ device: 'present', addresses });
const ok = (over: Partial<HealthObservation> = {}): HealthObservation => ({
  mgmt: 'ok',
  openvpnState: 'CONNECTED',
  device: present('198.51.100.2/24', 'fe80::1/64'),
  bytesIn: 10,
  bytesOut: 20,
  ...over,
});
const mem = (over: Partial<HealthMemory> = {}): HealthMemory => ({ ...freshHealthMemory, ...over });

describe('assessHealth', () => {
  const cases: { name: string; obs: HealthObservation; memory?: HealthMemory; target?: HealthTarget; policy?: HealthPolicy; verdict: string; code?: string }[] = [
    { name: 'connected with its address', obs: ok(), verdict: 'ok' },
    { name: 'address without prefix expected', obs: ok(), target: { ...client, expectedAddress: '198.51.100.2' }, verdict: 'ok' },
    { name: 'wrong prefix length counts as missing', obs: ok({ device: present('198.51.100.2/25') }), verdict: 'degraded' },
    { name: 'openvpn still connecting', obs: ok({ openvpnState: 'WAIT', device: present() }), verdict: 'pending' },
    { name: 'openvpn reconnecting', obs: ok({ openvpnState: 'RECONNECTING' }), verdict: 'pending' },
    { name: 'first unanswered check', obs: ok({ mgmt: 'timeout', openvpnState: undefined }), verdict: 'degraded' },
    { name: 'second unanswered check: hung', obs: ok({ mgmt: 'timeout' }), memory: mem({ mgmtFailures: 1 }), verdict: 'failed', code: 'MVPN_OPENVPN_HUNG' },
    { name: 'unreachable counts like unanswered', obs: ok({ mgmt: 'unavailable' }), memory: mem({ mgmtFailures: 1 }), verdict: 'failed', code: 'MVPN_OPENVPN_HUNG' },
    { name: 'address missing once', obs: ok({ device: present() }), verdict: 'degraded' },
    { name: 'address missing twice', obs: ok({ device: present() }), memory: mem({ addressMissing: 1 }), verdict: 'degraded' },
    {
      name: 'address missing three times: restart',
      obs: ok({ device: present() }),
      memory: mem({ addressMissing: 2 }),
      verdict: 'failed',
      code: 'MVPN_OPENVPN_UNHEALTHY',
    },
    { name: 'device missing while connected', obs: ok({ device: { device: 'missing', addresses: [] } }), memory: mem({ addressMissing: 2 }), verdict: 'failed', code: 'MVPN_OPENVPN_UNHEALTHY' },
    { name: 'ip could not run: never a restart reason', obs: ok({ device: { device: 'unknown', addresses: [] } }), memory: mem({ addressMissing: 5 }), verdict: 'ok' },
    { name: 'client without expected address: no address check', obs: ok({ device: present() }), target: { role: 'client', dev: 'mv-a' }, verdict: 'ok' },
    { name: 'server CONNECTED', obs: ok({ device: present('203.0.113.1/24') }), target: server, verdict: 'ok' },
    { name: 'server: mgmt up + device present counts as connected', obs: ok({ openvpnState: 'ASSIGN_IP', device: present() }), target: server, verdict: 'ok' },
    { name: 'server: device gone', obs: ok({ openvpnState: 'CONNECTED', device: { device: 'missing', addresses: [] } }), target: server, verdict: 'degraded' },
    {
      name: 'stalled counters (when enabled) are degraded, never failed',
      obs: ok(),
      memory: mem({ stalled: 2, lastBytes: { bytesIn: 10, bytesOut: 20 } }),
      policy: { ...policy, stallLimit: 3 },
      verdict: 'degraded',
    },
    {
      name: 'refused push (another address): degraded with a code, never a restart, however often the address was missing',
      obs: ok({ device: present(), refusedPushes: ['ifconfig 128.0.0.5 128.0.0.0'] }),
      memory: mem({ addressMissing: 5 }),
      verdict: 'degraded',
      code: 'MVPN_OPENVPN_PUSH_REFUSED',
    },
    { name: 'refused pushed route with the address in place: degraded', obs: ok({ refusedPushes: ['route 0.0.0.0 128.0.0.0'] }), verdict: 'degraded', code: 'MVPN_OPENVPN_PUSH_REFUSED' },
    { name: 'refused push while not yet connected: pending', obs: ok({ openvpnState: 'GET_CONFIG', refusedPushes: ['ifconfig 128.0.0.5 128.0.0.0'] }), verdict: 'pending' },
    { name: 'a push without refused lines: ok', obs: ok({ refusedPushes: [] }), verdict: 'ok' },
    { name: 'full frames lost, small ones answer: degraded with MVPN_PATH_MTU', obs: ok({ frames: { verdict: 'lost', mtu: 1500, peer: '198.19.0.1' } }), verdict: 'degraded', code: 'MVPN_PATH_MTU' },
    { name: 'full frames pass: ok', obs: ok({ frames: { verdict: 'ok', mtu: 1500, peer: '198.19.0.1' } }), verdict: 'ok' },
    { name: 'no ping answered but the server resolves (it ignores pings): no verdict', obs: ok({ frames: { verdict: 'unreachable', mtu: 1500, peer: '198.19.0.1' } }), verdict: 'ok' },
    { name: 'nothing crosses the LAN (the server does not even resolve): degraded with MVPN_LAN_SILENT', obs: ok({ frames: { verdict: 'silent', mtu: 1500, peer: '198.19.0.1' } }), verdict: 'degraded', code: 'MVPN_LAN_SILENT' },
    { name: 'frames lost while not connected: pending', obs: ok({ openvpnState: 'RECONNECTING', frames: { verdict: 'lost', mtu: 1500, peer: '198.19.0.1' } }), verdict: 'pending' },
    { name: 'refused push on a server: not judged', obs: ok({ device: present('203.0.113.1/24'), refusedPushes: ['ping 2'] }), target: server, verdict: 'ok' },
    {
      name: 'moving counters reset the stall count',
      obs: ok({ bytesIn: 11 }),
      memory: mem({ stalled: 2, lastBytes: { bytesIn: 10, bytesOut: 20 } }),
      policy: { ...policy, stallLimit: 3 },
      verdict: 'ok',
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const r = assessHealth(c.obs, c.memory ?? freshHealthMemory, c.target ?? client, c.policy ?? policy);
      expect(r.verdict).toBe(c.verdict);
      expect(r.code).toBe(c.code);
    });
  }

  it('a refused push names the refused lines and the address the node expected, and does not count toward a restart', () => {
    const r = assessHealth(ok({ device: present(), refusedPushes: ['ifconfig 128.0.0.5 128.0.0.0', 'redirect-gateway def1'] }), mem({ addressMissing: 2 }), client, policy);
    expect(r.reason).toBe(
      "the server pushed what this node refuses: 'ifconfig 128.0.0.5 128.0.0.0', 'redirect-gateway def1'; it did not push this node's address 198.51.100.2/24; the node's addresses and routes are unchanged; fix the server's push or client-config-dir for this node",
    );
    expect(r.memory.addressMissing).toBe(0);
    const many = assessHealth(ok({ refusedPushes: ['route 1.0.0.0 255.0.0.0', 'route 2.0.0.0 255.0.0.0', 'route 3.0.0.0 255.0.0.0', 'route 4.0.0.0 255.0.0.0', 'route 5.0.0.0 255.0.0.0', 'route 6.0.0.0 255.0.0.0'] }), mem(), client, policy);
    expect(many.reason).toContain("'route 4.0.0.0 255.0.0.0' and 2 more;");
  });

  it('an answered check clears the unanswered count', () => {
    const r = assessHealth(ok(), mem({ mgmtFailures: 1, addressMissing: 2 }), client, policy);
    expect(r.memory).toMatchObject({ mgmtFailures: 0, addressMissing: 0 });
  });

  it('reports the tunnel address it found', () => {
    expect(assessHealth(ok(), freshHealthMemory, client, policy).tunnelAddress).toBe('198.51.100.2/24');
    expect(assessHealth(ok({ device: present('fe80::1/64', '203.0.113.1/24') }), freshHealthMemory, server, policy).tunnelAddress).toBe('203.0.113.1/24');
  });
});

describe('addresses', () => {
  it('hasAddress', () => {
    expect(hasAddress(['198.51.100.2/24'], '198.51.100.2')).toBe(true);
    expect(hasAddress(['198.51.100.2/24'], '198.51.100.2/24')).toBe(true);
    expect(hasAddress(['198.51.100.2/24'], '198.51.100.2/16')).toBe(false);
    expect(hasAddress(['198.51.100.20/24'], '198.51.100.2')).toBe(false);
  });

  it('parseIpAddrJson reads ip -j output', () => {
    const out = JSON.stringify([
      {
        ifindex: 3,
        ifname: 'tap0',
        addr_info: [
          { family: 'inet', local: '203.0.113.1', prefixlen: 24, scope: 'global' },
          { family: 'inet6', local: 'fe80::5c8e:2aff:fe24:93df', prefixlen: 64, scope: 'link' },
        ],
      },
    ]);
    expect(parseIpAddrJson(out)).toEqual(['203.0.113.1/24', 'fe80::5c8e:2aff:fe24:93df/64']);
    expect(parseIpAddrJson('[]')).toEqual([]);
    expect(parseIpAddrJson('{"not":"a list"}')).toEqual([]);
  });

  it('readDevice tells a missing device from an ip that cannot run', async () => {
    expect(await readDevice(async () => ({ code: 1, stdout: '', stderr: 'Device "mv-x" does not exist.' }), 'mv-x')).toEqual({ device: 'missing', addresses: [] });
    expect(await readDevice(async () => Promise.reject(new Error('spawn ip ENOENT')), 'mv-x')).toEqual({ device: 'unknown', addresses: [] });
    expect(await readDevice(async () => ({ code: 0, stdout: 'not json', stderr: '' }), 'mv-x')).toEqual({ device: 'unknown', addresses: [] });
  });

  it('readDeviceInProcess reads what `ip` reads, without a process: the loopback device and its addresses, a missing device, a name that is none', async () => {
    const viaIp = await readDevice(execCommand, 'lo');
    const noIp = async (): Promise<never> => {
      throw new Error('the fallback must not run where /sys/class/net exists');
    };
    const here = await readDeviceInProcess('lo', noIp);
    expect(here.device).toBe('present');
    expect(here.addresses).toContain('127.0.0.1/8');
    expect([...here.addresses].sort()).toEqual([...viaIp.addresses].sort());
    expect(await readDeviceInProcess('mv-nonexistent', noIp)).toEqual({ device: 'missing', addresses: [] });
    for (const bad of ['..', 'a/b', 'x'.repeat(16), '']) expect(await readDeviceInProcess(bad, noIp)).toEqual({ device: 'unknown', addresses: [] });
  });

  it('probeFullFrames probes several networks in one shell with real pings: frames that pass, frames too big for the device, a device that is not there, arguments that are never script', async () => {
    const calls: string[] = [];
    const exec: typeof execCommand = (cmd, args, o) => {
      calls.push(cmd);
      return execCommand(cmd, args, o);
    };
    const verdicts = await probeFullFrames(exec, [
      { dev: 'lo', peer: '127.0.0.1', mtu: 1500 },
      // Larger than lo's MTU with DF: the full frame cannot leave, the small ping answers.
      { dev: 'lo', peer: '127.0.0.1', mtu: 70_000 },
      { dev: 'mv-nonexistent', peer: '198.18.0.9', mtu: 1500 },
      { dev: 'lo', peer: '127.0.0.1; echo "0 lost"', mtu: 1500 },
    ]);
    expect(verdicts).toEqual(['ok', 'lost', 'unreachable', 'unreachable']);
    expect(calls).toEqual(['sh']);
  });

  it('probeFullFrames reads the neighbour answer as the single-ping probe did, and gives no verdict for a target without an answer line', async () => {
    const lines = (stdout: string): typeof execCommand => async () => ({ code: 0, stdout, stderr: '' });
    const t = { dev: 'mv-a', peer: '198.19.0.1', mtu: 1500 };
    expect(await probeFullFrames(lines('0 neigh 0 [{"dst":"198.19.0.1","dev":"mv-a","state":["FAILED"]}]\n1 neigh 0 []\n'), [t, t])).toEqual(['silent', 'silent']);
    expect(await probeFullFrames(lines('0 neigh 0 [{"dst":"198.19.0.1","lladdr":"02:00:00:00:00:01","state":["REACHABLE"]}]\n1 neigh 1 \n2 neigh 0 not json\n'), [t, t, t])).toEqual(['unreachable', 'unreachable', 'unreachable']);
    expect(await probeFullFrames(lines('1 ok\n7 ok\n'), [t, t])).toEqual(['unreachable', 'ok']);
    expect(await probeFullFrames(async () => Promise.reject(new Error('spawn sh ENOENT')), [t])).toEqual(['unreachable']);
  });
});

describe('process identity (pid reuse safety)', () => {
  const files = runtimePaths('/run/mvpn-client', 'lab1');
  const cases: { argv: string[]; ours: boolean; inDir: boolean }[] = [
    { argv: ['/usr/sbin/openvpn', '--config', 'c.conf', '--management', files.mgmtSocket, 'unix', '--writepid', files.pidFile], ours: true, inDir: true },
    { argv: ['openvpn', '--writepid', files.pidFile], ours: true, inDir: true },
    { argv: ['openvpn', '--management', files.mgmtSocket, 'unix'], ours: true, inDir: true },
    { argv: ['openvpn', '--writepid', '/run/mvpn-client/openvpn-other.pid'], ours: false, inDir: true },
    { argv: ['openvpn', '--writepid', '/run/elsewhere/openvpn-lab1.pid'], ours: false, inDir: false },
    { argv: ['openvpn', '--writepid', '/run/mvpn-client/status.pid'], ours: false, inDir: false },
    { argv: ['/usr/bin/sleep', '600', '--writepid', files.pidFile], ours: false, inDir: false },
    { argv: ['python3', '-c', 'x', 'openvpn', '--writepid', files.pidFile], ours: false, inDir: false },
    { argv: [], ours: false, inDir: false },
  ];
  for (const c of cases) {
    it(c.argv.join(' ') || '(empty)', () => {
      expect(isOpenvpnFor(c.argv, files)).toBe(c.ours);
      expect(isOpenvpnInDir(c.argv, '/run/mvpn-client')).toBe(c.inDir);
    });
  }

  it('runtimePaths refuses ids that could escape the directory', () => {
    expect(() => runtimePaths('/run/x', '../etc')).toThrow();
    expect(() => runtimePaths('/run/x', 'a/b')).toThrow();
    expect(runtimePaths('/run/x', 'net-1')).toEqual({ mgmtSocket: '/run/x/openvpn-net-1.sock', pidFile: '/run/x/openvpn-net-1.pid' });
  });
});

describe('parseOpenvpnVersion', () => {
  const cases: [string, ReturnType<typeof parseOpenvpnVersion>][] = [
    ['OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)] [LZO]', { version: '2.6.14', major: 2, minor: 6 }],
    ['OpenVPN 2.5.1 x86_64-pc-linux-gnu [SSL (OpenSSL)]', { version: '2.5.1', major: 2, minor: 5 }],
    ['OpenVPN 2.7_beta1 x86_64-pc-linux-gnu', { version: '2.7_beta1', major: 2, minor: 7 }],
    ['OpenVPN 2.4.7 x86_64', { version: '2.4.7', major: 2, minor: 4 }],
    ['bash: openvpn: command not found', undefined],
  ];
  for (const [out, want] of cases) it(out, () => expect(parseOpenvpnVersion(out)).toEqual(want));
});
