/**
 * A text stream as lines: `fn` gets each complete line without its line end
 * (LF or CRLF), empty lines skipped, every line (and a partial one held
 * while it waits for its end) cut at `maxLen` characters so a stream
 * without newlines cannot grow memory.
 */
export function onLines(stream: NodeJS.ReadableStream, maxLen: number, fn: (line: string) => void): void {
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = (parts.pop() ?? '').slice(0, maxLen);
    for (const raw of parts) {
      const line = raw.replace(/\r$/, '').slice(0, maxLen);
      if (line !== '') fn(line);
    }
  });
}
