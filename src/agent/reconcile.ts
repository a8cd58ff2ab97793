/**
 * The reconcile executor: discovery → per network: verification → plan
 * (plan.ts, pure) → action.
 *
 * Order of one reconcile, and why:
 * 1. `now` is fixed at the start: every expiry check of this update uses it.
 * 2. Enrollment (once, if a token is configured and the node has no
 *    identity), because the https sources need the identity for mTLS; then
 *    renewal (renew.ts): confirm a finished one, or renew a due key and
 *    certificates, so this same reconcile fetches and installs the new
 *    bundles with the new identity.
 * 3. Discovery over the ordered sources. The accepted document becomes the
 *    last-good one (in memory and in `<state>/membership.json`) only after
 *    every bundle it lists is installed or already was (step 6): a document
 *    whose bundles fail must not be what a restart boots from, since
 *    startFromCache runs only bundles the stored document lists at their
 *    installed version. Until then the previous document stays the rollback
 *    floor (the refused one is fetched and checked again next time).
 * 4. Bundles are fetched only for networks whose installed version or hash
 *    differs, each verified (verifyBundle) before anything touches disk.
 *    A version older than the installed one is refused unfetched
 *    (bundleRollback). A failure is recorded for that network only.
 * 5. planNetwork() decides for each network from its own bundle and its own
 *    actual state, so each network is installed and started as soon as its
 *    own bundle is verified: up to BUNDLE_CONCURRENCY networks go through
 *    steps 4–5 at once (fetches and fsyncs overlap, and the first openvpn
 *    starts while later bundles are still being checked), instead of every
 *    bundle being verified before the first network starts. Networks gone
 *    from the membership are stopped and removed alongside. Operations on
 *    one network never overlap (one pipeline per network, and NetworkRunner
 *    serialises per network); different networks share nothing on disk or in
 *    the runner. An install that fails leaves the previous version running
 *    (install is atomic).
 * 6. The document is saved as last-good when no bundle of it failed.
 *
 * Reconciles never overlap: a request while one runs is coalesced into one
 * more run after it (so a SIGHUP during a long fetch is not lost, and ten
 * SIGHUPs do not queue ten runs).
 */
