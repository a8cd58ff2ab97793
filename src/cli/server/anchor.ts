import { readFile } from 'node:fs/promises';
import { anchorToString, parseAnchor } from '../../bundle/sign.ts';
import { rotateAnchor } from '../../server/anchor-rotation.ts';
import { serverCommand, type ServerArgs } from './common.ts';

interface AnchorArgs extends ServerArgs {
  action: 'show' | 'rotate';
}

/**
 * `server anchor`: prints this server's trust anchor (`ed25519:…`), the line
 * agents and peer servers pin. Read from the state directory and parsed, so
 * a damaged anchor file is reported rather than handed on; lets a script
 * (plan --apply across servers) fetch it through the same admin channel as
 * every other command.
 *
 * `server anchor rotate`: a new signing key and a rotation statement signed
 * by the old one (server/anchor-rotation.ts). Works with the daemon running:
 * it picks up the new key and re-signs every document within a second.
 */
export const serverAnchorCommand = serverCommand<AnchorArgs>({
  command: 'anchor [action]',
  describe: "print this server's trust anchor (what agents and peer servers pin), or rotate it to a new key",
  options: (y) =>
    y.positional('action', {
      choices: ['show', 'rotate'] as const,
      default: 'show' as const,
      describe: 'show: print the anchor; rotate: new signing key, rotation statement signed by the old one',
    }),
  action: async (ctx, args) => {
    if (args.action === 'rotate') {
      const r = await rotateAnchor(ctx);
      return {
        json: { trust_anchor: r.anchor, previous: r.previous, key_id: r.keyId, version: r.version, serial_floor: r.serialFloor, nodes: r.nodes, anchor_chain_file: ctx.paths.anchorChain },
        text: [
          `rotated the trust anchor to key ${r.keyId} (chain version ${r.version}, serial floor ${r.serialFloor})`,
          r.anchor,
          `${r.nodes} node document(s) re-signed; agents follow the statement in ${ctx.paths.anchorChain} at their next reconcile`,
          'federation peers that pinned this hub with --hub-anchor follow the statement at their next link sync; a link added from now on needs the new anchor',
        ].join('\n'),
      };
    }
    const line = anchorToString(parseAnchor((await readFile(ctx.paths.trustAnchor, 'utf8')).trim()));
    return { json: { trust_anchor: line, trust_anchor_file: ctx.paths.trustAnchor }, text: line };
  },
});
