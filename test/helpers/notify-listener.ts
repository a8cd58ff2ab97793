/**
 * A real sd_notify receiver for tests: an AF_UNIX/SOCK_DGRAM socket bound by
 * a python3 child (Node cannot bind datagram unix sockets), which prints each
 * datagram as one JSON line: its fields, the sender's pid (SO_PASSCRED, as
 * systemd checks it) and how many file descriptors came with it (closed at
 * once, as systemd does with BARRIER=1's fd, which releases the sender).
 *
 * The child is started and stopped by its pid; its socket lives in a tmpDir
 * whose path names the test run, so the suite's leak check sees it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { tmpDir } from './tmp.ts';

const SCRIPT = String.raw`
import array, json, os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
print(json.dumps({"listening": path}), flush=True)
while True:
    data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(4 * 64) + socket.CMSG_SPACE(12))
    fds = 0
    pid = None
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(payload[: len(payload) - len(payload) % 4])
            for fd in a:
                os.close(fd)
                fds += 1
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = int.from_bytes(payload[0:4], "little")
    text = data.decode("utf-8", "replace")
    fields = {}
    for line in text.split("\n"):
        if "=" in line:
            k, v = line.split("=", 1)
            fields[k] = v
    print(json.dumps({"fields": fields, "raw": text, "pid": pid, "fds": fds}), flush=True)
`;

export interface Datagram {
  readonly fields: Readonly<Record<string, string>>;
  readonly raw: string;
  readonly pid: number | null;
  readonly fds: number;
}

export interface NotifyListener {
  /** Use as NOTIFY_SOCKET. */
  readonly socket: string;
  readonly pid: number;
  /** Every datagram so far, BARRIER=1 included. */
  readonly received: Datagram[];
  /** Datagrams other than systemd-notify's BARRIER=1 round trips. */
  messages(): Datagram[];
  /** Resolves with the first message (not barrier) matching `pred`, rejects after timeoutMs (a hang guard, not a timing assertion). */
  waitFor(pred: (d: Datagram) => boolean, timeoutMs?: number): Promise<Datagram>;
  stop(): Promise<void>;
}

export async function startNotifyListener(): Promise<NotifyListener> {
  const dir = await tmpDir('notify');
  const socket = join(dir.path, 'notify.sock');
  const child: ChildProcess = spawn('python3', ['-c', SCRIPT, socket], { stdio: ['ignore', 'pipe', 'pipe'] });
  const received: Datagram[] = [];
  const waiters: { pred: (d: Datagram) => boolean; resolve: (d: Datagram) => void }[] = [];
  let stderr = '';
  let buf = '';
  let onListening: (() => void) | undefined;
  const listening = new Promise<void>((resolve, reject) => {
    onListening = resolve;
    child.once('exit', (code) => reject(new Error(`notify listener exited (${String(code)}): ${stderr}`)));
    child.once('error', reject);
  });
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const obj = JSON.parse(line) as Datagram & { listening?: string };
      if (obj.listening !== undefined) {
        onListening?.();
        continue;
      }
      received.push(obj);
      if (obj.fields['BARRIER'] === '1') continue;
      for (const w of [...waiters]) {
        if (w.pred(obj)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(obj);
        }
      }
    }
  });
  await listening;
  const pid = child.pid!;
  const isMessage = (d: Datagram): boolean => d.fields['BARRIER'] !== '1';
  return {
    socket,
    pid,
    received,
    messages: () => received.filter(isMessage),
    waitFor(pred, timeoutMs = 20_000) {
      const hit = received.filter(isMessage).find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching sd_notify datagram within ${timeoutMs} ms; got ${JSON.stringify(received.map((r) => r.raw))}`)), timeoutMs);
        waiters.push({
          pred,
          resolve: (d) => {
            clearTimeout(timer);
            resolve(d);
          },
        });
      });
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        process.kill(pid, 'SIGTERM');
        await exited;
      }
      await dir.remove();
    },
  };
}
