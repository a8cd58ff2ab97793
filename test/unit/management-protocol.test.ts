import { describe, expect, it } from 'vitest';
import { isMvpnError } from '../../src/errors.ts';
import {
  ClientAssembler,
  LineSplitter,
  parseRealtime,
  parseStateLine,
  parseStatus3,
  quoteArg,
  ReplyCollector,
  type RealtimeMessage,
} from '../../src/openvpn/management-protocol.ts';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return isMvpnError(e) ? e.code : 'not-mvpn';
  }
  return undefined;
}

describe('LineSplitter', () => {
  const cases: { name: string; chunks: string[]; lines: string[] }[] = [
    { name: 'one line', chunks: ['SUCCESS: x\n'], lines: ['SUCCESS: x'] },
    { name: 'CRLF', chunks: ['a\r\nb\r\n'], lines: ['a', 'b'] },
    { name: 'split across chunks', chunks: ['>STA', 'TE:1,CONN', 'ECTED\nEN', 'D\n'], lines: ['>STATE:1,CONNECTED', 'END'] },
    { name: 'partial line is held back', chunks: ['abc'], lines: [] },
    { name: 'empty lines', chunks: ['\n\n'], lines: ['', ''] },
    { name: 'CR split from LF', chunks: ['x\r', '\n'], lines: ['x'] },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const s = new LineSplitter(64);
      const out = c.chunks.flatMap((ch) => s.push(Buffer.from(ch)));
      expect(out).toEqual(c.lines);
    });
  }

  it('refuses a line longer than the limit, even when it arrives in small pieces', () => {
    const s = new LineSplitter(16);
    expect(codeOf(() => s.push(Buffer.from('x'.repeat(17) + '\n')))).toBe('MVPN_MGMT_PROTOCOL');
    const t = new LineSplitter(16);
    t.push(Buffer.from('x'.repeat(10)));
    expect(codeOf(() => t.push(Buffer.from('x'.repeat(10))))).toBe('MVPN_MGMT_PROTOCOL');
  });

  it('accepts a line of exactly the limit', () => {
    const s = new LineSplitter(16);
    expect(s.push(Buffer.from('y'.repeat(16) + '\n'))).toEqual(['y'.repeat(16)]);
  });
});

describe('parseStateLine', () => {
  const cases: { line: string; want: ReturnType<typeof parseStateLine> }[] = [
    {
      line: '1795295566,CONNECTED,SUCCESS,203.0.113.100,198.18.5.1,1194,,',
      want: { time: new Date(1795295566_000), name: 'CONNECTED', description: 'SUCCESS', localIp: '203.0.113.100', remoteIp: '198.18.5.1', remotePort: 1194 },
    },
    { line: '1795295566,WAIT,,,,,,', want: { time: new Date(1795295566_000), name: 'WAIT', description: '' } },
    {
      line: '1700000000,RECONNECTING,ping-restart,,,,,',
      want: { time: new Date(1700000000_000), name: 'RECONNECTING', description: 'ping-restart' },
    },
    {
      line: '1700000000,CONNECTED,SUCCESS,198.51.100.2,192.0.2.1,1194,198.18.0.2,40000,2001:db8::2',
      want: {
        time: new Date(1700000000_000),
        name: 'CONNECTED',
        description: 'SUCCESS',
        localIp: '198.51.100.2',
        remoteIp: '192.0.2.1',
        remotePort: 1194,
        localAddress: '198.18.0.2',
        localPort: 40000,
        localIpv6: '2001:db8::2',
      },
    },
    { line: '1700000000,ASSIGN_IP,,203.0.113.1,,,,', want: { time: new Date(1700000000_000), name: 'ASSIGN_IP', description: '', localIp: '203.0.113.1' } },
    { line: 'garbage', want: undefined },
    { line: 'x,CONNECTED', want: undefined },
    { line: '1700000000,lowercase', want: undefined },
    { line: '', want: undefined },
  ];
  for (const c of cases) {
    it(JSON.stringify(c.line), () => {
      expect(parseStateLine(c.line)).toEqual(c.want);
    });
  }
});

