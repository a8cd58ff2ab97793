import { defineConfig } from 'vitest/config';

// Integration tests build network namespaces and run real openvpn; they are
// slow to set up but light, so files run in parallel with a hang-catching
// timeout rather than timed assertions.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    globalSetup: ['test/helpers/global-setup.ts'],
    setupFiles: ['test/helpers/file-cleanup.ts'],
    reporters: ['default'],
  },
});
