/**
 * The wire format of openvpn's management interface (doc/management-notes.txt),
 * as pure functions so every rule is table-testable without a socket.
 *
 * The stream is lines. A line that starts with `>` is a real-time message
 * (`>STATE:`, `>BYTECOUNT:`, `>HOLD:`, ...) and can arrive at any time, also
 * between the lines of a reply. Everything else belongs to the one command
 * in flight: a single `SUCCESS: text` / `ERROR: text` line, or (for commands
 * that print a listing: `state`, `status`, `version`, ...) any number of
 * lines ended by `END`. Reply lines never start with `>`, so the two kinds
 * cannot be confused.
 *
 * Everything here is bounded: a line longer than `maxLineBytes`, or a reply
 * longer than `maxReplyBytes`, is a protocol error, so a misbehaving peer
 * cannot make us buffer without end.
 */
import { OpenvpnError } from '../errors.ts';

export interface ProtocolLimits {
  /** Longest line accepted (a CLIENT_LIST row is well under 1 KiB; openvpn log lines are under 2 KiB). */
  readonly maxLineBytes: number;
  /** Largest multi-line reply accepted (`status 3` of a server with thousands of clients fits easily). */
  readonly maxReplyBytes: number;
  /** Most `>CLIENT:ENV,` lines kept for one client notification; further ones are dropped. */
  readonly maxClientEnv: number;
}

export const defaultProtocolLimits: ProtocolLimits = { maxLineBytes: 64 * 1024, maxReplyBytes: 16 << 20, maxClientEnv: 512 };

function protocolError(message: string, context: Record<string, unknown> = {}): OpenvpnError {
  return new OpenvpnError('MVPN_MGMT_PROTOCOL', message, {
    context,
    hint: 'the management socket is not talking the openvpn management protocol as expected; the connection is closed',
  });
}

/**
 * Splits a byte stream into lines (`\n`, with an optional `\r` before it).
 * Holds at most one partial line; a partial line longer than the limit
 * throws MVPN_MGMT_PROTOCOL instead of growing.
 */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private readonly maxLineBytes: number;

  constructor(maxLineBytes: number = defaultProtocolLimits.maxLineBytes) {
    this.maxLineBytes = maxLineBytes;
  }

  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl === -1) break;
      const piece = chunk.subarray(start, nl);
      const whole = this.pendingBytes === 0 ? piece : Buffer.concat([...this.pending, piece]);
      this.pending = [];
      this.pendingBytes = 0;
      if (whole.length > this.maxLineBytes) throw protocolError(`management line of ${whole.length} bytes exceeds the limit of ${this.maxLineBytes}`);
      const end = whole.length > 0 && whole[whole.length - 1] === 0x0d ? whole.length - 1 : whole.length;
      lines.push(whole.toString('utf8', 0, end));
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.pendingBytes += rest.length;
      if (this.pendingBytes > this.maxLineBytes) {
        throw protocolError(`management line exceeds the limit of ${this.maxLineBytes} bytes without a line break`);
      }
      // Copy: the caller's buffer may be reused.
      this.pending.push(Buffer.from(rest));
    }
    return lines;
  }
}

// ---------------------------------------------------------------- real-time messages

/** One openvpn state line (`state` reply row or `>STATE:` payload), fields (a)..(i) of management-notes. */
export interface StateInfo {
  readonly time: Date;
  /** CONNECTING, WAIT, AUTH, GET_CONFIG, ASSIGN_IP, ADD_ROUTES, CONNECTED, RECONNECTING, EXITING, RESOLVE, TCP_CONNECT, AUTH_PENDING. */
  readonly name: string;
  /** Reason text, mostly on RECONNECTING and EXITING (e.g. "ping-restart", "SIGTERM"); "SUCCESS" on CONNECTED. */
  readonly description: string;
  readonly localIp?: string;
  readonly remoteIp?: string;
  readonly remotePort?: number;
  readonly localAddress?: string;
  readonly localPort?: number;
  readonly localIpv6?: string;
}

export interface ClientNotification {
  /** CONNECT, REAUTH, ESTABLISHED, DISCONNECT, ADDRESS, CR_RESPONSE, ... */
  readonly event: string;
  readonly cid: number;
  readonly kid?: number;
  /** ADDRESS only. */
  readonly address?: string;
  readonly primary?: boolean;
  /** `>CLIENT:ENV,name=value` lines (bounded, see ProtocolLimits.maxClientEnv). */
  readonly env: Readonly<Record<string, string>>;
}

