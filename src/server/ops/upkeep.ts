/**
 * The store's own upkeep, run by the server daemon at the start of every
 * pass (before files are written): CRLs due for re-issue, CA rolls whose
 * overlap ended (networks' and the API's), and at start and then once a day a warning for every CA
 * (networks', the API's) within its warning window.
 */
import type { Logger } from '../../log.ts';
import type { ServerEvent } from '../events.ts';
import { finishDueApiCaRoll } from './api-ca-roll.ts';
import { caExpiries, finishDueCaRolls } from './ca-roll.ts';
import { DAY, type ServerContext } from './context.ts';
import { refreshDueCrls, type LeaseOwner } from './crl.ts';

export class Upkeep {
  private readonly ctx: ServerContext;
  private readonly logger: Logger<ServerEvent>;
  private readonly owner: LeaseOwner | undefined;
  private caWarnedAt: number | undefined;

  /** `owner`: the daemon's leases; a network's CRL is then re-issued by the host that runs it. */
  constructor(ctx: ServerContext, logger: Logger<ServerEvent>, owner?: LeaseOwner) {
    this.ctx = ctx;
    this.logger = logger;
    this.owner = owner;
  }

  async run(): Promise<void> {
    for (const r of await refreshDueCrls(this.ctx, this.owner)) {
      this.logger.emit({ kind: 'server.crl-refreshed', network: r.network, number: r.number, nextUpdate: new Date(r.nextUpdate).toISOString() });
    }
    for (const id of await finishDueCaRolls(this.ctx)) this.logger.emit({ kind: 'server.ca-roll-finished', network: id });
    const api = await finishDueApiCaRoll(this.ctx);
    if (api) this.logger.emit({ kind: 'server.ca-roll-finished', network: `(API CA ${api.ca})` });
    await this.warnCaExpiry();
  }

  private async warnCaExpiry(): Promise<void> {
    const now = this.ctx.clock.now();
    if (this.caWarnedAt !== undefined && now - this.caWarnedAt < DAY) return;
    this.caWarnedAt = now;
    for (const e of await caExpiries(this.ctx, now)) {
      if (e.warning !== undefined) this.logger.emit({ kind: 'server.ca-expiring', which: e.which, daysLeft: e.daysLeft, message: e.warning });
    }
  }
}
