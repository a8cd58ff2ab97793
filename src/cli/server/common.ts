/**
 * What the `server …` subcommands share: the --state-dir and --json options,
 * opening the state directory (with one clear error when it is not
 * initialised), and output — `--json` prints one JSON value on stdout (an
 * error becomes `{"error": {...}}` there too, so scripts always get JSON),
 * otherwise a plain aligned table or a few lines for people.
 */
import type { Argv } from 'yargs';
import { ExitCode, exitCodeFor, toMvpnError } from '../../errors.ts';
import { systemClock } from '../../util/clock.ts';
import { DEFAULT_STATE_DIR, loadServerConfig } from '../../server/config.ts';
import type { ServerContext } from '../../server/ops/context.ts';
import { openStore } from '../../server/store/open.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { wireError } from '../../util/wire-error.ts';

export interface ServerArgs {
  'state-dir': string;
  json: boolean;
}

export function serverOptions<T>(y: Argv<T>): Argv<T & ServerArgs> {
  return y
    .option('state-dir', { type: 'string', default: DEFAULT_STATE_DIR, describe: 'server state directory (made by `server init`)' })
    .option('json', { type: 'boolean', default: false, describe: 'print JSON on stdout' }) as unknown as Argv<T & ServerArgs>;
}

export async function openServer(stateDir: string): Promise<ServerContext & { close(): void }> {
  const { config, paths } = await loadServerConfig(stateDir);
  const store = await openStore(config, paths);
  return { config, paths, store, clock: systemClock, close: () => store.close() };
}

export interface Output {
  readonly json: unknown;
  readonly text: string;
  readonly exitCode?: number;
  /** The command wrote its own output (a file to standard output); print nothing more, not even with --json. */
  readonly quiet?: boolean;
}

/** Opens the state dir, runs `fn`, prints its output the way --json asks, and closes. */
export async function serverAction(args: ServerArgs, io: Io, fn: (ctx: ServerContext) => Promise<Output> | Output): Promise<number> {
  let ctx: (ServerContext & { close(): void }) | undefined;
  try {
    ctx = await openServer(args['state-dir']);
    const out = await fn(ctx);
    writeOutput(args, io, out);
    return out.exitCode ?? ExitCode.ok;
  } catch (err) {
    return reportFailure(args, io, err);
  } finally {
    ctx?.close();
  }
}

/**
 * A `server …` subcommand, the one way they are declared: `options` adds
 * its positionals and options (--state-dir and --json come with it), and
 * `action` runs with the state directory open and returns what to print
 * (serverAction does the rest).
 */
export function serverCommand<A extends ServerArgs>(def: {
  readonly command: string;
  readonly describe: string;
  readonly options?: (y: Argv) => Argv;
  readonly action: (ctx: ServerContext, args: A, io: Io) => Promise<Output> | Output;
}): CliCommand<A> {
  return {
    command: def.command,
    describe: def.describe,
    builder: (y: Argv) => serverOptions(def.options ? def.options(y) : y) as unknown as Argv<A>,
    run: (args: A, io: Io) => serverAction(args, io, (ctx) => def.action(ctx, args, io)),
  };
}

/** Positionals and options several commands share, described once. */
export const NODE_ARG = { type: 'string', demandOption: true, describe: 'node id' } as const;
export const NETWORK_ARG = { type: 'string', demandOption: true, describe: 'network id' } as const;

export function writeOutput(args: Pick<ServerArgs, 'json'>, io: Io, out: Output): void {
  if (out.quiet) return;
  if (args.json) io.stdout.write(JSON.stringify(out.json, null, 2) + '\n');
  else if (out.text) io.stdout.write(out.text.endsWith('\n') ? out.text : out.text + '\n');
}

export function reportFailure(args: Pick<ServerArgs, 'json'>, io: Io, err: unknown): number {
  const e = toMvpnError(err);
  if (args.json) io.stdout.write(JSON.stringify(wireError(e.code, e.message, e.hint), null, 2) + '\n');
  io.stderr.write(`mvpn-client: ${e.message} [${e.code}]\n`);
  if (e.hint) io.stderr.write(`hint: ${e.hint}\n`);
  return exitCodeFor(e);
}

/** A plain aligned table; the first row is the header. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}
