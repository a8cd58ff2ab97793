/**
 * Which clients a server announces for an L3 network: the sessions its
 * openvpn server lists now (`status 3` on the management interface, the
 * client's pushed address and when its session began). One pass of
 * `learnClients` reads them, and ends every session another server
 * announces with a newer start (the node moved; `kill CN` at once, because
 * `client-kill` would wait for a node that is no longer there, and
 * openvpn's `client-to-client` would keep delivering this server's own
 * nodes' packets to the dead session until it times out).
 */
import type { ClientRow } from '../../openvpn/management.ts';
import type { L3Client } from './bird-config.ts';

/** What a pass needs of the management client (ManagementClient fits). */
export interface ClientSource {
  status3(): Promise<{ clients: readonly ClientRow[] }>;
  kill(cn: string): Promise<void>;
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

export interface LearnResult {
  /** The clients to announce, by address. */
  readonly clients: readonly L3Client[];
  /** CNs whose sessions were ended as superseded. */
  readonly ended: readonly string[];
}

/**
 * One pass. `superseded` names the addresses another server announces with
 * a newer session (L3Routing.superseded); their sessions end here and they
 * are left out of the result.
 */
export async function learnClients(mgmt: ClientSource, superseded: readonly string[]): Promise<LearnResult> {
  const rows = (await mgmt.status3()).clients.filter((c) => IPV4.test(c.virtualAddress));
  const ended: string[] = [];
  for (const r of rows) {
    if (!superseded.includes(r.virtualAddress)) continue;
    await mgmt.kill(r.cn);
    ended.push(r.cn);
  }
  const clients = rows
    .filter((r) => !ended.includes(r.cn))
    .map((r) => ({ address: r.virtualAddress, since: r.connectedSince.getTime() }))
    .sort((a, b) => a.address.localeCompare(b.address));
  return { clients, ended };
}

/** Whether two client lists announce the same (addresses and session starts). */
export function sameClients(a: readonly L3Client[], b: readonly L3Client[]): boolean {
  return a.length === b.length && a.every((c, i) => c.address === b[i]!.address && c.since === b[i]!.since);
}
