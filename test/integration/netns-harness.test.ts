import { describe, expect, it } from 'vitest';
import { assertTestAddress, Lab, leftoverNamespaces, withLab } from '../helpers/netns.ts';

describe('network namespace harness', () => {
  it('joins two namespaces with a veth pair and pings across', async () => {
    await withLab(async (lab) => {
      const a = await lab.ns('a');
      const b = await lab.ns('b');
      await lab.link(a, b, { aAddr: '198.18.0.1/30', bAddr: '198.18.0.2/30' });
      expect(await a.ping('198.18.0.2')).toBe(true);
      expect(await b.ping('198.18.0.1')).toBe(true);
    });
  });

  it('bridges three namespaces into one segment', async () => {
    await withLab(async (lab) => {
      const sw = await lab.ns('sw');
      const hosts = [await lab.ns('h1'), await lab.ns('h2'), await lab.ns('h3')];
      const ports: string[] = [];
      for (const [i, h] of hosts.entries()) {
        const [, swSide] = await lab.link(h, sw, { aName: 'eth0', aAddr: `198.18.1.${i + 1}/24` });
        ports.push(swSide);
      }
      await lab.bridge(sw, 'br0', ports);
      expect(await hosts[0]!.ping('198.18.1.3', { timeoutS: 3 })).toBe(true);
      expect(await hosts[2]!.ping('198.18.1.2', { timeoutS: 3 })).toBe(true);
    });
  });

  it('removes its namespaces and stops what runs inside, also when the test body throws', async () => {
    const lab = new Lab();
    let names: string[] = [];
    await expect(
      (async () => {
        try {
          const a = await lab.ns('x');
          names = [a.name];
          a.spawn('sleep', ['600']);
          throw new Error('boom');
        } finally {
          await lab.destroy();
        }
      })(),
    ).rejects.toThrow('boom');
    const left = await leftoverNamespaces();
    for (const n of names) expect(left).not.toContain(n);
  });

  it('refuses addresses outside the test ranges', () => {
    expect(() => assertTestAddress('198.17.255.254/24')).toThrow(/outside the test ranges/);
    expect(() => assertTestAddress('198.20.0.1')).toThrow(/outside the test ranges/);
    expect(() => assertTestAddress('192.0.2.7/24')).not.toThrow();
    expect(() => assertTestAddress('198.19.255.254')).not.toThrow();
  });
});
