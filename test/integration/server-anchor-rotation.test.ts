/**
 * The server side of trust-anchor rotation: `server anchor rotate` against
 * a running daemon (real HTTPS API, mTLS), the chain served without a client
 * certificate, documents and bundles re-signed with the new key only, the
 * chain written beside offline exports, and a rotation that crashed between
 * writing the chain and installing the key finished at the next start.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildRotation, followChain, initialTrust, parseChain, serializeChain, type TrustState } from '../../src/bundle/anchor-chain.ts';
import { verifyMembership } from '../../src/bundle/membership.ts';
import { anchorToString, generateSigningKey, parseAnchor, signingKeyFromPem, signingKeyToPem } from '../../src/bundle/sign.ts';
import { extractBundle } from '../../src/bundle/extract.ts';
import { BUNDLE_FILES, MANIFEST_FILE, MANIFEST_SIG_FILE } from '../../src/bundle/schema.ts';
import { verifyBundle } from '../../src/bundle/verify.ts';
import { toMvpnError } from '../../src/errors.ts';
import { memoryLogger } from '../../src/log.ts';
import { ServerDaemon } from '../../src/server/daemon.ts';
import type { ServerEvent } from '../../src/server/events.ts';
import { enroll, https, makeServer, type Enrolled, type TestServer } from '../helpers/server-fixtures.ts';
import { waitFor } from '../helpers/netns.ts';

/** Bundle URLs in a document resolve against the document's own URL. */
const pathOf = (url: string): string => new URL(url, 'https://api.invalid/v1/membership').pathname;

interface Doc {
  serial: number;
  networks: { id: string; bundle: { version: number; sha256: string; size: number; url: string } }[];
}

