import type { KeyAlg } from '../../pki/keys.ts';
import { createNetwork, networkView } from '../../server/ops/networks.ts';
import type { DevType, Proto } from '../../server/store/store.ts';
import { serverCommand, type ServerArgs } from './common.ts';
import { fragmentArg } from './network-update.ts';

interface CreateArgs extends ServerArgs {
  name: string;
  id?: string;
  title?: string;
  dev: DevType;
  proto: Proto;
  subnet?: string;
  port?: number;
  remote: string[];
  'key-alg': KeyAlg;
  'pushed-route': string[];
  mtu: number;
  fragment?: string;
}

/**
 * `server network create NAME`: a new network (down) with its own CA, server
 * certificate, tls-crypt-v2 server key and CRL, a free UDP port and a subnet
 * that overlaps no other network's. NAME is the id unless --id is given.
 */
export const networkCreateCommand = serverCommand<CreateArgs>({
  command: 'create <name>',
  describe: 'create a network (it starts down; `network up` starts its server)',
  options: (y) =>
    y
      .positional('name', { type: 'string', demandOption: true, describe: 'network name (also its id unless --id)' })
      .option('id', { type: 'string', describe: 'network id: [a-z][a-z0-9-]{0,11} (default: NAME)' })
      .option('dev', { choices: ['tap', 'tun'] as const, default: 'tap' as const, describe: 'tap: L2 (default); tun: L3 with topology subnet' })
      .option('proto', { choices: ['udp', 'tcp'] as const, default: 'udp' as const, describe: 'transport' })
      .option('subnet', { type: 'string', describe: 'IPv4 subnet (default: the next free /24 of the pool)' })
      .option('port', { type: 'number', describe: 'port (default: the next free one of the port range)' })
      .option('remote', { type: 'string', array: true, default: [], describe: 'HOST[:PORT] nodes connect to, in order; repeat (default: init --hostname/--address)' })
      .option('pushed-route', {
        type: 'string',
        array: true,
        default: [],
        describe: 'PREFIX (a.b.c.d/len, /8 or longer) the server pushes a route for and nodes accept; repeat (default: none, nodes pull no routes)',
      })
      .option('mtu', {
        type: 'number',
        default: 1500,
        describe: "the LAN's MTU (1280-9000): every member's interface; frames of this size cross any underlay path MTU of 1280 or more (UDP: openvpn fragments)",
      })
      .option('fragment', {
        type: 'string',
        describe: 'the largest underlay datagram openvpn sends, headers included (576-9000; UDP; default 1280, which any path carries), or off. 1500 where every path carries 1500-byte datagrams: faster, and a path that does not shows as degraded',
      })
      .option('key-alg', { choices: ['ec-p256', 'rsa-2048'] as const, default: 'ec-p256' as const, describe: "the network CA's key type" }),
  action: async (ctx, args) => {
    const net = await createNetwork(ctx, {
      id: args.id ?? args.name,
      name: args.name,
      devType: args.dev,
      proto: args.proto,
      subnet: args.subnet,
      port: args.port,
      remotes: args.remote.map(String),
      keyAlg: args['key-alg'],
      pushedRoutes: args['pushed-route'].map(String),
      mtu: args.mtu,
      fragment: fragmentArg(args.fragment),
    });
    return {
      json: networkView(net),
      text: `created network ${net.id} (${net.devType}, ${net.proto} port ${net.port}, subnet ${net.subnet}); it is down: \`mvpn-client server network up ${net.id}\` starts it`,
    };
  },
});
