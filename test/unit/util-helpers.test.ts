/**
 * The shared helpers that replaced per-module copies: HOST:PORT splitting,
 * bounded concurrency, capped file reads (src/util/) and loading the
 * server's signing key (src/server/anchor-rotation.ts).
 */
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mapLimit } from '../../src/util/concurrency.ts';
import { joinHostPort, portNumber, splitHostPort } from '../../src/util/host-port.ts';
import { readAtMost, readIfExists } from '../../src/util/read-file.ts';
import { parseListen } from '../../src/server/config.ts';
import { parseRemote } from '../../src/server/ops/networks.ts';
import { generateSigningKey, signingKeyToPem } from '../../src/bundle/sign.ts';
import { loadSigningKey } from '../../src/server/anchor-rotation.ts';
import { tmpDir } from '../helpers/tmp.ts';

/** One temporary directory for the file-reading tests of this file. */
let dir: { path: string; remove: () => Promise<void> };
beforeAll(async () => {
  dir = await tmpDir('helpers');
});
afterAll(() => dir.remove());

describe('splitHostPort', () => {
  it.each([
    ['198.18.0.1:8443', { host: '198.18.0.1', port: '8443', bracketed: false }],
    ['198.18.0.1', { host: '198.18.0.1', port: undefined, bracketed: false }],
    ['vpn.example.test:1194', { host: 'vpn.example.test', port: '1194', bracketed: false }],
    ['host:', { host: 'host', port: '', bracketed: false }],
    ['2001:db8::1', { host: '2001:db8::1', port: undefined, bracketed: false }],
    ['[2001:db8::1]', { host: '2001:db8::1', port: undefined, bracketed: true }],
    ['[2001:db8::1]:443', { host: '2001:db8::1', port: '443', bracketed: true }],
    ['[]:443', { host: '', port: '443', bracketed: true }],
  ])('%s', (text, want) => {
    expect(splitHostPort(text)).toEqual(want);
  });

  it.each(['[2001:db8::1', '[2001:db8::1]443', '[2001:db8::1]:44:3', '[a]b]:1'])('unbalanced or trailing text after brackets: %s', (text) => {
    expect(splitHostPort(text)).toBeUndefined();
  });

  it('portNumber takes 1-5 digits only; joinHostPort brackets IPv6', () => {
    expect(portNumber('0')).toBe(0);
    expect(portNumber('65535')).toBe(65535);
    expect(portNumber('99999')).toBe(99999);
    for (const bad of ['', '123456', '-1', '1e3', ' 80', '0x50']) expect(portNumber(bad)).toBeUndefined();
    expect(joinHostPort('198.18.0.1', 80)).toBe('198.18.0.1:80');
    expect(joinHostPort('::', 8443)).toBe('[::]:8443');
    expect(joinHostPort('vpn.example.test', 1)).toBe('vpn.example.test:1');
  });

  it('its users keep their own rules: a remote may omit the port and be a name, a listen address may not', () => {
    expect(parseRemote('vpn.example.test')).toEqual({ host: 'vpn.example.test' });
    expect(parseRemote('[2001:db8::1]:1194')).toEqual({ host: '2001:db8::1', port: 1194 });
    expect(parseRemote('2001:db8::1')).toEqual({ host: '2001:db8::1' });
    expect(() => parseRemote('[198.18.0.1]:1194')).toThrow(/not an IP address or DNS name/);
    expect(() => parseRemote('vpn:x')).toThrow(/port "x" is not a number/);
    expect(() => parseRemote('vpn:70000')).toThrow(/not between 1 and 65535/);
    expect(parseListen('0.0.0.0:0')).toEqual({ host: '0.0.0.0', port: 0 });
    expect(parseListen('[::]:8443')).toEqual({ host: '::', port: 8443 });
    for (const bad of ['vpn.example.test:8443', '0.0.0.0', '::1:8443', '[fe80::1%eth0]:8443', '0.0.0.0:65536', '[::]']) {
      expect(() => parseListen(bad), bad).toThrow(/is not ADDR:PORT/);
    }
  });
});

describe('mapLimit', () => {
  it('keeps at most `limit` in flight, starts items in order, returns results in order', async () => {
    let inFlight = 0;
    let most = 0;
    const started: number[] = [];
    const out = await mapLimit([5, 1, 4, 2, 3, 0], 2, async (n, i) => {
      started.push(i);
      most = Math.max(most, ++inFlight);
      await new Promise((r) => setTimeout(r, n));
      inFlight--;
      return n * 10;
    });
    expect(out).toEqual([50, 10, 40, 20, 30, 0]);
    expect(most).toBe(2);
    expect(started).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('after a failure starts nothing new and rejects only once those in flight settled', async () => {
    const started: number[] = [];
    let straggler = false;
    const err = await mapLimit([0, 1, 2, 3, 4], 2, async (n) => {
      started.push(n);
      if (n === 0) throw new Error('item 0 failed');
      await new Promise((r) => setTimeout(r, 20));
      straggler = true;
      return n;
    }).catch((e: unknown) => e as Error);
    expect((err as Error).message).toBe('item 0 failed');
    expect(straggler).toBe(true);
    expect(started).toEqual([0, 1]);
  });

  it('an empty list resolves to []; a limit below 1 is refused', async () => {
    expect(await mapLimit([], 3, () => Promise.resolve(1))).toEqual([]);
    await expect(mapLimit([1], 0, () => Promise.resolve(1))).rejects.toThrow(/not a positive integer/);
  });
});

describe('readAtMost', () => {
  it.each([
    [0, 10, 0],
    [10, 10, 10],
    [11, 10, 11],
    [200_000, 10, 11],
    [200_000, 100_000, 100_001],
  ])('a %i-byte file with a cap of %i yields %i bytes', async (size, cap, want) => {
    const p = join(dir.path, `f${size}-${cap}`);
    const data = Buffer.alloc(size, 0x61);
    await writeFile(p, data);
    const fh = await open(p, 'r');
    try {
      const got = await readAtMost(fh, cap);
      expect(got.length).toBe(want);
      expect(got.equals(data.subarray(0, want))).toBe(true);
    } finally {
      await fh.close();
    }
  });
});

describe('loadSigningKey', () => {
  it('reads and parses signing.key; a missing or unreadable file is MVPN_CONFIG_MISSING naming it, a wrong key MVPN_KEY_INVALID', async () => {
    const k = generateSigningKey();
    const good = join(dir.path, 'signing.key');
    await writeFile(good, signingKeyToPem(k), { mode: 0o600 });
    expect((await loadSigningKey({ signingKey: good })).keyId).toBe(k.keyId);
    const missing = join(dir.path, 'nothing.key');
    await expect(loadSigningKey({ signingKey: missing })).rejects.toMatchObject({ code: 'MVPN_CONFIG_MISSING', message: expect.stringContaining(missing) as unknown as string });
    const bad = join(dir.path, 'bad.key');
    await writeFile(bad, 'not a key\n');
    await expect(loadSigningKey({ signingKey: bad })).rejects.toMatchObject({ code: 'MVPN_KEY_INVALID' });
  });
});

describe('readIfExists', () => {
  it('the bytes of a file, undefined for a missing one, and any other failure thrown (never taken for "none")', async () => {
    const p = join(dir.path, 'state.json');
    await writeFile(p, '{"a":1}\n');
    expect((await readIfExists(p))?.toString('utf8')).toBe('{"a":1}\n');
    expect(await readIfExists(join(dir.path, 'missing.json'))).toBeUndefined();
    await expect(readIfExists(dir.path)).rejects.toMatchObject({ code: 'EISDIR' });
  });
});
