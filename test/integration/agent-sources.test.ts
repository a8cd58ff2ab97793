/**
 * Discovery against real HTTPS servers on port 0 (pinned CA, mTLS), real
 * files, real timeouts and byte caps. Documents here are opaque bytes; the
 * accept callback stands in for signature verification (tested in
 * agent-e2e with real signed documents).
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FetchLimits, SourceConfig } from '../../src/agent/config.ts';
import { bundleRoot, discover, fetchBundleBytes, HttpFetcher, originOf, readFileCapped, resolveBundleUrl, type SourceDeps } from '../../src/agent/sources.ts';
import { sh } from '../helpers/netns.ts';
import { DocumentError, MvpnError } from '../../src/errors.ts';
import { makeTestPki, type TestPki } from '../helpers/pki-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

const limits: FetchLimits = { requestTimeoutMs: 500, deadlineMs: 20_000, maxMembershipBytes: 4096, maxBundleBytes: 64 * 1024, retries: 2 };

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

async function httpsServer(pki: TestPki, handler: Handler, opts: { requireClientCert?: boolean } = {}): Promise<{ url: string; server: Server; hits: () => number }> {
  let hits = 0;
  const server = createServer(
    {
      cert: pki.server.certPem,
      key: pki.server.keyPem,
      ca: pki.ca.certPem,
      requestCert: opts.requireClientCert ?? false,
      rejectUnauthorized: opts.requireClientCert ?? false,
    },
    (req, res) => {
      hits++;
      handler(req, res);
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `https://127.0.0.1:${port}/`, server, hits: () => hits };
}

const close = (s: Server) =>
  new Promise<void>((r) => {
    s.closeAllConnections();
    s.close(() => r());
  });

/** Records backoff sleeps instead of waiting them out; the retry logic still runs for real. */
function fastDeps(): Partial<SourceDeps> & { slept: number[] } {
  const slept: number[] = [];
  return { slept, random: () => 0.5, sleep: async (ms) => void slept.push(ms) };
}

const acceptAll = { etagFor: () => undefined, accept: (b: Buffer) => b.toString(), reuse: () => 'reused' };

