import { UsageError } from '../../errors.ts';
import { networkView, updateNetworkDataPlane } from '../../server/ops/networks.ts';
import { NETWORK_ARG, serverCommand, type ServerArgs } from './common.ts';

interface UpdateArgs extends ServerArgs {
  id: string;
  mtu?: number;
  fragment?: string;
}

/** `--fragment BYTES|off` (network create and update): the size, or null for no fragmentation. */
export function fragmentArg(text: string | undefined): number | null | undefined {
  if (text === undefined) return undefined;
  if (text === 'off') return null;
  if (!/^[0-9]{1,5}$/.test(text)) throw new UsageError(`--fragment ${JSON.stringify(text)} is not valid: a number of bytes (576-9000) or off`);
  return Number(text);
}

/**
 * `server network update ID [--mtu N] [--fragment N|off]`: changes a
 * network's LAN MTU or fragment size after it was created (ops/networks.ts
 * updateNetworkDataPlane): the daemon restarts its server with the new
 * config, every member gets a new bundle version. Repeating it with the same
 * values changes nothing.
 */
export const networkUpdateCommand = serverCommand<UpdateArgs>({
  command: 'update <id>',
  describe: "change a network's LAN MTU or fragmentation (members follow with their next update)",
  options: (y) =>
    y
      .positional('id', NETWORK_ARG)
      .option('mtu', { type: 'number', describe: "the LAN's MTU (1280-9000): every member's interface" })
      .option('fragment', { type: 'string', describe: 'the largest underlay datagram openvpn sends (576-9000, UDP networks), or off: no fragmentation (full frames then need every path to carry them)' }),
  action: (ctx, args) => {
    const { net, changed } = updateNetworkDataPlane(ctx, String(args.id), { mtu: args.mtu, fragment: fragmentArg(args.fragment) });
    const view = networkView(net);
    return {
      json: { ...view, changed },
      text: changed
        ? `network ${net.id}: LAN MTU ${String(view['mtu'] ?? 'default')}, fragment ${String(view['fragment'] ?? 'off')}; the daemon restarts its server, and each member's frames cross again once its agent has installed the new bundle (its next update)`
        : `network ${net.id}: unchanged (LAN MTU ${String(view['mtu'] ?? 'default')}, fragment ${String(view['fragment'] ?? 'off')})`,
    };
  },
});
