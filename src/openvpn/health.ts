/**
 * Health of one openvpn instance, judged from what a periodic check saw.
 *
 * `assessHealth` is pure: the supervisor gathers an observation (did the
 * management interface answer, openvpn's own state, the interface's
 * addresses, the byte counters), passes the memory of earlier checks, and
 * gets a verdict plus the new memory. Thresholds count consecutive checks, so
 * one slow answer or a briefly missing address (openvpn re-creating the tap
 * device on a reconnect) does not restart a working tunnel.
 *
 * Verdicts, in the order they are decided:
 * - `failed`: restart it. The management interface has not answered
 *   `hungLimit` checks in a row (hung: SIGSTOPped, deadlocked), or a client
 *   is CONNECTED but its expected address has been missing from the device
 *   for `addressMissingLimit` checks.
 * - `degraded` (no restart): a client is CONNECTED but openvpn removed
 *   lines of the server's push that the node refuses (push-policy.ts: an
 *   address other than its own, a route outside the listed prefixes,
 *   redirect-gateway). A restart would be pushed the same again; the reason
 *   names the refused lines until a push without them arrives.
 * - `degraded` (no restart) with MVPN_PATH_MTU: a client is CONNECTED but
 *   full-size frames to the server vanish while small ones arrive (the
 *   frame probe): the underlay cannot carry even openvpn's fragments. A
 *   restart would not help; the probe repeats until frames pass again.
 * - `degraded` (no restart) with MVPN_LAN_SILENT: a client is CONNECTED
 *   but nothing crosses the LAN (the frame probe's pings unanswered and the
 *   server's LAN address unresolved by ARP): keepalives and byte counters
 *   still move on the control channel, so nothing else would see it.
 * - `pending`: openvpn is working on a connection (any state but CONNECTED).
 *   Not our business to restart: openvpn retries on its own (connect-retry,
 *   ping-restart).
 * - `degraded`: something is off but below the thresholds, or the counters
 *   have not moved for `stallLimit` checks (never a restart reason on its
 *   own: an idle tunnel with keepalive off is legal).
 * - `ok`.
 *
 * A server counts as connected when openvpn says CONNECTED or, as a fallback,
 * when the management interface answers and its device exists (a server has
 * no single peer whose loss would make it "not connected").
 */
import { statSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import type { Interfaces } from './health-round.ts';
import type { ExecFn } from '../util/exec.ts';
import type { FrameVerdict } from './supervisor-state.ts';
import { parseJsonBounded } from '../util/json.ts';

export type Role = 'client' | 'server';
export type HealthVerdict = 'ok' | 'pending' | 'degraded' | 'failed';

export interface HealthPolicy {
  /** Time between checks. */
  readonly intervalMs: number;
  /** Per-check timeout for the management `state` command. */
  readonly mgmtTimeoutMs: number;
  /** Consecutive unanswered checks before the process counts as hung. */
  readonly hungLimit: number;
  /** Consecutive checks with the expected address missing (while CONNECTED) before a restart. */
  readonly addressMissingLimit: number;
  /** Consecutive checks without counter movement before `degraded`; 0 disables. */
  readonly stallLimit: number;
}

export const defaultHealthPolicy: HealthPolicy = { intervalMs: 5_000, mgmtTimeoutMs: 5_000, hungLimit: 2, addressMissingLimit: 3, stallLimit: 0 };

export interface DeviceInfo {
  /** `unknown` when `ip` itself could not run (we never restart on that). */
  readonly device: 'present' | 'missing' | 'unknown';
  /** IPv4 and IPv6 addresses as `addr/prefixlen`. */
  readonly addresses: readonly string[];
}

export interface HealthObservation {
  /** `ok`: the `state` command answered; `timeout`: it did not; `unavailable`: no management connection could be made. */
  readonly mgmt: 'ok' | 'timeout' | 'unavailable';
  /** openvpn's state name when mgmt is `ok`. */
  readonly openvpnState?: string;
  readonly device: DeviceInfo;
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** Client: lines of the last push reply that openvpn's pull-filter removed (supervisor, from openvpn's log). */
  readonly refusedPushes?: readonly string[];
  /** Client: the last frame probe (probeFullFrames) and the frame size it tried. */
  readonly frames?: { readonly verdict: FrameVerdict; readonly mtu: number; readonly peer: string };
}

export interface HealthMemory {
  readonly mgmtFailures: number;
  readonly addressMissing: number;
  readonly stalled: number;
  readonly lastBytes?: { readonly bytesIn: number; readonly bytesOut: number };
}

export const freshHealthMemory: HealthMemory = { mgmtFailures: 0, addressMissing: 0, stalled: 0 };

