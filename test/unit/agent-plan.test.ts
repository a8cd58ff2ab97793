import { describe, expect, it } from 'vitest';
import {
  bundleRollback,
  bundlesToFetch,
  onlyCredentialsChanged,
  onlyCrlChanged,
  plan,
  planNetwork,
  planRemovals,
  type ActualNetwork,
  type BundleFacts,
  type Desired,
  type DesiredNetwork,
} from '../../src/agent/plan.ts';

const NOW = Date.parse('2030-01-01T00:00:00Z');
const LATER = NOW + 86_400_000;
const files = { 'network.json': 'n1', 'ca.crt': 'c1', 'node.crt': 'k1', 'tls-crypt-v2.key': 't1', 'crl.pem': 'r1' };

function facts(version: number, over: Partial<BundleFacts> = {}, fileOver: Record<string, string> = {}): BundleFacts {
  return { version, sha256: `sha-${version}`, files: { ...files, ...fileOver }, expiresAt: LATER, ...over };
}
const installed = (id: string, f: BundleFacts, running = true, adminDown = false): ActualNetwork => ({ id, installed: f, running, adminDown });
const same = (id: string, v: number): DesiredNetwork => ({ id, version: v, sha256: `sha-${v}`, bundle: { kind: 'installed' } });
const fresh = (id: string, f: BundleFacts): DesiredNetwork => ({ id, version: f.version, sha256: f.sha256, bundle: { kind: 'verified', facts: f } });
const rejected = (id: string, v: number): DesiredNetwork => ({
  id,
  version: v,
  sha256: `sha-${v}`,
  bundle: { kind: 'rejected', error: { code: 'MVPN_OPTION_FORBIDDEN', message: 'directive up is not allowed' } },
});
const membership = (...networks: DesiredNetwork[]): Desired => ({ kind: 'membership', networks });

describe('reconcile plan', () => {
  const table: [string, Desired, ActualNetwork[], Record<string, string>][] = [
    ['nothing installed, nothing wanted', membership(), [], {}],
    ['new network: install and start', membership(fresh('a', facts(1))), [], { a: 'install-start' }],
    ['unchanged and running: keep', membership(same('a', 1)), [installed('a', facts(1))], { a: 'keep' }],
    ['unchanged but not running (boot from installed): start', membership(same('a', 1)), [installed('a', facts(1), false)], { a: 'start' }],
    [
      'version bump with a changed network spec: restart that network only',
      membership(fresh('a', facts(2, {}, { 'network.json': 'n2', 'node.crt': 'k2' })), same('b', 1)),
      [installed('a', facts(1)), installed('b', facts(1))],
      { a: 'replace-restart', b: 'keep' },
    ],
    [
      'version bump with a new cert and CRL only (renewal): reload that network only',
      membership(fresh('a', facts(2, {}, { 'node.crt': 'k2', 'crl.pem': 'r2' })), same('b', 1)),
      [installed('a', facts(1)), installed('b', facts(1))],
      { a: 'replace-reload', b: 'keep' },
    ],
    [
      'new cert while not running: install and start',
      membership(fresh('a', facts(2, {}, { 'node.crt': 'k2' }))),
      [installed('a', facts(1), false)],
      { a: 'install-start' },
    ],
    [
      'version bump touching only crl.pem: swap without restart',
      membership(fresh('a', facts(2, {}, { 'crl.pem': 'r2' }))),
      [installed('a', facts(1))],
      { a: 'swap-crl' },
    ],
    [
      'crl-only change while not running: install and start',
      membership(fresh('a', facts(2, {}, { 'crl.pem': 'r2' }))),
      [installed('a', facts(1), false)],
      { a: 'install-start' },
    ],
    [
      'a file added along with the CRL: restart',
      membership(fresh('a', facts(2, {}, { 'crl.pem': 'r2', 'node.key': 'x' }))),
      [installed('a', facts(1))],
      { a: 'replace-restart' },
    ],
    ['network removed: stop and remove', membership(same('b', 1)), [installed('a', facts(1)), installed('b', facts(1))], { a: 'stop-remove', b: 'keep' }],
    [
      'network removed while stopped but installed: still removed',
      membership(),
      [installed('a', facts(1), false)],
      { a: 'stop-remove' },
    ],
    [
      'all sources unreachable: nothing torn down, stopped ones start from cache',
      { kind: 'unavailable' },
      [installed('a', facts(1)), installed('b', facts(1), false)],
      { a: 'keep', b: 'start' },
    ],
    [
      'all sources unreachable and a cached bundle expired: stop it, keep the files',
      { kind: 'unavailable' },
      [installed('a', facts(1, { expiresAt: NOW - 1 })), installed('b', facts(1, { expiresAt: NOW - 1 }), false)],
      { a: 'stop', b: 'keep' },
    ],
    ['rejected new bundle: old keeps running', membership(rejected('a', 2)), [installed('a', facts(1))], { a: 'keep' }],
    ['rejected new bundle, old not running: start the old one', membership(rejected('a', 2)), [installed('a', facts(1), false)], { a: 'start' }],
    ['rejected bundle for a new network: nothing to run', membership(rejected('a', 1)), [], { a: 'keep' }],
    ['operator took it down: not started', membership(same('a', 1)), [installed('a', facts(1), false, true)], { a: 'keep' }],
    ['operator took it down, new bundle: install only', membership(fresh('a', facts(2))), [installed('a', facts(1), false, true)], { a: 'install' }],
    ['operator down while unreachable: not started', { kind: 'unavailable' }, [installed('a', facts(1), false, true)], { a: 'keep' }],
  ];

  it.each(table)('%s', (_name, desired, actual, want) => {
    const got = Object.fromEntries(plan(desired, actual, NOW).map((a) => [a.id, a.kind]));
    expect(got).toEqual(want);
  });

  it('carries the rejection reason to status and clears it otherwise', () => {
    const [a] = plan(membership(rejected('a', 2)), [installed('a', facts(1))], NOW);
    expect(a?.error).toEqual({ code: 'MVPN_OPTION_FORBIDDEN', message: 'directive up is not allowed' });
    const [b] = plan(membership(same('a', 1)), [installed('a', facts(1))], NOW);
    expect(b?.error).toBeUndefined();
  });

  it('reports an expired cached bundle as MVPN_BUNDLE_EXPIRED', () => {
    const [a] = plan({ kind: 'unavailable' }, [installed('a', facts(1, { expiresAt: NOW }))], NOW);
    expect(a).toMatchObject({ kind: 'stop', error: { code: 'MVPN_BUNDLE_EXPIRED' } });
  });

  // The reconcile plans each network on its own as soon as its bundle is
  // verified: that must decide exactly what the whole plan decides.
  it.each(table.filter(([, d]) => d.kind === 'membership'))('per network, the same as the whole plan: %s', (_name, desired, actual) => {
    if (desired.kind !== 'membership') return;
    const byId = new Map(actual.map((a) => [a.id, a]));
    const each = [...desired.networks.map((d) => planNetwork(d, byId.get(d.id), NOW)), ...planRemovals(desired.networks, actual)];
    expect(each.sort((x, y) => (x.id < y.id ? -1 : 1))).toEqual(plan(desired, actual, NOW));
  });

  it('returns actions sorted by network id', () => {
    const ids = plan(membership(fresh('c', facts(1)), fresh('a', facts(1)), fresh('b', facts(1))), [], NOW).map((a) => a.id);
    expect(ids).toEqual(['a', 'b', 'c']);
  });
});

