// Bundle src/main.ts and its dependencies into one CommonJS file, the input
// of the single executable (Node SEA needs a CommonJS main script).
import { build } from 'esbuild';

// The PostgreSQL store's worker thread (src/server/store/pg-worker.ts) with
// the `pg` client, bundled on its own: the executable evaluates this text as
// a worker only when a server's config names a PostgreSQL store.
const pgWorker = await build({
  entryPoints: ['src/server/store/pg-worker.ts'],
  write: false,
  bundle: true,
  platform: 'node',
  target: 'node24',
  format: 'cjs',
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
  // pg's optional native binding and its Cloudflare socket shim are never loaded here.
  external: ['pg-native', 'cloudflare:sockets'],
});

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
  define: { 'import.meta.url': 'importMetaUrl', MVPN_PG_WORKER_SOURCE: JSON.stringify(pgWorker.outputFiles[0].text) },
  banner: { js: 'const importMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
});
