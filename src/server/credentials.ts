/**
 * The server daemon's credentials that other processes replace under it:
 * the signing key (`server anchor rotate`) and the API CA files
 * (`server api roll-ca`, or the daemon's own finish). Each is loaded once
 * at start and reloaded when its files' stamp changes — checked on the
 * daemon's 1 s poll, and for the signing key before every membership
 * document is served (one stat), so the old key signs nothing once
 * signing.key was replaced.
 */
import type { Server } from 'node:https';
import { toMvpnError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { SigningKey } from '../bundle/sign.ts';
import { loadSigningKey } from './anchor-rotation.ts';
import { apiTlsOptions } from './api.ts';
import type { ServerPaths } from './config.ts';
import type { DocumentService } from './doc-service.ts';
import type { ServerEvent } from './events.ts';
import { apiCaStamp, loadApiCaState, type ApiCaState } from './ops/api-ca-roll.ts';
import { fileStamp } from '../util/read-file.ts';

export class Credentials {
  private readonly paths: ServerPaths;
  private readonly logger: Logger<ServerEvent>;
  private signingKeyStamp: string;
  private apiCaStamp: string;
  private current: ApiCaState;
  private docs: DocumentService | undefined;
  private server: Server | undefined;

  private constructor(paths: ServerPaths, logger: Logger<ServerEvent>, signingKey: SigningKey, apiCa: ApiCaState, stamps: [string, string]) {
    this.paths = paths;
    this.logger = logger;
    this.signingKey = signingKey;
    this.current = apiCa;
    [this.signingKeyStamp, this.apiCaStamp] = stamps;
  }

  /** The signing key as loaded at start (the DocumentService then owns the current one). */
  readonly signingKey: SigningKey;

  static async load(paths: ServerPaths, logger: Logger<ServerEvent>): Promise<Credentials> {
    const stamps: [string, string] = [await fileStamp(paths.signingKey).catch(() => ''), await apiCaStamp(paths)];
    return new Credentials(paths, logger, await loadSigningKey(paths), await loadApiCaState(paths), stamps);
  }

  /** The API CAs the listener trusts and issues from now. */
  apiCa(): ApiCaState {
    return this.current;
  }

  /** What a reload changes: the document signer and the API listener's TLS context. */
  attach(docs: DocumentService, server: Server): void {
    this.docs = docs;
    this.server = server;
  }

  /** Both checks of the 1 s poll. */
  async reload(): Promise<void> {
    await Promise.all([this.reloadSigningKey(), this.reloadApiCa()]);
  }

  /** After `server anchor rotate` (another process): sign with the new key. */
  async reloadSigningKey(): Promise<void> {
    try {
      const stamp = await fileStamp(this.paths.signingKey);
      if (stamp === this.signingKeyStamp || this.docs === undefined) return;
      const key = await loadSigningKey(this.paths);
      this.signingKeyStamp = stamp;
      if (key.keyId === this.docs.keyId) return;
      const from = this.docs.keyId;
      this.docs.setKey(key);
      this.logger.emit({ kind: 'server.anchor-rotated', from, to: key.keyId });
    } catch (err) {
      const e = toMvpnError(err);
      this.logger.emit({ kind: 'server.reconcile-failed', code: e.code, message: `reloading the signing key: ${e.message}` });
    }
  }

  /**
   * After `server api roll-ca`: issue from the new CA, accept the CAs the
   * files name, serve the new listener certificate. New connections get the
   * new context; open keep-alive connections end within keepAliveTimeout.
   */
  async reloadApiCa(): Promise<void> {
    try {
      const stamp = await apiCaStamp(this.paths);
      if (stamp === this.apiCaStamp || this.server === undefined) return;
      // Taken before the read: files that do not load (a pair between its renames) are read again at their next change, not every second.
      this.apiCaStamp = stamp;
      const a = await loadApiCaState(this.paths, { complete: false });
      this.server.setSecureContext(apiTlsOptions(a));
      this.current = a;
      this.logger.emit({ kind: 'server.api-ca-reloaded', trusted: a.trustedPems.length, rolling: a.roll !== undefined });
    } catch (err) {
      const e = toMvpnError(err);
      this.logger.emit({ kind: 'server.reconcile-failed', code: e.code, message: `reloading the API CA: ${e.message}` });
    }
  }
}
