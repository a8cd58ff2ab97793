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