describe('agent discovery sources', () => {
  let pki: TestPki;
  let otherPki: TestPki;
  let dir: { path: string; remove: () => Promise<void> };
  const servers: Server[] = [];

  beforeAll(async () => {
    pki = await makeTestPki({ clients: ['pc1'], serverIpAddresses: ['127.0.0.1'] });
    otherPki = await makeTestPki({ clients: ['pc1'], serverIpAddresses: ['127.0.0.1'] });
    dir = await tmpDir('src');
  });
  afterAll(async () => {
    for (const s of servers) await close(s);
    await dir.remove();
  });

  async function serve(handler: Handler, opts: { requireClientCert?: boolean } = {}) {
    const s = await httpsServer(pki, handler, opts);
    servers.push(s.server);
    return s;
  }

  it('tries sources in order: a missing file and a bad document are skipped with reasons, the next good one wins', async () => {
    const bad = await serve((_q, r) => r.end('tampered'));
    const good = await serve((req, r) => {
      expect(req.url).toBe('/v1/membership');
      r.setHeader('etag', '"v7"');
      r.end('good');
    });
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    try {
      const sources: SourceConfig[] = [
        { type: 'file', path: join(dir.path, 'missing.json') },
        { type: 'https', url: bad.url },
        { type: 'https', url: good.url },
      ];
      const got = await discover(
        { sources, limits, http },
        {
          ...acceptAll,
          accept: (b) => {
            if (b.toString() !== 'good') throw new DocumentError('MVPN_SIGNATURE_INVALID', 'signature does not verify');
            return 'accepted';
          },
        },
        fastDeps(),
      );
      expect(got.value).toBe('accepted');
      expect(got.etag).toBe('"v7"');
      expect(got.origin.label).toBe(`${good.url}v1/membership`);
      expect(got.attempts.map((a) => [a.ok, a.code])).toEqual([
        [false, 'MVPN_FETCH_FAILED'],
        [false, 'MVPN_SIGNATURE_INVALID'],
        [true, undefined],
      ]);
      expect(bad.hits()).toBe(1); // a bad document is not retried
    } finally {
      await http.close();
    }
  });

  it('sends If-None-Match and reuses the stored document on 304', async () => {
    const s = await serve((req, r) => {
      if (req.headers['if-none-match'] === '"v7"') {
        r.statusCode = 304;
        return r.end();
      }
      r.setHeader('etag', '"v7"');
      r.end('doc');
    });
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    try {
      const sources: SourceConfig[] = [{ type: 'https', url: s.url }];
      const got = await discover({ sources, limits, http }, { ...acceptAll, etagFor: (o) => (o.label.startsWith(s.url) ? '"v7"' : undefined) });
      expect(got).toMatchObject({ value: 'reused', notModified: true });
    } finally {
      await http.close();
    }
  });

  it('retries 503 with exponential backoff and jitter, then succeeds', async () => {
    let n = 0;
    const s = await serve((_q, r) => {
      if (++n <= 2) {
        r.statusCode = 503;
        return r.end('{"error":{"code":"MVPN_STORE_ERROR","message":"busy"}}');
      }
      r.end('ok');
    });
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    const deps = fastDeps();
    try {
      const got = await discover({ sources: [{ type: 'https', url: s.url }], limits, http }, acceptAll, deps);
      expect(got.value).toBe('ok');
      expect(s.hits()).toBe(3);
      // attempt 0 and 1 of the policy {1s, x2, full jitter} with random 0.5
      expect(deps.slept).toEqual([500, 1000]);
    } finally {
      await http.close();
    }
  });

  it('does not retry a 404 and reports the server error code', async () => {
    const s = await serve((_q, r) => {
      r.statusCode = 404;
      r.end('{"error":{"code":"MVPN_NOT_FOUND","message":"no such node"}}');
    });
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    try {
      const err = await discover({ sources: [{ type: 'https', url: s.url }], limits, http }, acceptAll, fastDeps()).catch((e: MvpnError) => e);
      expect(err).toMatchObject({ code: 'MVPN_SOURCES_UNREACHABLE' });
      expect((err as MvpnError).message).toContain('HTTP 404: MVPN_NOT_FOUND: no such node');
      expect(s.hits()).toBe(1);
    } finally {
      await http.close();
    }
  });

  it('times out a server that never answers, retries, and gives up within the deadline', async () => {
    const s = await serve(() => undefined); // accepts, never responds
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    const deps = fastDeps();
    try {
      const started = Date.now();
      const err = (await discover({ sources: [{ type: 'https', url: s.url }], limits, http }, acceptAll, deps).catch((e: unknown) => e)) as MvpnError;
      expect(err.code).toBe('MVPN_SOURCES_UNREACHABLE');
      expect(err.message).toContain('timed out');
      expect(s.hits()).toBe(1 + limits.retries);
      expect(Date.now() - started).toBeLessThan(limits.deadlineMs); // generous: catches a hang only
    } finally {
      await http.close();
    }
  });

  it('stops at the overall deadline even with retries left', async () => {
    const s = await serve(() => undefined);
    const http = new HttpFetcher({ ca: pki.ca.certPem }, { ...limits, requestTimeoutMs: 60_000 });
    try {
      const err = (await discover(
        { sources: [{ type: 'https', url: s.url }, { type: 'file', path: join(dir.path, 'never-read') }], limits: { ...limits, deadlineMs: 700 }, http },
        acceptAll,
      ).catch((e: unknown) => e)) as MvpnError;
      expect(err.code).toBe('MVPN_SOURCES_UNREACHABLE');
      const attempts = err.context['attempts'] as { code: string; message: string }[];
      expect(attempts.map((a) => a.code)).toEqual(['MVPN_FETCH_TIMEOUT', 'MVPN_FETCH_TIMEOUT']);
      expect(attempts[1]!.message).toContain('deadline');
    } finally {
      await http.close();
    }
  });

  it('caps the bytes read, with and without Content-Length', async () => {
    const big = Buffer.alloc(limits.maxMembershipBytes + 1, 0x61);
    const announced = await serve((_q, r) => r.end(big));
    const chunked = await serve((_q, r) => {
      r.write(big.subarray(0, 3000));
      r.end(big.subarray(3000));
    });
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    try {
      for (const s of [announced, chunked]) {
        const err = (await discover({ sources: [{ type: 'https', url: s.url }], limits, http }, acceptAll, fastDeps()).catch((e: unknown) => e)) as MvpnError;
        const attempts = err.context['attempts'] as { code: string }[];
        expect(attempts[0]!.code).toBe('MVPN_FETCH_TOO_LARGE');
        expect(s.hits()).toBe(1);
      }
      await writeFile(join(dir.path, 'big.json'), big);
      const err = (await discover({ sources: [{ type: 'file', path: join(dir.path, 'big.json') }], limits, http }, acceptAll).catch((e: unknown) => e)) as MvpnError;
      expect((err.context['attempts'] as { code: string }[])[0]!.code).toBe('MVPN_FETCH_TOO_LARGE');
    } finally {
      await http.close();
    }
  });

  it('pins the server CA and presents the identity certificate (mTLS)', async () => {
    const s = await serve(
      (req, r) => {
        const cn = (req.socket as import('node:tls').TLSSocket).getPeerCertificate().subject?.CN;
        r.end(`hello ${cn}`);
      },
      { requireClientCert: true },
    );
    const sources: SourceConfig[] = [{ type: 'https', url: s.url }];
    const client = pki.clients['pc1']!;
    const enrolled = new HttpFetcher({ ca: pki.ca.certPem, cert: client.certPem, key: client.keyPem }, limits);
    const anonymous = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    const wrongPin = new HttpFetcher({ ca: otherPki.ca.certPem, cert: client.certPem, key: client.keyPem }, limits);
    try {
      expect((await discover({ sources, limits, http: enrolled }, acceptAll)).value).toBe('hello pc1');
      await expect(discover({ sources, limits: { ...limits, retries: 0 }, http: anonymous }, acceptAll)).rejects.toMatchObject({
        code: 'MVPN_SOURCES_UNREACHABLE',
      });
      const err = (await discover({ sources, limits: { ...limits, retries: 0 }, http: wrongPin }, acceptAll).catch((e: unknown) => e)) as MvpnError;
      expect(err.message).toMatch(/certificate/i);
    } finally {
      await Promise.all([enrolled.close(), anonymous.close(), wrongPin.close()]);
    }
  });

  it('fetches a bundle capped at the size the membership gave', async () => {
    const body = Buffer.alloc(1000, 1);
    const s = await serve((req, r) => {
      expect(req.url).toBe('/v1/bundles/net1/3');
      r.end(body);
    });
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    try {
      const origin = originOf({ type: 'https', url: s.url });
      const url = resolveBundleUrl('bundles/net1/3', origin);
      const signal = AbortSignal.timeout(10_000);
      expect(await fetchBundleBytes(url, { size: 1000 }, { http, limits, signal })).toEqual(body);
      await expect(fetchBundleBytes(url, { size: 999 }, { http, limits, signal })).rejects.toMatchObject({ code: 'MVPN_FETCH_TOO_LARGE' });
      await expect(fetchBundleBytes(url, { size: limits.maxBundleBytes + 1 }, { http, limits, signal })).rejects.toMatchObject({
        code: 'MVPN_FETCH_TOO_LARGE',
      });
    } finally {
      await http.close();
    }
  });
});