export interface HealthTarget {
  readonly role: Role;
  readonly dev: string;
  /** `a.b.c.d` or `a.b.c.d/len`; only checked for clients. */
  readonly expectedAddress?: string;
}

export interface HealthResult {
  readonly verdict: HealthVerdict;
  readonly reason: string;
  /** Set for `failed`: the error code the supervisor records as lastError. */
  readonly code?: 'MVPN_OPENVPN_HUNG' | 'MVPN_OPENVPN_UNHEALTHY' | 'MVPN_OPENVPN_PUSH_REFUSED' | 'MVPN_PATH_MTU' | 'MVPN_LAN_SILENT';
  readonly memory: HealthMemory;
  /** The address found on the device that matches the expected one (or the first IPv4 one). */
  readonly tunnelAddress?: string;
}

/** True when `addresses` (addr/len) hold `expected` (addr, or addr/len which must then match exactly). */
export function hasAddress(addresses: readonly string[], expected: string): boolean {
  const [ip, len] = expected.split('/');
  return addresses.some((a) => {
    const [aip, alen] = a.split('/');
    return aip === ip && (len === undefined || alen === len);
  });
}

function pickTunnelAddress(addresses: readonly string[], expected: string | undefined): string | undefined {
  if (expected !== undefined) {
    const ip = expected.split('/')[0];
    const hit = addresses.find((a) => a.split('/')[0] === ip);
    if (hit) return hit;
  }
  return addresses.find((a) => !a.includes(':'));
}

export function assessHealth(obs: HealthObservation, memory: HealthMemory, target: HealthTarget, policy: HealthPolicy = defaultHealthPolicy): HealthResult {
  const tunnelAddress = pickTunnelAddress(obs.device.addresses, target.expectedAddress);
  const withAddr = <T extends object>(r: T): T & { tunnelAddress?: string } => (tunnelAddress === undefined ? r : { ...r, tunnelAddress });

  // Counters: only compared between two answered checks.
  const moved = memory.lastBytes === undefined || memory.lastBytes.bytesIn !== obs.bytesIn || memory.lastBytes.bytesOut !== obs.bytesOut;

  if (obs.mgmt !== 'ok') {
    const mgmtFailures = memory.mgmtFailures + 1;
    const next: HealthMemory = { ...memory, mgmtFailures };
    const what = obs.mgmt === 'timeout' ? 'did not answer' : 'could not be reached';
    if (mgmtFailures >= policy.hungLimit) {
      return withAddr({
        verdict: 'failed' as const,
        code: 'MVPN_OPENVPN_HUNG' as const,
        reason: `management interface ${what} in ${mgmtFailures} checks in a row: openvpn is hung`,
        memory: next,
      });
    }
    return withAddr({ verdict: 'degraded' as const, reason: `management interface ${what}`, memory: next });
  }

  const base: HealthMemory = { mgmtFailures: 0, addressMissing: 0, stalled: 0, lastBytes: { bytesIn: obs.bytesIn, bytesOut: obs.bytesOut } };
  const connected = obs.openvpnState === 'CONNECTED' || (target.role === 'server' && obs.device.device === 'present');
  if (!connected) {
    return withAddr({ verdict: 'pending' as const, reason: `openvpn state ${obs.openvpnState ?? 'unknown'}`, memory: base });
  }

  if (target.role === 'client' && obs.refusedPushes !== undefined && obs.refusedPushes.length > 0) {
    const shown = obs.refusedPushes.slice(0, 4).map((l) => `'${l}'`).join(', ') + (obs.refusedPushes.length > 4 ? ` and ${obs.refusedPushes.length - 4} more` : '');
    const address = obs.refusedPushes.some((l) => l.startsWith('ifconfig')) && target.expectedAddress !== undefined ? `; it did not push this node's address ${target.expectedAddress}` : '';
    return withAddr({
      verdict: 'degraded' as const,
      code: 'MVPN_OPENVPN_PUSH_REFUSED' as const,
      reason: `the server pushed what this node refuses: ${shown}${address}; the node's addresses and routes are unchanged; fix the server's push or client-config-dir for this node`,
      memory: base,
    });
  }

  if (target.role === 'client' && target.expectedAddress !== undefined && obs.device.device !== 'unknown' && !hasAddress(obs.device.addresses, target.expectedAddress)) {
    const addressMissing = memory.addressMissing + 1;
    const where = obs.device.device === 'missing' ? `device ${target.dev} is missing` : `address ${target.expectedAddress} is missing on ${target.dev}`;
    const next: HealthMemory = { ...base, addressMissing };
    if (addressMissing >= policy.addressMissingLimit) {
      return withAddr({
        verdict: 'failed' as const,
        code: 'MVPN_OPENVPN_UNHEALTHY' as const,
        reason: `connected but ${where} for ${addressMissing} checks in a row`,
        memory: next,
      });
    }
    return withAddr({ verdict: 'degraded' as const, reason: `connected but ${where}`, memory: next });
  }

  if (target.role === 'client' && obs.frames?.verdict === 'silent') {
    const { peer } = obs.frames;
    return withAddr({
      verdict: 'degraded' as const,
      code: 'MVPN_LAN_SILENT' as const,
      reason: `openvpn is connected but nothing crosses the LAN: pings to ${peer} over ${target.dev} get no answer and its address does not resolve (ARP); the server drops what this node sends (its LAN device, a bridge or firewall there, or the two ends disagree on fragmenting)`,
      memory: base,
    });
  }

  if (target.role === 'client' && obs.frames?.verdict === 'lost') {
    const { mtu, peer } = obs.frames;
    return withAddr({
      verdict: 'degraded' as const,
      code: 'MVPN_PATH_MTU' as const,
      reason: `the path to the server cannot carry ${mtu}-byte frames: ${mtu - 28}-byte DF pings to ${peer} are lost while small ones answer; the underlay path MTU is below what the network fragments to (its fragment setting) or fragments are dropped on the way; small packets still work`,
      memory: base,
    });
  }

  if (target.role === 'server' && obs.device.device === 'missing') {
    return withAddr({ verdict: 'degraded' as const, reason: `device ${target.dev} is missing`, memory: base });
  }

  if (policy.stallLimit > 0) {
    const stalled = moved ? 0 : memory.stalled + 1;
    const next: HealthMemory = { ...base, stalled };
    if (stalled >= policy.stallLimit) {
      return withAddr({ verdict: 'degraded' as const, reason: `no traffic counted for ${stalled} checks`, memory: next });
    }
    return withAddr({ verdict: 'ok' as const, reason: 'connected', memory: next });
  }
  return withAddr({ verdict: 'ok' as const, reason: 'connected', memory: base });
}

