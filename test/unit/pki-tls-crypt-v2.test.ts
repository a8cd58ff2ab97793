/**
 * src/pki/tls-crypt-v2.ts as pure logic: layout, round trips, tamper
 * detection and bounds. Interoperability with the real openvpn is in
 * test/integration/tls-crypt-v2.test.ts.
 */
import { describe, expect, it } from 'vitest';
import {
  checkTlsCryptV2ServerKey,
  generateTlsCryptV2ServerKey,
  parseTlsCryptV2ClientKey,
  TLS_CRYPT_V2_MAX_METADATA_LEN,
  unwrapTlsCryptV2ClientKey,
  wrapTlsCryptV2ClientKey,
} from '../../src/pki/tls-crypt-v2.ts';

const CLIENT_LABEL = 'OpenVPN tls-crypt-v2 client key';

function body(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----(?:BEGIN|END) [^\n]*?-----/g, '').replace(/\s+/g, ''), 'base64');
}
function pem(label: string, bytes: Buffer): string {
  return `-----BEGIN ${label}-----\n${bytes.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
}
function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as { code: string }).code;
  }
  return 'none';
}

describe('tls-crypt-v2 keys', () => {
  it('server key: 128 random bytes in the openvpn PEM armour, 64-column lines', () => {
    const k = generateTlsCryptV2ServerKey();
    expect(k).toMatch(/^-----BEGIN OpenVPN tls-crypt-v2 server key-----\n(?:[A-Za-z0-9+/=]{1,64}\n)+-----END OpenVPN tls-crypt-v2 server key-----\n$/);
    expect(body(k)).toHaveLength(128);
    expect(generateTlsCryptV2ServerKey()).not.toBe(k);
    expect(() => checkTlsCryptV2ServerKey(k)).not.toThrow();
  });

  it.each<[string, Uint8Array | undefined, number]>([
    ['timestamp metadata (default)', undefined, 256 + 32 + 256 + 9 + 2],
    ['empty user metadata', new Uint8Array(), 256 + 32 + 256 + 1 + 2],
    ['user metadata', Buffer.from('network=net1'), 256 + 32 + 256 + 13 + 2],
    ['the largest user metadata', new Uint8Array(TLS_CRYPT_V2_MAX_METADATA_LEN - 1).fill(7), 256 + 1024],
  ])('client key with %s: Kc || WKc of the right size, unwraps to the same Kc and metadata', (_name, metadata, size) => {
    const srv = generateTlsCryptV2ServerKey();
    const now = new Date('2030-05-06T07:08:09Z');
    const cli = wrapTlsCryptV2ClientKey(srv, metadata, { now });
    expect(cli.startsWith(`-----BEGIN ${CLIENT_LABEL}-----\n`)).toBe(true);
    const raw = body(cli);
    expect(raw).toHaveLength(size);
    expect(raw.readUInt16BE(raw.length - 2)).toBe(raw.length - 256); // WKc carries its own length
    const { clientKey, metadata: md } = unwrapTlsCryptV2ClientKey(srv, cli);
    expect(clientKey.equals(raw.subarray(0, 256))).toBe(true);
    expect(md).toEqual(metadata === undefined ? { type: 'timestamp', time: now } : { type: 'user', data: Buffer.from(metadata) });
  });

  it('is deterministic for the same inputs and differs for another server key', () => {
    const srv = generateTlsCryptV2ServerKey();
    const kc = new Uint8Array(256).fill(1);
    const now = new Date('2030-01-01T00:00:00Z');
    const a = wrapTlsCryptV2ClientKey(srv, undefined, { now, clientKey: kc });
    expect(wrapTlsCryptV2ClientKey(srv, undefined, { now, clientKey: kc })).toBe(a);
    expect(wrapTlsCryptV2ClientKey(generateTlsCryptV2ServerKey(), undefined, { now, clientKey: kc })).not.toBe(a);
    // The plaintext key never appears inside the wrapped part.
    expect(body(a).subarray(256).includes(Buffer.from(kc).subarray(0, 16))).toBe(false);
  });

  const srv = generateTlsCryptV2ServerKey();
  const good = wrapTlsCryptV2ClientKey(srv, Buffer.from('x'));
  const flip = (offset: number) => (): string => {
    const raw = body(good);
    const i = offset < 0 ? raw.length + offset : offset;
    raw[i] = raw[i]! ^ 0x01;
    return pem(CLIENT_LABEL, raw);
  };
  it.each<[string, () => string, () => string, string]>([
    ['another server key', () => generateTlsCryptV2ServerKey(), () => good, 'MVPN_KEY_INVALID'],
    ['a flipped bit in the tag', () => srv, flip(256 + 3), 'MVPN_KEY_INVALID'],
    ['a flipped bit in the encrypted key', () => srv, flip(256 + 32 + 10), 'MVPN_KEY_INVALID'],
    ['a flipped bit in the encrypted metadata', () => srv, flip(-3), 'MVPN_KEY_INVALID'],
    ['a wrong length field', () => srv, flip(-1), 'MVPN_KEY_INVALID'],
    ['a Kc that differs from its wrapped copy', () => srv, flip(5), 'MVPN_KEY_INVALID'],
    ['a truncated key', () => srv, () => pem(CLIENT_LABEL, body(good).subarray(0, 200)), 'MVPN_KEY_INVALID'],
    ['a server key given as client key', () => srv, () => srv, 'MVPN_KEY_INVALID'],
    ['a client key given as server key', () => good, () => good, 'MVPN_KEY_INVALID'],
    ['a server key of the wrong size', () => pem('OpenVPN tls-crypt-v2 server key', Buffer.alloc(64)), () => good, 'MVPN_KEY_INVALID'],
    ['garbage', () => srv, () => 'hello', 'MVPN_KEY_INVALID'],
  ])('unwrap refuses %s', (_name, server, client, code) => {
    expect(codeOf(() => unwrapTlsCryptV2ClientKey(server(), client()))).toBe(code);
  });

  it('refuses metadata longer than openvpn allows', () => {
    expect(codeOf(() => wrapTlsCryptV2ClientKey(srv, new Uint8Array(TLS_CRYPT_V2_MAX_METADATA_LEN)))).toBe('MVPN_KEY_INVALID');
  });

  it('parseTlsCryptV2ClientKey splits Kc and WKc', () => {
    const { clientKey, wrapped } = parseTlsCryptV2ClientKey(good);
    expect(clientKey).toHaveLength(256);
    expect(wrapped).toHaveLength(32 + 256 + 2 + 2);
  });
});