describe('parseRealtime', () => {
  const cases: { line: string; want: RealtimeMessage }[] = [
    { line: '>BYTECOUNT:2200,2957', want: { type: 'bytecount', bytesIn: 2200, bytesOut: 2957 } },
    { line: '>BYTECOUNT:1,x', want: { type: 'other', source: 'BYTECOUNT', text: '1,x' } },
    { line: '>BYTECOUNT:1,2,3', want: { type: 'other', source: 'BYTECOUNT', text: '1,2,3' } },
    { line: '>BYTECOUNT:-1,2', want: { type: 'other', source: 'BYTECOUNT', text: '-1,2' } },
    { line: '>BYTECOUNT_CLI:7,100,200', want: { type: 'bytecount-client', cid: 7, bytesIn: 100, bytesOut: 200 } },
    { line: '>BYTECOUNT_CLI:7,100', want: { type: 'other', source: 'BYTECOUNT_CLI', text: '7,100' } },
    { line: '>HOLD:Waiting for hold release:0', want: { type: 'hold', text: 'Waiting for hold release:0' } },
    {
      line: ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info",
      want: { type: 'info', text: "OpenVPN Management Interface Version 5 -- type 'help' for more info" },
    },
    { line: '>FATAL:Cannot open TUN/TAP dev', want: { type: 'fatal', text: 'Cannot open TUN/TAP dev' } },
    { line: '>LOG:1700000000,W,a warning, with comma', want: { type: 'log', time: new Date(1700000000_000), flags: 'W', text: 'a warning, with comma' } },
    { line: '>LOG:1700000000,,no flags', want: { type: 'log', time: new Date(1700000000_000), flags: '', text: 'no flags' } },
    { line: '>LOG:broken', want: { type: 'other', source: 'LOG', text: 'broken' } },
    { line: '>CLIENT:CONNECT,0,1', want: { type: 'client-line', text: 'CONNECT,0,1' } },
    { line: '>ECHO:1101519562,forget-passwords', want: { type: 'other', source: 'ECHO', text: '1101519562,forget-passwords' } },
    { line: ">PASSWORD:Need 'Auth' username/password", want: { type: 'other', source: 'PASSWORD', text: "Need 'Auth' username/password" } },
    { line: '>NOCOLON', want: { type: 'other', source: 'NOCOLON', text: '' } },
    { line: '>STATE:bad', want: { type: 'other', source: 'STATE', text: 'bad' } },
  ];
  for (const c of cases) {
    it(c.line, () => {
      expect(parseRealtime(c.line)).toEqual(c.want);
    });
  }

  it('>STATE: carries the parsed state', () => {
    const m = parseRealtime('>STATE:1795295566,CONNECTED,SUCCESS,203.0.113.100,198.18.5.1,1194,,');
    expect(m.type).toBe('state');
    if (m.type === 'state') expect(m.state).toMatchObject({ name: 'CONNECTED', localIp: '203.0.113.100', remoteIp: '198.18.5.1', remotePort: 1194 });
  });
});

describe('ClientAssembler', () => {
  it('assembles CONNECT with its ENV block', () => {
    const a = new ClientAssembler();
    expect(a.push('CONNECT,3,1')).toBeUndefined();
    expect(a.push('ENV,common_name=node1')).toBeUndefined();
    expect(a.push('ENV,untrusted_ip=198.18.0.2')).toBeUndefined();
    expect(a.push('ENV,weird=a=b')).toBeUndefined();
    expect(a.push('ENV,END')).toEqual({ event: 'CONNECT', cid: 3, kid: 1, env: { common_name: 'node1', untrusted_ip: '198.18.0.2', weird: 'a=b' } });
  });

  it('ADDRESS is one line', () => {
    const a = new ClientAssembler();
    expect(a.push('ADDRESS,4,203.0.113.7,1')).toEqual({ event: 'ADDRESS', cid: 4, address: '203.0.113.7', primary: true, env: {} });
  });

  it('DISCONNECT without kid', () => {
    const a = new ClientAssembler();
    a.push('DISCONNECT,9');
    a.push('ENV,bytes_received=10');
    expect(a.push('ENV,END')).toEqual({ event: 'DISCONNECT', cid: 9, env: { bytes_received: '10' } });
  });

  it('keeps at most maxEnv variables', () => {
    const a = new ClientAssembler(2);
    a.push('ESTABLISHED,1');
    for (let i = 0; i < 10; i++) a.push(`ENV,v${i}=${i}`);
    const n = a.push('ENV,END');
    expect(Object.keys(n?.env ?? {})).toEqual(['v0', 'v1']);
  });

  it('ignores stray ENV lines and malformed headers', () => {
    const a = new ClientAssembler();
    expect(a.push('ENV,x=1')).toBeUndefined();
    expect(a.push('ENV,END')).toBeUndefined();
    expect(a.push('CONNECT,notanumber,1')).toBeUndefined();
    expect(a.push('ENV,END')).toBeUndefined();
  });

  it('env cannot set __proto__ on a prototype-bearing object', () => {
    const a = new ClientAssembler();
    a.push('CONNECT,1,0');
    a.push('ENV,__proto__=polluted');
    const n = a.push('ENV,END');
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect(n?.env['__proto__']).toBe('polluted');
  });
});

