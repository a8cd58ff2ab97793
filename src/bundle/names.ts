/**
 * Certificate names tied to a network id (issue 22, finding 4), shared by
 * the server that issues them and the agent that checks them.
 *
 * A network's server certificate is `mvpn-server-<id>` and its CA is
 * `mvpn-ca-<id>`, or `mvpn-ca-<id>.<n>` for the n-th CA after rolls (n >= 2).
 * Network ids have no dot (NETWORK_ID_RE), so a CA name belongs to exactly one
 * network. The generation number gives the old and the new CA of a roll
 * different subject names, so openvpn (OpenSSL) and the agent match a
 * certificate or CRL to its issuer by name without any ambiguity.
 */

export function serverCn(networkId: string): string {
  return `mvpn-server-${networkId}`;
}

export function caCn(networkId: string, generation = 1): string {
  return generationCn(`mvpn-ca-${networkId}`, generation);
}

/** The generation of `cn` if it names a CA of `networkId` (1 for `mvpn-ca-<id>`), else undefined. */
export function caGeneration(cn: string, networkId: string): number | undefined {
  return generationOf(cn, `mvpn-ca-${networkId}`);
}

/**
 * The server's API CA (listener certificate and node API identities):
 * `mvpn-api-ca`, `mvpn-api-ca.<n>` after rolls (`server api roll-ca`). The
 * same generation rule as network CAs, so the old and the new CA of a roll
 * have different names.
 */
export function apiCaCn(generation = 1): string {
  return generationCn('mvpn-api-ca', generation);
}

export function apiCaGeneration(cn: string): number | undefined {
  return generationOf(cn, 'mvpn-api-ca');
}

function generationCn(prefix: string, generation: number): string {
  return generation <= 1 ? prefix : `${prefix}.${generation}`;
}

function generationOf(cn: string, prefix: string): number | undefined {
  if (cn === prefix) return 1;
  if (!cn.startsWith(`${prefix}.`)) return undefined;
  const rest = cn.slice(prefix.length + 1);
  if (!/^[1-9][0-9]{0,5}$/.test(rest) || rest === '1') return undefined;
  return Number(rest);
}
