/**
 * Hand-made tar headers, for archives node-tar (rightly) refuses to create:
 * links, devices, FIFOs, setuid modes, foreign owners, `..` and absolute
 * names, lying sizes, broken checksums, pax and GNU long-name records. Every
 * field is written as given; only the checksum is computed (unless told not
 * to), so a test controls exactly what the parser sees.
 */

export interface RawEntry {
  /** Name field (100 bytes); longer names are cut, use `prefix` or a pax/GNU record. Bytes are written as is. */
  readonly name: string | Buffer;
  /** Type flag character: '0' file (default), '1' hard link, '2' symlink, '3' char dev, '4' block dev, '5' dir, '6' FIFO, 'x' pax, 'g' global pax, 'L' GNU long name, 'K' GNU long link. */
  readonly type?: string;
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  /** The size written into the header (default: the data length). */
  readonly size?: number;
  /** The bytes that follow the header (padded to 512). */
  readonly data?: Buffer;
  readonly linkname?: string | Buffer;
  readonly prefix?: string | Buffer;
  readonly uname?: string;
  readonly gname?: string;
  readonly devmajor?: number;
  readonly devminor?: number;
  readonly mtime?: number;
  /** Write this checksum instead of the right one. */
  readonly checksum?: number;
}

function put(block: Buffer, off: number, len: number, value: string | Buffer): void {
  const b = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  b.copy(block, off, 0, Math.min(len, b.length));
}

function octal(block: Buffer, off: number, len: number, n: number): void {
  put(block, off, len, n.toString(8).padStart(len - 1, '0') + '\0');
}

export function rawHeader(e: RawEntry): Buffer {
  const block = Buffer.alloc(512);
  const data = e.data ?? Buffer.alloc(0);
  put(block, 0, 100, e.name);
  octal(block, 100, 8, e.mode ?? 0o644);
  octal(block, 108, 8, e.uid ?? 0);
  octal(block, 116, 8, e.gid ?? 0);
  octal(block, 124, 12, e.size ?? data.length);
  octal(block, 136, 12, e.mtime ?? 1_700_000_000);
  block.fill(0x20, 148, 156);
  put(block, 156, 1, e.type ?? '0');
  if (e.linkname !== undefined) put(block, 157, 100, e.linkname);
  put(block, 257, 6, 'ustar\0');
  put(block, 263, 2, '00');
  put(block, 265, 32, e.uname ?? 'root');
  put(block, 297, 32, e.gname ?? 'root');
  octal(block, 329, 8, e.devmajor ?? 0);
  octal(block, 337, 8, e.devminor ?? 0);
  if (e.prefix !== undefined) put(block, 345, 155, e.prefix);
  let sum = 0;
  for (const b of block) sum += b;
  put(block, 148, 8, (e.checksum ?? sum).toString(8).padStart(6, '0') + '\0 ');
  return block;
}

function pad(data: Buffer): Buffer {
  return Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

/** Headers and padded data of `entries`, then (unless `end` is false) the two zero blocks. */
export function rawTar(entries: readonly RawEntry[], opts: { end?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) parts.push(rawHeader(e), pad(e.data ?? Buffer.alloc(0)));
  if (opts.end !== false) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** A pax extended header record set ("x", or "g" for global). */
export function paxEntry(records: Readonly<Record<string, string>>, type: 'x' | 'g' = 'x'): RawEntry {
  let body = '';
  for (const [k, v] of Object.entries(records)) {
    const rest = ` ${k}=${v}\n`;
    const restLen = Buffer.byteLength(rest);
    let len = restLen + 1;
    while (len !== restLen + String(len).length) len = restLen + String(len).length;
    body += `${len}${rest}`;
  }
  return { name: 'PaxHeader', type, data: Buffer.from(body, 'utf8') };
}

/** A GNU long-name ('L') or long-link ('K') record for the next entry. */
export function gnuLongEntry(value: string, type: 'L' | 'K' = 'L'): RawEntry {
  return { name: '././@LongLink', type, data: Buffer.from(value + '\0', 'utf8') };
}
