import { describe, expect, it } from 'vitest';
import { parseVia, viaLabel, viaProblem } from '../../src/agent/via.ts';

describe('via HOST:PORT', () => {
  it.each([
    ['198.18.2.1:8444', { host: '198.18.2.1', port: 8444 }],
    ['[2001:db8::1]:443', { host: '2001:db8::1', port: 443 }],
    ['[::ffff:198.18.2.1]:1', { host: '::ffff:198.18.2.1', port: 1 }],
    ['ops.c.testbed.test:65535', { host: 'ops.c.testbed.test', port: 65535 }],
    ['ops:8444', { host: 'ops', port: 8444 }],
    ['a-1.b2.test:80', { host: 'a-1.b2.test', port: 80 }],
  ])('accepts %s', (text, want) => {
    expect(viaProblem(text)).toBeUndefined();
    expect(parseVia(text)).toEqual(want);
  });

  it.each([
    ['', 'no :PORT'],
    ['198.18.2.1', 'no :PORT'],
    [':8444', 'no host'],
    ['198.18.2.1:', 'port ""'],
    ['198.18.2.1:0', 'port "0"'],
    ['198.18.2.1:65536', 'port "65536"'],
    ['198.18.2.1:08x', 'port "08x"'],
    ['198.18.2.1:123456', 'port "123456"'],
    ['198.18.2.256:8444', 'not an IPv4 address'],
    ['198.18.2:8444', 'not an IPv4 address'],
    ['2001:db8::1:8444', 'goes in brackets'],
    ['[2001:db8::1]', 'followed by :PORT'],
    ['[198.18.2.1]:8444', 'not an IPv6 address'],
    ['[fe80::1%eth0]:8444', 'zone'],
    ['-ops.test:8444', 'not an IPv4 address or a DNS name'],
    ['ops_c.test:8444', 'not an IPv4 address or a DNS name'],
    ['ops..test:8444', 'not an IPv4 address or a DNS name'],
    ['ops.test.:8444', 'not an IPv4 address or a DNS name'],
    ['https://ops.test:8444', 'not a URL'],
    ['ops.test:8444/path', 'not a URL'],
    ['host.123:8444', 'does not end in a number'],
    [`${'a'.repeat(64)}.test:8444`, 'not an IPv4 address or a DNS name'],
    [`${'a'.repeat(300)}:1`, 'too long'],
  ])('refuses %j (%s)', (text, reason) => {
    const p = viaProblem(text);
    expect(p).toContain(reason);
    expect(p).toContain('expected HOST:PORT');
    expect(() => parseVia(text)).toThrow(expect.objectContaining({ code: 'MVPN_CONFIG_INVALID' }));
  });

  it('labels a relayed source for status', () => {
    expect(viaLabel('https://198.18.0.1:8443/v1/membership', '198.18.2.1:8444')).toBe('https://198.18.0.1:8443/v1/membership via 198.18.2.1:8444');
    expect(viaLabel('https://198.18.0.1:8443/v1/membership', undefined)).toBe('https://198.18.0.1:8443/v1/membership');
  });
});
