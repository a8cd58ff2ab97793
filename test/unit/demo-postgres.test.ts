/**
 * `demo --ha` without PostgreSQL installed: refused before anything is
 * built, with the package to install (src/demo/postgres.ts).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MvpnError } from '../../src/errors.ts';
import { pgBinDir } from '../../src/demo/postgres.ts';
import { tmpDir } from '../helpers/tmp.ts';

describe('pgBinDir', () => {
  let dir: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    dir = await tmpDir('pgbin');
  });
  afterAll(() => dir.remove());

  it('names the package when no PostgreSQL is installed (no directory, or versions without a postgres binary)', async () => {
    for (const root of [join(dir.path, 'absent'), dir.path]) {
      let err: unknown;
      try {
        pgBinDir(root);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MvpnError);
      expect((err as MvpnError).code).toBe('MVPN_DEPENDENCY_MISSING');
      expect((err as MvpnError).message).toContain('PostgreSQL is not installed');
      expect((err as MvpnError).hint).toContain('apt-get install postgresql');
      await mkdir(join(dir.path, '15', 'bin'), { recursive: true }); // a version directory without the server binary
    }
  });

  it('picks the newest installed version', async () => {
    for (const v of ['9', '16', '13']) await mkdir(join(dir.path, v, 'bin'), { recursive: true });
    for (const v of ['9', '13']) await writeFile(join(dir.path, v, 'bin', 'postgres'), '');
    expect(pgBinDir(dir.path)).toBe(join(dir.path, '13', 'bin'));
  });
});
