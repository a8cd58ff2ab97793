/**
 * notAfter of the certificates a node holds (its network certificates and
 * its API identity), for status and metrics. status() runs on every state
 * change, so each file is read and parsed once per `key` (the installed
 * version directory; for the identity, the last reconcile, the only place
 * it changes) and served from memory otherwise.
 */
import { readFileSync } from 'node:fs';
import { certLife } from './renew.ts';

export class CertExpiryCache {
  private readonly seen = new Map<string, { readonly key: unknown; readonly notAfter: number | undefined }>();

  /** ms since the epoch; undefined when the file is missing or unreadable (the next reconcile reinstalls it). */
  notAfter(path: string, key: unknown): number | undefined {
    const hit = this.seen.get(path);
    if (hit !== undefined && hit.key === key) return hit.notAfter;
    let notAfter: number | undefined;
    try {
      notAfter = certLife(readFileSync(path, 'utf8'), path).notAfter;
    } catch {
      notAfter = undefined;
    }
    this.seen.set(path, { key, notAfter });
    return notAfter;
  }
}
