// Preloaded with `node --import` by the start-up cost test: writes a marker to
// stderr whenever anything resolves prom-client, by import or require.
import { registerHooks } from 'node:module';

registerHooks({
  resolve(specifier, context, nextResolve) {
    if (specifier === 'prom-client' || specifier.startsWith('prom-client/')) process.stderr.write('TRACE-LOADED prom-client\n');
    return nextResolve(specifier, context);
  },
});
