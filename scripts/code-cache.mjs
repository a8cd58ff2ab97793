// The V8 code cache of the CLI bundle as the executable compiles it
// (src/sea-entry.ts): the same wrapper around the same text, compiled by
// the same runtime with the executable's V8 flags (V8 rejects a cache made
// under other flags). Usage: node --max-semi-space-size=1 scripts/code-cache.mjs IN OUT [--agent]
// --agent: an asset the agent compiles, after setting AGENT_V8_FLAGS at run time as it does.
import { readFileSync, writeFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { Script } from 'node:vm';
import { AGENT_V8_FLAGS, wrapCli } from '../src/sea-wrapper.ts';

const [input, output, role] = process.argv.slice(2);
if (role === '--agent') for (const flag of AGENT_V8_FLAGS) setFlagsFromString(flag);
const script = new Script(wrapCli(readFileSync(input, 'utf8')), { filename: input });
writeFileSync(output, script.createCachedData());
