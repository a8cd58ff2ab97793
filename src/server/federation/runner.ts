/**
 * What a peer server runs for each of its links (ARCHITECTURE.md
 * "Federation"): the Linux bridge joining the mirror's openvpn server and
 * the link client, the supervised link client to the hub, the sync of the
 * hub's members and CRL into the mirror, and the optional API relay. The
 * server daemon calls it in its reconcile the way the agent daemon calls
 * its NetworkRunner: `prepare` before a mirror's files are written,
 * `ensure` after its server runs, `retain` for what should stay; it never
 * reads the store to decide what runs.
 *
 * A sync that changes the mirror asks the daemon for a reconcile (ccd
 * files, CRL, sessions to kill); a failing sync or relay is reported once
 * per distinct error and retried (the sync on its timer, the relay at the
 * next reconcile).
 */
import { toMvpnError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { runtimePaths } from '../../openvpn/process.ts';
import type { Supervisor } from '../../openvpn/supervisor.ts';
import type { InstanceSpec } from '../../openvpn/supervisor-state.ts';
import type { Clock } from '../../util/clock.ts';
import type { ExecFn } from '../../util/exec.ts';
import { parseCidr } from '../alloc.ts';
import { parseListen } from '../config.ts';
import { bridgeDev, linkDev, serverDev } from '../devices.ts';
import type { ServerEvent } from '../events.ts';
import type { HttpFetcher } from '../../agent/sources.ts';
import { networkFilePaths } from '../network-files.ts';
import type { ServerContext } from '../ops/context.ts';
import { supervisedView, type LinkSnapshot } from '../status.ts';
import type { LinkRecord, NetworkRecord } from '../store/store.ts';
import type { LinkPayload } from './link-bundle.ts';
import { ensureBridge, fetchHubChain, fetchLinkState, linkFetcher, removeBridge, writeLinkFiles } from './link-runtime.ts';
import { applyLinkState, followHubAnchor, hubApiTarget, linkPayload } from './links.ts';
import { ApiRelay, relayTarget } from './relay.ts';
import type { LinkServer } from '../routing/l3-runner.ts';

export interface FederationDeps {
  readonly ctx: ServerContext;
  readonly clock: Clock;
  readonly logger: Logger<ServerEvent>;
  readonly exec: ExecFn;
  readonly supervisor: (spec: InstanceSpec) => Supervisor;
  /** Something the status snapshot shows changed. */
  readonly onChange: () => void;
  /** The hub's state changed the mirror in the store. */
  readonly requestReconcile: (cause: string) => void;
}

/** A peer's link: the openvpn client to the hub, and the last state sync. */
interface LinkInstance {
  readonly sup: Supervisor;
  readonly payload: LinkPayload;
  /** Fetches the hub's state with the peer's API identity, the hub's API CA pinned. */
  readonly fetcher: HttpFetcher;
  lastSync?: { ok: boolean; at: number; error?: string };
  /** The API relay for the nodes behind this server (link `relay_listen`), once it listens. */
  relay?: ApiRelay;
  relayError?: string;
  /** The network's other servers as the hub's last state listed them (an L3 network's BGP neighbours). */
  servers: readonly LinkServer[];
}

export class FederationRunner {
  private readonly deps: FederationDeps;
  private readonly links = new Map<string, LinkInstance>();
  /** Mirrors whose bridge and taps exist. */
  private readonly bridged = new Set<string>();
  private stopped = false;

  constructor(deps: FederationDeps) {
    this.deps = deps;
  }

  /**
   * Before a network's files are written: a mirror's bridge and taps exist.
   * Returns where its server's address is (undefined: an ordinary network, on its tap).
   */
  async prepare(net: NetworkRecord, link: LinkRecord | undefined): Promise<{ readonly address: string } | undefined> {
    if (!link) return undefined;
    const payload = linkPayload(link);
    if (!this.bridged.has(net.id)) {
      await ensureBridge(this.deps.exec, net.id, payload.peer.name, payload.peer.address, parseCidr(net.subnet).prefix);
      this.bridged.add(net.id);
    }
    return { address: payload.peer.address };
  }

  isBridged(id: string): boolean {
    return this.bridged.has(id);
  }

  /** The device holding the server's address on network `id`. */
  addressDev(id: string): string {
    return this.bridged.has(id) ? bridgeDev(id) : serverDev(id);
  }

  /** Stops the links (and removes the bridges) of every network not in `keep`. */
  async retain(keep: ReadonlySet<string>): Promise<void> {
    for (const id of [...this.links.keys(), ...this.bridged]) if (!keep.has(id)) await this.stopLink(id);
  }

  /** Starts the link client of a mirror (or restarts it when its files changed), and its relay. */
  async ensure(link: LinkRecord): Promise<void> {
    const payload = linkPayload(link);
    const rt = runtimePaths(this.deps.ctx.config.runtime_dir, linkDev(link.network));
    const { files, changed } = await writeLinkFiles(networkFilePaths(this.deps.ctx.paths, link.network), rt.mgmtSocket, payload);
    const cur = this.links.get(link.network);
    if (cur) {
      if (changed) cur.sup.restart();
      await this.ensureRelay(link, cur);
      return;
    }
    const sup = this.deps.supervisor({
      id: `link-${link.network}`,
      role: 'client',
      configPath: files.config,
      cwd: files.dir,
      mgmtSocket: rt.mgmtSocket,
      pidFile: rt.pidFile,
      dev: linkDev(link.network),
      retryServerRestart: payload.hub.remotes.length === 1,
      openvpnPath: this.deps.ctx.config.openvpn_path,
    });
    sup.on('change', () => this.deps.onChange());
    const inst: LinkInstance = { sup, payload, fetcher: linkFetcher(payload), servers: [] };
    this.links.set(link.network, inst);
    this.deps.logger.emit({ kind: 'server.link-start', network: link.network, hub: payload.hub.remotes.map((r) => `${r.host}:${r.port}`).join(', ') });
    sup.start();
    void this.syncLink(link.network);
    await this.ensureRelay(link, inst);
  }

  /** Starts the link's API relay if it has one and it does not listen yet (a failure is retried at the next reconcile). */
  private async ensureRelay(link: LinkRecord, inst: LinkInstance): Promise<void> {
    if (link.relayListen === null || inst.relay || this.stopped) return;
    const relay = new ApiRelay(parseListen(link.relayListen), relayTarget(hubApiTarget(inst.payload)));
    try {
      await relay.start();
      inst.relay = relay;
      delete inst.relayError;
      this.deps.logger.emit({ kind: 'server.relay-start', network: link.network, listen: relay.stats().listen, target: relay.stats().target });
    } catch (err) {
      const message = `API relay on ${link.relayListen}: ${(err as Error).message}`;
      if (inst.relayError !== message) this.deps.logger.emit({ kind: 'server.link-failed', network: link.network, code: 'MVPN_RELAY_FAILED', message });
      inst.relayError = message;
    }
  }

  /** Stops a mirror's link client and relay, and removes its bridge and taps. */
  private async stopLink(id: string): Promise<void> {
    const l = this.links.get(id);
    this.links.delete(id);
    await this.stopInstance(l);
    if (this.bridged.delete(id) || l) {
      await removeBridge(this.deps.exec, id).catch((err: unknown) => {
        const e = toMvpnError(err);
        this.deps.logger.emit({ kind: 'server.link-failed', network: id, code: e.code, message: e.message });
      });
    }
  }

  private async stopInstance(l: LinkInstance | undefined): Promise<void> {
    await l?.relay?.stop();
    await l?.sup.stop();
    await l?.fetcher.close();
  }

  /** Copies every hub's members and CRL (the daemon's link sync timer). */
  async sync(): Promise<void> {
    await Promise.all([...this.links.keys()].map((id) => this.syncLink(id)));
  }

  /** Copies the hub's members and CRL into the mirror; a change reconciles (ccd, CRL, kill). */
  private async syncLink(id: string): Promise<void> {
    const l = this.links.get(id);
    if (!l || this.stopped) return;
    try {
      const state = await fetchLinkState(l.payload, l.fetcher);
      if (this.stopped) return;
      const servers = state.servers ?? [];
      const changed = applyLinkState(this.deps.ctx, state) || JSON.stringify(servers) !== JSON.stringify(l.servers);
      l.servers = servers;
      // The hub's anchor rotations, followed like an agent follows them (the link row keeps the current anchor).
      const moved = followHubAnchor(this.deps.ctx, id, await fetchHubChain(l.payload, l.fetcher));
      if (this.stopped) return;
      if (moved) this.deps.logger.emit({ kind: 'server.link-anchor', network: id, ...moved });
      const was = l.lastSync;
      l.lastSync = { ok: true, at: this.deps.clock.now() };
      if (changed) {
        this.deps.logger.emit({ kind: 'server.link-synced', network: id, members: state.members.length, crlNumber: state.crl_number });
        this.deps.requestReconcile(`hub state of ${id} changed`);
      } else if (was && !was.ok) this.deps.onChange();
    } catch (err) {
      const e = toMvpnError(err);
      if (l.lastSync?.error !== e.message) this.deps.logger.emit({ kind: 'server.link-failed', network: id, code: e.code, message: e.message });
      l.lastSync = { ok: false, at: this.deps.clock.now(), error: e.message };
    }
  }

  /** The network's other servers as the hub's last link state listed them (src/server/routing l3Plan); none before the first sync. */
  servers(id: string): readonly LinkServer[] {
    return this.links.get(id)?.servers ?? [];
  }

  snapshot(): Record<string, LinkSnapshot> {
    const links: Record<string, LinkSnapshot> = {};
    for (const [id, l] of this.links) {
      links[id] = {
        ...supervisedView(l.sup.status()),
        // The device holding the peer's address: the bridge of an L2 link, the link's own tap of an L3 one (its backbone end).
        bridge: l.payload.network.dev_type === 'tap' ? bridgeDev(id) : linkDev(id),
        sync: l.lastSync ? { ok: l.lastSync.ok, at: new Date(l.lastSync.at).toISOString(), ...(l.lastSync.error ? { error: l.lastSync.error } : {}) } : null,
        ...(l.relay ? { relay: l.relay.stats() } : l.relayError ? { relay: { error: l.relayError } } : {}),
      };
    }
    return links;
  }

  /** Stops every link client and relay (first, at shutdown: before the servers). */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.links.values()].map((l) => this.stopInstance(l)));
    this.links.clear();
  }

  /** Removes the bridges and taps (the daemon made them), once the servers on them are stopped. */
  async removeBridges(): Promise<void> {
    for (const id of [...this.bridged]) await removeBridge(this.deps.exec, id).catch(() => undefined);
    this.bridged.clear();
  }
}