export type RealtimeMessage =
  | { readonly type: 'state'; readonly state: StateInfo }
  | { readonly type: 'bytecount'; readonly bytesIn: number; readonly bytesOut: number }
  | { readonly type: 'bytecount-client'; readonly cid: number; readonly bytesIn: number; readonly bytesOut: number }
  | { readonly type: 'hold'; readonly text: string }
  | { readonly type: 'info'; readonly text: string }
  | { readonly type: 'log'; readonly time: Date; readonly flags: string; readonly text: string }
  | { readonly type: 'fatal'; readonly text: string }
  /** A raw `>CLIENT:` line; ClientAssembler turns these into ClientNotification. */
  | { readonly type: 'client-line'; readonly text: string }
  /** Anything else (ECHO, PASSWORD, NEED-OK, INFOMSG, ...) or a known source with a malformed payload. */
  | { readonly type: 'other'; readonly source: string; readonly text: string };

const nonNegInt = /^\d{1,16}$/;

function toCount(s: string | undefined): number | undefined {
  if (s === undefined || !nonNegInt.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}

function opt(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}

/** Parses a state row: `time,NAME,desc,localIp,remoteIp,remotePort,localAddr,localPort,localIpv6`. */
export function parseStateLine(text: string): StateInfo | undefined {
  const f = text.split(',');
  const secs = toCount(f[0]);
  const name = f[1];
  if (secs === undefined || name === undefined || !/^[A-Z_]+$/.test(name)) return undefined;
  const remotePort = toCount(f[5]);
  const localPort = toCount(f[7]);
  const info: {
    time: Date;
    name: string;
    description: string;
    localIp?: string;
    remoteIp?: string;
    remotePort?: number;
    localAddress?: string;
    localPort?: number;
    localIpv6?: string;
  } = { time: new Date(secs * 1000), name, description: f[2] ?? '' };
  const localIp = opt(f[3]);
  const remoteIp = opt(f[4]);
  const localAddress = opt(f[6]);
  const localIpv6 = opt(f[8]);
  if (localIp !== undefined) info.localIp = localIp;
  if (remoteIp !== undefined) info.remoteIp = remoteIp;
  if (remotePort !== undefined) info.remotePort = remotePort;
  if (localAddress !== undefined) info.localAddress = localAddress;
  if (localPort !== undefined) info.localPort = localPort;
  if (localIpv6 !== undefined) info.localIpv6 = localIpv6;
  return info;
}

/** Classifies one line that starts with `>`. Never throws: malformed payloads become `other`. */
export function parseRealtime(line: string): RealtimeMessage {
  const colon = line.indexOf(':');
  const source = colon === -1 ? line.slice(1) : line.slice(1, colon);
  const text = colon === -1 ? '' : line.slice(colon + 1);
  const other: RealtimeMessage = { type: 'other', source, text };
  switch (source) {
    case 'STATE': {
      const state = parseStateLine(text);
      return state ? { type: 'state', state } : other;
    }
    case 'BYTECOUNT': {
      const [a, b, ...rest] = text.split(',');
      const bytesIn = toCount(a);
      const bytesOut = toCount(b);
      return bytesIn === undefined || bytesOut === undefined || rest.length > 0 ? other : { type: 'bytecount', bytesIn, bytesOut };
    }
    case 'BYTECOUNT_CLI': {
      const [c, a, b, ...rest] = text.split(',');
      const cid = toCount(c);
      const bytesIn = toCount(a);
      const bytesOut = toCount(b);
      return cid === undefined || bytesIn === undefined || bytesOut === undefined || rest.length > 0
        ? other
        : { type: 'bytecount-client', cid, bytesIn, bytesOut };
    }
    case 'HOLD':
      return { type: 'hold', text };
    case 'INFO':
      return { type: 'info', text };
    case 'FATAL':
      return { type: 'fatal', text };
    case 'LOG': {
      const c1 = text.indexOf(',');
      const c2 = c1 === -1 ? -1 : text.indexOf(',', c1 + 1);
      const secs = toCount(c1 === -1 ? undefined : text.slice(0, c1));
      if (secs === undefined || c2 === -1) return other;
      return { type: 'log', time: new Date(secs * 1000), flags: text.slice(c1 + 1, c2), text: text.slice(c2 + 1) };
    }
    case 'CLIENT':
      return { type: 'client-line', text };
    default:
      return other;
  }
}

/**
 * Turns `>CLIENT:` lines into notifications. CONNECT / REAUTH / ESTABLISHED /
 * DISCONNECT / CR_RESPONSE are followed by `>CLIENT:ENV,...` lines and
 * `>CLIENT:ENV,END` (openvpn guarantees the block is not interleaved with
 * another CLIENT block); ADDRESS is a single line.
 */
export class ClientAssembler {
  private current: { event: string; cid: number; kid?: number; env: Record<string, string>; count: number } | undefined;
  private readonly maxEnv: number;

  constructor(maxEnv: number = defaultProtocolLimits.maxClientEnv) {
    this.maxEnv = maxEnv;
  }

  /** Returns a finished notification, or undefined while a block is open or the line is malformed. */
  push(text: string): ClientNotification | undefined {
    if (text.startsWith('ENV,')) {
      const cur = this.current;
      if (!cur) return undefined;
      const kv = text.slice(4);
      if (kv === 'END') {
        this.current = undefined;
        return { event: cur.event, cid: cur.cid, ...(cur.kid === undefined ? {} : { kid: cur.kid }), env: cur.env };
      }
      const eq = kv.indexOf('=');
      if (eq > 0 && cur.count < this.maxEnv) {
        cur.env[kv.slice(0, eq)] = kv.slice(eq + 1);
        cur.count++;
      }
      return undefined;
    }
    const f = text.split(',');
    const event = f[0] ?? '';
    const cid = toCount(f[1]);
    if (cid === undefined || !/^[A-Z_]+$/.test(event)) return undefined;
    if (event === 'ADDRESS') {
      this.current = undefined;
      const address = f[2] ?? '';
      return { event, cid, address, primary: f[3] === '1', env: {} };
    }
    const kid = toCount(f[2]);
    this.current = { event, cid, ...(kid === undefined ? {} : { kid }), env: Object.create(null) as Record<string, string>, count: 0 };
    return undefined;
  }
}

// ---------------------------------------------------------------- command replies

export type Reply =
  | { readonly kind: 'success'; readonly text: string }
  | { readonly kind: 'error'; readonly text: string }
  | { readonly kind: 'lines'; readonly lines: readonly string[] };

/**
 * Collects the non-real-time lines of one command's reply. The first line
 * decides the shape: `SUCCESS:` / `ERROR:` end the reply at once; anything
 * else starts a listing that ends with `END`.
 */
export class ReplyCollector {
  private lines: string[] = [];
  private bytes = 0;
  private readonly maxBytes: number;

  constructor(maxReplyBytes: number = defaultProtocolLimits.maxReplyBytes) {
    this.maxBytes = maxReplyBytes;
  }

  push(line: string): Reply | undefined {
    if (this.lines.length === 0) {
      if (line.startsWith('SUCCESS:')) return { kind: 'success', text: line.slice(8).trim() };
      if (line.startsWith('ERROR:')) return { kind: 'error', text: line.slice(6).trim() };
    }
    if (line === 'END') {
      const lines = this.lines;
      this.lines = [];
      this.bytes = 0;
      return { kind: 'lines', lines };
    }
    this.bytes += line.length + 1;
    if (this.bytes > this.maxBytes) throw protocolError(`management reply exceeds the limit of ${this.maxBytes} bytes`);
    this.lines.push(line);
    return undefined;
  }
}

// ---------------------------------------------------------------- commands

/**
 * Quotes one argument for the management command lexer (same rules as the
 * config file: double quotes, backslash escapes for `\` and `"`). Line
 * breaks and NUL cannot be expressed and are refused.
 */
export function quoteArg(arg: string): string {
  if (/[\r\n\0]/.test(arg)) throw new OpenvpnError('MVPN_MGMT_ERROR', 'a management command argument cannot contain a line break or NUL', { context: { arg } });
  return `"${arg.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

// ---------------------------------------------------------------- status 3

export interface ClientRow {
  readonly cn: string;
  readonly realAddress: string;
  /** Empty on an L2 (tap) server that pushes no address to this client. */
  readonly virtualAddress: string;
  readonly virtualIpv6Address?: string;
  /** Bytes received from the client. */
  readonly bytesIn: number;
  /** Bytes sent to the client. */
  readonly bytesOut: number;
  readonly connectedSince: Date;
  readonly username?: string;
  readonly clientId?: number;
  readonly peerId?: number;
  readonly cipher?: string;
}

export interface RouteRow {
  /** An IP address or, on an L2 server, a learned MAC address (`aa:bb:..@0`). */
  readonly virtualAddress: string;
  readonly cn: string;
  readonly realAddress: string;
  readonly lastRef: Date;
}

export interface Status3 {
  readonly title?: string;
  readonly time?: Date;
  readonly clients: ClientRow[];
  readonly routes: RouteRow[];
  readonly globalStats: Readonly<Record<string, string>>;
}

function dateFrom(row: Map<string, string>, epochCol: string, textCol: string): Date | undefined {
  const secs = toCount(row.get(epochCol));
  if (secs !== undefined) return new Date(secs * 1000);
  const text = row.get(textCol);
  if (text === undefined) return undefined;
  const d = new Date(text.replace(' ', 'T'));
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/**
 * Parses the tab-separated `status 3` listing of a server. Columns are found
 * by the names on their `HEADER` row, so the extra columns of newer openvpn
 * (2.6 adds Peer ID and Data Channel Cipher) and any future ones are fine.
 * A client-mode instance prints "OpenVPN STATISTICS" instead; that parses to
 * no clients.
 */
export function parseStatus3(lines: readonly string[]): Status3 {
  const headers = new Map<string, string[]>();
  const clients: ClientRow[] = [];
  const routes: RouteRow[] = [];
  const globalStats: Record<string, string> = Object.create(null) as Record<string, string>;
  let title: string | undefined;
  let time: Date | undefined;
  for (const line of lines) {
    const f = line.split('\t');
    const tag = f[0];
    if (tag === 'HEADER' && f[1] !== undefined) {
      headers.set(f[1], f.slice(2));
    } else if (tag === 'TITLE') {
      title = f.slice(1).join('\t');
    } else if (tag === 'TIME') {
      const secs = toCount(f[2]);
      if (secs !== undefined) time = new Date(secs * 1000);
    } else if (tag === 'GLOBAL_STATS' && f[1] !== undefined) {
      globalStats[f[1]] = f[2] ?? '';
    } else if (tag === 'CLIENT_LIST' || tag === 'ROUTING_TABLE') {
      const cols = headers.get(tag);
      if (!cols) throw protocolError(`status 3: ${tag} row before its HEADER row`, { line });
      const row = new Map<string, string>();
      cols.forEach((name, i) => row.set(name, f[i + 1] ?? ''));
      if (tag === 'CLIENT_LIST') clients.push(clientRow(row, line));
      else routes.push(routeRow(row, line));
    }
  }
  return { ...(title === undefined ? {} : { title }), ...(time === undefined ? {} : { time }), clients, routes, globalStats };
}

function need(row: Map<string, string>, col: string, line: string): string {
  const v = row.get(col);
  if (v === undefined) throw protocolError(`status 3: no "${col}" column`, { line });
  return v;
}

function clientRow(row: Map<string, string>, line: string): ClientRow {
  const bytesIn = toCount(need(row, 'Bytes Received', line));
  const bytesOut = toCount(need(row, 'Bytes Sent', line));
  const connectedSince = dateFrom(row, 'Connected Since (time_t)', 'Connected Since');
  if (bytesIn === undefined || bytesOut === undefined || connectedSince === undefined) {
    throw protocolError('status 3: malformed CLIENT_LIST row', { line });
  }
  const v6 = opt(row.get('Virtual IPv6 Address'));
  const username = row.get('Username');
  const clientId = toCount(row.get('Client ID'));
  const peerId = toCount(row.get('Peer ID'));
  const cipher = opt(row.get('Data Channel Cipher'));
  return {
    cn: need(row, 'Common Name', line),
    realAddress: need(row, 'Real Address', line),
    virtualAddress: need(row, 'Virtual Address', line),
    bytesIn,
    bytesOut,
    connectedSince,
    ...(v6 === undefined ? {} : { virtualIpv6Address: v6 }),
    ...(username === undefined || username === '' || username === 'UNDEF' ? {} : { username }),
    ...(clientId === undefined ? {} : { clientId }),
    ...(peerId === undefined ? {} : { peerId }),
    ...(cipher === undefined ? {} : { cipher }),
  };
}

function routeRow(row: Map<string, string>, line: string): RouteRow {
  const lastRef = dateFrom(row, 'Last Ref (time_t)', 'Last Ref');
  if (lastRef === undefined) throw protocolError('status 3: malformed ROUTING_TABLE row', { line });
  return {
    virtualAddress: need(row, 'Virtual Address', line),
    cn: need(row, 'Common Name', line),
    realAddress: need(row, 'Real Address', line),
    lastRef,
  };
}
