/**
 * A file argument that may be `-` (standard input), so one server can hand a
 * file to another through an admin channel (`ssh ops mvpn-client server …`)
 * without a shared file system. Bounded either way: an input larger than
 * `maxBytes` is refused with its size named, never read into memory whole.
 */
import { open } from 'node:fs/promises';
import { resolve } from 'node:path';
import { UsageError } from '../errors.ts';
import { readAtMost } from '../util/read-file.ts';
import type { Io } from './io.ts';

export async function readInput(io: Io, file: string, what: string, maxBytes: number): Promise<Buffer> {
  // yargs hands a lone "-" in a command's positional over as "" (an empty path names no file)
  if (file === '-' || file === '') {
    if (!io.stdin) throw new UsageError(`${what}: "-" means standard input, and there is none here`);
    const data = await io.stdin(maxBytes);
    if (data.length > maxBytes) throw new UsageError(`${what} on standard input is more than ${maxBytes} bytes, the most accepted`);
    if (data.length === 0) throw new UsageError(`${what} on standard input is empty`);
    return data;
  }
  let fh;
  try {
    fh = await open(resolve(file), 'r');
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${file}: ${(err as Error).message}`);
  }
  try {
    const { size } = await fh.stat();
    if (size > maxBytes) throw new UsageError(`${what} ${file} is ${size} bytes; at most ${maxBytes} are accepted`);
    const data = await readAtMost(fh, maxBytes);
    if (data.length > maxBytes) throw new UsageError(`${what} ${file} grew past ${maxBytes} bytes while it was read; at most ${maxBytes} are accepted`);
    return data;
  } finally {
    await fh.close();
  }
}
