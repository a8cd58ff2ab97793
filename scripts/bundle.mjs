// Bundle src/main.ts and its dependencies into one CommonJS file, the input
// of the single executable (Node SEA needs a CommonJS main script).
import { readFile } from 'node:fs/promises';
import { isBuiltin } from 'node:module';
import { relative } from 'node:path';
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
// Which bundled modules a run evaluated: every module ends with a call that,
// with MVPN_TRACE_MODULES=FILE in the environment, appends its path to FILE
// (and does nothing otherwise). test/integration/role-split.test.ts reads it
// to prove that `status`, `--version` and the agent never evaluate server
// mode. Appended, not prepended: a directive prologue ("use strict") or a
// hashbang must stay first.
const traceModules = {
  name: 'trace-modules',
  setup(b) {
    b.onLoad({ filter: /\.(ts|js|cjs|mjs)$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      const rel = relative(process.cwd(), args.path);
      return { contents: `${text}\n;__mvpnTrace(${JSON.stringify(rel)});\n`, loader: args.path.endsWith('.ts') ? 'ts' : 'js' };
    });
  },
};
// A FILE that cannot be opened is reported once on stderr and the command runs untraced.
const traceBanner = `const __mvpnTrace = ((file) => {
  if (!file) return () => undefined;
  const fs = require("node:fs");
  try {
    const fd = fs.openSync(file, "a");
    return (m) => void fs.writeSync(fd, m + "\\n");
  } catch (err) {
    process.stderr.write("mvpn-client: MVPN_TRACE_MODULES: cannot open " + file + ": " + err.message + " (not tracing)\\n");
    return () => undefined;
  }
})(process.env.MVPN_TRACE_MODULES);`;

const common = {
  bundle: true,
  platform: 'node',
  target: 'node24',
  format: 'cjs',
  // Whitespace and syntax only: names stay (stack traces keep function names,
  // not useful line numbers). A 25% smaller script costs ~10 ms less start-up
  // CPU per command (code-cache check and top-level run; issue 14).
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
  // yargs reads import.meta.url to find its locale files; in a single
  // executable there are none to find, so point it at the executable.
  define: { 'import.meta.url': 'importMetaUrl', MVPN_PG_WORKER_SOURCE: JSON.stringify(pgWorker.outputFiles[0].text) },
  banner: { js: `const importMetaUrl = require("node:url").pathToFileURL(__filename).href;\n${traceBanner}` },
  plugins: [traceModules],
};
// The whole CLI: the executable's asset cli.cjs (and runnable on its own with node).
await build({ ...common, entryPoints: ['src/main.ts'], outfile: 'build/mvpn-client.cjs' });
// The agent (`run`) and only what it imports: the executable's asset agent.cjs,
// so a long-lived agent holds none of the CLI's other source and code.
// The libraries it loads only on first use (undici: an HTTPS source or
// enrollment; @peculiar/x509: a CSR; prom-client: metrics_listen) are assets
// of their own, lib-NAME.cjs: in agent.cjs each is a stub requiring
// `mvpn-lib:NAME`, which src/sea-entry.ts resolves by evaluating that asset
// once. An agent that never uses one never holds its source either.
const agentLibs = { undici: 'undici', '@peculiar/x509': 'x509', 'reflect-metadata': 'x509', 'prom-client': 'prom-client' };
const libEntries = {
  undici: "module.exports = require('undici');",
  // reflect-metadata before the library, as src/pki/x509.ts loads them.
  x509: "require('reflect-metadata'); module.exports = require('@peculiar/x509');",
  'prom-client': "module.exports = require('prom-client');",
};
const agentLibStubs = {
  name: 'agent-lib-stubs',
  setup(b) {
    b.onResolve({ filter: /^(undici|@peculiar\/x509|reflect-metadata|prom-client)$/ }, (args) => ({ path: args.path, namespace: 'mvpn-lib' }));
    b.onLoad({ filter: /.*/, namespace: 'mvpn-lib' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(`mvpn-lib:${agentLibs[args.path]}`)});`, loader: 'js' }));
    b.onResolve({ filter: /^mvpn-lib:/ }, (args) => ({ path: args.path, external: true }));
  },
};
const agent = await build({ ...common, entryPoints: ['src/agent-main.ts'], outfile: 'build/mvpn-agent.cjs', plugins: [traceModules, agentLibStubs], metafile: true });
// Node's built-in modules agent.cjs requires: src/sea-entry.ts loads them
// before it changes V8's flags for the agent (MVPN_AGENT_BUILTINS there says why).
const agentBuiltins = [
  ...new Set(
    Object.values(agent.metafile.outputs)
      .flatMap((o) => o.imports)
      .filter((i) => i.external && i.kind === 'require-call' && isBuiltin(i.path))
      .map((i) => (i.path.startsWith('node:') ? i.path : `node:${i.path}`)),
  ),
].sort();
for (const [name, contents] of Object.entries(libEntries)) {
  await build({ ...common, stdin: { contents, resolveDir: process.cwd(), sourcefile: `lib-${name}.cjs` }, outfile: `build/mvpn-lib-${name}.cjs` });
}
// The executable's main script: the fast path, else it compiles agent.cjs or cli.cjs (src/sea-entry.ts).
await build({ ...common, entryPoints: ['src/sea-entry.ts'], outfile: 'build/mvpn-entry.cjs', define: { ...common.define, MVPN_AGENT_BUILTINS: JSON.stringify(agentBuiltins.join(' ')) } });
