/**
 * The two commands people type all day, answered without building yargs'
 * command tree (~10 ms of every `status`, issue 14): `--version` alone, and
 * `status` with only its own options in the forms yargs reads the same way
 * (`--json`, `--prometheus`, `--runtime-dir DIR` / `--runtime-dir=DIR`, each
 * at most once). Every other argv, `--help`, a negation, a typo or a repeat
 * included, goes to yargs (main.ts), so behaviour and help text are yargs'.
 * test/unit/cli-fast.test.ts checks each shape against yargs' own parse.
 */
import { DEFAULT_CONFIG_PATH, DEFAULT_RUNTIME_DIR } from '../agent/paths.ts';
import { VERSION } from '../version.ts';
import type { Io } from './io.ts';
import { reportFailure } from './report.ts';
import { statusCommand, type StatusArgs } from './status.ts';

export type FastCommand = { readonly kind: 'version' } | { readonly kind: 'status'; readonly args: StatusArgs };

/** The command `argv` names when it is one of the shapes above, else undefined (parse with yargs). */
export function fastCommand(argv: readonly string[]): FastCommand | undefined {
  if (argv.length === 1 && argv[0] === '--version') return { kind: 'version' };
  if (argv[0] !== 'status') return undefined;
  const args = { json: false, prometheus: false, 'runtime-dir': DEFAULT_RUNTIME_DIR };
  const seen = new Set<string>();
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    let name: string;
    if (a === '--json' || a === '--prometheus') {
      name = a.slice(2);
      args[name as 'json' | 'prometheus'] = true;
    } else if (a === '--runtime-dir' || a.startsWith('--runtime-dir=')) {
      name = 'runtime-dir';
      const value = a === '--runtime-dir' ? argv[++i] : a.slice('--runtime-dir='.length);
      // A missing, empty or dash-led value is yargs' to judge.
      if (value === undefined || value === '' || value.startsWith('-')) return undefined;
      args['runtime-dir'] = value;
    } else {
      return undefined;
    }
    if (seen.has(name)) return undefined;
    seen.add(name);
  }
  return { kind: 'status', args };
}

/** Runs a fast command with main.ts' output and error reporting; resolves to the exit code. */
export async function runFast(cmd: FastCommand, io: Io): Promise<number> {
  if (cmd.kind === 'version') {
    io.stdout.write(`${VERSION}\n`);
    return 0;
  }
  try {
    return await statusCommand.run(cmd.args, io);
  } catch (err) {
    return reportFailure(io, err);
  }
}

/**
 * The agent's own argv as systemd starts it (`run`, `run --config FILE`,
 * `run --config=FILE`): its options without yargs, whose parser and the
 * `run` command's help text were ~15–30 ms of every agent start before the
 * first network (issue 14). src/main.ts (the CLI asset, not the executable's
 * entry: the agent is not in it) calls run.ts with these; every other shape
 * goes to yargs. test/unit/cli-fast.test.ts checks each against yargs.
 */
export function fastRunArgs(argv: readonly string[]): { config: string } | undefined {
  if (argv[0] !== 'run') return undefined;
  if (argv.length === 1) return { config: DEFAULT_CONFIG_PATH };
  const a = argv[1]!;
  const value = a === '--config' && argv.length === 3 ? argv[2] : a.startsWith('--config=') && argv.length === 2 ? a.slice('--config='.length) : undefined;
  // A missing, empty or dash-led value is yargs' to judge.
  return value === undefined || value === '' || value.startsWith('-') ? undefined : { config: value };
}
