import { defineConfig } from 'vitest/config';

/**
 * The server test files whose servers come from makeServer
 * (test/helpers/server-fixtures.ts): they run a second time with
 * MVPN_TEST_STORE=postgres, every test server's store a fresh database of a
 * PostgreSQL cluster the file starts (test/helpers/postgres.ts). server-store
 * is not among them, nor are server-lease and server-failover (they choose
 * their engines themselves) or server-l3-routing (no store). Files that use a server
 * only as the agent's fixture (agent-e2e and the like) stay on SQLite.
 */
export const POSTGRES_FILES = [
  'test/integration/server-*.test.ts',
  'test/integration/{ca-roll,api-ca-roll,anchor-rotation,network-options,agent-renew,agent-renew-expired,agent-via}.test.ts',
  'test/unit/api-ca-roll.test.ts',
];

// Integration tests build network namespaces and run real openvpn; they are
// slow to set up but light, so files run in parallel with a hang-catching
// timeout rather than timed assertions.
export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    globalSetup: ['test/helpers/global-setup.ts'],
    setupFiles: ['test/helpers/file-cleanup.ts'],
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'sqlite', include: ['test/**/*.test.ts'] } },
      {
        extends: true,
        test: {
          name: 'postgres',
          include: POSTGRES_FILES,
          exclude: [
            'test/integration/server-store.test.ts',
            'test/integration/server-store-kind.test.ts',
            'test/integration/server-lease.test.ts',
            'test/integration/server-failover.test.ts',
            'test/integration/server-l3-routing.test.ts',
          ],
          env: { MVPN_TEST_STORE: 'postgres' },
        },
      },
    ],
  },
});
