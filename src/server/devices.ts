/**
 * The interface names a server creates, defined once (network ids are at
 * most 12 characters, so each name fits Linux's 15):
 * - `ms-<id>`: the network's openvpn server (a tap or tun);
 * - `ml-<id>`: a peer's link client to the hub's server (a tap);
 * - `mb-<id>`: the Linux bridge that joins those two taps at a peer;
 * - `mk-<id>`: the hub's backbone tap server of an L3 network across servers
 *   (src/server/routing/backbone.ts; a peer's end is its link client `ml-<id>`).
 * Nodes use `mv-<id>` (src/agent/networks.ts deviceName).
 */
export function serverDev(id: string): string {
  return `ms-${id}`;
}

export function linkDev(id: string): string {
  return `ml-${id}`;
}

export function bridgeDev(id: string): string {
  return `mb-${id}`;
}

export function backboneDev(id: string): string {
  return `mk-${id}`;
}
