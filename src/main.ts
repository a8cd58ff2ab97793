#!/usr/bin/env node
/**
 * Entry point of the `mvpn-client` binary: parse, dispatch, exit. All the
 * work lives in modules that know nothing about argv. `--version` and plain
 * `status` take the fast path (cli/fast.ts); yargs and the command tree load
 * only for everything else.
 */
import { fastCommand, runFast } from './cli/fast.ts';
import { processIo } from './cli/io.ts';

const argv = process.argv.slice(2);
const fast = fastCommand(argv);
(fast ? runFast(fast, processIo()) : import('./cli/main.ts').then(({ main }) => main(argv, processIo()))).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`mvpn-client: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 5;
  },
);
