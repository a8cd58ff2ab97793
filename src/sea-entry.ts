/**
 * The single executable's main script (build.sh; issue 14). Node compiles
 * and code-cache-checks the SEA main script on every start, and for the
 * whole 3 MB CLI that was most of `status` and `--version`. So the main
 * script is only this and the fast path (cli/fast.ts: `--version`, plain
 * `status`); the whole CLI (src/main.ts's bundle) is the SEA asset
 * `cli.cjs`, compiled here only when argv needs it, with the V8 code cache
 * build.sh made for it (asset `cli.cache`, absent or rejected = a plain
 * compile). The executable is still one file.
 */
import { getAsset } from 'node:sea';
import { constants, Script } from 'node:vm';
import { fastCommand, runFast } from './cli/fast.ts';
import { processIo } from './cli/io.ts';
import { wrapCli } from './sea-wrapper.ts';


function runCli(): void {
  let cachedData: Buffer | undefined;
  try {
    cachedData = Buffer.from(getAsset('cli.cache'));
  } catch {
    cachedData = undefined;
  }
  const script = new Script(wrapCli(getAsset('cli.cjs', 'utf8')), {
    filename: __filename,
    ...(cachedData ? { cachedData } : {}),
    importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  (script.runInThisContext() as (...a: unknown[]) => void)(module.exports, require, module, __filename, __dirname);
}

const fast = fastCommand(process.argv.slice(2));
if (fast === undefined) {
  runCli();
} else {
  runFast(fast, processIo()).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`mvpn-client: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 5;
    },
  );
}
