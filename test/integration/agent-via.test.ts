/**
 * `via` (a plain TCP relay in front of the server API, like curl
 * --connect-to) against real parts: real HTTPS servers and a real server
 * daemon on 127.0.0.1, a real TCP forwarder started here, and URLs naming
 * 198.18.0.1 — which the suite makes unreachable from the host namespace,
 * so anything that works here went through the relay. The relay only moves
 * bytes; TLS (pinned CA, identity of the URL host, client certificate) is
 * end to end, and these tests check it stays exactly as strict.
 */
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect as tcpConnect, createServer as createTcpServer, type AddressInfo, type Server as TcpServer, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyMembership } from '../../src/bundle/membership.ts';
import { parseAnchor } from '../../src/bundle/sign.ts';
import type { FetchLimits, SourceConfig } from '../../src/agent/config.ts';
import { enroll } from '../../src/agent/enroll.ts';
import { discover, fetchBundleBytes, HttpFetcher, originOf, resolveBundleUrl, viaFor } from '../../src/agent/sources.ts';
import { MvpnError } from '../../src/errors.ts';
import { issueCert } from '../../src/pki/cert.ts';
import { generateKeyPairPem } from '../../src/pki/keys.ts';
import { memoryLogger } from '../../src/log.ts';
import { ServerDaemon } from '../../src/server/daemon.ts';
import type { ServerEvent } from '../../src/server/events.ts';
import { cli, makeServer, type TestServer } from '../helpers/server-fixtures.ts';
import { makeTestPki, type TestPki } from '../helpers/pki-fixtures.ts';
import { sh } from '../helpers/netns.ts';
import { tmpDir } from '../helpers/tmp.ts';

/** The hub's public address in the federation picture; unreachable from the host namespace during tests. */
const HUB = '198.18.0.1';
const HUB_NAME = 'hub.example.test';

/**
 * The "without via" cases need HUB unroutable from the host namespace (the
 * suite's guard route, test/helpers/global-setup.ts); say so plainly when it
 * is not there, instead of a connect timeout that reads like a product bug.
 */
async function expectHubUnroutable(): Promise<void> {
  const r = await sh('ip', ['route', 'get', HUB], { allowFail: true });
  expect(r.code, `${HUB} is routable from the host namespace (${r.stdout.trim()}): the guard route for 198.18.0.0/15 is missing`).not.toBe(0);
}

const limits: FetchLimits = { requestTimeoutMs: 5_000, deadlineMs: 20_000, maxMembershipBytes: 4096, maxBundleBytes: 64 * 1024, retries: 0 };
const acceptAll = { etagFor: () => undefined, accept: (b: Buffer) => b.toString(), reuse: () => 'reused' };

interface Forwarder {
  readonly via: string;
  /** TCP connections the forwarder accepted. */
  connections(): number;
  close(): Promise<void>;
}

