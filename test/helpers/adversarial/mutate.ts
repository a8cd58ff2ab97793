/**
 * Seeded mutations for the fuzz test: byte-level (bit flips, inserts,
 * deletes, truncation, splices), tar-header field edits (with or without a
 * fixed-up checksum) and JSON field edits (replace, delete, add, retype).
 * Everything is driven by one PRNG so a failure is reproduced by its seed.
 */

/** mulberry32: small, fast, good enough to drive mutations reproducibly. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

export type ByteMutation = 'flip' | 'flips' | 'set' | 'insert' | 'delete' | 'truncate' | 'append' | 'splice' | 'zero-run';

/** One random byte-level mutation; returns the new bytes and what was done. */
export function mutateBytes(rng: Rng, input: Buffer): { bytes: Buffer; what: string } {
  const b = Buffer.from(input);
  const kind = rng.pick<ByteMutation>(['flip', 'flip', 'flips', 'set', 'insert', 'delete', 'truncate', 'append', 'splice', 'zero-run']);
  const at = rng.int(b.length);
  switch (kind) {
    case 'flip': {
      const bit = rng.int(8);
      b[at] = b[at]! ^ (1 << bit);
      return { bytes: b, what: `flip bit ${bit} at ${at}` };
    }
    case 'flips': {
      const n = 2 + rng.int(8);
      for (let i = 0; i < n; i++) {
        const p = rng.int(b.length);
        b[p] = b[p]! ^ (1 << rng.int(8));
      }
      return { bytes: b, what: `${n} random bit flips` };
    }
    case 'set': {
      const v = rng.pick([0, 0xff, 0x2f, 0x2e, 0x30, rng.int(256)]);
      b[at] = v;
      return { bytes: b, what: `set byte ${at} to ${v}` };
    }
    case 'insert': {
      const n = 1 + rng.int(rng.pick([1, 4, 512]));
      return { bytes: Buffer.concat([b.subarray(0, at), rng.bytes(n), b.subarray(at)]), what: `insert ${n} bytes at ${at}` };
    }
    case 'delete': {
      const n = 1 + rng.int(rng.pick([1, 4, 512]));
      return { bytes: Buffer.concat([b.subarray(0, at), b.subarray(at + n)]), what: `delete ${n} bytes at ${at}` };
    }
    case 'truncate':
      return { bytes: b.subarray(0, at), what: `truncate to ${at}` };
    case 'append': {
      const n = 1 + rng.int(1024);
      return { bytes: Buffer.concat([b, rng.pick([rng.bytes(n), Buffer.alloc(n)])]), what: `append ${n} bytes` };
    }
    case 'splice': {
      const from = rng.int(b.length);
      const n = 1 + rng.int(64);
      const chunk = Buffer.from(b.subarray(from, from + n));
      chunk.copy(b, at);
      return { bytes: b, what: `copy ${n} bytes from ${from} to ${at}` };
    }
    case 'zero-run': {
      const n = 1 + rng.int(600);
      b.fill(0, at, Math.min(b.length, at + n));
      return { bytes: b, what: `zero ${n} bytes at ${at}` };
    }
  }
}

/** ustar header fields: [name, offset, length, kind]. */
const FIELDS = [
  ['name', 0, 100, 'text'],
  ['mode', 100, 8, 'octal'],
  ['uid', 108, 8, 'octal'],
  ['gid', 116, 8, 'octal'],
  ['size', 124, 12, 'octal'],
  ['mtime', 136, 12, 'octal'],
  ['chksum', 148, 8, 'octal'],
  ['typeflag', 156, 1, 'type'],
  ['linkname', 157, 100, 'text'],
  ['magic', 257, 6, 'text'],
  ['uname', 265, 32, 'text'],
  ['devmajor', 329, 8, 'octal'],
  ['prefix', 345, 155, 'text'],
] as const;

const NAMES = ['../x', '/etc/passwd', 'ca.crt', 'node.key', 'manifest.json', 'a/b', '.', '..', '', 'ca.crt/', '\\x', 'n\u00e9', '////x', 'x'.repeat(100)];
const TYPES = ['0', '1', '2', '3', '4', '5', '6', '7', 'g', 'x', 'L', 'K', 'S', 'V', 'D', '\0', 'Z'];

