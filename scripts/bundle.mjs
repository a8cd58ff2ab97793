// Bundle src/main.ts and its dependencies into one CommonJS file, the input
// of the single executable (Node SEA needs a CommonJS main script).
import { build } from 'esbuild';

await build({
  entryPoints: ['src/main.ts'],
  outfile: 'build/mvpn-client.cjs',
  bundle: true,
  platform: 'node',
  target: 'node24',
  format: 'cjs',
  minify: false,
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
  // yargs reads import.meta.url to find its locale files; in a single
  // executable there are none to find, so point it at the executable.
  define: { 'import.meta.url': 'importMetaUrl' },
  banner: { js: 'const importMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
});