interface IpAddrJson {
  ifname?: unknown;
  addr_info?: { family?: unknown; local?: unknown; prefixlen?: unknown }[];
}

/** Parses `ip -j addr show dev X` output. */
export function parseIpAddrJson(stdout: string): string[] {
  const data = parseJsonBounded(stdout, { maxBytes: 1 << 20, maxDepth: 8 }, 'ip -j addr output');
  if (!Array.isArray(data)) return [];
  const out: string[] = [];
  for (const link of data as IpAddrJson[]) {
    for (const a of Array.isArray(link.addr_info) ? link.addr_info : []) {
      if ((a.family === 'inet' || a.family === 'inet6') && typeof a.local === 'string' && typeof a.prefixlen === 'number') {
        out.push(`${a.local}/${a.prefixlen}`);
      }
    }
  }
  return out;
}

/**
 * Reads the device's addresses with `ip -j addr show dev <dev>`. `exec` is
 * injected: unit tests need no root, and tests in a network namespace pass
 * one that runs `ip netns exec <ns> ip ...`.
 */
export async function readDevice(exec: ExecFn, dev: string, timeoutMs = 5_000): Promise<DeviceInfo> {
  try {
    const r = await exec('ip', ['-j', 'addr', 'show', 'dev', dev], { timeoutMs });
    if (r.code !== 0) {
      return /does not exist|cannot find device/i.test(r.stderr) ? { device: 'missing', addresses: [] } : { device: 'unknown', addresses: [] };
    }
    return { device: 'present', addresses: parseIpAddrJson(r.stdout) };
  } catch {
    return { device: 'unknown', addresses: [] };
  }
}

/** Interface names the kernel accepts (IFNAMSIZ 16, no '/'), so the /sys path below names one directory. */
const IFNAME_RE = /^(?!\.\.?$)[^/\s]{1,15}$/;

/**
 * The same facts as readDevice, in-process (no `ip` spawned every check):
 * presence from /sys/class/net/<dev>, addresses from getifaddrs
 * (`interfaces`: os.networkInterfaces, or the one read a HealthRound shares
 * among the checks of a round; it lists only interfaces that are up and
 * running, so a tap openvpn no longer holds counts as without addresses).
 * Both see the network namespace this process is in — with `ip netns exec`
 * also /sys, which it remounts — so the supervisor uses this only when
 * openvpn runs in our own namespace (no command prefix). Where
 * /sys/class/net is not mounted, `fallback` (readDevice with `ip`) answers.
 * The stat is synchronous: a sysfs lookup takes microseconds, less than the
 * thread-pool round trip of an asynchronous one.
 */
