import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { InstalledBundle } from '../../src/bundle/install.ts';
import { NetworkRunner, type SupervisorLike } from '../../src/agent/networks.ts';
import type { InstanceSpec, InstanceState, InstanceStatus } from '../../src/openvpn/supervisor-state.ts';

/** A supervisor double: records what it was asked, stops after a tick. */
class FakeSupervisor extends EventEmitter implements SupervisorLike {
  readonly spec: InstanceSpec;
  readonly calls: string[] = [];
  state: InstanceState = 'stopped';
  constructor(spec: InstanceSpec) {
    super();
    this.spec = spec;
  }
  start(): void {
    this.calls.push('start');
    this.state = 'connected';
  }
  restart(): void {
    this.calls.push('restart');
  }
  reload(): void {
    this.calls.push('reload');
  }
  async stop(): Promise<void> {
    this.calls.push('stop');
    await new Promise((r) => setTimeout(r, 5));
    this.state = 'stopped';
  }
  status(): InstanceStatus {
    return { id: this.spec.id, role: 'client', state: this.state, since: 0, bytesIn: 0, bytesOut: 0, restarts: 0 };
  }
}

function bundle(id: string, address = '198.19.1.10/24'): InstalledBundle {
  return { network: id, configPath: `/state/networks/${id}/openvpn.conf`, dir: `/state/networks/${id}`, spec: { address: { ipv4: address }, remotes: [{ host: '192.0.2.1', port: 1194 }] } } as unknown as InstalledBundle;
}

function runner(persistDown?: (down: ReadonlyMap<string, number>) => Promise<void>): { r: NetworkRunner; made: FakeSupervisor[] } {
  const made: FakeSupervisor[] = [];
  const r = new NetworkRunner({
    ...(persistDown ? { persistDown } : {}),
    runtimeDir: '/run/mvpn-client',
    openvpnPath: '/usr/sbin/openvpn',
    factory: (spec) => {
      const s = new FakeSupervisor(spec);
      made.push(s);
      return s;
    },
    onChange: () => undefined,
  });
  return { r, made };
}

describe('network runner', () => {
  it('gives each network its runtime files and interface', async () => {
    const { r, made } = runner();
    await r.run(bundle('alpha'));
    expect(made[0]!.spec).toMatchObject({
      id: 'alpha',
      dev: 'mv-alpha',
      mgmtSocket: '/run/mvpn-client/openvpn-alpha.sock',
      pidFile: '/run/mvpn-client/openvpn-alpha.pid',
      expectedAddress: '198.19.1.10/24',
      openvpnPath: '/usr/sbin/openvpn',
    });
  });

  it('never makes two supervisors for one network when asked at once', async () => {
    const { r, made } = runner();
    await Promise.all([r.run(bundle('alpha')), r.run(bundle('alpha')), r.restart(bundle('alpha'))]);
    expect(made).toHaveLength(1);
    expect(made[0]!.calls).toEqual(['start', 'restart']);
  });

  it('a replacement in flight (old one still stopping) is not doubled by a concurrent run', async () => {
    const { r, made } = runner();
    await r.run(bundle('alpha'));
    const next = bundle('alpha', '198.19.1.11/24');
    await Promise.all([r.restart(next), r.run(next)]);
    expect(made).toHaveLength(2);
    expect(made[1]!.calls).toEqual(['start']);
  });

  it('restarts in place for the same spec, replaces the supervisor when the spec changed', async () => {
    const { r, made } = runner();
    await r.run(bundle('alpha'));
    await r.restart(bundle('alpha'));
    expect(made).toHaveLength(1);
    await r.restart(bundle('alpha', '198.19.1.11/24'));
    expect(made).toHaveLength(2);
    expect(made[0]!.calls).toEqual(['start', 'restart', 'stop']);
    expect(made[1]!.calls).toEqual(['start']);
  });

  it('reloads in place for the same spec; starts what is stopped; replaces the supervisor when the spec changed', async () => {
    const { r, made } = runner();
    await r.run(bundle('alpha'));
    await r.reload(bundle('alpha'));
    expect(made).toHaveLength(1);
    expect(made[0]!.calls).toEqual(['start', 'reload']);
    made[0]!.state = 'stopped';
    await r.reload(bundle('alpha'));
    expect(made[0]!.calls).toEqual(['start', 'reload', 'start']);
    await r.reload(bundle('alpha', '198.19.1.11/24'));
    expect(made).toHaveLength(2);
    expect(made[0]!.calls).toEqual(['start', 'reload', 'start', 'stop']);
    expect(made[1]!.calls).toEqual(['start']);
    await r.adminDown('alpha', 0);
    await r.reload(bundle('alpha', '198.19.1.11/24'));
    expect(r.isRunning('alpha')).toBe(false);
  });

  it('keeps an operator-downed network down, whoever asks, until up', async () => {
    const { r, made } = runner();
    await r.run(bundle('alpha'));
    await r.adminDown('alpha', 0);
    await r.run(bundle('alpha'));
    await r.restart(bundle('alpha'));
    expect(r.isRunning('alpha')).toBe(false);
    expect(made).toHaveLength(1);
    await r.adminUp(bundle('alpha'), 'alpha');
    expect(r.isRunning('alpha')).toBe(true);
  });

  it('records every down/up mark before it takes effect, the marks as they are then; a restored mark keeps the network down', async () => {
    const writes: string[] = [];
    const { r } = runner(async (down) => void writes.push(JSON.stringify([...down])));
    await r.run(bundle('alpha'));
    await Promise.all([r.adminDown('alpha', 1000), r.adminDown('beta', 2000)]);
    expect(writes.at(-1)).toBe(JSON.stringify([['alpha', 1000], ['beta', 2000]]));
    expect(r.adminDownSince('alpha')).toBe(1000);
    await r.adminDown('alpha', 5000); // already down: neither written again nor re-dated
    expect(r.adminDownSince('alpha')).toBe(1000);
    await r.adminUp(bundle('alpha'), 'alpha');
    await r.forget('beta');
    expect(writes.at(-1)).toBe('[]');

    const next = runner();
    next.r.restoreAdminDown(new Map([['alpha', 1000]]));
    await next.r.run(bundle('alpha'));
    expect(next.made).toHaveLength(0);
    expect(next.r.isAdminDown('alpha')).toBe(true);
  });

  it('a down that cannot be recorded is refused and changes nothing: the network keeps running', async () => {
    const { r } = runner(async () => {
      throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    });
    await r.run(bundle('alpha'));
    await expect(r.adminDown('alpha', 1000)).rejects.toThrow('ENOSPC');
    expect(r.isAdminDown('alpha')).toBe(false);
    expect(r.isRunning('alpha')).toBe(true);
  });

  it('starts nothing after stopAll, also what was asked for while it stopped', async () => {
    const { r, made } = runner();
    await r.run(bundle('alpha'));
    const stopping = r.stopAll();
    const late = r.run(bundle('beta'));
    await Promise.all([stopping, late]);
    await r.run(bundle('gamma'));
    expect(made.map((s) => s.spec.id)).toEqual(['alpha']);
    expect(r.isRunning('alpha')).toBe(false);
  });
});
