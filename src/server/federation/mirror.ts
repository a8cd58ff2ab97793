/**
 * Names the federation code and the ordinary operations share: the reserved
 * node id prefix of peer servers' link memberships, and what marks a network
 * as a peer's mirror of a hub's network (its `kind`, set by `link add`).
 */
import { StoreError } from '../../errors.ts';
import type { NetworkRecord } from '../store/store.ts';

export const PEER_PREFIX = 'mvpn-peer-';

export function peerCn(name: string): string {
  return `${PEER_PREFIX}${name}`;
}

export function isPeerNode(node: string): boolean {
  return node.startsWith(PEER_PREFIX);
}

export function isMirror(net: Pick<NetworkRecord, 'kind'>): boolean {
  return net.kind === 'mirror';
}

export function mirrorRefusal(network: string): StoreError {
  return new StoreError('MVPN_STORE_CONFLICT', `network ${network} is a peer's mirror of a hub's network; nodes and certificates are managed at the hub`, {
    context: { network },
    hint: `run this on the hub, e.g. mvpn-client server node add NODE --network ${network} --remote <this server's address>`,
  });
}
