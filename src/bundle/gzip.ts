/**
 * A strict gunzip for bundles: exactly one gzip member with a valid header,
 * CRC32 and length trailer, and nothing after it. Node's gunzip would ignore
 * trailing garbage and skip the CRC check for raw inflate; a trust boundary
 * wants one byte string to mean one thing. Decompression stops as soon as
 * the output passes `maxOutput` (zlib's maxOutputLength), so a gzip bomb
 * costs at most that much memory.
 */
import { crc32, inflateRawSync } from 'node:zlib';
import { BundleError } from '../errors.ts';

const FHCRC = 2;
const FEXTRA = 4;
const FNAME = 8;
const FCOMMENT = 16;

function invalid(message: string, cause?: unknown): BundleError {
  return new BundleError('MVPN_BUNDLE_GZIP_INVALID', `the bundle is not a valid gzip file: ${message}`, cause === undefined ? {} : { cause });
}

/** Offset of the deflate data after the gzip header. */
function headerLength(b: Uint8Array): number {
  if (b.length < 18) throw invalid('too short');
  if (b[0] !== 0x1f || b[1] !== 0x8b) throw invalid('wrong magic bytes');
  if (b[2] !== 8) throw invalid(`compression method ${b[2]} is not deflate`);
  const flags = b[3]!;
  if (flags & 0xe0) throw invalid('reserved header flags are set');
  let off = 10;
  if (flags & FEXTRA) {
    if (off + 2 > b.length) throw invalid('truncated header');
    off += 2 + (b[off]! | (b[off + 1]! << 8));
  }
  for (const flag of [FNAME, FCOMMENT]) {
    if (flags & flag) {
      const end = b.indexOf(0, off);
      if (end < 0) throw invalid('truncated header');
      off = end + 1;
    }
  }
  if (flags & FHCRC) {
    if (off + 2 > b.length) throw invalid('truncated header');
    const want = b[off]! | (b[off + 1]! << 8);
    if ((crc32(b.subarray(0, off)) & 0xffff) !== want) throw invalid('header CRC mismatch');
    off += 2;
  }
  if (off + 8 > b.length) throw invalid('truncated');
  return off;
}

export function gunzipStrict(bytes: Uint8Array, maxOutput: number): Buffer {
  const start = headerLength(bytes);
  let out: Buffer;
  let consumed: number;
  try {
    const r = inflateRawSync(bytes.subarray(start), { maxOutputLength: maxOutput, info: true }) as unknown as {
      buffer: Buffer;
      engine: { bytesWritten: number };
    };
    out = r.buffer;
    consumed = r.engine.bytesWritten;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new BundleError('MVPN_BUNDLE_TOO_LARGE', `the bundle decompresses to more than ${maxOutput} bytes (a gzip bomb?)`, {
        context: { limit: maxOutput },
        cause: err,
      });
    }
    throw invalid((err as Error).message, err);
  }
  const trailer = start + consumed;
  if (bytes.length - trailer < 8) throw invalid('truncated (no trailer)');
  if (bytes.length - trailer > 8) throw invalid(`${bytes.length - trailer - 8} bytes of trailing data after the gzip member`);
  const view = Buffer.from(bytes.buffer, bytes.byteOffset + trailer, 8);
  if (view.readUInt32LE(0) !== crc32(out)) throw invalid('CRC32 mismatch');
  if (view.readUInt32LE(4) !== out.length % 2 ** 32) throw invalid('length mismatch');
  return out;
}
