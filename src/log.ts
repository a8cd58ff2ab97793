/**
 * Structured logging: every module defines its events as a discriminated
 * union on `kind` and a formatter table typed `Formatters<E>`, so the
 * compiler refuses a new event kind without a formatter.
 *
 * Output is one event per line on stderr. Under systemd (JOURNAL_STREAM set)
 * lines carry an sd-daemon `<N>` level prefix and no timestamp (journald adds
 * one); elsewhere an ISO timestamp and the level name. No colours.
 */

export type Level = 'debug' | 'info' | 'notice' | 'warning' | 'error';

export interface LogEvent {
  readonly kind: string;
}

export type Formatters<E extends LogEvent> = {
  readonly [K in E['kind']]: (event: Extract<E, { kind: K }>) => { level: Level; text: string };
};

export interface Logger<E extends LogEvent> {
  emit(event: E): void;
}

/** Where lines go; narrow so a test can collect them in an array. */
export interface LineSink {
  write(line: string): void;
}

const syslogLevel: Record<Level, number> = { debug: 7, info: 6, notice: 5, warning: 4, error: 3 };
const levelRank: Record<Level, number> = { debug: 0, info: 1, notice: 2, warning: 3, error: 4 };

export interface LoggerOptions {
  readonly sink?: LineSink;
  readonly journal?: boolean;
  readonly minLevel?: Level;
  readonly now?: () => Date;
}

export function stderrSink(): LineSink {
  return { write: (line) => process.stderr.write(line + '\n') };
}

export function createLogger<E extends LogEvent>(
  formatters: Formatters<E>,
  options: LoggerOptions = {},
): Logger<E> {
  const sink = options.sink ?? stderrSink();
  const journal = options.journal ?? process.env['JOURNAL_STREAM'] !== undefined;
  const minRank = levelRank[options.minLevel ?? 'info'];
  const now = options.now ?? (() => new Date());
  return {
    emit(event) {
      const format = (formatters as unknown as Record<string, (e: E) => { level: Level; text: string }>)[event.kind];
      if (format === undefined) throw new Error(`no log formatter for event kind ${event.kind}`);
      const { level, text } = format(event);
      if (levelRank[level] < minRank) return;
      const oneLine = text.replace(/[\r\n]+/g, ' ');
      sink.write(journal ? `<${syslogLevel[level]}>${oneLine}` : `${now().toISOString()} ${level.toUpperCase()} ${oneLine}`);
    },
  };
}

/** A logger that drops everything (tests that do not look at logs). */
export function nullLogger<E extends LogEvent>(): Logger<E> {
  return { emit: () => undefined };
}

/** A logger that records events as they are (tests that assert on them). */
export function memoryLogger<E extends LogEvent>(): Logger<E> & { events: E[] } {
  const events: E[] = [];
  return { events, emit: (e) => void events.push(e) };
}
