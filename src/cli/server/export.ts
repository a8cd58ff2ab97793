import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { StoreError, UsageError } from '../../errors.ts';
import { isPeerNode } from '../../server/federation/mirror.ts';
import type { ServerContext } from '../../server/ops/context.ts';
import { exportNodes, type ExportFormat, type ExportResult } from '../../server/ops/export.ts';
import { checkNetworkId } from '../../server/ops/networks.ts';
import { checkBatch, checkNodeId } from '../../server/ops/nodes.ts';
import { serverCommand, NETWORK_ARG, table, type ServerArgs } from './common.ts';
import { loadSigningKey } from '../../server/anchor-rotation.ts';

interface ExportArgs extends ServerArgs {
  nodes?: string[];
  network: string;
  out?: string;
  'out-dir'?: string;
  all: boolean;
  format: ExportFormat;
}

function view(r: ExportResult): Record<string, unknown> {
  const files = r.format === 'ovpn' ? { profile: r.bundlePath, agentless: true } : { bundle: r.bundlePath, membership: r.membershipPath };
  return {
    node: r.node,
    network: r.network,
    format: r.format,
    ...files,
    version: r.version,
    serial: r.serial,
    sha256: r.sha256,
    size: r.size,
    cert_serial: r.certSerial,
    key_origin: 'central',
  };
}

/** `--all`: every member of the network that is not revoked, without the server-to-server link nodes (their certificates are the link's). */
function allMembers(ctx: ServerContext, network: string): string[] {
  checkNetworkId(network);
  return ctx.store.read((tx) => {
    if (!tx.getNetwork(network)) throw new StoreError('MVPN_NOT_FOUND', `no network ${network}`, { context: { network } });
    return tx
      .memberAddresses(network)
      .filter((m) => !m.revoked && !isPeerNode(m.node))
      .map((m) => m.node);
  });
}

/**
 * `server export NODE --network ID --out FILE`: an offline bundle with a key
 * made here (key_origin "central"), and its signed membership document next
 * to it (FILE without .tar.gz + .membership.json). Each export makes a new
 * key and revokes the previous certificate of that membership.
 *
 * `server export NODE… --network ID --out-dir DIR` and `server export --all
 * --network ID --out-dir DIR` (every member that is not revoked) do the
 * same for many nodes at once, as DIR/NODE.tar.gz and
 * DIR/NODE.membership.json: one transaction for all (if any node is refused,
 * nothing is recorded and no file is written), one CRL for all the
 * superseded certificates, one directory fsync. The output is then always a
 * JSON array, in the order given (--all: by node id).
 *
 * `--format ovpn` writes a standalone openvpn profile instead (FILE, or
 * DIR/NODE.ovpn) for a node that runs a stock openvpn and no agent, and
 * records the membership as agentless (see src/server/ops/export.ts).
 */
export const serverExportCommand = serverCommand<ExportArgs>({
  command: 'export [nodes..]',
  describe: 'write offline bundles (central key) and membership documents for one node, several, or --all of a network',
  options: (y) =>
    y
      .positional('nodes', { type: 'string', array: true, describe: 'node ids' })
      .option('network', NETWORK_ARG)
      .option('out', { type: 'string', describe: 'file to write (.tar.gz bundle, or .ovpn with --format ovpn) for a single node; holds a private key, written 0600' })
      .option('out-dir', { type: 'string', describe: 'directory for NODE.tar.gz and NODE.membership.json (or NODE.ovpn) of each node (made 0700 if missing)' })
      .option('all', { type: 'boolean', default: false, describe: 'every member of the network that is not revoked (needs --out-dir)' })
      .option('format', {
        choices: ['bundle', 'ovpn'] as const,
        default: 'bundle' as const,
        describe: 'bundle: signed bundle + membership document for the agent; ovpn: one standalone profile for a stock openvpn (agentless node, no updates)',
      }),
  action: async (ctx, args) => {
    const given = (args.nodes ?? []).map(String);
    const outDir = args['out-dir'];
    if (args.all && given.length > 0) throw new UsageError('give node ids or --all, not both');
    if (!args.all && given.length === 0) throw new UsageError('give a node id (or several, or --all)');
    if (args.out !== undefined && outDir !== undefined) throw new UsageError('give --out (one node) or --out-dir, not both');
    if (args.out === undefined && outDir === undefined) throw new UsageError(given.length === 1 ? 'give --out FILE' : 'give --out-dir DIR for several nodes');
    if (args.out !== undefined && (args.all || given.length > 1)) throw new UsageError('--out names one bundle file; use --out-dir DIR for several nodes');

    const format = args.format;
    const key = await loadSigningKey(ctx.paths);
    if (args.out !== undefined) {
      const [r] = await exportNodes(ctx, key, [{ node: given[0]!, network: args.network, outFile: resolve(args.out), format }]);
      return {
        json: view(r!),
        text:
          format === 'ovpn'
            ? `wrote ${r!.bundlePath} (standalone openvpn profile, ${r!.size} bytes, central key; node ${r!.node} is now agentless: export again to refresh it)`
            : `wrote ${r!.bundlePath} (version ${r!.version}, ${r!.size} bytes, central key) and ${r!.membershipPath}`,
      };
    }
    const nodes = args.all ? allMembers(ctx, args.network) : given;
    if (nodes.length === 0) return { json: [], text: `network ${args.network} has no members to export` };
    const dir = resolve(outDir!);
    const items = nodes.map((node) => ({ node, network: args.network, outFile: join(dir, format === 'ovpn' ? `${node}.ovpn` : `${node}.tar.gz`), format }));
    // Plain input mistakes fail before the directory is made.
    checkBatch(items, 'export');
    for (const it of items) checkNodeId(it.node);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const rs = await exportNodes(ctx, key, items);
    return {
      json: rs.map(view),
      text:
        table([['NODE', 'VERSION', format === 'ovpn' ? 'PROFILE' : 'BUNDLE'], ...rs.map((r) => [r.node, String(r.version), r.bundlePath])]) +
        (format === 'ovpn'
          ? `wrote ${rs.length} standalone openvpn profiles (central keys; the nodes are now agentless) to ${dir}`
          : `wrote ${rs.length} bundles (central keys) and their membership documents to ${dir}`),
    };
  },
});
