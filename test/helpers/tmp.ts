import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runId } from './run-id.ts';

/**
 * A fresh directory whose path names this run (`/tmp/mvt-<run>-…`), so the
 * suite's leak check recognises any process still using it. Remove it with
 * the returned function (safe to call twice).
 */
export async function tmpDir(label = 'd'): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `mvt-${runId()}-${label}-`));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}
