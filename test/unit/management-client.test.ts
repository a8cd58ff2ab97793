/**
 * ManagementClient over a real unix socket against a scripted peer: the
 * failure modes (no answer, ERROR replies, floods, a vanished socket) and the
 * ordering rules. The happy path against real openvpn is in
 * test/integration/management.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { isMvpnError } from '../../src/errors.ts';
import { ManagementClient, type StateInfo } from '../../src/openvpn/management.ts';
import { defaultResponder, startFakeManagement, type FakeManagement } from '../helpers/fake-management.ts';
import { tmpDir } from '../helpers/tmp.ts';

let fake: FakeManagement | undefined;
let client: ManagementClient | undefined;

afterEach(async () => {
  client?.close();
  client = undefined;
  await fake?.close();
  fake = undefined;
});

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    return isMvpnError(e) ? e.code : `not-mvpn: ${String(e)}`;
  }
  return undefined;
}

describe('ManagementClient', () => {
  it('connect to a missing socket fails with MVPN_MGMT_CONNECT_FAILED', async () => {
    const d = await tmpDir('mgmt');
    try {
      expect(await codeOf(ManagementClient.connect(`${d.path}/nothing.sock`, { timeoutMs: 1_000 }))).toBe('MVPN_MGMT_CONNECT_FAILED');
    } finally {
      await d.remove();
    }
  });

  it('SUCCESS replies resolve with their text, listings with their lines', async () => {
    fake = await startFakeManagement();
    client = await ManagementClient.connect(fake.path);
    expect(await client.command('hold release')).toEqual(['hold release succeeded']);
    expect(await client.command('state')).toEqual(['1700000000,CONNECTED,SUCCESS,198.51.100.2,192.0.2.1,1194,,']);
    expect(await client.pid()).toBe(4242);
    const st = await client.state();
    expect(st).toMatchObject({ name: 'CONNECTED', localIp: '198.51.100.2', remoteIp: '192.0.2.1', remotePort: 1194 });
  });

  it('ERROR replies reject with MVPN_MGMT_ERROR and the connection stays usable', async () => {
    fake = await startFakeManagement({
      responder: (cmd) => (cmd.startsWith('kill ') ? `ERROR: common name ${cmd.slice(5)} not found` : defaultResponder(cmd, { write: () => undefined, commands: [] })),
    });
    client = await ManagementClient.connect(fake.path);
    expect(await codeOf(client.kill('nobody'))).toBe('MVPN_MGMT_ERROR');
    expect(fake.commands).toContain('kill "nobody"');
    expect(await client.command('hold release')).toEqual(['hold release succeeded']);
  });

  it('serializes: the second command is written only after the first is answered', async () => {
    const seen: string[] = [];
    let release: (() => void) | undefined;
    fake = await startFakeManagement({
      responder: (cmd, peer) => {
        seen.push(cmd);
        if (cmd === 'slow') {
          release = () => peer.write('SUCCESS: slow done\n');
          return undefined;
        }
        return `SUCCESS: ${cmd} done`;
      },
    });
    client = await ManagementClient.connect(fake.path);
    const a = client.command('slow');
    const b = client.command('fast');
    await new Promise((r) => setTimeout(r, 100));
    expect(seen).toEqual(['slow']);
    release!();
    expect(await a).toEqual(['slow done']);
    expect(await b).toEqual(['fast done']);
    expect(seen).toEqual(['slow', 'fast']);
  });

  it('real-time messages between reply lines do not disturb the reply', async () => {
    fake = await startFakeManagement({
      responder: () => ['1700000000,CONNECTING,,,,,,', '>BYTECOUNT:10,20', '1700000001,CONNECTED,SUCCESS,,,,,', 'END'],
    });
    client = await ManagementClient.connect(fake.path);
    const counts: { bytesIn: number; bytesOut: number }[] = [];
    client.on('bytecount', (b) => counts.push(b));
    expect(await client.command('state all')).toEqual(['1700000000,CONNECTING,,,,,,', '1700000001,CONNECTED,SUCCESS,,,,,']);
    expect(counts).toEqual([{ bytesIn: 10, bytesOut: 20 }]);
  });

  it('emits state, bytecount, hold, fatal and client events', async () => {
    fake = await startFakeManagement();
    client = await ManagementClient.connect(fake.path);
    const states: StateInfo[] = [];
    const got: string[] = [];
    client.on('state', (s) => states.push(s));
    client.on('hold', (h) => got.push(`hold:${h.text}`));
    client.on('fatal', (f) => got.push(`fatal:${f.text}`));
    client.on('bytecount-client', (b) => got.push(`bcc:${b.cid}:${b.bytesIn}:${b.bytesOut}`));
    client.on('client', (c) => got.push(`client:${c.event}:${c.cid}:${c.env['common_name']}`));
    fake.broadcast('>HOLD:Waiting for hold release:0\n>STATE:1700000000,CONNECTED,SUCCESS,203.0.113.5,192.0.2.1,1194,,\n');
    fake.broadcast('>BYTECOUNT_CLI:2,5,6\n>CLIENT:ESTABLISHED,2\n>CLIENT:ENV,common_name=n1\n>CLIENT:ENV,END\n>FATAL:boom\n');
    await client.command('pid'); // a round trip: everything sent before has been read
    expect(states.map((s) => s.name)).toEqual(['CONNECTED']);
    expect(got).toEqual(['hold:Waiting for hold release:0', 'bcc:2:5:6', 'client:ESTABLISHED:2:n1', 'fatal:boom']);
  });

  it('client-kill names the client id and tells the client to restart; a bad id is refused before sending', async () => {
    fake = await startFakeManagement({
      responder: (cmd, peer) => (cmd.startsWith('client-kill ') ? 'SUCCESS: client-kill command succeeded' : defaultResponder(cmd, peer)),
    });
    client = await ManagementClient.connect(fake.path);
    await client.clientKill(7);
    await client.clientKill(8, 'HALT');
    expect(await codeOf(client.clientKill(-1))).toBe('MVPN_MGMT_PROTOCOL');
    expect(fake.commands.filter((c) => c.startsWith('client-kill'))).toEqual(['client-kill 7 RESTART', 'client-kill 8 HALT']);
  });

  it('a peer that never answers: MVPN_MGMT_TIMEOUT, the connection closes, queued commands fail with MVPN_MGMT_CLOSED', async () => {
    fake = await startFakeManagement();
    fake.hung = true;
    client = await ManagementClient.connect(fake.path, { timeoutMs: 1_000, commandTimeoutMs: 300 });
    const closed = new Promise<string | undefined>((r) => client!.once('close', (e) => r(e?.code)));
    const first = codeOf(client.command('state'));
    const second = codeOf(client.command('pid'));
    expect(await first).toBe('MVPN_MGMT_TIMEOUT');
    expect(await second).toBe('MVPN_MGMT_CLOSED');
    expect(await closed).toBe('MVPN_MGMT_TIMEOUT');
    expect(client.isClosed).toBe(true);
    expect(await codeOf(client.command('pid'))).toBe('MVPN_MGMT_CLOSED');
  });

  it('an over-long line from the peer closes the connection with MVPN_MGMT_PROTOCOL (bounded memory)', async () => {
    fake = await startFakeManagement({ responder: () => undefined });
    client = await ManagementClient.connect(fake.path, { limits: { maxLineBytes: 1024 } });
    const pending = codeOf(client.command('state'));
    fake.broadcast('x'.repeat(4096)); // no line break at all
    expect(await pending).toBe('MVPN_MGMT_PROTOCOL');
    expect(client.isClosed).toBe(true);
  });

  it('an over-long listing closes the connection with MVPN_MGMT_PROTOCOL', async () => {
    fake = await startFakeManagement({ responder: () => Array.from({ length: 1000 }, (_, i) => `line ${i}`) });
    client = await ManagementClient.connect(fake.path, { limits: { maxReplyBytes: 2048 } });
    expect(await codeOf(client.command('status 3'))).toBe('MVPN_MGMT_PROTOCOL');
  });

  it('the peer going away fails the in-flight command with MVPN_MGMT_CLOSED', async () => {
    fake = await startFakeManagement({ responder: () => undefined });
    client = await ManagementClient.connect(fake.path);
    const pending = codeOf(client.command('state'));
    await new Promise((r) => setTimeout(r, 50));
    await fake.close();
    fake = undefined;
    expect(await pending).toBe('MVPN_MGMT_CLOSED');
  });

  it('refuses commands with line breaks (no command injection)', async () => {
    fake = await startFakeManagement();
    client = await ManagementClient.connect(fake.path);
    expect(await codeOf(client.command('state\nsignal SIGTERM'))).toBe('MVPN_MGMT_ERROR');
    expect(await codeOf(client.kill('x\nsignal SIGTERM'))).toBe('MVPN_MGMT_ERROR');
    await client.command('pid');
    expect(fake.commands).toEqual(['pid']);
  });

  it('status3() on a client-mode instance lists no clients', async () => {
    fake = await startFakeManagement();
    client = await ManagementClient.connect(fake.path);
    expect((await client.status3()).clients).toEqual([]);
  });
});
