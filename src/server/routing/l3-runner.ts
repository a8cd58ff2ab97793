/**
 * The server daemon's part of L3 networks across servers (ARCHITECTURE.md
 * "L3 networks across servers"): which networks are routed and how
 * (`l3Plan`, pure, from the store's records), their devices, the hub's
 * backbone server, and the routing itself: about every second one
 * `learnClients` pass per routed network over its openvpn server's
 * management connection (the supervisor's own: openvpn serves one
 * management client at a time), handed to `L3Routing.apply`.
 *
 * A tun network is routed when it spans servers: at the hub, once it has a
 * peer (an allowed `mvpn-peer-*` member); at a peer, its mirror of a hub's
 * tun network. Its own address (the hub's: the subnet's server address; a
 * peer's: its `mvpn-peer-*` member's), the other servers' addresses (the
 * hub's members; at a peer, the hub's address and the servers the hub's
 * link state lists) and the devices follow from that. A tun network on one
 * server stays as it was (openvpn's own `server` line, no BIRD).
 *
 * Order (the daemon's reconcile): networks whose routed-ness changes have
 * their openvpn stopped first (`flipping`), then `release` removes what
 * networks no longer routed had (backbone server, devices), then per
 * network `prepare` (devices) before its files are written and
 * `ensureBackbone` after, and `use` hands over the plans.
 */
