/**
 * The BIRD config renderer (src/server/routing/bird-config.ts): the same
 * input in any order renders the same bytes (an unchanged config is not
 * reloaded), the newest session gets the highest local_pref, and anything
 * that is not an address or an interface name never reaches the file.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { networkAsn, renderBirdConfig, routeTableId, sessionPref, type L3RoutingSpec } from '../../src/server/routing/bird-config.ts';

const spec = (over: Partial<L3RoutingSpec> = {}): L3RoutingSpec => ({
  network: 'lan-a',
  subnet: '198.18.0.0/24',
  local: '198.18.0.1',
  tunDev: 'ms-lan-a',
  backboneDev: 'mk-lan-a',
  peers: [
    { name: 'b', address: '198.18.0.2' },
    { name: 'c', address: '198.18.0.3' },
  ],
  clients: [
    { address: '198.18.0.11', since: Date.UTC(2026, 11, 3, 11, 0, 0) },
    { address: '198.18.0.10', since: Date.UTC(2026, 11, 3, 11, 0, 5) },
  ],
  ...over,
});

describe('renderBirdConfig', () => {
  it('renders the same bytes whatever the order of peers, clients and networks', () => {
    const a = spec();
    const b = spec({ peers: [...a.peers].reverse(), clients: [...a.clients].reverse() });
    const other = spec({ network: 'lan-b', subnet: '198.18.1.0/24', tunDev: 'ms-lan-b', backboneDev: 'mk-lan-b' });
    expect(renderBirdConfig('198.18.0.1', [a, other])).toBe(renderBirdConfig('198.18.0.1', [other, b]));
  });

  it('gives each client its session start as local_pref, one BGP session per peer, the network its own tables', () => {
    const text = renderBirdConfig('198.18.0.1', [spec()]);
    expect(text).toContain(`route 198.18.0.10/32 via "ms-lan-a" { bgp_local_pref = ${sessionPref(Date.UTC(2026, 11, 3, 11, 0, 5))}; };`);
    expect(sessionPref(Date.UTC(2026, 11, 3, 11, 0, 5))).toBe(sessionPref(Date.UTC(2026, 11, 3, 11, 0, 0)) + 5);
    expect(text.match(/^protocol bgp /gm)).toHaveLength(2);
    expect(text).toContain(`kernel table ${routeTableId('lan-a')};`);
    expect(text).toContain(`neighbor 198.18.0.3 as ${networkAsn('lan-a')};`);
    expect(networkAsn('lan-a')).toBeGreaterThanOrEqual(4_200_000_000);
  });

  it('refuses what is not an address or an interface name', () => {
    expect(() => renderBirdConfig('198.18.0.1', [spec({ clients: [{ address: '198.18.0.1"; }', since: 0 }] })])).toThrow(/not an IPv4 address/);
    expect(() => renderBirdConfig('198.18.0.1', [spec({ tunDev: 'a"b' })])).toThrow(/bad interface name/);
  });

  it('is a config BIRD itself accepts (bird -p)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bird-config-'));
    try {
      const path = join(dir, 'bird.conf');
      writeFileSync(path, renderBirdConfig('198.18.0.1', [spec()]));
      expect(() => execFileSync('bird', ['-p', '-c', path], { stdio: 'pipe' })).not.toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