describe('server anchor rotate', () => {
  let s: TestServer;
  let daemon: ServerDaemon | undefined;
  let caPem: string;
  let pc1: Enrolled;
  const logger = memoryLogger<ServerEvent>();
  const start = async () => {
    daemon = await ServerDaemon.start({ stateDir: s.stateDir, logger, pollMs: 100, periodicMs: 300 });
    return daemon.port;
  };
  const stopDaemon = async (): Promise<void> => {
    await daemon?.stop();
    daemon = undefined;
  };
  const chainOf = async (port: number) => {
    // No client certificate: a node whose identity lapsed can still follow a rotation.
    const r = await https(port, '/v1/anchor-chain.json', { ca: caPem });
    expect(r.status).toBe(200);
    return parseChain(r.body);
  };

  beforeAll(async () => {
    s = await makeServer({ label: 'anchor' });
    await s.run(['network', 'create', 'lab', '--remote', '198.18.0.1']);
    await s.run(['node', 'add', 'pc1', '--network', 'lab']);
    caPem = await readFile(join(s.stateDir, 'api', 'ca.crt'), 'utf8');
  });

  afterAll(async () => {
    await stopDaemon();
    await s?.remove();
  });

  it('re-signs every document and bundle with the new key and serves the chain that leads to it', async () => {
    const port = await start();
    const { token } = await s.json<{ token: string }>(['node', 'token', 'pc1']);
    pc1 = (await enroll(port, caPem, 'pc1', token)).enrolled!;
    const k1 = parseAnchor((await readFile(join(s.stateDir, 'trust-anchor'), 'utf8')).trim());
    expect(await chainOf(port)).toEqual([]);
    const before = verifyMembership((await https(port, '/v1/membership', pc1.tls)).body, { anchor: k1, nodeId: 'pc1', now: new Date() });
    const entry = (before.doc as Doc).networks[0]!.bundle;
    const oldBundle = (await https(port, pathOf(entry.url), pc1.tls)).body;

    const r = await s.json<{ trust_anchor: string; key_id: string; version: number; serial_floor: number; nodes: number }>(['anchor', 'rotate']);
    expect(r).toMatchObject({ version: 2, nodes: 1 });
    expect((await stat(join(s.stateDir, 'signing.key'))).mode & 0o777).toBe(0o600);
    expect((await s.json<{ trust_anchor: string }>(['anchor'])).trust_anchor).toBe(r.trust_anchor);

    const trust: TrustState = followChain(initialTrust(k1), await chainOf(port));
    expect(trust.anchor.keyId).toBe(r.key_id);
    expect(trust.serialFloor).toBe(r.serial_floor);
    // The daemon picks the key up at its next poll; from then on only the new key signs.
    let doc: Doc | undefined;
    expect(
      await waitFor(async () => {
        try {
          doc = verifyMembership((await https(port, '/v1/membership', pc1.tls)).body, { anchor: trust.anchor, nodeId: 'pc1', floor: trust.serialFloor, now: new Date() }).doc as Doc;
          return true;
        } catch {
          return false;
        }
      }, 20_000, 100),
    ).toBe(true);
    expect(doc!.serial).toBeGreaterThan(r.serial_floor);
    expect(logger.events.some((e) => e.kind === 'server.anchor-rotated' && e.to === r.key_id)).toBe(true);

    // Same bundle version, re-signed: only manifest.sig differs, so agents swap it without a restart.
    const b = doc!.networks[0]!.bundle;
    expect(b.version).toBe(entry.version);
    expect(b.sha256).not.toBe(entry.sha256);
    const newBundle = (await https(port, pathOf(b.url), pc1.tls)).body;
    await verifyBundle(newBundle, { anchor: trust.anchor, nodeId: 'pc1', now: new Date(), expect: { network: 'lab', version: b.version, sha256: b.sha256, size: b.size }, nodeKeyPem: pc1.keyPair.privateKeyPem });
    const names = new Set<string>([MANIFEST_FILE, MANIFEST_SIG_FILE, ...BUNDLE_FILES]);
    const oldFiles = extractBundle(oldBundle, names);
    const newFiles = extractBundle(newBundle, names);
    for (const [name, data] of newFiles) if (name !== 'manifest.sig') expect(data.equals(oldFiles.get(name)!), name).toBe(true);
    // The copy signed by the retired key is refused with its own code.
    const oldErr = await verifyBundle(oldBundle, { anchor: trust.anchor, nodeId: 'pc1', now: new Date(), nodeKeyPem: pc1.keyPair.privateKeyPem }).catch((e: unknown) => toMvpnError(e));
    expect(oldErr).toMatchObject({ code: 'MVPN_ANCHOR_RETIRED' });
  });

  it('writes the chain beside an offline export', async () => {
    await s.run(['node', 'add', 'pc2', '--network', 'lab']);
    await s.run(['export', 'pc2', '--network', 'lab', '--out', join(s.dir, 'pc2.tar.gz')]);
    const chain = parseChain(await readFile(join(s.dir, 'anchor-chain.json')));
    expect(chain).toHaveLength(1);
  });

  it('finishes a rotation that crashed after writing the chain, and drops a next key no statement names', async () => {
    await stopDaemon();
    const paths = { key: join(s.stateDir, 'signing.key'), next: join(s.stateDir, 'signing.key.next'), chain: join(s.stateDir, 'anchor-chain.json') };
    const current = signingKeyFromPem(await readFile(paths.key, 'utf8'));
    const chain = parseChain(await readFile(paths.chain));
    // Crash after step 3: the chain names k3, which sits in signing.key.next only.
    const k3 = generateSigningKey();
    await writeFile(paths.next, signingKeyToPem(k3), { mode: 0o600 });
    await writeFile(paths.chain, serializeChain([...chain, buildRotation({ version: 3, previous: current, next: k3, serialFloor: 1, issuedAt: new Date() })]));
    const port = await start();
    expect(signingKeyFromPem(await readFile(paths.key, 'utf8')).keyId).toBe(k3.keyId);
    expect((await readFile(join(s.stateDir, 'trust-anchor'), 'utf8')).trim()).toBe(anchorToString(k3));
    await expect(stat(paths.next)).rejects.toMatchObject({ code: 'ENOENT' });
    const trust = followChain(initialTrust(parseAnchor(anchorToString(current))), await chainOf(port));
    expect(verifyMembership((await https(port, '/v1/membership', pc1.tls)).body, { anchor: trust.anchor, nodeId: 'pc1', now: new Date() }).doc.node).toBe('pc1');

    // Crash before step 3: a next key without a statement never becomes the signing key.
    await stopDaemon();
    await writeFile(paths.next, signingKeyToPem(generateSigningKey()), { mode: 0o600 });
    await start();
    expect(signingKeyFromPem(await readFile(paths.key, 'utf8')).keyId).toBe(k3.keyId);
    await expect(stat(paths.next)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
