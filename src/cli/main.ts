import yargs, { type Argv } from 'yargs';
import { ExitCode, MvpnError, UsageError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { isGroup, isLazy, type CliCommand, type CliEntry, type CliGroup } from './command.ts';
import { commands } from './commands.ts';
import type { Io } from './io.ts';
import { reportFailure } from './report.ts';

/**
 * Parse argv and dispatch to one subcommand. Resolves to the exit code; never
 * calls process.exit itself, so tests can drive it with buffers.
 */
export async function main(argv: readonly string[], io: Io, tree: readonly CliEntry[] = commands): Promise<number> {
  let exitCode: number = ExitCode.ok;
  let ran = false;

  // Only the lazy entry argv names is loaded; the others stay a name and a line of --help.
  const named = argv.find((a) => !a.startsWith('-'));
  const resolved: (CliCommand | CliGroup)[] = [];
  for (const entry of tree) {
    if (!isLazy(entry)) resolved.push(entry);
    else if (entry.command.split(' ')[0] === named) resolved.push({ ...(await entry.load()), describe: entry.describe } as CliCommand | CliGroup);
    else {
      const unloaded = async (): Promise<number> => {
        throw new MvpnError('MVPN_INTERNAL', `internal error: ${entry.command} dispatched without being loaded`);
      };
      resolved.push({ command: entry.command, describe: entry.describe, builder: (y) => y, run: unloaded });
    }
  }

  const register = (y: Argv, entry: CliCommand | CliGroup): Argv => {
    if (isGroup(entry)) {
      return y.command(
        entry.command,
        entry.describe,
        (sub) => {
          for (const child of entry.children) register(sub, child);
          return sub.demandCommand(1, `${entry.command}: name a subcommand (see --help)`);
        },
        () => undefined,
      );
    }
    return y.command(entry.command, entry.describe, entry.builder, async (args) => {
      ran = true;
      exitCode = await entry.run(args, io);
    });
  };

  let parser = yargs([...argv])
    .scriptName('mvpn-client')
    .version(VERSION)
    .help()
    .alias('h', 'help')
    .strict()
    .recommendCommands()
    .wrap(Math.min(100, process.stdout.columns ?? 100))
    .demandCommand(1, 'name a command (see --help)')
    .exitProcess(false)
    .fail((msg, err) => {
      // Throwing stops yargs before any handler runs; main reports it below.
      if (err) throw err;
      // yargs reads a lone "-" after an option as a stray argument of its own
      const dash = /^Unknown arguments?: (.*, )?-(,|$)/.test(msg ?? '');
      throw new UsageError(msg || 'invalid usage', dash ? { hint: 'to name standard output or input after an option, join them: --out=-' } : {});
    });
  parser = parser.parserConfiguration({ 'boolean-negation': true });
  for (const entry of resolved) parser = register(parser, entry);

  let output = '';
  try {
    await parser.parseAsync([...argv], {}, (_err, _parsed, out) => {
      output = out;
    });
  } catch (err) {
    return reportFailure(io, err);
  }
  if (!ran && output) io.stdout.write(output.endsWith('\n') ? output : output + '\n');
  return exitCode;
}