/** A plain TCP relay on 127.0.0.1:0 to `targetPort` on 127.0.0.1: bytes only, no TLS. */
async function startForwarder(targetPort: number): Promise<Forwarder> {
  let n = 0;
  const sockets = new Set<Socket>();
  const server: TcpServer = createTcpServer((inbound) => {
    n++;
    const outbound = tcpConnect(targetPort, '127.0.0.1');
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    via: `127.0.0.1:${port}`,
    connections: () => n,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A port on 127.0.0.1 where nothing listens (bound, then closed). */
async function closedPort(): Promise<number> {
  const s = createTcpServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

interface Seen {
  readonly host: string | string[] | undefined;
  /** SNI the client sent; false when none. */
  readonly servername: string | false | null;
  readonly cn: string | string[] | undefined;
}

async function httpsServer(cert: { certPem: string; keyPem: string }, caPem: string, handler: Handler): Promise<{ port: number; server: Server; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createHttpsServer({ cert: cert.certPem, key: cert.keyPem, ca: caPem, requestCert: true, rejectUnauthorized: false }, (req, res) => {
    const sock = req.socket as TLSSocket;
    seen.push({ host: req.headers.host, servername: sock.servername, cn: sock.getPeerCertificate().subject?.CN });
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, server, seen };
}

const closeHttps = (s: Server) =>
  new Promise<void>((r) => {
    s.closeAllConnections();
    s.close(() => r());
  });

describe('agent sources through a TCP relay (via)', () => {
  let pki: TestPki;
  let otherPki: TestPki;
  /** Same CA as `pki`, but the certificate names only 127.0.0.1 — the relay's address, not the URL host. */
  let relayNamedCert: { certPem: string; keyPem: string };
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    pki = await makeTestPki({ clients: ['pc1'], serverIpAddresses: [HUB], serverDnsNames: [HUB_NAME] });
    otherPki = await makeTestPki({ clients: ['pc1'], serverIpAddresses: [HUB], serverDnsNames: [HUB_NAME] });
    const kp = await generateKeyPairPem('ec-p256');
    const { certPem } = await issueCert({
      ca: pki.ca,
      publicKeyPem: kp.publicKeyPem,
      cn: 'relay',
      usage: 'server',
      notBefore: pki.notBefore,
      notAfter: pki.notAfter,
      ipAddresses: ['127.0.0.1'],
      dnsNames: ['localhost'],
    });
    relayNamedCert = { certPem, keyPem: kp.privateKeyPem };
  });
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  async function serve(cert: { certPem: string; keyPem: string }, handler: Handler = (_q, r) => r.end('doc')) {
    const s = await httpsServer(cert, pki.ca.certPem, handler);
    cleanups.push(() => closeHttps(s.server));
    const fwd = await startForwarder(s.port);
    cleanups.push(() => fwd.close());
    return { ...s, fwd };
  }

  const hubCert = () => ({ certPem: pki.server.certPem, keyPem: pki.server.keyPem });

  it('discovers through the relay with an IP URL: no SNI, identity checked for the URL address, client certificate presented', async () => {
    const s = await serve(hubCert(), (req, r) => {
      expect(req.url).toBe('/v1/membership');
      r.end('through the relay');
    });
    const client = pki.clients['pc1']!;
    const http = new HttpFetcher({ ca: pki.ca.certPem, cert: client.certPem, key: client.keyPem }, limits);
    try {
      const sources: SourceConfig[] = [{ type: 'https', url: `https://${HUB}:${s.port}/`, via: s.fwd.via }];
      const got = await discover({ sources, limits, http }, acceptAll);
      expect(got.value).toBe('through the relay');
      expect(got.origin.label).toBe(`https://${HUB}:${s.port}/v1/membership via ${s.fwd.via}`);
      expect(s.fwd.connections()).toBe(1);
      expect(s.seen).toEqual([{ host: `${HUB}:${s.port}`, servername: false, cn: 'pc1' }]);
    } finally {
      await http.close();
    }
  });

  it('sends the URL name as SNI with a DNS URL, and never resolves that name (it does not exist)', async () => {
    const s = await serve(hubCert(), (_q, r) => r.end('by name'));
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    try {
      const sources: SourceConfig[] = [{ type: 'https', url: `https://${HUB_NAME}:${s.port}/`, via: s.fwd.via }];
      expect((await discover({ sources, limits, http }, acceptAll)).value).toBe('by name');
      expect(s.seen.map((x) => [x.host, x.servername])).toEqual([[`${HUB_NAME}:${s.port}`, HUB_NAME]]);
    } finally {
      await http.close();
    }
  });

  it('without via the URL host is not reachable from here (the relay is what makes it work)', async () => {
    await expectHubUnroutable();
    const s = await serve(hubCert());
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    try {
      const err = (await discover({ sources: [{ type: 'https', url: `https://${HUB}:${s.port}/` }], limits, http }, acceptAll).catch((e: unknown) => e)) as MvpnError;
      expect(err.code).toBe('MVPN_SOURCES_UNREACHABLE');
      expect((err.context['attempts'] as { code: string }[])[0]!.code).toBe('MVPN_FETCH_FAILED');
      expect(err.message).toMatch(/EHOSTUNREACH|ENETUNREACH/);
      expect(s.fwd.connections()).toBe(0);
      expect(s.seen).toEqual([]);
    } finally {
      await http.close();
    }
  });

  it('never falls back to a direct connection when the relay is down', async () => {
    // The URL names a server that is up and directly reachable; the relay port has nothing on it.
    const s = await serve(hubCert());
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    try {
      const via = `127.0.0.1:${await closedPort()}`;
      const err = (await discover({ sources: [{ type: 'https', url: `https://127.0.0.1:${s.port}/`, via }], limits, http }, acceptAll).catch(
        (e: unknown) => e,
      )) as MvpnError;
      expect(err.code).toBe('MVPN_SOURCES_UNREACHABLE');
      expect((err.context['attempts'] as { code: string }[])[0]!.code).toBe('MVPN_FETCH_FAILED');
      expect(err.message).toContain(`ECONNREFUSED ${via}`);
      expect(s.seen).toEqual([]);
    } finally {
      await http.close();
    }
  });

  it('refuses a server whose certificate (from the pinned CA) names the relay but not the URL host: via never weakens verification', async () => {
    const s = await serve(relayNamedCert);
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    try {
      const err = (await discover({ sources: [{ type: 'https', url: `https://${HUB}:${s.port}/`, via: s.fwd.via }], limits, http }, acceptAll).catch(
        (e: unknown) => e,
      )) as MvpnError;
      expect(err.code).toBe('MVPN_SOURCES_UNREACHABLE');
      const attempt = (err.context['attempts'] as { code: string; message: string }[])[0]!;
      expect(attempt.code).toBe('MVPN_FETCH_FAILED');
      expect(attempt.message).toContain('ERR_TLS_CERT_ALTNAME_INVALID');
      expect(s.fwd.connections()).toBe(1); // it did go through the relay, and TLS said no
      expect(s.seen).toEqual([]);

      // Control: the same certificate is fine for a URL that names its address, so the refusal above is the identity check.
      const direct = await discover({ sources: [{ type: 'https', url: `https://127.0.0.1:${s.port}/`, via: s.fwd.via }], limits, http }, acceptAll);
      expect(direct.value).toBe('doc');
    } finally {
      await http.close();
    }
  });

  it('keeps the CA pin: a certificate for the URL host from another CA is refused through the relay', async () => {
    const s = await serve({ certPem: otherPki.server.certPem, keyPem: otherPki.server.keyPem });
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    try {
      const err = (await discover({ sources: [{ type: 'https', url: `https://${HUB}:${s.port}/`, via: s.fwd.via }], limits, http }, acceptAll).catch(
        (e: unknown) => e,
      )) as MvpnError;
      const attempt = (err.context['attempts'] as { code: string; message: string }[])[0]!;
      expect(attempt.code).toBe('MVPN_FETCH_FAILED');
      expect(attempt.message).toMatch(/certificate/i);
      expect(s.seen).toEqual([]);
    } finally {
      await http.close();
    }
  });

  it("fetches the document's bundles through the source's relay, byte cap unchanged", async () => {
    const body = Buffer.alloc(1000, 1);
    const s = await serve(hubCert(), (req, r) => {
      expect(req.url).toBe('/v1/bundles/net1/3');
      r.end(body);
    });
    const http = new HttpFetcher({ ca: pki.ca.certPem }, limits);
    try {
      const origin = originOf({ type: 'https', url: `https://${HUB}:${s.port}/`, via: s.fwd.via });
      const url = resolveBundleUrl('bundles/net1/3', origin);
      const via = viaFor(url, origin);
      expect(via).toBe(s.fwd.via);
      const signal = AbortSignal.timeout(10_000);
      expect(await fetchBundleBytes(url, { size: 1000 }, { http, limits, signal, ...(via ? { via } : {}) })).toEqual(body);
      await expect(fetchBundleBytes(url, { size: 999 }, { http, limits, signal, ...(via ? { via } : {}) })).rejects.toMatchObject({ code: 'MVPN_FETCH_TOO_LARGE' });
      // A bundle on another origin is that server's: it does not take this source's relay.
      expect(viaFor(new URL(`https://${HUB}:${s.port + 1}/x`), origin)).toBeUndefined();
      expect(viaFor(new URL(`https://198.18.0.2:${s.port}/x`), origin)).toBeUndefined();
    } finally {
      await http.close();
    }
  });
});

describe('enrollment through a TCP relay (via), real server API', () => {
  let s: TestServer;
  let daemon: ServerDaemon;
  let caPem: string;
  let fwd: Forwarder;
  let dir: { path: string; remove: () => Promise<void> };
  const logger = memoryLogger<ServerEvent>();
  const token = async (node: string) => (await s.json<{ token: string }>(['node', 'token', node, '--ttl', '1h'])).token;

  beforeAll(async () => {
    // The API certificate names the hub's public address; the listener is on 127.0.0.1.
    s = await makeServer({ label: 'via', address: HUB });
    await s.run(['network', 'create', 'lab', '--remote', HUB]);
    for (const n of ['pc1', 'pc2', 'pc3']) await s.run(['node', 'add', n, '--network', 'lab']);
    daemon = await ServerDaemon.start({ stateDir: s.stateDir, logger, pollMs: 100, periodicMs: 300 });
    caPem = await readFile(join(s.stateDir, 'api', 'ca.crt'), 'utf8');
    fwd = await startForwarder(daemon.port);
    dir = await tmpDir('via-agent');
  });
  afterAll(async () => {
    await fwd?.close();
    await daemon?.stop();
    await s?.remove();
    await dir?.remove();
  });

  it('enrolls through the relay, then gets its signed membership with the new identity through it', async () => {
    const tokenFile = join(dir.path, 'pc1.token');
    await writeFile(tokenFile, (await token('pc1')) + '\n');
    const stateDir = join(dir.path, 'pc1');
    const url = `https://${HUB}:${daemon.port}/`;
    const id = await enroll({ nodeId: 'pc1', url, via: fwd.via, tokenFile, serverCaPem: caPem, stateDir, now: new Date(), timeoutMs: 10_000 });
    expect(fwd.connections()).toBe(1);

    const http = new HttpFetcher({ ca: caPem, cert: id.certPem, key: id.keyPem }, { ...limits, maxMembershipBytes: 64 * 1024 });
    try {
      const anchor = parseAnchor((await readFile(join(s.stateDir, 'trust-anchor'), 'utf8')).trim());
      const got = await discover(
        { sources: [{ type: 'https', url, via: fwd.via }], limits: { ...limits, maxMembershipBytes: 64 * 1024 }, http },
        {
          etagFor: () => undefined,
          accept: (b) => verifyMembership(b, { anchor, nodeId: 'pc1', now: new Date() }).doc,
          reuse: () => {
            throw new Error('no 304 without an etag');
          },
        },
      );
      expect(got.value.node).toBe('pc1');
      expect(got.value.networks.map((n) => n.id)).toEqual(['lab']);
      expect(fwd.connections()).toBe(2);
    } finally {
      await http.close();
    }
  });

  it('`mvpn-client enroll` takes enroll.via from the first https source of the config', async () => {
    const cfgDir = join(dir.path, 'pc3');
    const tokenFile = join(dir.path, 'pc3.token');
    await writeFile(tokenFile, (await token('pc3')) + '\n');
    await writeFile(join(dir.path, 'pc3-ca.pem'), caPem);
    const anchor = (await readFile(join(s.stateDir, 'trust-anchor'), 'utf8')).trim();
    const config = {
      node: { id: 'pc3' },
      sources: [{ type: 'https', url: `https://${HUB}:${daemon.port}/`, via: fwd.via }],
      anchor,
      server_ca: join(dir.path, 'pc3-ca.pem'),
      enroll: { token_file: tokenFile },
      state_dir: cfgDir,
    };
    await writeFile(join(dir.path, 'pc3.json'), JSON.stringify(config));
    const before = fwd.connections();
    const r = await cli(['enroll', '--config', join(dir.path, 'pc3.json')]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('enrolled node pc3');
    expect(fwd.connections()).toBe(before + 1);
  });

  it('without via the same URL cannot be reached, and the token is kept for a retry', async () => {
    await expectHubUnroutable();
    const tokenFile = join(dir.path, 'pc2.token');
    await writeFile(tokenFile, (await token('pc2')) + '\n');
    const before = fwd.connections();
    const err = (await enroll({
      nodeId: 'pc2',
      url: `https://${HUB}:${daemon.port}/`,
      tokenFile,
      serverCaPem: caPem,
      stateDir: join(dir.path, 'pc2'),
      now: new Date(),
      timeoutMs: 5_000,
    }).catch((e: unknown) => e)) as MvpnError;
    expect(err.code).toBe('MVPN_ENROLL_FAILED');
    expect(err.message).toMatch(/EHOSTUNREACH|ENETUNREACH/);
    expect(fwd.connections()).toBe(before);
    expect((await readFile(tokenFile, 'utf8')).trim()).not.toBe('');
  });
});
