import { membershipView, revokeNode } from '../../server/ops/nodes.ts';
import { serverCommand, NODE_ARG, type ServerArgs } from './common.ts';

interface RevokeArgs extends ServerArgs {
  node: string;
  network?: string;
}

/**
 * `server node revoke NODE [--network ID]`: certificates on the CRL (written
 * atomically by the daemon, which also ends the live session with
 * `client-kill ID RESTART`); without --network also the node's API identity and tokens.
 */
export const nodeRevokeCommand = serverCommand<RevokeArgs>({
  command: 'revoke <node>',
  describe: 'revoke a node in one network, or everywhere including its API identity',
  options: (y) =>
    y
      .positional('node', NODE_ARG)
      .option('network', { type: 'string', describe: 'only in this network' }),
  action: async (ctx, args) => {
    const node = String(args.node);
    const r = await revokeNode(ctx, node, args.network);
    return {
      json: { node, revoked: r.revoked.map(membershipView), identity_revoked: args.network === undefined },
      text:
        `revoked ${node} in ${r.revoked.length === 0 ? 'no network (already revoked)' : r.revoked.map((m) => m.network).join(', ')}` +
        (args.network === undefined ? '; its API identity and unused tokens are gone too' : ''),
    };
  },
});
