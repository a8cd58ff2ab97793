/**
 * Signed membership documents and bundles for the HTTPS API, built from the
 * store on demand and cached by what identifies their content: a bundle by
 * (node, network, version), a document by (node, serial). Both are
 * deterministic, so a cache miss after a restart rebuilds the same bytes.
 *
 * A document is re-signed (with a new serial) once less than half of its
 * validity is left, when the node next asks; nodes that keep polling always
 * hold a current one.
 */
import { createHash } from 'node:crypto';
import { StoreError } from '../errors.ts';
import type { SigningKey } from '../bundle/sign.ts';
import { buildNodeBundle, membershipDoc, servedMemberships, signMembership, type BuiltBundle } from './documents.ts';
import { Bumps, DAY, nowOf, type ServerContext } from './ops/context.ts';
import type { MembershipRecord, NetworkRecord, NodeRecord } from './store/store.ts';

export interface Served {
  readonly bytes: Buffer;
  /** Strong ETag, quoted. */
  readonly etag: string;
}

function etagOf(bytes: Uint8Array): string {
  return `"${createHash('sha256').update(bytes).digest('hex').slice(0, 32)}"`;
}

/** A small LRU: Map keeps insertion order; a hit moves the entry to the end. */
class Lru<V> {
  private readonly map = new Map<string, V>();
  private readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
  get(k: string): V | undefined {
    const v = this.map.get(k);
    if (v !== undefined) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }
  delete(k: string): void {
    this.map.delete(k);
  }
  set(k: string, v: V): void {
    this.map.delete(k);
    this.map.set(k, v);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value!);
  }
}

interface Snapshot {
  readonly node: NodeRecord;
  readonly entries: readonly { net: NetworkRecord; m: MembershipRecord }[];
}

export class DocumentService {
  private readonly ctx: ServerContext;
  private key: SigningKey;
  private bundles: Lru<Promise<BuiltBundle>>;
  private docs: Lru<Served>;
  private readonly opts: { maxBundles?: number; maxDocs?: number };

  constructor(ctx: ServerContext, key: SigningKey, opts: { maxBundles?: number; maxDocs?: number } = {}) {
    this.ctx = ctx;
    this.key = key;
    this.opts = opts;
    this.bundles = new Lru(opts.maxBundles ?? 4096);
    this.docs = new Lru(opts.maxDocs ?? 4096);
  }

  get keyId(): string {
    return this.key.keyId;
  }

  /** After an anchor rotation: sign with `key` from now on; nothing signed by the old key is served again. */
  setKey(key: SigningKey): void {
    this.key = key;
    this.bundles = new Lru(this.opts.maxBundles ?? 4096);
    this.docs = new Lru(this.opts.maxDocs ?? 4096);
  }

  private snapshot(nodeId: string): Snapshot | undefined {
    return this.ctx.store.read((tx) => {
      const node = tx.getNode(nodeId);
      if (!node) return undefined;
      const nets = new Map(tx.listNetworks().map((n) => [n.id, n]));
      const entries = servedMemberships(tx.listMemberships({ node: nodeId }), nets).map((m) => ({ net: nets.get(m.network)!, m }));
      return { node, entries };
    });
  }

  /** Re-signs (new serial) when less than half of the document's validity is left. */
  private renewIfDue(nodeId: string, node: NodeRecord): boolean {
    const now = nowOf(this.ctx);
    const half = (this.ctx.config.membership_days * DAY) / 2;
    if (node.docExpiresAt - now >= half) return false;
    this.ctx.store.write((tx) => {
      const cur = tx.getNode(nodeId);
      if (cur && cur.docExpiresAt - now < half) new Bumps().doc(nodeId).apply(tx, now, this.ctx.config.membership_days);
    });
    return true;
  }

  private bundleOf(net: NetworkRecord, m: MembershipRecord): Promise<BuiltBundle> {
    const k = `${m.node}\0${m.network}\0${m.bundleVersion}`;
    let p = this.bundles.get(k);
    if (!p) {
      p = buildNodeBundle(this.key, net, m);
      // A failed build must not stay cached.
      p.catch(() => this.bundles.delete(k));
      this.bundles.set(k, p);
    }
    return p;
  }

  /** The node's current signed membership document. */
  async membership(nodeId: string): Promise<Served> {
    let snap = this.snapshot(nodeId);
    if (!snap) throw new StoreError('MVPN_NOT_FOUND', `no node ${nodeId}`, { context: { node: nodeId } });
    if (this.renewIfDue(nodeId, snap.node)) snap = this.snapshot(nodeId)!;
    const key = `${nodeId}\0${snap.node.docSerial}`;
    const cached = this.docs.get(key);
    if (cached) return cached;
    const entries = await Promise.all(snap.entries.map(async ({ net, m }) => ({ net, m, bundle: await this.bundleOf(net, m) })));
    const bytes = signMembership(membershipDoc(snap.node, entries), this.key);
    const served = { bytes, etag: etagOf(bytes) };
    this.docs.set(key, served);
    return served;
  }

  /** One of the node's own bundles, at its current version only. */
  async bundle(nodeId: string, network: string, version: number): Promise<Served> {
    const snap = this.snapshot(nodeId);
    const entry = snap?.entries.find((e) => e.net.id === network);
    if (!entry || entry.m.bundleVersion !== version) {
      throw new StoreError('MVPN_NOT_FOUND', `no bundle ${network}/${version} for this node`, {
        context: { network, version },
        hint: 'fetch the membership document again; it names the current version',
      });
    }
    const b = await this.bundleOf(entry.net, entry.m);
    return { bytes: b.bytes, etag: `"${b.sha256.slice(0, 32)}"` };
  }
}
