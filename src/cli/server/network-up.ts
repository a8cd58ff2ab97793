import { networkView, setNetworkState } from '../../server/ops/networks.ts';
import type { CliCommand } from '../command.ts';
import { NETWORK_ARG, serverCommand, type ServerArgs } from './common.ts';

interface StateArgs extends ServerArgs {
  id: string;
}

/** `up` and `down` differ only in the state they set; `down` reuses this. */
export function networkStateCommand(state: 'up' | 'down', describe: string): CliCommand<StateArgs> {
  return serverCommand<StateArgs>({
    command: `${state} <id>`,
    describe,
    options: (y) => y.positional('id', NETWORK_ARG),
    action: (ctx, args) => {
      const net = setNetworkState(ctx, String(args.id), state);
      return {
        json: networkView(net),
        text: `network ${net.id} is ${state}; the running daemon (\`mvpn-client server run\`) ${state === 'up' ? 'starts' : 'stops'} its openvpn server within seconds`,
      };
    },
  });
}

/** `server network up ID`: the daemon starts (and keeps) its openvpn server. */
export const networkUpCommand = networkStateCommand('up', "start a network's openvpn server (through the running daemon)");
