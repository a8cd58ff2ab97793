/**
 * The link bundle (src/server/federation/link-bundle.ts) is a signed
 * envelope of type `link`: it opens only with the hub's anchor and only as
 * a link, its payload is parsed strictly (duplicate keys, unknown fields,
 * non-canonical base64 refused), and a bundle made by the previous release
 * (test/fixtures/link/previous-release.json, made by that release's
 * `server link export`) is refused with a message that says to re-export.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, test } from 'vitest';
import { sealEnvelope } from '../../src/bundle/envelope.ts';
import { generateSigningKey, parseAnchor, type Anchor, type SigningKey } from '../../src/bundle/sign.ts';
import { MvpnError } from '../../src/errors.ts';
import { openLink, sealLink, type LinkPayload } from '../../src/server/federation/link-bundle.ts';
import { linkPayload } from '../../src/server/federation/links.ts';
import type { LinkRecord } from '../../src/server/store/store.ts';

const FIXTURES = resolve(import.meta.dirname, '../fixtures/link');
const previous = readFileSync(resolve(FIXTURES, 'previous-release.json'));
const previousAnchor = parseAnchor(readFileSync(resolve(FIXTURES, 'previous-release.anchor'), 'utf8').trim());
/** A real payload: the one inside the previous release's bundle (its format did not change, only the wrapping). */
const payload = JSON.parse(Buffer.from((JSON.parse(previous.toString('utf8')) as { payload: string }).payload, 'base64').toString('utf8')) as LinkPayload;

const anchorOf = (k: SigningKey): Anchor => ({ publicKey: k.publicKey, keyId: k.keyId });

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof MvpnError) return err.code;
    throw err;
  }
  throw new Error('did not throw');
}

describe('link bundle', () => {
  const hub = generateSigningKey();

  test('round-trips through the envelope with the hub anchor', () => {
    const file = sealLink(payload, hub);
    expect(JSON.parse(file.toString('utf8'))).toMatchObject({ format: 'mvpn-signed-v1', type: 'link', key_id: hub.keyId });
    expect(openLink(file, anchorOf(hub))).toEqual(payload);
  });

  test('another anchor, another signed type or a changed payload do not open', () => {
    const file = sealLink(payload, hub);
    expect(codeOf(() => openLink(file, anchorOf(generateSigningKey())))).toBe('MVPN_SIGNATURE_INVALID');
    const membership = sealEnvelope('membership', Buffer.from(JSON.stringify(payload)), hub);
    expect(codeOf(() => openLink(membership, anchorOf(hub)))).toBe('MVPN_SIGNATURE_INVALID');
    const env = JSON.parse(file.toString('utf8')) as { payload: string };
    const changed = { ...env, payload: Buffer.from(JSON.stringify({ ...payload, crl_number: payload.crl_number + 1 })).toString('base64') };
    expect(codeOf(() => openLink(Buffer.from(JSON.stringify(changed)), anchorOf(hub)))).toBe('MVPN_SIGNATURE_INVALID');
  });

  test('a signed payload with a duplicate key or an unknown field is refused', () => {
    const text = JSON.stringify(payload);
    const dup = Buffer.from(`{"crl_number":1,${text.slice(1)}`);
    expect(codeOf(() => openLink(sealEnvelope('link', dup, hub), anchorOf(hub)))).toBe('MVPN_JSON_INVALID');
    const extra = Buffer.from(JSON.stringify({ ...payload, peer: { ...payload.peer, extra: 1 } }));
    expect(() => openLink(sealEnvelope('link', extra, hub), anchorOf(hub))).toThrow(/peer\.extra.*unknown field/);
  });

  test('non-canonical base64 in the envelope is refused', () => {
    const env = JSON.parse(sealLink(payload, hub).toString('utf8')) as { payload: string };
    const junk = Buffer.from(JSON.stringify({ ...env, payload: `${env.payload.slice(0, 8)}!${env.payload.slice(8)}` }));
    expect(codeOf(() => openLink(junk, anchorOf(hub)))).toBe('MVPN_SCHEMA_INVALID');
  });

  test("the previous release's bundle is refused with a message that says to re-export it", () => {
    let err: unknown;
    try {
      openLink(previous, previousAnchor);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MvpnError);
    const e = err as MvpnError;
    expect(e.code).toBe('MVPN_SCHEMA_INVALID');
    expect(e.message).toMatch(/earlier release/);
    expect(e.hint).toMatch(/re-export it at the hub.*server link export/);
  });

  test('a stored link row is parsed with the schema: a bad field is MVPN_SCHEMA_INVALID naming it', () => {
    const row = (data: string): LinkRecord => ({ network: payload.network.id, data, hubAnchor: 'x', syncedAt: 0, createdAt: 0, relayListen: null });
    expect(linkPayload(row(JSON.stringify(payload)))).toEqual(payload);
    const bad = { ...payload, peer: { ...payload.peer, address: 'not-an-address' } };
    let err: unknown;
    try {
      linkPayload(row(JSON.stringify(bad)));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MvpnError);
    expect((err as MvpnError).code).toBe('MVPN_SCHEMA_INVALID');
    expect((err as MvpnError).message).toMatch(new RegExp(`link of network ${payload.network.id} \\(store\\): peer\\.address`));
    expect(codeOf(() => linkPayload(row('{"schema":1,"schema":1}')))).toBe('MVPN_JSON_INVALID');
    expect(codeOf(() => linkPayload(row(JSON.stringify({ ...payload, hub: undefined }))))).toBe('MVPN_SCHEMA_INVALID');
  });
});
