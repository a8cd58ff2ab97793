/**
 * A minimal DER (X.690) writer and reader, just enough for the one
 * certificate profile this project issues (cert.ts).
 *
 * Why not @peculiar/x509 for issuing: its generic ASN.1 schema machinery
 * costs ~3 ms of JavaScript per certificate, twenty times the signature
 * itself, and a server exporting 1,000 nodes pays it 1,000 times. The
 * library stays the reference the tests compare this writer's output with,
 * byte for byte.
 *
 * The writer only emits definite-length, minimal encodings. The reader
 * checks bounds on every element; read.ts (certificates, CRLs) and csr.ts
 * build on it for untrusted input.
 */

export const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  utf8String: 0x0c,
  printableString: 0x13,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
} as const;

function lengthBytes(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) out.unshift(v & 0xff);
  return [0x80 | out.length, ...out];
}

/** One TLV: `tag`, the minimal definite length, then the concatenated contents. */
export function tlv(tag: number, ...contents: readonly Uint8Array[]): Buffer {
  let len = 0;
  for (const c of contents) len += c.length;
  const head = lengthBytes(len);
  const out = Buffer.allocUnsafe(1 + head.length + len);
  out[0] = tag;
  for (let i = 0; i < head.length; i++) out[1 + i] = head[i]!;
  let at = 1 + head.length;
  for (const c of contents) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

export const seq = (...contents: readonly Uint8Array[]): Buffer => tlv(TAG.sequence, ...contents);
export const set = (...contents: readonly Uint8Array[]): Buffer => tlv(TAG.set, ...contents);
/** [n] EXPLICIT / constructed context-specific tag. */
export const explicit = (n: number, ...contents: readonly Uint8Array[]): Buffer => tlv(0xa0 | n, ...contents);
/** [n] IMPLICIT primitive context-specific tag. */
export const implicit = (n: number, content: Uint8Array): Buffer => tlv(0x80 | n, content);
export const octetString = (b: Uint8Array): Buffer => tlv(TAG.octetString, b);
export const bitString = (b: Uint8Array): Buffer => tlv(TAG.bitString, Uint8Array.of(0), b);
export const derTrue: Buffer = Buffer.from([TAG.boolean, 1, 0xff]);
export const derNull: Buffer = Buffer.from([TAG.null, 0]);

/** An OBJECT IDENTIFIER from dotted text. */
export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map((a) => {
    if (!/^\d+$/.test(a)) throw new Error(`invalid OID ${dotted}`);
    return Number(a);
  });
  if (arcs.length < 2 || arcs[0]! > 2 || (arcs[0]! < 2 && arcs[1]! > 39)) throw new Error(`invalid OID ${dotted}`);
  const body: number[] = [];
  const arc = (v: number): void => {
    const b = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) b.unshift(0x80 | (x & 0x7f));
    body.push(...b);
  };
  arc(arcs[0]! * 40 + arcs[1]!);
  for (const a of arcs.slice(2)) arc(a);
  return tlv(TAG.oid, Uint8Array.from(body));
}

/** A non-negative INTEGER from big-endian magnitude bytes (leading zeros dropped, a 00 added when the top bit is set). */
export function unsignedInteger(magnitude: Uint8Array): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const m = magnitude.subarray(i);
  if (m.length === 0) return tlv(TAG.integer, Uint8Array.of(0));
  return (m[0]! & 0x80) !== 0 ? tlv(TAG.integer, Uint8Array.of(0), m) : tlv(TAG.integer, m);
}

/** PrintableString's alphabet (X.680 §41.4). */
const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

/** A directory string: PrintableString when the text allows it, else UTF8String (what @peculiar/x509 and openssl choose). */
export function directoryString(text: string): Buffer {
  return PRINTABLE.test(text) ? tlv(TAG.printableString, Buffer.from(text, 'ascii')) : tlv(TAG.utf8String, Buffer.from(text, 'utf8'));
}

const two = (n: number): string => String(n).padStart(2, '0');

