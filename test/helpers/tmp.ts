import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runId } from './run-id.ts';

const made = new Set<string>();

/**
 * A fresh directory whose path names this run (`/tmp/mvt-<run>-…`), so the
 * suite's leak check recognises any process still using it. Remove it with
 * the returned function (safe to call twice); whatever a test file forgets is
 * removed after the file by test/helpers/file-cleanup.ts.
 *
 * Mode 0711 (enter, not list): a daemon's state directory inside it must be
 * reachable by the mvpn-openvpn user its openvpns drop to (CRL, ccd), as
 * /var/lib is; the daemons refuse to start otherwise.
 */
export async function tmpDir(label = 'd'): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `mvt-${runId()}-${label}-`));
  made.add(path);
  await chmod(path, 0o711);
  return {
    path,
    remove: async () => {
      made.delete(path);
      await rm(path, { recursive: true, force: true });
    },
  };
}

/** Remove every directory tmpDir made in this worker and not removed yet. */
export async function removeAllTmpDirs(): Promise<void> {
  for (const path of [...made]) {
    made.delete(path);
    await rm(path, { recursive: true, force: true });
  }
}
