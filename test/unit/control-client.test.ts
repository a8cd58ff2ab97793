/**
 * The CLI's HTTP/1.0 exchange (src/agent/control-client.ts) against replies
 * the daemon's node:http server cannot be made to send: cut off, not HTTP,
 * chunked. A plain unix socket server plays the daemon; the well-formed
 * path is covered against the real daemon in agent-control-api.test.ts.
 */
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { daemonRequest } from '../../src/agent/control-client.ts';
import { STATUS_SOCKET } from '../../src/agent/control-api.ts';
import { tmpDir } from '../helpers/tmp.ts';

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

/** A server that answers every connection with `reply` once the request's header is in, then closes. */
async function replying(reply: string): Promise<{ dir: string; requests: string[] }> {
  const dir = (await tmpDir('control-client')).path;
  const requests: string[] = [];
  server = createServer((s) => {
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) {
        requests.push(got);
        s.end(reply);
      }
    });
  });
  await new Promise<void>((resolve) => server!.listen(join(dir, STATUS_SOCKET), resolve));
  return { dir, requests };
}

const get = (dir: string) => daemonRequest({ runtimeDir: dir, socket: 'status', method: 'GET', path: '/v1/status', action: 'status' });

describe('daemonRequest over a plain socket', () => {
  it('sends one HTTP/1.0 request and reads the JSON body of a 200', async () => {
    const { dir, requests } = await replying('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{"ready":1}\n');
    await expect(get(dir)).resolves.toEqual({ ready: 1 });
    expect(requests).toEqual(['GET /v1/status HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n']);
  });

  it('a reply cut off before its Content-Length, one without an HTTP header and a chunked one are MVPN_INTERNAL, not unreachable', async () => {
    for (const [reply, message] of [
      ['HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"ready"', /cut off \(8 of 100 bytes\)/],
      ['{"ready":1}', /no complete HTTP header/],
      ['SSH-2.0-OpenSSH\r\n\r\n', /does not start with an HTTP status line/],
      ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', /Transfer-Encoding chunked/],
      ['', /was empty/],
    ] as const) {
      const { dir } = await replying(reply);
      await expect(get(dir)).rejects.toMatchObject({ code: 'MVPN_INTERNAL', message: expect.stringMatching(message) as unknown as string });
      await new Promise<void>((resolve) => server!.close(() => resolve()));
      server = undefined;
    }
  });

  it('an error reply carries the daemon\'s code', async () => {
    const body = '{"error":{"code":"MVPN_NETWORK_UNKNOWN","message":"no network x"}}';
    const { dir } = await replying(`HTTP/1.1 404 Not Found\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await expect(get(dir)).rejects.toMatchObject({ code: 'MVPN_NETWORK_UNKNOWN', message: 'status: no network x' });
  });
});