export async function readDeviceInProcess(dev: string, fallback: () => Promise<DeviceInfo>, interfaces: () => Interfaces = networkInterfaces): Promise<DeviceInfo> {
  if (!IFNAME_RE.test(dev)) return { device: 'unknown', addresses: [] };
  try {
    if (statSync(`/sys/class/net/${dev}`, { throwIfNoEntry: false }) === undefined) {
      return statSync('/sys/class/net', { throwIfNoEntry: false }) === undefined ? fallback() : { device: 'missing', addresses: [] };
    }
  } catch {
    return { device: 'unknown', addresses: [] };
  }
  try {
    return { device: 'present', addresses: (interfaces()[dev] ?? []).map((a) => a.cidr).filter((c): c is string => c !== null) };
  } catch {
    return { device: 'unknown', addresses: [] };
  }
}

/** One network's frame probe: full frames of `mtu` bytes of IP to the server's LAN address `peer` over `dev`. */
export interface FrameProbeTarget {
  readonly dev: string;
  readonly peer: string;
  readonly mtu: number;
}

/**
 * The frame probe of each target, run by one shell (positional arguments
 * `dev peer size` per target, never spliced into the script): per target, in
 * parallel, two DF pings of a full LAN frame; only when they are lost two
 * small ones, to tell "too big" from "not there"; only when those are lost
 * too, the neighbour entry (`ip neigh`). One line per target: `i ok`,
 * `i lost`, or `i neigh <exit code> <ip's JSON>`.
 */
const PROBE_SCRIPT = `i=0
while [ $# -ge 3 ]; do
  (
    if ping -n -q -M do -s "$3" -c 2 -i 0.3 -W 2 -I "$1" "$2" >/dev/null 2>&1; then echo "$i ok"
    elif ping -n -q -M do -s 56 -c 2 -i 0.3 -W 2 -I "$1" "$2" >/dev/null 2>&1; then echo "$i lost"
    else n=$(ip -json neigh show to "$2" dev "$1" 2>/dev/null); echo "$i neigh $? $n"
    fi
  ) &
  shift 3
  i=$((i + 1))
done
wait
`;

/**
 * The frame probe: whether full LAN frames reach the server, judged by what
 * actually crosses the path (openvpn's management interface has no fragment
 * counters; its `status` and `bytecount` count bytes only). Verdicts in
 * the order of `targets`.
 *
 * All targets go through one `sh` (PROBE_SCRIPT) instead of a `ping`
 * process each forked from us: a fork copies this process's page tables
 * (~100 MB of it) and the child tears them down again at its exec, which was
 * most of a probe's cost; a shell forks its pings from a few hundred KiB
 * (issue 14). A target without an answer line (the shell could not run or
 * was killed at `timeoutMs`) gets `unreachable`: no verdict, as a server
 * that ignores pings.
 */
export async function probeFullFrames(exec: ExecFn, targets: readonly FrameProbeTarget[], timeoutMs = 30_000): Promise<FrameVerdict[]> {
  const verdicts: FrameVerdict[] = targets.map(() => 'unreachable');
  if (targets.length === 0) return verdicts;
  let stdout: string;
  try {
    stdout = (await exec('sh', ['-c', PROBE_SCRIPT, 'mvpn-frame-probe', ...targets.flatMap((t) => [t.dev, t.peer, String(t.mtu - 28)])], { timeoutMs })).stdout;
  } catch {
    return verdicts;
  }
  for (const line of stdout.split('\n')) {
    const m = /^(\d+) (ok|lost|neigh (\d+) (.*))$/.exec(line);
    const i = m === null ? -1 : Number(m[1]);
    if (m === null || !(i < targets.length)) continue;
    verdicts[i] = m[2] === 'ok' ? 'ok' : m[2] === 'lost' ? 'lost' : neighbourResolves(Number(m[3]), m[4]!) ? 'unreachable' : 'silent';
  }
  return verdicts;
}

/**
 * Whether `ip -json neigh show to PEER dev DEV` (its exit code and output)
 * says the peer has a link-layer address: a server that ignores pings still
 * answers ARP, so an entry the kernel could not resolve (FAILED, INCOMPLETE,
 * none) after the pings means no frame crosses the LAN at all. An answer we
 * cannot read counts as resolved (no verdict).
 */
function neighbourResolves(code: number, stdout: string): boolean {
  if (code !== 0) return true;
  try {
    const entries = JSON.parse(stdout) as { state?: string[] }[];
    return entries.some((e) => !(e.state ?? []).some((st) => st === 'FAILED' || st === 'INCOMPLETE'));
  } catch {
    return true;
  }
}