describe('ReplyCollector', () => {
  const cases: { name: string; lines: string[]; want: unknown }[] = [
    { name: 'SUCCESS', lines: ['SUCCESS: hold release succeeded'], want: { kind: 'success', text: 'hold release succeeded' } },
    { name: 'ERROR', lines: ["ERROR: common name 'x' not found"], want: { kind: 'error', text: "common name 'x' not found" } },
    { name: 'listing', lines: ['1795295566,CONNECTED,SUCCESS,,,,,', 'END'], want: { kind: 'lines', lines: ['1795295566,CONNECTED,SUCCESS,,,,,'] } },
    { name: 'empty listing', lines: ['END'], want: { kind: 'lines', lines: [] } },
    {
      name: 'SUCCESS inside a listing is data',
      lines: ['OpenVPN Version: x', 'SUCCESS: not a reply', 'END'],
      want: { kind: 'lines', lines: ['OpenVPN Version: x', 'SUCCESS: not a reply'] },
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const r = new ReplyCollector();
      let got: unknown;
      for (const l of c.lines) got = r.push(l) ?? got;
      expect(got).toEqual(c.want);
    });
  }

  it('refuses a reply larger than the limit', () => {
    const r = new ReplyCollector(100);
    expect(codeOf(() => {
      for (let i = 0; i < 20; i++) r.push('0123456789');
    })).toBe('MVPN_MGMT_PROTOCOL');
  });
});

describe('quoteArg', () => {
  const cases: [string, string][] = [
    ['node1', '"node1"'],
    ['with space', '"with space"'],
    ['q"uote', '"q\\"uote"'],
    ['back\\slash', '"back\\\\slash"'],
  ];
  for (const [input, want] of cases) it(input, () => expect(quoteArg(input)).toBe(want));
  it('refuses line breaks', () => {
    expect(codeOf(() => quoteArg('a\nkill b'))).toBe('MVPN_MGMT_ERROR');
    expect(codeOf(() => quoteArg('a\0'))).toBe('MVPN_MGMT_ERROR');
  });
});