import { fileURLToPath } from 'node:url';
import { followChain, initialTrust, parseChain, type TrustState } from '../bundle/anchor-chain.ts';
import type { OpenvpnUser } from '../openvpn/unpriv.ts';
import { installBundle, listInstalled, readInstalled, removeInstalled, type InstalledBundle } from '../bundle/install.ts';
import { verifyMembership, type AcceptedMembership } from '../bundle/membership.ts';
import type { Manifest } from '../bundle/schema.ts';
import type { Anchor } from '../bundle/sign.ts';
import { verifyBundle, type VerifiedBundle } from '../bundle/verify.ts';
import { caFacts } from '../pki/verify.ts';
import { BundleError, FetchError, MvpnError, toMvpnError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { renderClientConfig } from '../openvpn/client-config.ts';
import { runtimePaths } from '../openvpn/process.ts';
import { acceptedRoutes, readProtectedPrefixes, type ProtectedPrefix } from '../openvpn/push-policy.ts';
import type { Clock } from '../util/clock.ts';
import { execCommand, type ExecFn } from '../util/exec.ts';
import { savePinnedChain } from './anchor-state.ts';
import type { AgentConfig } from './config.ts';
import { loadCaPins, pinsOfCaFile, saveCaPins } from './ca-pins.ts';
import { acceptApiCas, issuedBy, loadApiTrust, type ApiTrust } from './api-ca.ts';
import { apiUrl, enroll, isPermanentEnrollError, shouldAutoEnroll } from './enroll.ts';
import type { AgentEvent } from './events.ts';
import { loadIdentity, type Identity } from './identity.ts';
import { renewTarget } from './renew.ts';
import type { ApiCaStatus, RenewalStatus } from './status.ts';
import { mapLimit } from '../util/concurrency.ts';
import { deviceName, type NetworkRunner } from './networks.ts';
import { bundleRollback, bundlesToFetch, plan, planNetwork, planRemovals, type Action, type ActualNetwork, type BundleFacts, type FetchedBundle, type NetError } from './plan.ts';
import { anchorChainUrl, bundleRoot, discover, fetchBundleBytes, HttpFetcher, originOf, readFileCapped, resolveBundleUrl, viaFor, type DocOrigin, type SourceDeps } from './sources.ts';
import { saveMembership, type StoredMembership } from './state.ts';
import { Renewer } from './renewer.ts';

export interface ReconcileContext {
  readonly config: AgentConfig;
  readonly nodeId: string;
  /** The config's anchor: the first link of the chain (Reconciler.trust holds where it leads). */
  readonly anchor: Anchor;
  /** Pinned CA from the config (server_ca); falls back to the enrolled API CA. */
  readonly serverCaPem?: string;
  readonly runner: NetworkRunner;
}

export interface ReconcileDeps {
  readonly clock: Clock;
  readonly logger: Logger<AgentEvent>;
  readonly sourceDeps?: Partial<SourceDeps>;
  /** Runs `ip` to read the node's underlay before rendering a network that allows pushed routes (push-policy.ts). */
  readonly exec?: ExecFn;
}

export interface ReconcileResult {
  readonly ok: boolean;
  readonly error?: NetError;
  readonly actions: readonly Action[];
}

export function factsOf(manifest: Manifest, sha256: string): BundleFacts {
  return { version: manifest.version, sha256, files: { ...manifest.files } as Record<string, string>, expiresAt: Date.parse(manifest.expires) };
}

/** Networks fetched, verified, installed and started at once in one reconcile (see step 5 above). */
export const BUNDLE_CONCURRENCY = 8;

async function caNames(pems: readonly string[]): Promise<string[]> {
  return Promise.all(pems.map(async (p) => (await caFacts(p).catch(() => ({ cn: '?' }))).cn));
}

function byId(x: Action, y: Action): number {
  return x.id < y.id ? -1 : x.id > y.id ? 1 : 0;
}

function netError(err: unknown): NetError {
  const e = toMvpnError(err);
  return { code: e.code, message: e.message };
}

export class Reconciler {
  /** The last accepted membership document (loaded at start, replaced by each accepted one). */
  membership: StoredMembership | undefined;
  /** What is installed, as of the last reconcile or operator action. */
  readonly installed = new Map<string, InstalledBundle>();
  /** Per network: why its newest bundle is not what runs (rejected, install failed, expired). */
  readonly errors = new Map<string, NetError>();
  lastAt: number | undefined;
  lastError: NetError | undefined;
  lastOkAt: number | undefined; // the last reconcile whose discovery succeeded (a document, or a 304)
  /** Consecutive reconciles without an accepted document. */
  failures = 0;
  /** The anchor this node trusts now (the config's, followed through the pinned rotation statements). */
  trust: TrustState;

  /** The user openvpn drops to (set by the daemon at start); installs share crl.pem with it. */
  openvpnUser: OpenvpnUser | undefined;
  private readonly ctx: ReconcileContext;
  private readonly deps: ReconcileDeps;
  private running: Promise<ReconcileResult> | undefined;
  private pending: Promise<ReconcileResult> | undefined;
  private enrollGaveUp = false;
  private readonly abort = new AbortController();

  constructor(ctx: ReconcileContext, deps: ReconcileDeps) {
    this.ctx = ctx;
    this.deps = deps;
    this.trust = initialTrust(ctx.anchor);
    this.renewer = new Renewer(ctx, deps.logger);
  }

  /** Run a reconcile, or join the one queued behind the current run. */
  reconcile(reason: string): Promise<ReconcileResult> {
    if (this.running === undefined) {
      this.running = this.once(reason).finally(() => {
        this.running = undefined;
      });
      return this.running;
    }
    this.pending ??= this.running
      .catch(() => undefined)
      .then(() => {
        this.pending = undefined;
        return this.reconcile(reason);
      });
    return this.pending;
  }

  /** Abort fetches in flight and wait for the current run to finish (shutdown). */
  async shutdown(): Promise<void> {
    this.abort.abort(new MvpnError('MVPN_FETCH_TIMEOUT', 'the agent is stopping'));
    await this.running?.catch(() => undefined);
    await this.pending?.catch(() => undefined);
  }

  /**
   * Boot: start what is installed and still valid before asking any source,
   * so a node whose server is slow or unreachable has its networks at once
   * (the first reconcile then changes only what differs). Only bundles the
   * stored membership document still lists at that version, when there is
   * one: a network removed while the node was down is not started again.
   */
  async startFromCache(): Promise<number> {
    const { runner } = this.ctx;
    const now = this.deps.clock.now();
    const listed = this.membership ? new Map(this.membership.doc.networks.map((n) => [n.id, n.bundle])) : undefined;
    const actual: ActualNetwork[] = [...this.installed.values()]
      .filter((b) => listed === undefined || (listed.get(b.network)?.version === b.version && listed.get(b.network)?.sha256 === b.sha256))
      .map((b) => ({ id: b.network, installed: factsOf(b.manifest, b.sha256), running: runner.isRunning(b.network), adminDown: runner.isAdminDown(b.network) }));
    let started = 0;
    for (const a of plan({ kind: 'unavailable' }, actual, now)) {
      if (a.error) this.errors.set(a.id, a.error);
      if (a.kind !== 'start') continue;
      const b = this.installed.get(a.id);
      if (b === undefined) continue;
      this.deps.logger.emit({ kind: 'reconcile.action', network: a.id, action: 'start (installed bundle, before discovery)' });
      await runner.run(b);
      started++;
    }
    return started;
  }

  /** Re-read the installed bundles (start-up, and before every plan). */
  async refreshInstalled(): Promise<void> {
    const anchor = this.trust.anchor;
    const list = await listInstalled(this.ctx.config.stateDir, {
      anchor,
      onError: (network, err) => this.deps.logger.emit({ kind: 'install.broken', network, message: toMvpnError(err).message }),
    });
    this.installed.clear();
    for (const b of list) this.installed.set(b.network, b);
    this.freshlyRead = anchor.keyId;
  }

  /**
   * Set by refreshInstalled to the anchor it checked the installs with, and
   * cleared by the next plan: the first reconcile after start-up plans with
   * what start-up has just read, instead of reading and verifying every
   * install a second time while their openvpns start (READY=1 waits for that
   * reconcile; issue 14: join). Only while nothing was installed since and
   * the anchor is the same: a rotation adopted during discovery re-reads.
   */
  private freshlyRead: string | undefined;

  /** The CA pins of a network: its pin file, else the CAs of the bundle installed before pins existed, else none (first install). */
  private async caPins(id: string): Promise<string[] | undefined> {
    const pins = await loadCaPins(this.ctx.config.stateDir, id);
    if (pins !== undefined) return pins;
    const inst = this.installed.get(id);
    return inst === undefined ? undefined : pinsOfCaFile(inst.paths.ca);
  }

  private async install(vb: VerifiedBundle, identity: Identity | undefined): Promise<InstalledBundle> {
    // The pin moves first (see ca-pins.ts): verifyBundle accepted these CAs under the pin rule.
    // It is written alongside the install's files (its fsyncs overlap theirs; issue 14: join)
    // and is on disk before the install is switched live (beforeSwitch).
    const pins = vb.cas.map((c) => c.pin);
    const { stateDir } = this.ctx.config;
    const had = await loadCaPins(stateDir, vb.manifest.network);
    const dev = deviceName(vb.spec.id);
    // Pushed routes must never cover the node's underlay: read it now, for the config rendered now.
    let protect: ProtectedPrefix[] = [];
    if (vb.spec.pushed_routes !== undefined) {
      protect = await readProtectedPrefixes(this.deps.exec ?? execCommand, dev);
      for (const r of acceptedRoutes(vb.spec.pushed_routes, vb.spec.remotes, protect).refused) {
        this.deps.logger.emit({ kind: 'install.route-refused', network: vb.spec.id, prefix: r.prefix, reason: r.reason });
      }
    }
    const pinning =
      had === undefined || had.join() !== pins.join()
        ? saveCaPins(stateDir, vb.manifest.network, pins, new Date(this.deps.clock.now())).then(() =>
            this.deps.logger.emit({ kind: 'ca.pinned', network: vb.manifest.network, pins, previous: had ?? [] }),
          )
        : undefined;
    const installing = installBundle(vb, {
      stateDir: this.ctx.config.stateDir,
      ...(identity ? { nodeKeyPath: identity.paths.key } : {}),
      openvpnUser: this.openvpnUser,
      render: (spec, _dir, files) => renderClientConfig(spec, { ...files, mgmtSocket: runtimePaths(this.ctx.config.runtimeDir, spec.id).mgmtSocket, dev }, protect),
      ...(pinning === undefined ? {} : { beforeSwitch: () => pinning }),
    });
    const [pinned, done] = await Promise.allSettled([pinning, installing]);
    // A pin that cannot be saved fails the install with its own error, as when it was written first.
    if (pinned.status === 'rejected') throw pinned.reason;
    if (done.status === 'rejected') throw done.reason;
    const b = done.value;
    this.installed.set(b.network, b);
    this.freshlyRead = undefined;
    return b;
  }

  private async maybeEnroll(now: Date): Promise<void> {
    const e = this.ctx.config.enroll;
    if (e === undefined || this.enrollGaveUp) return;
    const should = await shouldAutoEnroll(this.ctx.config.stateDir, e.tokenFile);
    if (!should.yes) {
      if (should.reason !== 'already enrolled' && !should.reason.startsWith('no enrollment token')) {
        this.deps.logger.emit({ kind: 'enroll.skipped', reason: should.reason });
      }
      return;
    }
    try {
      await enroll({
        nodeId: this.ctx.nodeId,
        url: e.url,
        ...(e.via === undefined ? {} : { via: e.via }),
        tokenFile: e.tokenFile,
        ...(this.apiCaPem(undefined) === undefined ? {} : { serverCaPem: this.apiCaPem(undefined)! }),
        stateDir: this.ctx.config.stateDir,
        now,
        timeoutMs: this.ctx.config.fetch.requestTimeoutMs,
      });
      this.deps.logger.emit({ kind: 'enroll.ok', node: this.ctx.nodeId, url: e.url });
    } catch (err) {
      const me = toMvpnError(err);
      const permanent = isPermanentEnrollError(me);
      if (permanent) this.enrollGaveUp = true;
      this.deps.logger.emit({ kind: 'enroll.failed', code: me.code, message: me.message, permanent });
    }
  }

  /** The API CAs this node trusts (api-ca.ts), as of the last reconcile; undefined before the first. */
  private apiTrust: ApiTrust | undefined;
  /** Set while the identity is not from the server's issuing API CA: renew now. */
  private apiCaRenewReason: string | undefined;
  /** The API CA as of the last reconcile (status); null before enrollment. */
  apiCa: ApiCaStatus | null = null;

  /** PEM of the CAs the API listener is verified with: the API CA pin once a roll was followed, else server_ca, else the enrolled CA. */
  private apiCaPem(identity: Identity | undefined): string | undefined {
    if (this.apiTrust?.pinned === true) return this.apiTrust.pems.join('');
    return this.ctx.serverCaPem ?? identity?.caPem;
  }

  /**
   * Step 2a (api-ca.ts): read the server's API CA list, follow a roll its
   * pinned CA certified, and note when the identity must move to the new
   * CA. Never throws: a refused or unreachable list leaves the trust as it
   * was, and is shown in status.
   */
  private async followApiCa(now: Date, identity: Identity | undefined): Promise<void> {
    const { config } = this.ctx;
    this.apiCaRenewReason = undefined;
    let lastError: NetError | null = null;
    try {
      this.apiTrust = await loadApiTrust(config.stateDir, this.ctx.serverCaPem ?? identity?.caPem);
      const target = identity === undefined || this.apiTrust === undefined ? undefined : renewTarget(config, this.apiCaPem(identity));
      if (identity !== undefined && this.apiTrust !== undefined && target !== undefined) {
        const url = apiUrl(target.url, 'v1/api-ca.json');
        const http = new HttpFetcher({ ca: this.apiTrust.pems.join('') }, config.fetch);
        let body: Buffer;
        try {
          const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(config.fetch.requestTimeoutMs * 2)]);
          const got = await http.get(url, { maxBytes: 64 * 1024, signal, accept: 'application/json', ...(target.via === undefined ? {} : { via: target.via }) });
          if (got.kind !== 'doc') throw new FetchError('MVPN_FETCH_HTTP_STATUS', `${url.href} answered 304 without a conditional request`, { context: { status: 304 } });
          body = got.bytes;
        } finally {
          await http.close();
        }
        const before = this.apiTrust;
        const r = await acceptApiCas(config.stateDir, body, before, now);
        this.apiTrust = r.trust;
        if (r.changed) this.deps.logger.emit({ kind: 'api-ca.pinned', cas: await caNames(r.trust.pems), previous: before.pins });
        if (!issuedBy(identity.certPem, r.issuerPem)) this.apiCaRenewReason = `the server's API CA was rolled to ${r.issuerCn}; the identity is from an earlier one`;
      }
    } catch (err) {
      // 404: a server from before API CA rolls, or not an mvpn API: nothing to follow.
      if (toMvpnError(err).context['status'] !== 404) {
        lastError = netError(err);
        this.deps.logger.emit({ kind: 'api-ca.refused', code: lastError.code, message: lastError.message });
      }
    }
    this.apiCa = identity === undefined ? null : { pinned: this.apiTrust?.pinned ?? false, cas: this.apiTrust === undefined ? [] : await caNames(this.apiTrust.pems), last_error: lastError };
  }

  /** Automatic renewal (renewer.ts): its status and when a reconcile should run for it. */
  readonly renewer: Renewer;
  get renewal(): RenewalStatus | null {
    return this.renewer.status;
  }
  get renewalWakeAt(): number | undefined {
    return this.renewer.wakeAt;
  }

  /** Validity of the identity certificate and of every installed node-keyed network certificate (central keys cannot renew online). */
  private async once(reason: string): Promise<ReconcileResult> {
    const { clock, logger } = this.deps;
    const { config, nodeId } = this.ctx;
    const startedAt = clock.now();
    const now = new Date(startedAt);
    logger.emit({ kind: 'reconcile.start', reason });

    await this.maybeEnroll(now);
    const enrolled = await loadIdentity(config.stateDir);
    await this.followApiCa(now, enrolled);
    const identity = await this.renewer.maybeRenew(now, enrolled, [...this.installed.values()], this.apiCaPem(enrolled), this.apiCaRenewReason);
    const defaultCa = this.apiCaPem(identity);
    const http = new HttpFetcher(
      { ...(defaultCa === undefined ? {} : { ca: defaultCa }), ...(identity ? { cert: identity.certPem, key: identity.keyPem } : {}) },
      config.fetch,
    );
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(config.fetch.deadlineMs)]);
    try {
      // 3. discovery
      let accepted: { m: AcceptedMembership; origin: DocOrigin; stored: StoredMembership } | undefined;
      try {
        const stored = this.membership;
        // Read at each call: a rotation adopted during discovery changes both.
        const verify = (bytes: Uint8Array): AcceptedMembership => {
          const m = this.membership;
          const last = m ? { serial: m.doc.serial, payloadSha256: m.payloadSha256 } : undefined;
          return verifyMembership(bytes, { anchor: this.trust.anchor, nodeId, now, floor: this.trust.serialFloor, ...(last ? { last } : {}) });
        };
        const d = await discover(
          { sources: config.sources, limits: config.fetch, http },
          {
            etagFor: (o) => (stored !== undefined && stored.source === o.label ? stored.etag : undefined),
            accept: async (bytes, origin) => {
              try {
                return verify(bytes);
              } catch (err) {
                // Signed by a key this node does not know: the server may have rotated its anchor.
                if (toMvpnError(err).context['unknownKey'] !== true) throw err;
                const advanced = await this.followRotations(origin, http, signal).catch((chainErr: unknown) => {
                  // A source without a chain (a plain relay) has nothing to add: its document's own error is the one to report.
                  if (toMvpnError(chainErr).code.startsWith('MVPN_FETCH_')) return false;
                  throw chainErr;
                });
                if (!advanced) throw err;
                return verify(bytes);
              }
            },
            reuse: () => {
              if (stored === undefined) throw new MvpnError('MVPN_FETCH_HTTP_STATUS', 'the source answered 304 but no document is stored');
              return verify(stored.envelope);
            },
            signal,
          },
          this.deps.sourceDeps,
        );
        for (const a of d.attempts) if (!a.ok) logger.emit({ kind: 'discovery.source-failed', source: a.source, code: a.code ?? '', message: a.message ?? '' });
        const etag = d.etag ?? (d.notModified ? stored?.etag : undefined);
        accepted = {
          m: d.value,
          origin: d.origin,
          stored: {
            doc: d.value.doc,
            envelope: d.value.envelope,
            payloadSha256: d.value.payloadSha256,
            source: d.origin.label,
            ...(etag === undefined ? {} : { etag }),
            fetchedAt: startedAt,
          },
        };
        logger.emit({ kind: 'discovery.ok', source: d.origin.label, serial: d.value.doc.serial, notModified: d.notModified });
        this.lastError = undefined;
        this.failures = 0;
      } catch (err) {
        const e = toMvpnError(err);
        const attempts = (e.context['attempts'] as { source: string; ok: boolean; code?: string; message?: string }[] | undefined) ?? [];
        for (const a of attempts) logger.emit({ kind: 'discovery.source-failed', source: a.source, code: a.code ?? '', message: a.message ?? '' });
        logger.emit({ kind: 'discovery.failed', code: e.code, message: e.message });
        this.lastError = netError(e);
        this.failures++;
      }

      // 4–5. installed state; then per network: its bundle if it changed, plan, act
      if (this.freshlyRead !== this.trust.anchor.keyId) await this.refreshInstalled();
      this.freshlyRead = undefined;
      let actions: Action[];
      if (accepted === undefined) {
        // Without a fresh document, earlier reasons (a rejected bundle) still hold: keep them.
        actions = plan({ kind: 'unavailable' }, this.actualAll(), startedAt);
        for (const a of actions) await this.apply(a, undefined, identity, false);
      } else {
        const entries = accepted.m.doc.networks;
        const toFetch = new Set(bundlesToFetch(entries.map((n) => ({ id: n.id, version: n.bundle.version, sha256: n.bundle.sha256 })), this.installed));
        const sourceCa = this.caForOrigin(accepted.origin) ?? defaultCa;
        const origin = accepted.origin;
        const root = bundleRoot(origin);
        const done: Action[] = [];
        const failed: string[] = [];
        const one = async (n: (typeof entries)[number]): Promise<void> => {
          let bundle: FetchedBundle = { kind: 'installed' };
          let vb: VerifiedBundle | undefined;
          if (toFetch.has(n.id)) {
            try {
              const rollback = bundleRollback({ id: n.id, version: n.bundle.version }, this.installed.get(n.id));
              if (rollback) throw new BundleError('MVPN_BUNDLE_ROLLBACK', rollback.message, { context: { network: n.id, version: n.bundle.version } });
              const url = resolveBundleUrl(n.bundle.url, origin);
              const via = viaFor(url, origin);
              const bytes = await fetchBundleBytes(
                url,
                { size: n.bundle.size },
                {
                  http,
                  limits: config.fetch,
                  signal,
                  ...(sourceCa === undefined ? {} : { ca: sourceCa }),
                  ...(via === undefined ? {} : { via }),
                  ...(root === undefined ? {} : { root }),
                },
                this.deps.sourceDeps,
              );
              const pinnedCas = await this.caPins(n.id);
              vb = await verifyBundle(bytes, {
                anchor: this.trust.anchor,
                nodeId,
                now,
                ...(pinnedCas === undefined ? {} : { pinnedCas }),
                expect: { network: n.id, version: n.bundle.version, sha256: n.bundle.sha256, size: n.bundle.size },
                ...(identity ? { nodeKeyPem: identity.keyPem } : {}),
              });
              bundle = { kind: 'verified', facts: factsOf(vb.manifest, vb.sha256) };
            } catch (err) {
              const error = netError(err);
              logger.emit({ kind: 'reconcile.rejected', network: n.id, code: error.code, message: error.message });
              bundle = { kind: 'rejected', error };
            }
          }
          const a = planNetwork({ id: n.id, version: n.bundle.version, sha256: n.bundle.sha256, bundle }, this.actualOf(n.id), startedAt);
          done.push(a);
          const applied = await this.apply(a, vb, identity, true);
          if (bundle.kind === 'rejected' || !applied) failed.push(n.id);
        };
        const removals = planRemovals(entries, this.actualAll());
        await Promise.all([
          mapLimit(entries, BUNDLE_CONCURRENCY, one),
          ...removals.map(async (a) => {
            done.push(a);
            await this.apply(a, undefined, identity, true);
          }),
        ]);
        actions = done.sort(byId);
        // Networks no longer in the membership keep no error.
        const wanted = new Set(entries.map((n) => n.id));
        for (const id of [...this.errors.keys()]) if (!wanted.has(id)) this.errors.delete(id);
        // 6. Last-good only when every bundle it lists is in place (see step 3).
        if (failed.length === 0) {
          this.membership = accepted.stored;
          try {
            await saveMembership(config.stateDir, accepted.stored);
          } catch (err) {
            // A full disk must not fail the reconcile that already applied the document; it stays last-good in memory.
            this.lastError = netError(err);
            logger.emit({ kind: 'discovery.failed', code: this.lastError.code, message: `the membership document could not be saved: ${this.lastError.message}` });
          }
        } else {
          logger.emit({ kind: 'discovery.not-saved', serial: accepted.stored.doc.serial, failed: failed.sort() });
        }
      }
      const changes = actions.filter((a) => a.kind !== 'keep').length;
      logger.emit({ kind: 'reconcile.done', actions: changes, durationMs: clock.now() - startedAt });
      this.lastAt = startedAt;
      if (this.lastError === undefined) this.lastOkAt = startedAt;
      return { ok: this.lastError === undefined, ...(this.lastError ? { error: this.lastError } : {}), actions };
    } finally {
      await http.close();
    }
  }

  /** What the planner needs of one network's actual state, as of now. */
  private actualOf(id: string): ActualNetwork {
    const { runner } = this.ctx;
    const inst = this.installed.get(id);
    return { id, ...(inst ? { installed: factsOf(inst.manifest, inst.sha256) } : {}), running: runner.isRunning(id), adminDown: runner.isAdminDown(id) };
  }

  private actualAll(): ActualNetwork[] {
    return [...new Set([...this.installed.keys(), ...this.ctx.runner.ids()])].map((id) => this.actualOf(id));
  }

  /**
   * Fetches the anchor chain beside the document's source and applies the
   * links that follow the current anchor (followChain). The new anchor is
   * pinned on disk before it is used; the stored membership document, signed
   * by the retired key, is dropped (the statement's serial floor replaces its
   * serial, which is how a poisoned serial is recovered). True when the
   * anchor changed.
   */
  private async followRotations(origin: DocOrigin, http: HttpFetcher, signal: AbortSignal): Promise<boolean> {
    const url = anchorChainUrl(origin);
    let bytes: Buffer;
    if (url.protocol === 'file:') {
      const root = bundleRoot(origin);
      bytes = await readFileCapped(fileURLToPath(url), this.ctx.config.fetch.maxMembershipBytes, { signal, ...(root === undefined ? {} : { within: root }) });
    } else {
      const via = viaFor(url, origin);
      const ca = this.caForOrigin(origin);
      const got = await http.get(url, {
        maxBytes: this.ctx.config.fetch.maxMembershipBytes,
        signal,
        accept: 'application/json',
        ...(ca === undefined ? {} : { ca }),
        ...(via === undefined ? {} : { via }),
      });
      if (got.kind !== 'doc') throw new FetchError('MVPN_FETCH_HTTP_STATUS', `${url.href} answered 304 without a conditional request`, { context: { status: 304 } });
      bytes = got.bytes;
    }
    const before = this.trust;
    const after = followChain(before, parseChain(bytes));
    if (after.applied.length !== before.applied.length) {
      await savePinnedChain(this.ctx.config.stateDir, after);
      this.trust = after;
    }
    if (after.anchor.keyId === before.anchor.keyId) return false;
    this.membership = undefined;
    this.deps.logger.emit({ kind: 'anchor.rotated', from: before.anchor.keyId, to: after.anchor.keyId, version: after.version ?? 1, serialFloor: after.serialFloor, source: url.href });
    return true;
  }

  private caForOrigin(origin: DocOrigin): string | undefined {
    for (const s of this.ctx.config.sources) if (s.type === 'https' && s.ca !== undefined && originOf(s).label === origin.label) return s.ca;
    return undefined;
  }

  /** Carry out one action; false when it failed (the error is recorded for the network, what ran keeps running). */
  private async apply(a: Action, vb: VerifiedBundle | undefined, identity: Identity | undefined, fresh: boolean): Promise<boolean> {
    const { runner, config } = this.ctx;
    if (a.error) this.errors.set(a.id, a.error);
    else if (fresh) this.errors.delete(a.id);
    if (a.kind !== 'keep') this.deps.logger.emit({ kind: 'reconcile.action', network: a.id, action: a.kind });
    try {
      switch (a.kind) {
        case 'keep':
          return true;
        case 'start': {
          const b = this.installed.get(a.id);
          if (b) await runner.run(b);
          return true;
        }
        case 'install-start':
          await runner.run(await this.install(this.need(vb, a), identity));
          return true;
        case 'install':
        case 'swap-crl':
          await this.install(this.need(vb, a), identity);
          return true;
        case 'replace-restart':
          await runner.restart(await this.install(this.need(vb, a), identity));
          return true;
        case 'replace-reload': {
          // New credentials only: the same openvpn.conf means the running openvpn can take them by a soft restart.
          const before = this.installed.get(a.id)?.configSha256;
          const b = await this.install(this.need(vb, a), identity);
          await (b.configSha256 === before ? runner.reload(b) : runner.restart(b));
          return true;
        }
        case 'stop':
          await runner.stop(a.id);
          return true;
        case 'stop-remove':
          await runner.stop(a.id);
          await removeInstalled(config.stateDir, a.id);
          this.installed.delete(a.id);
          this.errors.delete(a.id);
          await runner.forget(a.id);
          return true;
      }
    } catch (err) {
      // Install is atomic: whatever ran before keeps running.
      const error = netError(err);
      this.errors.set(a.id, error);
      this.deps.logger.emit({ kind: 'reconcile.rejected', network: a.id, code: error.code, message: error.message });
      return false;
    }
  }

  private need(vb: VerifiedBundle | undefined, a: Action): VerifiedBundle {
    if (vb === undefined) throw new MvpnError('MVPN_INTERNAL', `${a.kind} for ${a.id} without a verified bundle`);
    return vb;
  }

  /** For `up`: the installed bundle, re-read from disk. */
  async installedBundle(id: string): Promise<InstalledBundle | undefined> {
    const b = await readInstalled(this.ctx.config.stateDir, id, { anchor: this.trust.anchor });
    if (b) this.installed.set(id, b);
    else this.installed.delete(id);
    return b;
  }
}
