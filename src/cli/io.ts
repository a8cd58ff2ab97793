/**
 * What a subcommand may touch of the outside world: its output streams and
 * environment. Subcommands write only through this, so tests call `run` with
 * buffers (nebula-cert's `verify(args, out, errOut)`).
 */
export interface Io {
  readonly stdout: { write(chunk: string): unknown };
  readonly stderr: { write(chunk: string): unknown };
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Standard input (for `-` as a file argument), read up to `limit` bytes and one more; absent = no input. */
  readonly stdin?: (limit: number) => Promise<Buffer>;
}

export function processIo(): Io {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env, stdin: (limit) => readStream(process.stdin, limit) };
}

/** Stops reading once more than `limit` bytes arrived, so the caller can refuse an oversized input by its size. */
async function readStream(s: NodeJS.ReadableStream, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of s) {
    const b = typeof c === 'string' ? Buffer.from(c) : c;
    chunks.push(b);
    n += b.length;
    if (n > limit) break;
  }
  return Buffer.concat(chunks);
}

/** An Io that records output, for tests. */
export function bufferIo(env: Record<string, string | undefined> = {}, stdin?: Uint8Array): Io & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    env,
    ...(stdin === undefined ? {} : { stdin: () => Promise.resolve(Buffer.from(stdin)) }),
    out: () => out,
    err: () => err,
  };
}
