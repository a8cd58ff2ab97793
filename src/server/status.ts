/**
 * The daemon's status snapshot: a JSON file in its runtime directory,
 * rewritten atomically whenever an instance changes and every few seconds,
 * which `server network show` reads. A file instead of a socket keeps the
 * admin side free of any listener (admin operations are never exposed on the
 * network) and lets `show` work with the store alone when the daemon is not
 * running. The snapshot names the daemon's pid, so a stale file from a
 * crashed daemon is recognised.
 */
import type { InstanceStatus } from '../openvpn/supervisor-state.ts';
import type { RelayStats } from './federation/relay.ts';
import type { RoutingView } from './routing/l3-routing.ts';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/fs-atomic.ts';

export interface ClientSnapshot {
  readonly cn: string;
  readonly real_address: string;
  readonly virtual_address: string;
  readonly bytes_in: number;
  readonly bytes_out: number;
  readonly connected_since: string;
}

/** One supervised openvpn (a network's server or a link's client). */
export interface SupervisedSnapshot {
  readonly state: string;
  readonly since: string;
  readonly pid?: number | undefined;
  readonly restarts: number;
  readonly last_error?: { readonly code: string; readonly message: string } | undefined;
}

export interface InstanceSnapshot extends SupervisedSnapshot {
  readonly clients: readonly ClientSnapshot[];
}

/** A peer's link to its hub: the link client's openvpn and the last state sync. */
export interface LinkSnapshot extends SupervisedSnapshot {
  readonly bridge: string;
  readonly sync: { readonly ok: boolean; readonly at: string; readonly error?: string } | null;
  /** The API relay for the nodes behind this peer: its counters, or why it does not listen. */
  readonly relay?: RelayStats | { readonly error: string };
}

export interface StatusSnapshot {
  readonly pid: number;
  readonly started_at: string;
  readonly updated_at: string;
  readonly listen: string;
  readonly networks: Readonly<Record<string, InstanceSnapshot>>;
  /** Peer side: one per linked (mirrored) network. */
  readonly links?: Readonly<Record<string, LinkSnapshot>>;
  /** L3 networks across servers (src/server/routing): this server's BIRD and, per network, its clients and each peer's session and routes. */
  readonly routing?: RoutingView;
  /** The state store's connection (always up on SQLite); `last_error` while it is down. */
  readonly store?: { readonly up: boolean; readonly since: string; readonly last_error?: string };
}

/** What the snapshot shows of one supervised openvpn. */
export function supervisedView(s: InstanceStatus): SupervisedSnapshot {
  return { state: s.state, since: new Date(s.since).toISOString(), pid: s.pid, restarts: s.restarts, last_error: s.lastError };
}

export function statusPath(runtimeDir: string): string {
  return join(runtimeDir, 'status.json');
}

export async function writeStatus(runtimeDir: string, s: StatusSnapshot): Promise<void> {
  await writeFileAtomic(statusPath(runtimeDir), JSON.stringify(s, null, 2) + '\n', 0o644);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The snapshot of a running daemon, or undefined (no daemon, or a stale file left by a dead one). */
export async function readStatus(runtimeDir: string): Promise<StatusSnapshot | undefined> {
  let text: string;
  try {
    text = await readFile(statusPath(runtimeDir), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const s = JSON.parse(text) as StatusSnapshot;
    if (typeof s.pid !== 'number' || !alive(s.pid) || typeof s.networks !== 'object') return undefined;
    return s;
  } catch {
    return undefined;
  }
}
