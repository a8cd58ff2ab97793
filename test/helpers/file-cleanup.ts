/**
 * Runs in every test file (vitest setupFiles): after the file's own hooks,
 * remove the temp directories it made with tmpDir() and did not remove. The
 * global teardown then fails the suite if any directory of this run is still
 * in /tmp, so a gap shows instead of piling up. It also stops the file's
 * PostgreSQL cluster (MVPN_TEST_STORE=postgres, test/helpers/postgres.ts).
 */
import { afterAll } from 'vitest';
import { stopSharedPostgres } from './postgres.ts';
import { removeAllTmpDirs } from './tmp.ts';

afterAll(async () => {
  await stopSharedPostgres();
  await removeAllTmpDirs();
});
