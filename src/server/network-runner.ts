/**
 * One supervised openvpn server per network that is up, and the sessions on
 * it: the server daemon's counterpart of the agent's NetworkRunner
 * (src/agent/networks.ts). It never decides what should run (the daemon's
 * reconcile does, from the store), only makes it so.
 *
 * - Sessions that must end: after the network's files are written, every
 *   connected client (`status 3`) whose CN is no longer allowed (removed,
 *   revoked, no ccd), or whose certificate was replaced since the last
 *   reconcile, is ended with `client-kill ID RESTART` (`kill CN` where
 *   openvpn gives no id).
 * - L2 neighbour priming: openvpn in bridge mode forwards a unicast frame to
 *   a client only once it has seen a frame from that client's MAC; unknown
 *   destinations go to the server's tap, not to the other clients. After a
 *   server restart (its MAC table is empty) two clients with warm ARP caches
 *   would not reach each other until one of them happens to send a
 *   broadcast. So when a session appears, the runner pings the node's
 *   address once from the server side: the ARP request reaches every client
 *   and the node's reply teaches openvpn its MAC.
 */
import { toMvpnError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { runtimePaths } from '../openvpn/process.ts';
import type { Supervisor } from '../openvpn/supervisor.ts';
import type { InstanceSpec } from '../openvpn/supervisor-state.ts';
import type { ExecFn } from '../util/exec.ts';
import { intToIp, parseCidr, serverAddress } from './alloc.ts';
import type { ServerPaths } from './config.ts';
import { serverDev } from './devices.ts';
import type { ServerEvent } from './events.ts';
import { allowedMembers, networkFilePaths } from './network-files.ts';
import { supervisedView, type ClientSnapshot, type InstanceSnapshot } from './status.ts';
import type { MemberSummary, NetworkRecord } from './store/store.ts';

export interface ServerNetworksDeps {
  readonly paths: ServerPaths;
  readonly runtimeDir: string;
  readonly openvpnPath: string | undefined;
  readonly logger: Logger<ServerEvent>;
  readonly exec: ExecFn;
  readonly supervisor: (spec: InstanceSpec) => Supervisor;
  /** A supervisor changed state. */
  readonly onChange: () => void;
  /** The device that holds the server's address on network `id` (its tap, or a mirror's bridge). */
  readonly addressDev: (id: string) => string;
}

interface Instance {
  readonly sup: Supervisor;
  /** CN → certificate serial at the last reconcile (a change means: kill the old session). */
  serials: Map<string, string>;
  /** CN → tunnel address of the allowed members (for priming). */
  addresses: Map<string, string>;
  clients: ClientSnapshot[];
  /** tap: new sessions are primed. */
  readonly l2: boolean;
}

const SETTLED = new Set(['connected', 'degraded', 'failed', 'backoff']);

export class ServerNetworks {
  private readonly deps: ServerNetworksDeps;
  private readonly instances = new Map<string, Instance>();
  /** Networks whose server retain() is stopping (no longer in `instances`, perhaps still running). */
  private readonly stopping = new Map<string, Supervisor>();
  private stopped = false;

  constructor(deps: ServerNetworksDeps) {
    this.deps = deps;
  }

  /** Stops the servers of networks not in `wanted` (`reason` for those still in `known`); returns their ids. */
  /** Stops every network not in `wanted`; `quick`: their servers must be gone by a deadline (Supervisor.stop). */
  async retain(wanted: ReadonlySet<string>, known: ReadonlySet<string>, reason = 'network is down or deleted', quick = false): Promise<string[]> {
    const stopping: Promise<void>[] = [];
    const stopped: string[] = [];
    // Every SIGTERM goes out in this call, not one network after another's exit: a lost lease stops them all now.
    for (const [id, inst] of this.instances) {
      if (wanted.has(id)) continue;
      this.deps.logger.emit({ kind: 'server.network-stop', network: id, reason: known.has(id) ? reason : 'network was purged' });
      this.instances.delete(id);
      this.stopping.set(id, inst.sup);
      stopping.push(inst.sup.stop({ quick }).finally(() => this.stopping.delete(id)));
      stopped.push(id);
    }
    await Promise.all(stopping);
    return stopped;
  }

  /** The networks whose server may run on this host now: supervised, or still stopping. */
  ids(): string[] {
    return [...new Set([...this.instances.keys(), ...this.stopping.keys()])];
  }

  /** The pid of `id`'s openvpn server, if one runs (also while it is being stopped). */
  pid(id: string): number | undefined {
    return (this.instances.get(id)?.sup ?? this.stopping.get(id))?.status().pid;
  }

  /**
   * Starts the network's server, or restarts it when something openvpn reads
   * only at start changed. `bridged`: its address is on a bridge, not on the tap.
   */
  ensure(net: NetworkRecord, restartNeeded: boolean, bridged: boolean): void {
    const inst = this.instances.get(net.id);
    if (inst) {
      if (restartNeeded) {
        this.deps.logger.emit({ kind: 'server.network-restart', network: net.id, reason: 'its config, certificate or keys changed' });
        inst.sup.restart();
      }
      return;
    }
    const f = networkFilePaths(this.deps.paths, net.id);
    const rt = runtimePaths(this.deps.runtimeDir, serverDev(net.id));
    const subnet = parseCidr(net.subnet);
    const sup = this.deps.supervisor({
      id: net.id,
      role: 'server',
      configPath: f.config,
      cwd: f.dir,
      mgmtSocket: rt.mgmtSocket,
      pidFile: rt.pidFile,
      dev: serverDev(net.id),
      ...(bridged ? {} : { expectedAddress: `${intToIp(serverAddress(subnet))}/${subnet.prefix}` }),
      ...(this.deps.openvpnPath === undefined ? {} : { openvpnPath: this.deps.openvpnPath }),
    });
    sup.on('change', () => this.deps.onChange());
    this.instances.set(net.id, { sup, serials: new Map(), addresses: new Map(), clients: [], l2: net.devType === 'tap' });
    this.deps.logger.emit({ kind: 'server.network-start', network: net.id });
    sup.start();
  }

  /** Kills sessions of CNs that may no longer connect, or whose certificate was replaced. */
  async killDisallowed(net: NetworkRecord, memberships: readonly MemberSummary[]): Promise<void> {
    const inst = this.instances.get(net.id);
    if (!inst) return;
    const allowed = new Map(allowedMembers(memberships).map((m) => [m.node, m.certSerial!]));
    const replaced = new Set<string>();
    // A renewal's old certificate stays good until the node confirms (ops/renew.ts): its session is not "replaced".
    const renewing = new Map(allowedMembers(memberships).map((m) => [m.node, m.prevCertSerial ?? null]));
    for (const [cn, serial] of allowed) {
      const before = inst.serials.get(cn);
      if (before !== undefined && before !== serial && before !== renewing.get(cn)) replaced.add(cn);
    }
    inst.serials = allowed;
    inst.addresses = new Map(allowedMembers(memberships).map((m) => [m.node, m.address]));
    const mgmt = inst.sup.management();
    if (!mgmt) return;
    let clients: { cn: string; clientId?: number }[];
    try {
      clients = (await mgmt.status3()).clients;
    } catch {
      return; // not answering now; the next pass tries again
    }
    for (const c of clients) {
      const reason = !allowed.has(c.cn) ? 'no longer allowed in this network' : replaced.has(c.cn) ? 'its certificate was replaced' : undefined;
      if (reason === undefined) continue;
      try {
        // client-kill tells the client to reconnect at once: a node whose
        // membership changed again meanwhile (removed, then re-added before
        // this pass) comes back in seconds instead of after its 60 s
        // ping-restart, and a revoked one learns at once that it is out.
        if (c.clientId !== undefined) await mgmt.clientKill(c.clientId, 'RESTART');
        else await mgmt.kill(c.cn);
        this.deps.logger.emit({ kind: 'server.session-killed', network: net.id, cn: c.cn, reason });
      } catch (err) {
        this.deps.logger.emit({ kind: 'server.kill-failed', network: net.id, cn: c.cn, message: toMvpnError(err).message });
      }
    }
  }

  /** Reads every server's connected clients; new sessions of an L2 network are primed. */
  async refreshClients(): Promise<void> {
    for (const [id, inst] of this.instances) {
      const mgmt = inst.sup.management();
      if (!mgmt) {
        inst.clients = [];
        continue;
      }
      try {
        const s = await mgmt.status3();
        const before = new Set(inst.clients.map((c) => `${c.cn}@${c.connected_since}`));
        inst.clients = s.clients.map((c) => ({
          cn: c.cn,
          real_address: c.realAddress,
          virtual_address: c.virtualAddress,
          bytes_in: c.bytesIn,
          bytes_out: c.bytesOut,
          connected_since: c.connectedSince.toISOString(),
        }));
        const fresh = inst.clients.filter((c) => !before.has(`${c.cn}@${c.connected_since}`)).map((c) => inst.addresses.get(c.cn));
        if (inst.l2) void this.prime(id, fresh.filter((a): a is string => a !== undefined));
      } catch {
        // keep the last list; the supervisor's health check reports a hung openvpn
      }
    }
  }

  /** One ping per new session's address from the server side (see the module comment). Best effort. */
  private async prime(network: string, addresses: readonly string[]): Promise<void> {
    for (const a of addresses) {
      if (this.stopped) return;
      await this.deps.exec('ping', ['-n', '-q', '-c', '1', '-W', '1', '-I', this.deps.addressDev(network), a], { timeoutMs: 3_000 }).catch(() => undefined);
    }
  }

  /** The management connection of network `id`'s server (the supervisor's: openvpn serves one management client at a time). */
  management(id: string): ReturnType<Supervisor['management']> {
    return this.instances.get(id)?.sup.management();
  }

  /** Every server is running or has definitely failed for now. */
  settled(): boolean {
    return [...this.instances.values()].every((i) => SETTLED.has(i.sup.status().state));
  }

  snapshot(): Record<string, InstanceSnapshot> {
    const networks: Record<string, InstanceSnapshot> = {};
    for (const [id, inst] of this.instances) networks[id] = { ...supervisedView(inst.sup.status()), clients: inst.clients };
    return networks;
  }

  /** "N/M networks up, K clients" (systemd STATUS=). */
  statusLine(): string {
    const all = [...this.instances.values()].map((i) => i.sup.status());
    const running = all.filter((s) => s.state === 'connected' || s.state === 'degraded').length;
    const clients = [...this.instances.values()].reduce((a, i) => a + i.clients.length, 0);
    return `${running}/${all.length} networks up, ${clients} clients`;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.instances.values()].map((i) => i.sup.stop()));
    this.instances.clear();
  }
}
