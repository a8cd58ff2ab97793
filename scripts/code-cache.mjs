// The V8 code cache of the CLI bundle as the executable compiles it
// (src/sea-entry.ts): the same wrapper around the same text, compiled by
// the same runtime with the executable's V8 flags (V8 rejects a cache made
// under other flags). Usage: node --max-semi-space-size=1 scripts/code-cache.mjs IN OUT [--agent]
// --agent: an asset the agent compiles, after setting AGENT_V8_FLAGS at run time as it does.
// Its top level is run here once before the cache is made: V8 puts in the
// cache every function compiled so far, so the agent does not compile the
// functions its own evaluation calls (issue 14: join). Those assets only
// define modules and export; the CLI asset runs its command, so it is not run.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { Script } from 'node:vm';
import { AGENT_V8_FLAGS, wrapCli } from '../src/sea-wrapper.ts';

const [input, output, role] = process.argv.slice(2);
if (role === '--agent') for (const flag of AGENT_V8_FLAGS) setFlagsFromString(flag);
const script = new Script(wrapCli(readFileSync(input, 'utf8')), { filename: input });
if (role === '--agent') {
  const require = createRequire(import.meta.url);
  // The executable's other assets (mvpn-lib:NAME) are loaded on first use, never while an asset is evaluated.
  const assetRequire = (id) => {
    if (id.startsWith('mvpn-lib:')) throw new Error(`${input} requires ${id} as it is evaluated`);
    return require(id);
  };
  const mod = { exports: {} };
  script.runInThisContext()(mod.exports, assetRequire, mod, input, dirname(input));
}
writeFileSync(output, script.createCachedData());
