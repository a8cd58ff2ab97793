/**
 * A scripted openvpn management peer on a real unix socket, for the failure
 * modes a real openvpn does not produce on demand: a peer that never
 * answers, answers garbage, or floods. Normal behaviour is tested against
 * real openvpn in test/integration.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { tmpDir } from './tmp.ts';

export type Responder = (cmd: string, peer: FakePeer) => string | string[] | undefined;

export interface FakePeer {
  /** Write raw text (add the line breaks yourself). */
  write(text: string): void;
  readonly commands: string[];
}

export interface FakeManagement {
  readonly path: string;
  /** Every command received, across connections, in order. */
  readonly commands: string[];
  readonly connections: number;
  /** When true, commands get no answer at all (a SIGSTOPped openvpn). */
  hung: boolean;
  /** Send to every connected peer. */
  broadcast(text: string): void;
  close(): Promise<void>;
}

/** Answers like openvpn 2.6 in client mode, CONNECTED. */
export const defaultResponder: Responder = (cmd) => {
  if (cmd === 'state') return ['1700000000,CONNECTED,SUCCESS,198.51.100.2,192.0.2.1,1194,,', 'END'];
  if (cmd === 'state on') return 'SUCCESS: real-time state notification set to ON';
  if (cmd.startsWith('bytecount ')) return 'SUCCESS: bytecount interval changed';
  if (cmd === 'hold release') return 'SUCCESS: hold release succeeded';
  if (cmd === 'hold off') return 'SUCCESS: hold flag set to OFF';
  if (cmd === 'pid') return 'SUCCESS: pid=4242';
  if (cmd.startsWith('signal ')) return `SUCCESS: signal ${cmd.slice(7)} thrown`;
  if (cmd === 'status 3') return ['OpenVPN STATISTICS', 'Updated,2026-01-01 00:00:00', 'END'];
  return `ERROR: unknown command [${cmd}], enter 'help' for more options`;
};

export async function startFakeManagement(
  opts: { responder?: Responder; banner?: string; path?: string } = {},
): Promise<FakeManagement & { dir?: { remove: () => Promise<void> } }> {
  const dir = opts.path === undefined ? await tmpDir('mgmt') : undefined;
  const path = opts.path ?? join(dir!.path, 'm.sock');
  const responder = opts.responder ?? defaultResponder;
  const sockets = new Set<Socket>();
  const state = { connections: 0 };
  const commands: string[] = [];
  const fake: FakeManagement & { dir?: { remove: () => Promise<void> } } = {
    path,
    commands,
    get connections() {
      return state.connections;
    },
    hung: false,
    broadcast(text) {
      for (const s of sockets) s.write(text);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await dir?.remove();
    },
    ...(dir === undefined ? {} : { dir }),
  };
  const server: Server = createServer((sock) => {
    state.connections++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    const peer: FakePeer = { write: (t) => void sock.write(t), commands };
    sock.write(`${opts.banner ?? ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info"}\n`);
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
        const cmd = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        commands.push(cmd);
        if (fake.hung) continue;
        const reply = responder(cmd, peer);
        if (reply === undefined) continue;
        sock.write((Array.isArray(reply) ? reply : [reply]).map((l) => `${l}\n`).join(''));
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return fake;
}