describe('bundlesToFetch', () => {
  it('fetches only what is missing or differs in version or hash', () => {
    const have = new Map([
      ['a', { version: 1, sha256: 'x' }],
      ['b', { version: 1, sha256: 'x' }],
      ['c', { version: 1, sha256: 'x' }],
    ]);
    const got = bundlesToFetch(
      [
        { id: 'a', version: 1, sha256: 'x' },
        { id: 'b', version: 2, sha256: 'y' },
        { id: 'c', version: 1, sha256: 'z' },
        { id: 'd', version: 1, sha256: 'x' },
      ],
      have,
    );
    expect(got).toEqual(['b', 'c', 'd']);
  });
});

describe('bundleRollback', () => {
  it.each([
    ['nothing installed', 1, undefined, false],
    ['same version', 3, 3, false],
    ['newer version', 4, 3, false],
    ['older version', 2, 3, true],
    ['version 0 over anything', 0, 1, true],
  ] as const)('%s → refused: %s', (_what, version, have, refused) => {
    const err = bundleRollback({ id: 'a', version }, have === undefined ? undefined : { version: have });
    expect(err?.code).toBe(refused ? 'MVPN_BUNDLE_ROLLBACK' : undefined);
    if (refused) expect(err?.message).toContain(`version ${version}`);
  });
});

describe('onlyCredentialsChanged', () => {
  it.each([
    ['node.crt differs', { ...files, 'node.crt': 'k2' }, true],
    ['certificates, tls-crypt-v2 key and CRL differ (a CA roll)', { ...files, 'ca.crt': 'c2', 'node.crt': 'k2', 'tls-crypt-v2.key': 't2', 'crl.pem': 'r2' }, true],
    ['identical', files, true],
    ['network.json differs', { ...files, 'node.crt': 'k2', 'network.json': 'n2' }, false],
    ['file set differs', { ...files, 'node.key': 'x' }, false],
    ['a CA roll starts: ca-roll.crt comes with the new certificates', { ...files, 'ca.crt': 'c2', 'node.crt': 'k2', 'crl.pem': 'r2', 'ca-roll.crt': 'x1' }, true],
    ['only ca-roll.crt comes', { ...files, 'ca-roll.crt': 'x2' }, true],
    ['a roll with network.json changed', { ...files, 'ca-roll.crt': 'x1', 'network.json': 'n2' }, false],
  ])('%s', (_n, next, want) => {
    expect(onlyCredentialsChanged(files, next)).toBe(want);
  });
  it('lets ca-roll.crt change or go (a later roll), not the files openvpn reads at start', () => {
    const rolled = { ...files, 'ca-roll.crt': 'x1' };
    expect(onlyCredentialsChanged(rolled, { ...rolled, 'ca-roll.crt': 'x2', 'node.crt': 'k2' })).toBe(true);
    expect(onlyCredentialsChanged(rolled, files)).toBe(true);
    expect(onlyCredentialsChanged(rolled, { ...files, 'network.json': 'n2' })).toBe(false);
  });
});

describe('onlyCrlChanged', () => {
  it.each([
    ['only crl differs', { ...files, 'crl.pem': 'r2' }, true],
    ['identical (no CRL change either)', files, true],
    ['network.json differs', { ...files, 'crl.pem': 'r2', 'network.json': 'n2' }, false],
    ['file set differs', { ...files, extra: 'e' }, false],
  ])('%s', (_n, next, want) => {
    expect(onlyCrlChanged(files, next)).toBe(want);
  });
  it('is false without a crl.pem', () => {
    expect(onlyCrlChanged({ a: '1' }, { a: '1' })).toBe(false);
  });
});
