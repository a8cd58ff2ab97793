import { readFile, type FileHandle, stat } from 'node:fs/promises';

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

/**
 * The file's bytes, or undefined when it does not exist (state files that
 * appear only once something happened: a pinned chain, stored marks). Any
 * other failure (permissions, a directory) is thrown: a file that exists
 * but cannot be read is never taken for "none".
 */
export async function readIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** readIfExists as UTF-8 text. */
export async function readTextIfExists(path: string): Promise<string | undefined> {
  return (await readIfExists(path))?.toString('utf8');
}

/** Inode, mtime and size of a file: changes when it is replaced or rewritten (cheap change detection, one stat). */
export async function fileStamp(path: string): Promise<string> {
  const st = await stat(path);
  return `${st.ino}:${st.mtimeMs}:${st.size}`;
}
