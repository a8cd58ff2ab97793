/**
 * A client for openvpn's management interface over a unix socket.
 *
 * Design notes:
 * - One command in flight. openvpn answers commands in order and a reply
 *   carries no id, so a second command written before the first is answered
 *   could only be matched by position; queueing keeps that trivially right.
 * - A command that times out closes the connection. Its late reply would
 *   otherwise be taken as the answer to the next command. The caller (the
 *   supervisor's health check) reconnects; a process that never answers is
 *   hung, which is exactly what the timeout is there to find.
 * - Real-time messages (`>STATE:` etc.) are events; they may arrive between
 *   the lines of a reply and never disturb it (see management-protocol.ts).
 * - Bounded: lines and replies have size limits; a peer that exceeds them is
 *   disconnected (MVPN_MGMT_PROTOCOL).
 */
import { EventEmitter } from 'node:events';
import { createConnection, type Socket } from 'node:net';
import { OpenvpnError, type MvpnError } from '../errors.ts';
import {
  ClientAssembler,
  defaultProtocolLimits,
  LineSplitter,
  parseRealtime,
  parseStateLine,
  parseStatus3,
  quoteArg,
  ReplyCollector,
  type ClientNotification,
  type ClientRow,
  type ProtocolLimits,
  type StateInfo,
  type Status3,
} from './management-protocol.ts';

export type { ClientNotification, ClientRow, StateInfo, Status3 } from './management-protocol.ts';

export interface ManagementOptions {
  /** Connect timeout, and the default per-command timeout unless commandTimeoutMs is given. */
  readonly timeoutMs?: number;
  readonly commandTimeoutMs?: number;
  readonly limits?: Partial<ProtocolLimits>;
}

export interface ManagementEvents {
  state: [StateInfo];
  bytecount: [{ bytesIn: number; bytesOut: number }];
  /** Server side, one per connected client every `bytecount` interval. */
  'bytecount-client': [{ cid: number; bytesIn: number; bytesOut: number }];
  hold: [{ text: string }];
  info: [{ text: string }];
  log: [{ time: Date; flags: string; text: string }];
  /** The last words of an openvpn that is about to exit. */
  fatal: [{ text: string }];
  /** Server side, only with --management-client-auth. */
  client: [ClientNotification];
  /** Any other real-time message (ECHO, PASSWORD, NEED-OK, ...) as it came. */
  other: [{ source: string; text: string }];
  /** The connection is gone; `error` says why when it was not a close() of ours. */
  close: [MvpnError | undefined];
}

interface Pending {
  readonly cmd: string;
  readonly timeoutMs: number;
  readonly resolve: (lines: string[]) => void;
  readonly reject: (err: MvpnError) => void;
}

const DEFAULT_TIMEOUT_MS = 5_000;

export class ManagementClient extends EventEmitter<ManagementEvents> {
  readonly socketPath: string;
  private readonly socket: Socket;
  private readonly splitter: LineSplitter;
  private readonly clientAssembler: ClientAssembler;
  private readonly limits: ProtocolLimits;
  private readonly commandTimeoutMs: number;
  private readonly queue: Pending[] = [];
  private inFlight: { pending: Pending; collector: ReplyCollector; cancelTimer: () => void } | undefined;
  private closed = false;