/** Offsets of every header block in a (well-formed) ustar stream. */
export function headerOffsets(tar: Buffer): number[] {
  const out: number[] = [];
  let off = 0;
  while (off + 512 <= tar.length) {
    const block = tar.subarray(off, off + 512);
    if (block.every((x) => x === 0)) break;
    out.push(off);
    const size = parseInt(block.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim() || '0', 8);
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

function fixChecksum(tar: Buffer, off: number): void {
  const h = tar.subarray(off, off + 512);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of h) sum += x;
  Buffer.from(sum.toString(8).padStart(6, '0') + '\0 ', 'latin1').copy(h, 148);
}

/** Edits one field of one header; the checksum is fixed up unless `keepChecksum` (then the edit also breaks it). */
export function mutateTarHeader(rng: Rng, tar: Buffer): { bytes: Buffer; what: string } {
  const b = Buffer.from(tar);
  const offsets = headerOffsets(b);
  const off = rng.pick(offsets);
  const [field, fo, len, kind] = rng.pick(FIELDS);
  let value: Buffer;
  if (kind === 'text') value = Buffer.from(rng.pick(NAMES), 'utf8');
  else if (kind === 'type') value = Buffer.from(rng.pick(TYPES), 'latin1');
  else {
    const n = rng.pick([0, 1, 0o777, 0o4755, 0o7777, 1000, 65534, 2 ** 33, rng.int(2 ** 31), 10, 100_000, 1 << 30]);
    value = Buffer.from(n.toString(8).padStart(len - 1, '0').slice(-(len - 1)) + '\0', 'latin1');
    if (rng.int(4) === 0) value = rng.bytes(len);
  }
  b.fill(0, off + fo, off + fo + len);
  value.copy(b, off + fo, 0, Math.min(len, value.length));
  const keep = field === 'chksum' || rng.int(4) === 0;
  if (!keep) fixChecksum(b, off);
  return { bytes: b, what: `header@${off} ${field}=${JSON.stringify(value.toString('latin1'))}${keep ? ' (checksum not fixed)' : ''}` };
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function paths(v: Json, prefix: (string | number)[] = []): (string | number)[][] {
  const out: (string | number)[][] = [prefix];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...prefix, i])));
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...prefix, k]));
  return out;
}

function randomValue(rng: Rng): Json {
  return rng.pick<() => Json>([
    () => null,
    () => true,
    () => rng.int(3) - 1,
    () => 1.5,
    () => 2 ** 53 + 2,
    () => -(2 ** 31),
    () => 1e300,
    () => '',
    () => 'x'.repeat(1 + rng.int(3000)),
    () => '../../etc/passwd',
    () => 'pc102',
    () => 'lab2',
    () => 'up /bin/sh',
    () => '198.18.0.1\nup /bin/sh',
    () => '2020-01-01T00:00:00Z',
    () => '2999-01-01T00:00:00Z',
    () => 'central',
    () => '0'.repeat(64),
    () => [],
    () => [['up', '/bin/sh']],
    () => ({}),
    () => ({ evil: 1 }),
  ])();
}

/** One random edit of a JSON value: replace, delete or add a field, or swap two values. */
export function mutateJson(rng: Rng, input: Json): { value: Json; what: string } {
  const value = structuredClone(input);
  const all = paths(value).filter((p) => p.length > 0);
  const path = rng.pick(all);
  let parent: Json = value;
  for (const k of path.slice(0, -1)) parent = (parent as Record<string, Json>)[k as string]!;
  const key = path[path.length - 1]!;
  const op = rng.pick(['replace', 'replace', 'delete', 'add']);
  const container = parent as Record<string | number, Json>;
  if (op === 'replace') {
    const v = randomValue(rng);
    container[key] = v;
    return { value, what: `${path.join('.')} = ${JSON.stringify(v).slice(0, 60)}` };
  }
  if (op === 'delete') {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete container[key];
    return { value, what: `delete ${path.join('.')}` };
  }
  if (Array.isArray(parent)) {
    parent.push(structuredClone(parent[0] ?? null));
    return { value, what: `duplicate an element of ${path.slice(0, -1).join('.')}` };
  }
  container[`extra_${rng.int(100)}`] = randomValue(rng);
  return { value, what: `add a field next to ${path.join('.')}` };
}
