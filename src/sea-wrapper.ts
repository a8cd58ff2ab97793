/**
 * The CommonJS wrapper the CLI bundle runs in inside the executable (the
 * names Node passes a main script; a hashbang line, which only a file's
 * first line may carry, becomes a blank line). sea-entry.ts compiles the
 * bundle in it, and scripts/code-cache.mjs compiles the very same text to
 * make the code cache, which V8 accepts only for identical source.
 */
export function wrapCli(bundle: string): string {
  return `(function (exports, require, module, __filename, __dirname) {${bundle.replace(/^#!.*/, '')}\n})`;
}

/**
 * V8 flags the agent sets for itself before compiling its assets
 * (sea-entry.ts): baseline code only (Ignition and Sparkplug; no Maglev or
 * TurboFan). An idle agent's hot paths are small, and the optimizing
 * compilers' pages of the executable and their code were ~7 MiB of
 * file-backed and ~3 MiB of anonymous memory with 16 networks, at the same
 * join time and idle CPU (BENCHMARKS.md, issue 14 fourth round). Not in the
 * executable's execArgv: server mode and the CLI keep them. V8's code-cache
 * check covers these flags, so scripts/code-cache.mjs sets them the same
 * way (at run time, in this order) for the agent's assets.
 */
export const AGENT_V8_FLAGS: readonly string[] = ['--no-maglev', '--no-turbofan'];
