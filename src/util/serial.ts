/**
 * A task that runs one pass at a time: a request during a pass runs one
 * more pass afterwards (with the latest request's cause), however many
 * came in meanwhile. A failing pass is reported, not thrown.
 */
export class SerialTask {
  private readonly pass: (cause: string) => Promise<void>;
  private readonly failed: (err: unknown) => void;
  private current: Promise<void> | undefined;
  private again: string | undefined;
  private closed = false;

  constructor(pass: (cause: string) => Promise<void>, failed: (err: unknown) => void) {
    this.pass = pass;
    this.failed = failed;
  }

  /** Runs a pass now, or once more after the current one; resolves when that is done. After close(): nothing. */
  run(cause: string): Promise<void> {
    if (this.closed) return this.current ?? Promise.resolve();
    if (this.current) {
      this.again = cause;
      return this.current;
    }
    this.current = (async () => {
      try {
        await this.pass(cause);
      } catch (err) {
        this.failed(err);
      } finally {
        this.current = undefined;
      }
      if (this.again !== undefined && !this.closed) {
        const next = this.again;
        this.again = undefined;
        await this.run(next);
      }
    })();
    return this.current;
  }

  /** No further passes; resolves when the current one is done. */
  async close(): Promise<void> {
    this.closed = true;
    await this.current?.catch(() => undefined);
  }
}