describe('bundle URL resolution', () => {
  const https = originOf({ type: 'https', url: 'https://metavpn.example.test:8443/' });
  const relay = originOf({ type: 'https', url: 'https://boss.example.test/mvpn/pc1.json' });
  const file = originOf({ type: 'file', path: '/var/tmp/mvpn/membership.json' });
  it.each([
    [https, '/v1/bundles/a/1', 'https://metavpn.example.test:8443/v1/bundles/a/1'],
    [https, 'bundles/a/1', 'https://metavpn.example.test:8443/v1/bundles/a/1'],
    [relay, 'a-1.tar.gz', 'https://boss.example.test/mvpn/a-1.tar.gz'],
    [file, 'a-1.tar.gz', 'file:///var/tmp/mvpn/a-1.tar.gz'],
    [file, 'https://metavpn.example.test/v1/bundles/a/1', 'https://metavpn.example.test/v1/bundles/a/1'],
  ])('%#: %s', (origin, ref, want) => expect(resolveBundleUrl(ref, origin).href).toBe(want));

  it('refuses file: or http: URLs in a document that came over https', () => {
    expect(() => resolveBundleUrl('file:///etc/shadow', https)).toThrow(/not allowed/);
    expect(() => resolveBundleUrl('http://metavpn.example.test/x', https)).toThrow(/not allowed/);
  });

  it.each([
    'file:///etc/shadow',
    'FILE:/etc/shadow',
    '/etc/shadow',
    '//host/etc/shadow',
    '../secret',
    'sub/../../secret',
    '%2e%2e/secret',
    'sub/%2E%2E/%2e%2e/secret',
    '..\\secret',
    'a.tar.gz?x=1',
  ])('a file document may not name %j as a bundle (MVPN_BUNDLE_URL_INVALID)', (ref) => {
    expect(() => resolveBundleUrl(ref, file)).toThrow(expect.objectContaining({ code: 'MVPN_BUNDLE_URL_INVALID' }));
  });
});