import { toMvpnError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { runtimePaths } from '../../openvpn/process.ts';
import type { Supervisor } from '../../openvpn/supervisor.ts';
import type { SpawnFn } from '../../openvpn/supervisor-deps.ts';
import type { InstanceSpec } from '../../openvpn/supervisor-state.ts';
import type { OpenvpnUser } from '../../openvpn/unpriv.ts';
import type { ExecFn } from '../../util/exec.ts';
import { intToIp, parseCidr, serverAddress } from '../alloc.ts';
import type { ServerConfig, ServerPaths } from '../config.ts';
import { backboneDev, linkDev, serverDev } from '../devices.ts';
import type { ServerEvent } from '../events.ts';
import type { LinkPayload } from '../federation/link-bundle.ts';
import { isMirror, isPeerNode } from '../federation/mirror.ts';
import { allowedMembers } from '../network-files.ts';
import type { MemberSummary, NetworkRecord } from '../store/store.ts';
import { backbonePaths, ensureRoutedDevices, removeRoutedDevices, writeBackboneFiles, type RoutedDevice } from './backbone.ts';
import type { L3Client, L3Peer, L3RoutingSpec } from './bird-config.ts';
import { learnClients, sameClients, type ClientSource } from './client-routes.ts';
import { L3Routing, type RoutingView } from './l3-routing.ts';

/** The hub as its peers name it (a peer's own name is its `mvpn-peer-*` CN, so the two never meet). */
export const HUB_NAME = 'mvpn-hub';

/** A server of the network as the hub's link state lists it. */
export interface LinkServer {
  readonly node: string;
  readonly address: string;
}

export interface L3Plan {
  readonly network: string;
  readonly subnet: string;
  readonly role: 'hub' | 'peer';
  /** This server's address: on its tun and on the backbone. */
  readonly local: string;
  readonly tunDev: string;
  readonly backboneDev: string;
  readonly peers: readonly L3Peer[];
}

/**
 * How network `net` is routed here, or undefined when it is not an L3
 * network across servers. `link`: this server's link to the network's hub
 * (a peer), with the servers the hub's last link state listed.
 */
export function l3Plan(net: NetworkRecord, members: readonly MemberSummary[], link?: { readonly payload: LinkPayload; readonly servers: readonly LinkServer[] }): L3Plan | undefined {
  if (net.devType !== 'tun') return undefined;
  const hubAddress = intToIp(serverAddress(parseCidr(net.subnet)));
  const base = { network: net.id, subnet: net.subnet, tunDev: serverDev(net.id) };
  if (link) {
    if (link.payload.network.dev_type !== 'tun') return undefined;
    const others = link.servers.filter((s) => s.node !== link.payload.peer.cn).map((s) => ({ name: s.node, address: s.address }));
    return { ...base, role: 'peer', local: link.payload.peer.address, backboneDev: linkDev(net.id), peers: [{ name: HUB_NAME, address: hubAddress }, ...others] };
  }
  if (isMirror(net)) return undefined;
  const peers = allowedMembers(members).filter((m) => isPeerNode(m.node));
  if (peers.length === 0) return undefined;
  return { ...base, role: 'hub', local: hubAddress, backboneDev: backboneDev(net.id), peers: peers.map((m) => ({ name: m.node, address: m.address })) };
}

function devices(p: Pick<L3Plan, 'tunDev' | 'backboneDev'>): RoutedDevice[] {
  return [
    { dev: p.tunDev, mode: 'tun' },
    { dev: p.backboneDev, mode: 'tap' },
  ];
}

export interface L3RunnerDeps {
  readonly config: ServerConfig;
  readonly paths: ServerPaths;
  readonly exec: ExecFn;
  readonly logger: Logger<ServerEvent>;
  readonly supervisor: (spec: InstanceSpec) => Supervisor;
  /** The management connection of network `id`'s openvpn server (its supervisor's), if it has one now. */
  readonly management: (id: string) => ClientSource | undefined;
  /** Something the status snapshot shows changed. */
  readonly onChange: () => void;
  /** Starts BIRD (default: `bird` from PATH). */
  readonly spawn?: SpawnFn;
}

export class L3Runner {
  private readonly deps: L3RunnerDeps;
  private readonly routing: L3Routing;
  private plans = new Map<string, L3Plan>();
  private readonly clients = new Map<string, L3Client[]>();
  private readonly backbones = new Map<string, Supervisor>();
  private lastView: RoutingView | undefined;
  private lastError: string | undefined;
  private ticking = false;
  private stopped = false;

  constructor(deps: L3RunnerDeps) {
    this.deps = deps;
    this.routing = new L3Routing({
      configDir: `${deps.paths.stateDir}/routing`,
      runtimeDir: deps.config.runtime_dir,
      exec: deps.exec,
      ...(deps.spawn ? { spawn: deps.spawn } : {}),
      onEvent: (e) => {
        deps.logger.emit({ kind: 'server.routing', what: e.kind, pid: e.pid, message: e.message });
        deps.onChange();
      },
    });
  }

  isRouted(id: string): boolean {
    return this.plans.has(id);
  }

  /** Networks whose routed-ness `next` changes: their openvpn must stop before their devices and config change. */
  flipping(next: ReadonlyMap<string, L3Plan>, ids: Iterable<string>): Set<string> {
    return new Set([...ids].filter((id) => this.plans.has(id) !== next.has(id)));
  }

  /** Removes the backbone server and devices of networks routed until now but not in `next` (their openvpn is stopped). */
  async release(next: ReadonlyMap<string, L3Plan>): Promise<void> {
    for (const [id, p] of this.plans) {
      if (next.has(id)) continue;
      await this.backbones.get(id)?.stop();
      this.backbones.delete(id);
      this.clients.delete(id);
      await removeRoutedDevices(this.deps.exec, devices(p)).catch((err: unknown) => this.report(toMvpnError(err).message, id));
    }
    this.plans = new Map([...this.plans].filter(([id]) => next.has(id)));
  }

  /** Before the network's files are written: its tun and backbone device exist with its address. Returns the address for its server config. */
  async prepare(plan: L3Plan): Promise<{ readonly address: string }> {
    await ensureRoutedDevices(this.deps.exec, devices(plan), plan.local, parseCidr(plan.subnet).prefix);
    return { address: plan.local };
  }

  /** Hub: the backbone server for the network's peers runs, restarted when its config changed. */
  async ensureBackbone(net: NetworkRecord, members: readonly MemberSummary[], who: OpenvpnUser | undefined): Promise<void> {
    const peers = allowedMembers(members).filter((m) => isPeerNode(m.node));
    const restart = await writeBackboneFiles(this.deps.config, this.deps.paths, net, peers, who);
    const cur = this.backbones.get(net.id);
    if (cur) {
      if (restart) cur.restart();
      return;
    }
    const b = backbonePaths(this.deps.paths, net.id);
    const rt = runtimePaths(this.deps.config.runtime_dir, backboneDev(net.id));
    const sup = this.deps.supervisor({
      id: `backbone-${net.id}`,
      role: 'server',
      configPath: b.config,
      cwd: b.dir,
      mgmtSocket: rt.mgmtSocket,
      pidFile: rt.pidFile,
      dev: backboneDev(net.id),
      ...(this.deps.config.openvpn_path === undefined ? {} : { openvpnPath: this.deps.config.openvpn_path }),
    });
    sup.on('change', () => this.deps.onChange());
    this.backbones.set(net.id, sup);
    sup.start();
  }

  /** The plans in force after a reconcile; routing follows at once. */
  use(plans: ReadonlyMap<string, L3Plan>): void {
    this.plans = new Map(plans);
    void this.tick();
  }

  private specs(): L3RoutingSpec[] {
    return [...this.plans.values()].map((p) => ({
      network: p.network,
      subnet: p.subnet,
      local: p.local,
      tunDev: p.tunDev,
      backboneDev: p.backboneDev,
      peers: p.peers,
      clients: this.clients.get(p.network) ?? [],
    }));
  }

  /**
   * One pass (the daemon's 1 s timer; a pass still running makes the next
   * one a no-op): each routed network's clients from its server's `status
   * 3`, sessions another server superseded ended, then BIRD and the kernel
   * made to match.
   */
  async tick(): Promise<void> {
    if (this.ticking || this.stopped) return;
    if (this.plans.size === 0 && this.lastView === undefined) return;
    this.ticking = true;
    try {
      for (const p of this.plans.values()) {
        const mgmt = this.deps.management(p.network);
        // No management connection: openvpn is (re)starting, and its sessions are gone with it.
        if (!mgmt) {
          this.clients.set(p.network, []);
          continue;
        }
        try {
          const { clients, ended } = await learnClients(mgmt, await this.routing.superseded(p.network).catch(() => []));
          for (const cn of ended) this.deps.logger.emit({ kind: 'server.session-killed', network: p.network, cn, reason: 'another server has its newer session' });
          if (!sameClients(clients, this.clients.get(p.network) ?? [])) this.clients.set(p.network, [...clients]);
        } catch {
          // openvpn not answering now: keep the last list; the supervisor's health check reports a hung openvpn
        }
      }
      const specs = this.specs();
      await this.routing.apply(specs[0]?.local ?? '0.0.0.0', specs);
      const view = specs.length === 0 ? undefined : await this.routing.view();
      const changed = JSON.stringify(view) !== JSON.stringify(this.lastView);
      this.lastView = view;
      this.lastError = undefined;
      if (changed) this.deps.onChange();
    } catch (err) {
      this.report(toMvpnError(err).message);
    } finally {
      this.ticking = false;
    }
  }

  private report(message: string, network?: string): void {
    if (this.lastError === message) return;
    this.lastError = message;
    this.deps.logger.emit({ kind: 'server.routing', what: 'routing-failed', network, message });
  }

  /** BIRD's state and the routes learned per peer (status.json `routing`); undefined when nothing is routed. */
  view(): RoutingView | undefined {
    return this.lastView;
  }

  /** At shutdown, after the network servers: backbone servers, BIRD (its routes go), rules, devices. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.backbones.values()].map((s) => s.stop()));
    this.backbones.clear();
    await this.routing.stop();
    for (const p of this.plans.values()) await removeRoutedDevices(this.deps.exec, devices(p)).catch(() => undefined);
  }
}
