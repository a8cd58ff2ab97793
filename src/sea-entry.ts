/**
 * The single executable's main script (build.sh; issue 14). Node compiles
 * and code-cache-checks the SEA main script on every start, and for the
 * whole 3 MB CLI that was most of `status` and `--version`. So the main
 * script is only this and the fast path (cli/fast.ts: `--version`, plain
 * `status`). The rest are SEA assets, each compiled here only when argv
 * needs it, with the V8 code cache build.sh made for it (`NAME.cache`,
 * absent or rejected = a plain compile):
 * - `agent.cjs` (src/agent-main.ts): the agent's `run [--config FILE]`,
 *   which stays up for an experiment's whole life and so should hold the
 *   source and code of its own modules only; the libraries it loads on
 *   first use are `lib-NAME.cjs` (below, `assetRequire`);
 * - `cli.cjs` (src/main.ts): the whole CLI, for everything else.
 * The executable is still one file.
 */
import { getAsset } from 'node:sea';
import { setFlagsFromString } from 'node:v8';
import { constants, Script } from 'node:vm';
import type { runAgent } from './agent-main.ts';
import { fastCommand, fastRunArgs, runFast } from './cli/fast.ts';
import { processIo } from './cli/io.ts';
import { AGENT_V8_FLAGS, wrapCli } from './sea-wrapper.ts';

/**
 * Node's built-in modules that agent.cjs requires as it is evaluated,
 * separated by spaces (scripts/bundle.mjs reads them off the bundle). The
 * entry loads them before it sets AGENT_V8_FLAGS: Node's code cache of its
 * own modules is valid only under the V8 flags it was made with, so after
 * the change each of them would be compiled from source, ~10 ms of every
 * agent start (issue 14: join).
 */
declare const MVPN_AGENT_BUILTINS: string;

/** Exports of the library assets evaluated so far (each once). */
const libs = new Map<string, unknown>();
/**
 * The `require` an asset runs with: `mvpn-lib:NAME` (the agent's stubs for
 * the libraries it loads on first use, scripts/bundle.mjs) is asset
 * `lib-NAME.cjs`; anything else (Node's built-ins) is Node's.
 */
const assetRequire = Object.assign((id: string): unknown => {
  // The require Node gives a main script, as the bundles would get it without this wrapper.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  if (!id.startsWith('mvpn-lib:')) return require(id);
  const name = id.slice('mvpn-lib:'.length);
  if (!libs.has(name)) libs.set(name, evaluateAsset(`lib-${name}`));
  return libs.get(name);
}, require);

/** Compiles and runs the bundle in asset `NAME.cjs` as a CommonJS module; returns its exports. */
function evaluateAsset(name: string): unknown {
  let cachedData: Buffer | undefined;
  try {
    cachedData = Buffer.from(getAsset(`${name}.cache`));
  } catch {
    cachedData = undefined;
  }
  const script = new Script(wrapCli(getAsset(`${name}.cjs`, 'utf8')), {
    filename: __filename,
    ...(cachedData ? { cachedData } : {}),
    importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const mod = { exports: {} as unknown };
  (script.runInThisContext() as (...a: unknown[]) => void)(mod.exports, assetRequire, mod, __filename, __dirname);
  return mod.exports;
}

function exitWith(done: Promise<number>): void {
  done.then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`mvpn-client: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 5;
    },
  );
}

const argv = process.argv.slice(2);
const fast = fastCommand(argv);
const agent = fast ? undefined : fastRunArgs(argv);
if (fast) exitWith(runFast(fast, processIo()));
else if (agent) {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  for (const id of MVPN_AGENT_BUILTINS.split(' ')) require(id);
  // Baseline code only (AGENT_V8_FLAGS); set before any of the agent's code is compiled.
  for (const flag of AGENT_V8_FLAGS) setFlagsFromString(flag);
  exitWith((evaluateAsset('agent') as { runAgent: typeof runAgent }).runAgent(agent, processIo()));
} else evaluateAsset('cli');
