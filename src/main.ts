#!/usr/bin/env node
/**
 * Entry point of the `mvpn-client` binary: parse, dispatch, exit. All the
 * work lives in modules that know nothing about argv.
 */
import { main } from './cli/main.ts';
import { processIo } from './cli/io.ts';

main(process.argv.slice(2), processIo()).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`mvpn-client: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 5;
  },
);
