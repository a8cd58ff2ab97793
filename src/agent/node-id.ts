/**
 * Which node this is. The id decides which membership document the agent
 * accepts (`node` must match), so it comes from one configured place only:
 * a literal, the testbed's node-id file (Emulab /var/emulab/boot/nodeid), or
 * the host name.
 */
import { readFile } from 'node:fs/promises';
import { hostname as osHostname } from 'node:os';
import { ConfigError } from '../errors.ts';
import type { NodeIdSource } from './config.ts';

const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export interface NodeIdDeps {
  readonly readFile: (path: string) => Promise<string>;
  readonly hostname: () => string;
}

const defaultDeps: NodeIdDeps = {
  readFile: (p) => readFile(p, 'utf8'),
  hostname: osHostname,
};

/** Resolve the node id; a missing file or a malformed id is a config error naming `node`. */
export async function resolveNodeId(source: NodeIdSource, deps: Partial<NodeIdDeps> = {}): Promise<string> {
  const d = { ...defaultDeps, ...deps };
  let id: string;
  let from: string;
  if ('id' in source) {
    id = source.id;
    from = 'node.id';
  } else if ('file' in source) {
    from = `node.file (${source.file})`;
    try {
      id = (await d.readFile(source.file)).split('\n')[0]!.trim();
    } catch (err) {
      throw new ConfigError('MVPN_CONFIG_INVALID', `config node.file: cannot read ${source.file}: ${(err as Error).message}`, {
        context: { field: 'node.file', path: source.file },
        cause: err,
      });
    }
  } else {
    const full = d.hostname();
    id = source.hostname === 'full' ? full : full.split('.')[0]!;
    from = 'node.hostname';
  }
  if (!NODE_ID.test(id)) {
    throw new ConfigError('MVPN_CONFIG_INVALID', `config node: ${from} gives ${JSON.stringify(id.slice(0, 80))}, not a valid node id`, {
      context: { field: 'node' },
      hint: 'a node id is letters, digits, ".", "_" or "-", at most 63 characters',
    });
  }
  return id;
}
