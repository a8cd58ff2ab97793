import { createToken, parseTtl } from '../../server/ops/nodes.ts';
import { serverCommand, NODE_ARG, type ServerArgs } from './common.ts';

interface TokenArgs extends ServerArgs {
  node: string;
  ttl: string;
}

/**
 * `server node token NODE [--ttl 24h]`: a one-time enrollment token bound to
 * NODE. Printed once; the server keeps only its sha256.
 */
export const nodeTokenCommand = serverCommand<TokenArgs>({
  command: 'token <node>',
  describe: 'print a one-time enrollment token for a node (only its hash is stored)',
  options: (y) =>
    y
      .positional('node', NODE_ARG)
      .option('ttl', { type: 'string', default: '24h', describe: 'how long the token is valid (1m to 30d)' }),
  action: (ctx, args) => {
    const { token, expiresAt } = createToken(ctx, String(args.node), parseTtl(args.ttl));
    const expires = new Date(expiresAt).toISOString();
    return { json: { node: String(args.node), token, expires_at: expires }, text: token };
  },
});