describe('parseStatus3', () => {
  // Captured from openvpn 2.6.14 (server-bridge style, tap).
  const v26 = [
    'TITLE\tOpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)] [LZO] [LZ4] [EPOLL] [PKCS11] [MH/PKTINFO] [AEAD] [DCO]',
    'TIME\t2026-11-21 21:12:54\t1795295574',
    'HEADER\tCLIENT_LIST\tCommon Name\tReal Address\tVirtual Address\tVirtual IPv6 Address\tBytes Received\tBytes Sent\tConnected Since\tConnected Since (time_t)\tUsername\tClient ID\tPeer ID\tData Channel Cipher',
    'CLIENT_LIST\tcli\t198.18.5.2:45910\t203.0.113.100\t\t3324\t2248\t2026-11-21 21:12:46\t1795295566\tUNDEF\t0\t0\tAES-256-GCM',
    'HEADER\tROUTING_TABLE\tVirtual Address\tCommon Name\tReal Address\tLast Ref\tLast Ref (time_t)',
    'ROUTING_TABLE\t3a:09:17:c9:77:c8@0\tcli\t198.18.5.2:45910\t2026-11-21 21:12:46\t1795295566',
    'GLOBAL_STATS\tMax bcast/mcast queue length\t0',
    'GLOBAL_STATS\tdco_enabled\t0',
  ];

  it('parses a 2.6 listing by its header names', () => {
    const s = parseStatus3(v26);
    expect(s.time).toEqual(new Date(1795295574_000));
    expect(s.title).toMatch(/^OpenVPN 2\.6\.14/);
    expect(s.clients).toEqual([
      {
        cn: 'cli',
        realAddress: '198.18.5.2:45910',
        virtualAddress: '203.0.113.100',
        bytesIn: 3324,
        bytesOut: 2248,
        connectedSince: new Date(1795295566_000),
        clientId: 0,
        peerId: 0,
        cipher: 'AES-256-GCM',
      },
    ]);
    expect(s.routes).toEqual([{ virtualAddress: '3a:09:17:c9:77:c8@0', cn: 'cli', realAddress: '198.18.5.2:45910', lastRef: new Date(1795295566_000) }]);
    expect(s.globalStats).toEqual({ 'Max bcast/mcast queue length': '0', dco_enabled: '0' });
  });

  it('parses the older 2.4 layout (no Peer ID / cipher columns)', () => {
    const s = parseStatus3([
      'HEADER\tCLIENT_LIST\tCommon Name\tReal Address\tVirtual Address\tVirtual IPv6 Address\tBytes Received\tBytes Sent\tConnected Since\tConnected Since (time_t)\tUsername\tClient ID',
      'CLIENT_LIST\tn1\t192.0.2.9:1194\t\t\t10\t20\t2020-01-01 00:00:00\t1577836800\tUNDEF\t5',
    ]);
    expect(s.clients).toEqual([
      { cn: 'n1', realAddress: '192.0.2.9:1194', virtualAddress: '', bytesIn: 10, bytesOut: 20, connectedSince: new Date(1577836800_000), clientId: 5 },
    ]);
  });

  it('finds columns when a future openvpn reorders or adds them', () => {
    const s = parseStatus3([
      'HEADER\tCLIENT_LIST\tNew Column\tBytes Sent\tBytes Received\tCommon Name\tReal Address\tVirtual Address\tConnected Since (time_t)\tConnected Since',
      'CLIENT_LIST\tzzz\t7\t8\tn2\t198.51.100.4:5000\t203.0.113.9\t1600000000\t2020-09-13 12:26:40',
    ]);
    expect(s.clients[0]).toMatchObject({ cn: 'n2', bytesIn: 8, bytesOut: 7, connectedSince: new Date(1600000000_000) });
  });

  it('client-mode "OpenVPN STATISTICS" output has no clients', () => {
    expect(parseStatus3(['OpenVPN STATISTICS', 'Updated,2026-11-21 21:12:52', 'TCP/UDP read bytes,2280']).clients).toEqual([]);
  });

  it('CN with spaces survives (tab separated)', () => {
    const s = parseStatus3([v26[2]!, 'CLIENT_LIST\tnode one\t198.18.5.2:1\t\t\t1\t2\t2026-11-21 21:12:46\t1795295566\tUNDEF\t1\t1\tAES-256-GCM']);
    expect(s.clients[0]?.cn).toBe('node one');
  });

  const bad: [string, string[]][] = [
    ['row before header', ['CLIENT_LIST\tcli\t1.2.3.4:1\t\t\t1\t2\tx\t1']],
    ['non-numeric bytes', [v26[2]!, 'CLIENT_LIST\tcli\t198.18.5.2:1\t\t\tmany\t2\t2026-11-21 21:12:46\t1795295566\tUNDEF\t0\t0\tx']],
    ['missing required column', ['HEADER\tCLIENT_LIST\tCommon Name\tReal Address', 'CLIENT_LIST\tcli\t198.18.5.2:1']],
  ];
  for (const [name, lines] of bad) {
    it(`rejects ${name}`, () => expect(codeOf(() => parseStatus3(lines))).toBe('MVPN_MGMT_PROTOCOL'));
  }
});