/**
 * An X.509 Time (RFC 5280 §4.1.2.5): UTCTime for 1950-2049, GeneralizedTime
 * otherwise, always UTC ("Z") and whole seconds (fractions are dropped).
 */
export function time(d: Date): Buffer {
  const y = d.getUTCFullYear();
  if (y < 0 || y > 9999) throw new Error(`date ${d.toISOString()} cannot be encoded`);
  const rest = `${two(d.getUTCMonth() + 1)}${two(d.getUTCDate())}${two(d.getUTCHours())}${two(d.getUTCMinutes())}${two(d.getUTCSeconds())}Z`;
  return y >= 1950 && y <= 2049 ? tlv(TAG.utcTime, Buffer.from(`${two(y % 100)}${rest}`, 'ascii')) : tlv(TAG.generalizedTime, Buffer.from(`${String(y).padStart(4, '0')}${rest}`, 'ascii'));
}

/** One element read from DER: its tag and where its header and content are in the buffer. */
export interface DerElement {
  readonly tag: number;
  readonly start: number;
  readonly contentStart: number;
  readonly end: number;
}

/** The element starting at `offset` (single-byte tags, definite lengths only). */
export function readElement(buf: Uint8Array, offset: number, limit = buf.length): DerElement {
  if (offset + 2 > limit) throw new Error('DER: truncated element');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new Error('DER: multi-byte tags are not supported');
  let len = buf[offset + 1]!;
  let at = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error('DER: unsupported length encoding');
    if (at + n > limit) throw new Error('DER: truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[at + i]!;
    at += n;
  }
  if (at + len > limit) throw new Error('DER: element runs past its container');
  return { tag, start: offset, contentStart: at, end: at + len };
}

/** The elements inside a constructed element. */
export function childrenOf(buf: Uint8Array, parent: DerElement): DerElement[] {
  const out: DerElement[] = [];
  for (let at = parent.contentStart; at < parent.end; ) {
    const e = readElement(buf, at, parent.end);
    out.push(e);
    at = e.end;
  }
  return out;
}

/** The whole encoding (header and content) of `e`. */
export function encodingOf(buf: Uint8Array, e: DerElement): Buffer {
  return Buffer.from(buf.subarray(e.start, e.end));
}

/** Dotted text of an OID's content bytes. */
export function oidText(body: Uint8Array): string {
  const arcs: number[] = [];
  let v = 0;
  for (const b of body) {
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      if (arcs.length === 0) arcs.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
      else arcs.push(v);
      v = 0;
    }
  }
  return arcs.join('.');
}

/** The text of a directory string; anything that is not one reads as "" (which no CN rule accepts). */
export function directoryText(der: Buffer, e: DerElement): string {
  const body = der.subarray(e.contentStart, e.end);
  switch (e.tag) {
    case TAG.utf8String:
      return body.toString('utf8');
    case TAG.printableString:
    case 0x16: // IA5String
    case 0x14: // TeletexString
      return body.toString('latin1');
    case 0x1e: // BMPString
      return body.length % 2 === 0 ? Buffer.from(body).swap16().toString('utf16le') : '';
    default:
      return '';
  }
}

/** An X.509 Time (UTCTime YYMMDDHHMMSSZ, 1950-2049, or GeneralizedTime YYYYMMDDHHMMSSZ), the two forms RFC 5280 allows. */
export function readTime(der: Buffer, e: DerElement): Date {
  const text = der.subarray(e.contentStart, e.end).toString('latin1');
  const m = e.tag === TAG.utcTime ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text) : e.tag === TAG.generalizedTime ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text) : null;
  if (!m) throw new Error('DER: malformed time');
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const year = e.tag === TAG.utcTime ? (y >= 50 ? 1900 + y : 2000 + y) : y;
  const date = new Date(Date.UTC(year, mo - 1, d, h, mi, s));
  if (date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d || h > 23 || mi > 59 || s > 59) throw new Error('DER: malformed time');
  return date;
}