  /**
   * Connects to the socket. Rejects with MVPN_MGMT_CONNECT_FAILED when the
   * socket is missing, refuses, or does not accept within `timeoutMs`.
   */
  static connect(socketPath: string, opts: ManagementOptions = {}): Promise<ManagementClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const socket = createConnection({ path: socketPath });
      const fail = (why: string, cause?: unknown): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(
          new OpenvpnError('MVPN_MGMT_CONNECT_FAILED', `cannot connect to the openvpn management socket ${socketPath}: ${why}`, {
            context: { socket: socketPath },
            hint: 'is openvpn running with --management <socket> unix?',
            cause,
          }),
        );
      };
      const timer = setTimeout(() => fail(`no connection within ${timeoutMs} ms`), timeoutMs);
      socket.once('error', (err) => fail(err.message, err));
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new ManagementClient(socketPath, socket, opts));
      });
    });
  }

  private constructor(socketPath: string, socket: Socket, opts: ManagementOptions) {
    super();
    this.socketPath = socketPath;
    this.socket = socket;
    this.limits = { ...defaultProtocolLimits, ...opts.limits };
    this.splitter = new LineSplitter(this.limits.maxLineBytes);
    this.clientAssembler = new ClientAssembler(this.limits.maxClientEnv);
    this.commandTimeoutMs = opts.commandTimeoutMs ?? opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) =>
      this.shutdown(new OpenvpnError('MVPN_MGMT_CLOSED', `management connection to ${socketPath} failed: ${err.message}`, { cause: err })),
    );
    socket.on('close', () => this.shutdown(new OpenvpnError('MVPN_MGMT_CLOSED', `openvpn closed the management connection ${socketPath}`)));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Sends one command and resolves with its reply: `[text]` for `SUCCESS:`,
   * the listing's lines (without `END`) for multi-line replies. An `ERROR:`
   * reply rejects with MVPN_MGMT_ERROR, no answer in time with
   * MVPN_MGMT_TIMEOUT (and closes the connection), a lost connection with
   * MVPN_MGMT_CLOSED.
   */
  command(cmd: string, opts: { timeoutMs?: number } = {}): Promise<string[]> {
    if (/[\r\n\0]/.test(cmd)) {
      return Promise.reject(new OpenvpnError('MVPN_MGMT_ERROR', 'a management command cannot contain a line break or NUL', { context: { cmd } }));
    }
    if (this.closed) {
      return Promise.reject(new OpenvpnError('MVPN_MGMT_CLOSED', `management connection ${this.socketPath} is closed`, { context: { cmd } }));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ cmd, timeoutMs: opts.timeoutMs ?? this.commandTimeoutMs, resolve, reject });
      this.pump();
    });
  }

  async holdRelease(): Promise<void> {
    await this.command('hold release');
  }

  /**
   * Clears the hold flag. `--management-hold` holds not only at startup but
   * after every restart inside openvpn (ping-restart, SIGUSR1, a server-side
   * `kill`), and the flag persists; a supervisor that released only the first
   * hold would leave the tunnel parked after its first reconnect.
   */
  async holdOff(): Promise<void> {
    await this.command('hold off');
  }

  async stateOn(): Promise<void> {
    await this.command('state on');
  }

  /** Real-time `>BYTECOUNT:` every `seconds` (0 turns it off). */
  async bytecount(seconds: number): Promise<void> {
    if (!Number.isInteger(seconds) || seconds < 0 || seconds > 86_400) {
      throw new OpenvpnError('MVPN_MGMT_ERROR', `bytecount interval must be an integer number of seconds 0..86400, got ${seconds}`);
    }
    await this.command(`bytecount ${seconds}`);
  }

  /** The current openvpn state (`state` command). */
  async state(opts: { timeoutMs?: number } = {}): Promise<StateInfo> {
    const lines = await this.command('state', opts);
    const last = lines.length > 0 ? parseStateLine(lines[lines.length - 1]!) : undefined;
    if (!last) throw new OpenvpnError('MVPN_MGMT_PROTOCOL', `unexpected reply to "state": ${JSON.stringify(lines.slice(0, 3))}`);
    return last;
  }

  /** Connected clients of a server instance (`status 3`); also routes and global stats. */
  async status3(opts: { timeoutMs?: number } = {}): Promise<Status3 & { clients: ClientRow[] }> {
    const lines = await this.command('status 3', opts);
    return parseStatus3(lines);
  }

  /** Ends the session(s) of the client with this common name (server side). MVPN_MGMT_ERROR when none is connected. */
  async kill(cn: string): Promise<void> {
    await this.command(`kill ${quoteArg(cn)}`);
  }

  /**
   * Server side: end one client instance and tell the client (`RESTART`:
   * it reconnects at once; `HALT`: it exits). Unlike `kill CN`, which drops
   * the session silently and leaves the client believing it is connected
   * until its ping-restart (60 s), so it goes quiet for a minute.
   */
  async clientKill(clientId: number, message: 'RESTART' | 'HALT' = 'RESTART'): Promise<void> {
    if (!Number.isSafeInteger(clientId) || clientId < 0) throw new OpenvpnError('MVPN_MGMT_PROTOCOL', `invalid client id ${clientId}`);
    await this.command(`client-kill ${clientId} ${message}`);
  }

  async signal(sig: 'SIGHUP' | 'SIGUSR1' | 'SIGUSR2' | 'SIGTERM'): Promise<void> {
    await this.command(`signal ${sig}`);
  }

  /** The pid of the openvpn process answering on this socket. */
  async pid(): Promise<number> {
    const [text] = await this.command('pid');
    const m = /^pid=(\d+)$/.exec(text ?? '');
    if (!m) throw new OpenvpnError('MVPN_MGMT_PROTOCOL', `unexpected reply to "pid": ${text ?? ''}`);
    return Number(m[1]);
  }

  /** Closes the connection; queued and in-flight commands reject with MVPN_MGMT_CLOSED. */
  close(): void {
    this.shutdown(undefined);
  }

  private pump(): void {
    if (this.inFlight || this.closed) return;
    const pending = this.queue.shift();
    if (!pending) return;
    const timer = setTimeout(() => {
      const err = new OpenvpnError('MVPN_MGMT_TIMEOUT', `openvpn did not answer "${pending.cmd}" within ${pending.timeoutMs} ms`, {
        context: { cmd: pending.cmd, socket: this.socketPath },
        hint: 'openvpn may be hung (stopped, or blocked); the connection is closed',
      });
      this.inFlight = undefined;
      pending.reject(err);
      this.shutdown(err);
    }, pending.timeoutMs);
    this.inFlight = { pending, collector: new ReplyCollector(this.limits.maxReplyBytes), cancelTimer: () => clearTimeout(timer) };
    this.socket.write(`${pending.cmd}\n`);
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    let lines: string[];
    try {
      lines = this.splitter.push(chunk);
    } catch (err) {
      this.shutdown(err as MvpnError);
      return;
    }
    for (const line of lines) {
      if (this.closed) return;
      if (line.startsWith('>')) this.onRealtime(line);
      else this.onReplyLine(line);
    }
  }

  private onReplyLine(line: string): void {
    const cur = this.inFlight;
    // A reply line with nothing in flight: nothing to match it with; drop it.
    if (!cur) return;
    let reply;
    try {
      reply = cur.collector.push(line);
    } catch (err) {
      this.shutdown(err as MvpnError);
      return;
    }
    if (!reply) return;
    cur.cancelTimer();
    this.inFlight = undefined;
    if (reply.kind === 'error') {
      cur.pending.reject(
        new OpenvpnError('MVPN_MGMT_ERROR', `openvpn refused "${cur.pending.cmd}": ${reply.text}`, { context: { cmd: cur.pending.cmd, reply: reply.text } }),
      );
    } else {
      cur.pending.resolve(reply.kind === 'success' ? [reply.text] : [...reply.lines]);
    }
    this.pump();
  }

  private onRealtime(line: string): void {
    const msg = parseRealtime(line);
    switch (msg.type) {
      case 'state':
        this.emit('state', msg.state);
        break;
      case 'bytecount':
        this.emit('bytecount', { bytesIn: msg.bytesIn, bytesOut: msg.bytesOut });
        break;
      case 'bytecount-client':
        this.emit('bytecount-client', { cid: msg.cid, bytesIn: msg.bytesIn, bytesOut: msg.bytesOut });
        break;
      case 'hold':
        this.emit('hold', { text: msg.text });
        break;
      case 'info':
        this.emit('info', { text: msg.text });
        break;
      case 'log':
        this.emit('log', { time: msg.time, flags: msg.flags, text: msg.text });
        break;
      case 'fatal':
        this.emit('fatal', { text: msg.text });
        break;
      case 'client-line': {
        const n = this.clientAssembler.push(msg.text);
        if (n) this.emit('client', n);
        break;
      }
      case 'other':
        this.emit('other', { source: msg.source, text: msg.text });
        break;
    }
  }

  private shutdown(err: MvpnError | undefined): void {
    if (this.closed) return;
    this.closed = true;
    const closedErr =
      err?.code === 'MVPN_MGMT_CLOSED'
        ? err
        : new OpenvpnError('MVPN_MGMT_CLOSED', `management connection ${this.socketPath} was closed${err ? `: ${err.message}` : ''}`, { cause: err });
    if (this.inFlight) {
      this.inFlight.cancelTimer();
      this.inFlight.pending.reject(err ?? closedErr);
      this.inFlight = undefined;
    }
    for (const p of this.queue.splice(0)) p.reject(closedErr);
    this.socket.destroy();
    this.emit('close', err);
  }
}
