// The V8 code cache of the CLI bundle as the executable compiles it
// (src/sea-entry.ts): the same wrapper around the same text, compiled by
// the same runtime with the executable's V8 flags (V8 rejects a cache made
// under other flags). Usage: node --max-semi-space-size=1 scripts/code-cache.mjs IN OUT
import { readFileSync, writeFileSync } from 'node:fs';
import { Script } from 'node:vm';
import { wrapCli } from '../src/sea-wrapper.ts';

const [input, output] = process.argv.slice(2);
const script = new Script(wrapCli(readFileSync(input, 'utf8')), { filename: input });
writeFileSync(output, script.createCachedData());
