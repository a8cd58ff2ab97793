import type { FileHandle } from 'node:fs/promises';

/**
 * Reads from `fh` until end of file or `maxBytes + 1` bytes, whichever comes
 * first: never more into memory, whatever the file claims its size is (it
 * may grow while being read). A result longer than `maxBytes` means "too
 * large"; the caller refuses it with its own error (or hands it to a parser
 * that does).
 */
export async function readAtMost(fh: FileHandle, maxBytes: number): Promise<Buffer> {
  const buf = Buffer.alloc(maxBytes + 1);
  let n = 0;
  while (n < buf.length) {
    const { bytesRead } = await fh.read(buf, n, buf.length - n, null);
    if (bytesRead === 0) break;
    n += bytesRead;
  }
  return buf.subarray(0, n);
}
