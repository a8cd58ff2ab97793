#!/usr/bin/env node
/**
 * Entry point of the `mvpn-client` binary: parse, dispatch, exit. All the
 * work lives in modules that know nothing about argv. `--version`, plain
 * `status` and the agent's `run [--config FILE]` take the fast path
 * (cli/fast.ts); yargs and the command tree load only for everything else.
 */
import { fastCommand, fastRunArgs, runFast } from './cli/fast.ts';
import { processIo } from './cli/io.ts';

const argv = process.argv.slice(2);
const io = processIo();
const fast = fastCommand(argv);
const agent = fast ? undefined : fastRunArgs(argv);
const done = fast
  ? runFast(fast, io)
  : agent
    ? import('./agent-main.ts').then(({ runAgent }) => runAgent(agent, io))
    : import('./cli/main.ts').then(({ main }) => main(argv, io));
done.then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`mvpn-client: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 5;
  },
);
