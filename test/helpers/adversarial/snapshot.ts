/**
 * File-tree snapshots for "nothing changed" assertions: every path under a
 * root with its type, mode, owner and content hash (or link target). Two
 * snapshots are equal exactly when nothing was created, removed, changed or
 * re-linked under the root.
 */
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join, relative } from 'node:path';

export type Snapshot = Record<string, string>;

export async function snapshotTree(root: string): Promise<Snapshot> {
  const out: Snapshot = {};
  const walk = async (p: string): Promise<void> => {
    const st = await lstat(p);
    const rel = relative(root, p) || '.';
    const meta = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
    if (st.isSymbolicLink()) out[rel] = `link ${meta} -> ${await readlink(p)}`;
    else if (st.isDirectory()) {
      out[rel] = `dir ${meta}`;
      for (const n of (await readdir(p)).sort()) await walk(join(p, n));
    } else if (st.isFile()) out[rel] = `file ${meta} ${st.size} ${createHash('sha256').update(await readFile(p)).digest('hex')}`;
    else out[rel] = `other ${meta} ${st.mode.toString(8)}`;
  };
  await walk(root);
  return out;
}

/** One hash over a whole tree (for "byte-identical install" checks). */
export async function treeHash(root: string): Promise<string> {
  return createHash('sha256').update(JSON.stringify(await snapshotTree(root))).digest('hex');
}
