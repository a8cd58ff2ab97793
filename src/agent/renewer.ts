/**
 * Step 2b of a reconcile: automatic renewal of the node's API identity and
 * node-keyed network certificates (renew.ts holds the pure rules and the
 * requests). The Reconciler owns one; this holds the renewal's state between
 * reconciles — its status for `status`, when to wake for it, the retry
 * backoff — so reconcile.ts stays the store → fetch → install → run pass.
 */
import { MvpnError, toMvpnError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { InstalledBundle } from '../bundle/install.ts';
import { backoffDelay } from '../util/backoff.ts';
import { readFile } from 'node:fs/promises';
import type { AgentEvent } from './events.ts';
import { finishRenewal, renewalPending, type Identity } from './identity.ts';
import type { ReconcileContext } from './reconcile.ts';
import { certLife, confirmRenewal, decideRenewal, renewIdentity, renewTarget, serialOf as certLifeSerial, type CertLife } from './renew.ts';
import type { RenewalStatus } from './status.ts';

export class Renewer {
  /** Automatic renewal as of the last reconcile (status). */
  status: RenewalStatus | null = null;
  /** When a reconcile should run for the renewal (its two-thirds point, a retry, a confirmation check); undefined: not needed. */
  wakeAt: number | undefined;
  private failures = 0;
  private retryAt: number | undefined;
  private confirmWaits = 0;
  private lastRenewedAt: number | undefined;
  private readonly ctx: Pick<ReconcileContext, 'config' | 'nodeId' | 'runner'>;
  private readonly logger: Logger<AgentEvent>;

  constructor(ctx: Pick<ReconcileContext, 'config' | 'nodeId' | 'runner'>, logger: Logger<AgentEvent>) {
    this.ctx = ctx;
    this.logger = logger;
  }

  private async renewableCerts(identity: Identity, installed: readonly InstalledBundle[]): Promise<CertLife[]> {
    const certs: CertLife[] = [certLife(identity.certPem, 'identity')];
    for (const b of installed) {
      if (b.manifest.key_origin !== 'node') continue;
      try {
        certs.push(certLife(await readFile(b.paths.cert, 'utf8'), `network ${b.network}`));
      } catch {
        // unreadable: the next reconcile reinstalls it; nothing to time from
      }
    }
    return certs;
  }

  /** True once every node-keyed network runs the current key: installed with it, and connected (or stopped on purpose). */
  private inUse(identity: Identity, installed: readonly InstalledBundle[]): boolean {
    const { runner } = this.ctx;
    for (const b of installed) {
      if (b.manifest.key_origin !== 'node') continue;
      if (b.keySource !== identity.paths.key) return false;
      if (runner.isAdminDown(b.network) || !runner.isRunning(b.network)) continue;
      if (runner.status(b.network)?.state !== 'connected') return false;
    }
    return true;
  }

  private failed(err: unknown, t: number): void {
    const e = toMvpnError(err);
    this.failures++;
    const retryInMs = backoffDelay(this.failures - 1, { initialMs: 5_000, maxMs: Math.min(this.ctx.config.reconcileIntervalMs, 3_600_000), factor: 2, jitter: 0.5, minMs: 1_000 });
    this.retryAt = t + retryInMs;
    this.wakeAt = this.retryAt;
    this.logger.emit({ kind: 'renew.failed', code: e.code, message: e.message, retryInMs });
    this.status = { ...this.base(), state: 'failed', next_retry_at: new Date(this.retryAt).toISOString(), last_error: { code: e.code, message: e.message } };
  }

  private base(): RenewalStatus {
    return {
      state: 'idle',
      due_at: this.status?.due_at ?? null,
      last_renewed_at: this.lastRenewedAt === undefined ? null : new Date(this.lastRenewedAt).toISOString(),
      next_retry_at: null,
      last_error: null,
    };
  }

  /**
   * Step 2b of a reconcile (renew.ts): confirm a renewal whose new
   * certificates are in use, or renew when a certificate is due. Never
   * throws; a failure is recorded, retried with backoff, and the current
   * identity stays. Returns the identity the rest of the reconcile uses.
   */
  async maybeRenew(now: Date, identity: Identity | undefined, installed: readonly InstalledBundle[], apiCaPem: string | undefined, apiCaRenewReason: string | undefined): Promise<Identity | undefined> {
    const { config, nodeId } = this.ctx;
    const t = now.getTime();
    this.wakeAt = undefined;
    if (identity === undefined) {
      this.status = null;
      return identity;
    }
    const target = renewTarget(config, apiCaPem);
    const retrying = this.retryAt !== undefined && t < this.retryAt;
    if (await renewalPending(config.stateDir)) {
      if (!this.inUse(identity, installed)) {
        this.confirmWaits++;
        this.wakeAt = t + backoffDelay(this.confirmWaits - 1, { initialMs: 1_000, maxMs: 60_000, factor: 2, jitter: 0, minMs: 500 });
        if (this.status?.state !== 'failed') this.status = { ...this.base(), state: 'confirming' };
        return identity;
      }
      if (retrying || target === undefined) {
        this.wakeAt = this.retryAt;
        return identity;
      }
      try {
        const revoked = await confirmRenewal({ identity, target, timeoutMs: config.fetch.requestTimeoutMs });
        const inUse = installed.map((b) => b.keySource);
        const removed = await finishRenewal(config.stateDir, identity, inUse);
        this.logger.emit({ kind: 'renew.confirmed', revoked, removedKeys: removed.length });
        this.failures = 0;
        this.retryAt = undefined;
        this.confirmWaits = 0;
      } catch (err) {
        if (toMvpnError(err).context['serverCode'] !== 'MVPN_RENEW_NOT_CURRENT') {
          this.failed(err, t);
          return identity;
        }
        // The switch to the new identity never completed (its certificate was lost): the server still has
        // the old one as "previous", so drop the marker and renew again below; that replaces the lost one.
        const inUse = installed.map((b) => b.keySource);
        await finishRenewal(config.stateDir, identity, inUse).catch(() => undefined);
        this.retryAt = undefined;
      }
    }
    let decision: ReturnType<typeof decideRenewal>;
    try {
      decision = decideRenewal(t, await this.renewableCerts(identity, installed));
    } catch (err) {
      this.failed(err, t);
      return identity;
    }
    // An API CA roll (api-ca.ts): the identity moves to the new CA now, not at its two-thirds point.
    if (decision.kind === 'wait' && apiCaRenewReason !== undefined) decision = { kind: 'renew', what: 'identity', expired: false, reason: apiCaRenewReason };
    if (decision.kind === 'wait') {
      this.wakeAt = decision.at;
      this.status = { ...this.base(), due_at: decision.at === undefined ? null : new Date(decision.at).toISOString() };
      return identity;
    }
    if (retrying) {
      this.wakeAt = this.retryAt;
      return identity;
    }
    if (target === undefined) {
      this.failed(new MvpnError('MVPN_RENEW_FAILED', `${decision.reason}, but no API URL is configured to renew at (an https source ending in "/" or enroll.url)`), t);
      return identity;
    }
    this.logger.emit({ kind: 'renew.start', reason: decision.reason });
    try {
      const renewed = await renewIdentity({ stateDir: config.stateDir, nodeId, identity, target, now, timeoutMs: config.fetch.requestTimeoutMs });
      this.lastRenewedAt = t;
      this.failures = 0;
      this.retryAt = undefined;
      this.confirmWaits = 0;
      this.wakeAt = t + 1_000;
      this.status = { ...this.base(), state: 'confirming', due_at: null };
      this.logger.emit({ kind: 'renew.ok', serial: certLifeSerial(renewed.certPem) });
      return renewed;
    } catch (err) {
      this.failed(err, t);
      return identity;
    }
  }
}