describe('local file reads (file sources)', () => {
  let dir: { path: string; remove: () => Promise<void> };
  const limits2: FetchLimits = { requestTimeoutMs: 500, deadlineMs: 5_000, maxMembershipBytes: 4096, maxBundleBytes: 64 * 1024, retries: 0 };
  const http = { get: () => Promise.reject(new Error('no https here')) };
  beforeAll(async () => {
    dir = await tmpDir('src-file');
    await mkdir(join(dir.path, 'pub', 'sub'), { recursive: true });
    await writeFile(join(dir.path, 'pub', 'b.tar.gz'), Buffer.alloc(100, 7));
    await writeFile(join(dir.path, 'pub', 'sub', 'c.tar.gz'), Buffer.alloc(100, 8));
    await writeFile(join(dir.path, 'secret'), 'root:$6$hash:19000:0:99999:7:::\n');
    await symlink(join(dir.path, 'secret'), join(dir.path, 'pub', 'link'));
    await symlink(dir.path, join(dir.path, 'pub', 'up'));
    await sh('mkfifo', [join(dir.path, 'pub', 'fifo')]);
    await sh('mknod', [join(dir.path, 'pub', 'zero'), 'c', '1', '5']);
  });
  afterAll(() => dir.remove());

  const bundle = (ref: string, size = 100) => {
    const origin = originOf({ type: 'file', path: join(dir.path, 'pub', 'membership.json') });
    const root = bundleRoot(origin);
    return fetchBundleBytes(resolveBundleUrl(ref, origin), { size }, { http, limits: limits2, signal: AbortSignal.timeout(10_000), ...(root ? { root } : {}) });
  };

  it('reads a bundle in the document\'s directory or below it', async () => {
    expect(await bundle('b.tar.gz')).toEqual(Buffer.alloc(100, 7));
    expect(await bundle('sub/c.tar.gz')).toEqual(Buffer.alloc(100, 8));
  });

  it.each([
    ['a FIFO', 'fifo', 'MVPN_FETCH_FAILED', /is a FIFO/],
    ['a character device (/dev/zero made with mknod)', 'zero', 'MVPN_FETCH_FAILED', /is a character device/],
    ['a symlink to a file outside', 'link', 'MVPN_FETCH_FAILED', /symbolic link/],
    ['a file reached through a symlinked directory', 'up/secret', 'MVPN_BUNDLE_URL_INVALID', /symbolic link out/],
    ['a directory', 'sub', 'MVPN_FETCH_FAILED', /is a directory/],
  ])('refuses %s at once, without its size or content', async (_what, ref, code, msg) => {
    const err = (await bundle(ref).catch((e: unknown) => e)) as MvpnError;
    expect(err).toBeInstanceOf(MvpnError);
    expect(err.code).toBe(code);
    expect(err.message).toMatch(msg);
    expect(err.message).not.toMatch(/\b(33|[0-9a-f]{64})\b/); // the secret's size, or any hash
  });

  it('a file larger than the signed size is refused before it is read', async () => {
    const err = (await bundle('b.tar.gz', 99).catch((e: unknown) => e)) as MvpnError;
    expect(err.code).toBe('MVPN_FETCH_TOO_LARGE');
    expect(err.message).not.toContain('100');
  });

  it('a bundle URL naming a local file is refused for a document that did not come from a file', async () => {
    const url = new URL(`file://${join(dir.path, 'pub', 'b.tar.gz')}`);
    await expect(fetchBundleBytes(url, { size: 100 }, { http, limits: limits2, signal: AbortSignal.timeout(10_000) })).rejects.toMatchObject({
      code: 'MVPN_BUNDLE_URL_INVALID',
    });
  });

  it('a membership file source that is a FIFO is refused at once, not waited on', async () => {
    const err = (await discover({ sources: [{ type: 'file', path: join(dir.path, 'pub', 'fifo') }], limits: limits2, http }, acceptAll).catch(
      (e: unknown) => e,
    )) as MvpnError;
    expect((err.context['attempts'] as { code: string; message: string }[])[0]).toMatchObject({ code: 'MVPN_FETCH_FAILED', message: expect.stringContaining('FIFO') });
  });

  it('an aborted reconcile (deadline, shutdown) abandons the read with MVPN_FETCH_TIMEOUT', async () => {
    const ac = new AbortController();
    ac.abort(new MvpnError('MVPN_FETCH_TIMEOUT', 'the agent is stopping'));
    await expect(readFileCapped(join(dir.path, 'pub', 'b.tar.gz'), 100, { signal: ac.signal })).rejects.toMatchObject({
      code: 'MVPN_FETCH_TIMEOUT',
      message: expect.stringContaining('the agent is stopping'),
    });
  });
});

