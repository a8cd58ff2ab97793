/**
 * The peer's API relay (src/server/federation/relay.ts) on real sockets: a
 * TLS session through it is end to end (the client verifies the target's
 * certificate, the relay sees only bytes), it goes only to its one target,
 * it refuses connections beyond its limit, counts a target that does not
 * answer, and stop() closes what is open.
 */
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiRelay, relayTarget as splitHostPort } from '../../src/server/federation/relay.ts';
import { makeTestPki } from '../helpers/pki-fixtures.ts';
import { waitFor } from '../helpers/netns.ts';

const LOOP = '127.0.0.1';

async function listen(server: Server): Promise<number> {
  server.listen(0, LOOP);
  await once(server, 'listening');
  return (server.address() as { port: number }).port;
}

function echoServer(): Server {
  return createServer((s) => s.pipe(s));
}

async function roundTrip(port: number, data: string): Promise<string> {
  const s = connect(port, LOOP);
  await once(s, 'connect');
  s.write(data);
  let got = '';
  for await (const chunk of s) {
    got += (chunk as Buffer).toString();
    if (got.length >= data.length) break;
  }
  s.destroy();
  return got;
}

describe('API relay', () => {
  const cleanup: (() => Promise<unknown> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  it('carries a TLS session end to end: the client verifies the target\'s certificate through it', async () => {
    const pki = await makeTestPki({ serverCn: 'hub.example', serverDnsNames: ['hub.example'] });
    const tls = createTlsServer({ cert: pki.server.certPem, key: pki.server.keyPem }, (s) => s.end('hello from the hub\n'));
    const target = await listen(tls);
    cleanup.push(() => new Promise((r) => tls.close(r)));
    const relay = new ApiRelay({ host: LOOP, port: 0 }, { host: LOOP, port: target });
    await relay.start();
    cleanup.push(() => relay.stop());

    const sock = tlsConnect({ host: LOOP, port: relay.port, ca: pki.ca.certPem, servername: 'hub.example' });
    await once(sock, 'secureConnect');
    expect(sock.authorized).toBe(true);
    expect(sock.getPeerCertificate().subject.CN).toBe('hub.example');
    let text = '';
    for await (const c of sock) text += (c as Buffer).toString();
    expect(text).toBe('hello from the hub\n');
    expect(relay.stats()).toMatchObject({ accepted: 1, failed: 0, refused: 0 });

    // the relay does not make a wrong certificate right: another name is refused by the client
    const wrong = tlsConnect({ host: LOOP, port: relay.port, ca: pki.ca.certPem, servername: 'other.example' });
    const [err] = (await once(wrong, 'error')) as [NodeJS.ErrnoException];
    expect(err.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
  });

  it('relays bytes both ways, only to its one target; refuses beyond its limit; counts an unreachable target; stop() closes what is open', async () => {
    const echo = echoServer();
    const target = await listen(echo);
    cleanup.push(() => new Promise((r) => echo.close(r)));
    const relay = new ApiRelay({ host: LOOP, port: 0 }, { host: LOOP, port: target }, { maxConnections: 1, connectTimeoutMs: 2_000, idleTimeoutMs: 30_000 });
    await relay.start();
    cleanup.push(() => relay.stop());
    expect(await roundTrip(relay.port, 'ping over the relay')).toBe('ping over the relay');
    expect(await waitFor(async () => relay.stats().connections === 0, 5_000, 20)).toBe(true);

    // one held open; a second is closed at once
    const held: Socket = connect(relay.port, LOOP);
    await once(held, 'connect');
    expect(await waitFor(async () => relay.stats().connections === 1, 5_000, 20)).toBe(true);
    const second = connect(relay.port, LOOP);
    second.on('error', () => undefined);
    await once(second, 'close');
    expect(relay.stats()).toMatchObject({ refused: 1, accepted: 2, connections: 1 });
    expect(held.destroyed).toBe(false);

    // stop() ends the held connection and listens no more
    const closed = once(held, 'close');
    await relay.stop();
    await closed;
    const after = connect(relay.port, LOOP);
    const [e] = (await once(after, 'error')) as [NodeJS.ErrnoException];
    expect(e.code).toBe('ECONNREFUSED');
  });

  it('closes the client and counts a failure when the target does not answer', async () => {
    const gone = echoServer();
    const port = await listen(gone);
    await new Promise((r) => gone.close(r));
    const relay = new ApiRelay({ host: LOOP, port: 0 }, { host: LOOP, port });
    await relay.start();
    cleanup.push(() => relay.stop());
    const c = connect(relay.port, LOOP);
    await once(c, 'close');
    expect(relay.stats()).toMatchObject({ accepted: 1, failed: 1, connections: 0 });
  });

  it('splits HOST:PORT and refuses what is not', () => {
    expect(splitHostPort('198.18.0.1:8443')).toEqual({ host: '198.18.0.1', port: 8443 });
    expect(splitHostPort('[2001:db8::1]:443')).toEqual({ host: '2001:db8::1', port: 443 });
    expect(splitHostPort('hub.example:8443')).toEqual({ host: 'hub.example', port: 8443 });
    for (const bad of ['198.18.0.1', '198.18.0.1:0', 'x:70000', ':80', '2001:db8::1:443']) expect(() => splitHostPort(bad), bad).toThrow(/HOST:PORT/);
  });
});