describe('discovery reports a refused document by its own code', () => {
  let dir: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    dir = await tmpDir('src-codes');
    await writeFile(join(dir.path, 'doc.json'), 'forged');
  });
  afterAll(() => dir.remove());
  const http = { get: () => Promise.reject(new Error('unused')) };

  it.each(['MVPN_SIGNATURE_INVALID', 'MVPN_MEMBERSHIP_ROLLBACK', 'MVPN_MEMBERSHIP_EQUIVOCATION', 'MVPN_MEMBERSHIP_EXPIRED', 'MVPN_MEMBERSHIP_WRONG_NODE'] as const)(
    '%s, not MVPN_SOURCES_UNREACHABLE, also when another source is down',
    async (code) => {
      const sources: SourceConfig[] = [
        { type: 'file', path: join(dir.path, 'missing.json') },
        { type: 'file', path: join(dir.path, 'doc.json') },
      ];
      const err = (await discover(
        { sources, limits, http },
        {
          ...acceptAll,
          accept: () => {
            throw new DocumentError(code, 'refused');
          },
        },
      ).catch((e: unknown) => e)) as MvpnError;
      expect(err.code).toBe(code);
      expect(err.message).toContain('missing.json');
    },
  );

  it('an oversize document is MVPN_FETCH_TOO_LARGE; only sources that never answered make MVPN_SOURCES_UNREACHABLE', async () => {
    await writeFile(join(dir.path, 'big.json'), Buffer.alloc(limits.maxMembershipBytes + 1));
    const big = await discover({ sources: [{ type: 'file', path: join(dir.path, 'big.json') }], limits, http }, acceptAll).catch((e: MvpnError) => e);
    expect(big).toMatchObject({ code: 'MVPN_FETCH_TOO_LARGE' });
    const none = await discover({ sources: [{ type: 'file', path: join(dir.path, 'missing.json') }], limits, http }, acceptAll).catch((e: MvpnError) => e);
    expect(none).toMatchObject({ code: 'MVPN_SOURCES_UNREACHABLE' });
  });
});
