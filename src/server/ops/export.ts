/**
 * Offline export (the old `metv_direct_keygen` path) for images that cannot
 * enroll: a complete bundle for one node and network with a key made here,
 * `key_origin: "central"` in its manifest, plus a signed membership document
 * next to it that an agent can use as a file source.
 *
 * Every export makes a fresh key: the membership's previous certificate
 * (from enrollment or an earlier export) is superseded and goes on the CRL,
 * so only the latest export works. The private key is not kept on the server.
 *
 * The exported document lists only this network, with the bundle's file
 * name as its URL, and has a serial of its own: the export takes one number
 * from the sequence for it and the node's online document moves past it, so
 * no serial ever names two different documents.
 *
 * `format: "ovpn"` writes, instead of the bundle and document, one
 * standalone openvpn profile (client-config.ts renderStandaloneConfig, the
 * agent's template with everything inline) for a node that runs a stock
 * openvpn. The membership is then recorded as agentless: a central key and
 * no signed updates. Its CRL is a copy as of the export; export again to
 * refresh it (that also renews the key).
 */
import { serializeChain } from '../../bundle/anchor-chain.ts';
import { readChain } from '../anchor-rotation.ts';
import { isMirror, mirrorRefusal } from '../federation/mirror.ts';
import { createHash, randomBytes } from 'node:crypto';
import { lstat, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { StoreError, UsageError } from '../../errors.ts';
import type { SigningKey } from '../../bundle/sign.ts';
import { generateKeyPairPem, type KeyAlg } from '../../pki/keys.ts';
import { fsyncDir } from '../../util/fs-atomic.ts';
import { buildNodeBundle, membershipDoc, networkSpec, signMembership, type BuiltBundle } from '../documents.ts';
import { issueNodeCert } from '../pki-service.ts';
import { renderStandaloneConfig } from '../../openvpn/client-config.ts';
import type { MembershipRecord, NetworkRecord, RevocationRecord } from '../store/store.ts';
import { applyCrl, Bumps, conflict, DAY, nowOf, planCrl, withRetry, type CrlPlan, type ServerContext } from './context.ts';
import { checkNetworkId } from './networks.ts';
import { mapLimit } from '../../util/concurrency.ts';
import { certSerialsOf, checkBatch, checkNodeId, inBatch } from './nodes.ts';

/** What an export writes: our signed bundle (for the agent) or a standalone openvpn profile. */
export type ExportFormat = 'bundle' | 'ovpn';

export interface ExportResult {
  readonly node: string;
  readonly network: string;
  readonly format: ExportFormat;
  /** The bundle (.tar.gz) or the profile (.ovpn). */
  readonly bundlePath: string;
  /** null for a profile: a stock openvpn reads no membership document. */
  readonly membershipPath: string | null;
  readonly version: number;
  readonly serial: number;
  readonly sha256: string;
  readonly size: number;
  readonly certSerial: string;
}

/** `x.tar.gz` → `x.membership.json` in the same directory. */
export function membershipPathFor(bundlePath: string): string {
  const base = basename(bundlePath).replace(/(\.tar\.gz|\.tgz)$/, '');
  return join(dirname(bundlePath), `${base}.membership.json`);
}

/**
 * Files, each crash-safe as with writeFileAtomic (temporary sibling, fsync,
 * rename), renamed only once every one of them is written and synced, then
 * one fsync per directory: fsyncs are most of an export's time on a busy
 * disk. If any write fails, the temporaries are removed and no file of the
 * set appears (checkTargets has ruled out renames that would fail).
 */
async function writeFilesAtomic(files: readonly { path: string; data: () => Uint8Array | Promise<Uint8Array>; mode: number }[]): Promise<void> {
  const tmps = files.map((f) => join(dirname(f.path), `.${basename(f.path)}.${randomBytes(6).toString('hex')}.tmp`));
  try {
    // A few in flight: the data callbacks build bundles on the event loop while fsyncs wait on libuv's pool.
    await mapLimit(files, 8, async (f, i) => {
      const data = await f.data();
      const fh = await open(tmps[i]!, 'wx', f.mode);
      try {
        await fh.writeFile(data);
        await fh.chmod(f.mode);
        await fh.sync();
      } finally {
        await fh.close();
      }
    });
    for (const [i, f] of files.entries()) await rename(tmps[i]!, f.path);
  } catch (err) {
    await Promise.all(tmps.map((t) => rm(t, { force: true })));
    throw err;
  }
  for (const dir of new Set(files.map((f) => dirname(f.path)))) await fsyncDir(dir);
}

/**
 * Refuses, before anything is recorded, targets that could not be written
 * afterwards: a directory that is missing or not a directory, or a
 * directory standing where a file is to go (its rename would fail after
 * others in the batch were renamed).
 */
async function checkTargets(items: readonly ExportItem[]): Promise<void> {
  for (const dir of new Set(items.map((it) => dirname(it.outFile)))) {
    const st = await stat(dir).catch(() => undefined);
    if (!st?.isDirectory()) throw new UsageError(`export: ${dir} is not a directory`, { context: { dir } });
  }
  for (const it of items) {
    for (const path of it.format === 'ovpn' ? [it.outFile] : [it.outFile, membershipPathFor(it.outFile)]) {
      const st = await lstat(path).catch(() => undefined);
      if (st?.isDirectory()) throw new UsageError(`export: ${path} is a directory`, { context: { node: it.node, path } });
    }
  }
}

export interface ExportItem {
  readonly node: string;
  readonly network: string;
  /** The bundle file (.tar.gz); its membership document goes next to it (membershipPathFor). Or the .ovpn profile. */
  readonly outFile: string;
  /** Default "bundle". */
  readonly format?: ExportFormat;
}

export async function exportNode(ctx: ServerContext, key: SigningKey, node: string, network: string, outFile: string): Promise<ExportResult> {
  return (await exportNodes(ctx, key, [{ node, network, outFile }]))[0]!;
}

function refusal(m: MembershipRecord | undefined, net: NetworkRecord | undefined, node: string, network: string): StoreError | undefined {
  if (!m || !net) return new StoreError('MVPN_NOT_FOUND', `node ${node} is not in network ${network}`, { context: { node, network } });
  if (net.state === 'deleted') return new StoreError('MVPN_STORE_CONFLICT', `network ${network} is deleted`, { context: { network } });
  if (isMirror(net)) return mirrorRefusal(network);
  if (m.revoked) {
    return new StoreError('MVPN_STORE_CONFLICT', `node ${node} is revoked in network ${network}`, {
      context: { node, network },
      hint: 'remove it and add it again to let it back in',
    });
  }
  return undefined;
}

/**
 * Exports several memberships at once (a testbed swapping in many nodes),
 * with the single-node rules: a fresh central key each, the previous
 * certificate superseded and on the CRL.
 *
 * All or nothing in the store: every item is checked, keys and certificates
 * are made, and ONE transaction records every new certificate together with
 * one new CRL per network listing all the superseded ones (not one CRL per
 * node); if any item is refused (unknown, revoked, deleted network, a
 * concurrent change that persists) nothing is recorded and the error names
 * that node. Each exported document takes its own serial from the sequence.
 *
 * Durability order: the store commit (fsync'd) comes before any file
 * appears, so no credentials are handed out that the server might forget.
 * Files are written afterwards as temporaries, renamed only when all are
 * synced, with one directory fsync: if writing fails, no file of the batch
 * appears and the call fails; the certificates it recorded are simply never
 * used (run the export again: it makes new keys and supersedes them).
 */
export async function exportNodes(ctx: ServerContext, key: SigningKey, items: readonly ExportItem[]): Promise<ExportResult[]> {
  const size = items.length;
  checkBatch(items, 'export');
  const outs = new Set<string>();
  for (const it of items) {
    try {
      checkNodeId(it.node);
      checkNetworkId(it.network);
    } catch (err) {
      throw inBatch(err, size, it.node, it.network);
    }
    if (outs.has(it.outFile)) throw new UsageError(`export: ${it.outFile} is the output of two nodes`, { context: { out: it.outFile } });
    outs.add(it.outFile);
  }
  await checkTargets(items);
  const prepared = await withRetry(async () => {
    const { ms, nets, revs } = ctx.store.read((tx) => {
      const netMap = new Map<string, NetworkRecord | undefined>();
      const revMap = new Map<string, RevocationRecord[]>();
      const list = items.map((it) => {
        if (!netMap.has(it.network)) netMap.set(it.network, tx.getNetwork(it.network));
        const m = tx.getMembership(it.network, it.node);
        const bad = refusal(m, netMap.get(it.network), it.node, it.network);
        if (bad) throw inBatch(bad, size, it.node, it.network);
        if (certSerialsOf(m!).length > 0 && !revMap.has(it.network)) revMap.set(it.network, tx.listRevocations(it.network));
        return m!;
      });
      return { ms: list, nets: netMap, revs: revMap };
    });
    const now = nowOf(ctx);
    const issued = await mapLimit(items, 8, async (it) => {
      const net = nets.get(it.network)!;
      const keyPair = await generateKeyPairPem(net.keyAlg as KeyAlg);
      return { keyPair, cert: await issueNodeCert(net, it.node, keyPair.publicKeyPem, now, ctx.config.cert_days) };
    });
    const superseded = new Map<string, RevocationRecord[]>();
    for (const m of ms) {
      const recs = certSerialsOf(m).map((serial): RevocationRecord => ({ network: m.network, serial, node: m.node, address: m.address, reason: 'superseded', revokedAt: now }));
      if (recs.length === 0) continue;
      superseded.set(m.network, [...(superseded.get(m.network) ?? []), ...recs]);
    }
    const plans: CrlPlan[] = [];
    for (const [network, add] of superseded) plans.push(await planCrl(nets.get(network)!, revs.get(network)!, add, now, ctx.config.crl_days));
    return ctx.store.write((tx) => {
      const bumps = new Bumps();
      const serials = items.map((it, i) => {
        const cur = tx.getMembership(it.network, it.node);
        if (!cur || cur.certSerial !== ms[i]!.certSerial || (cur.prevCertSerial ?? null) !== (ms[i]!.prevCertSerial ?? null) || cur.revoked) throw conflict(`membership of ${it.node} in ${it.network}`);
        bumps.membership(it.network, it.node);
        return tx.nextSeq();
      });
      for (const p of plans) applyCrl(tx, p, bumps, now);
      for (const [i, it] of items.entries()) {
        const c = issued[i]!.cert;
        tx.updateMembership(it.network, it.node, {
          certPem: c.certPem,
          certSerial: c.serialHex,
          prevCertSerial: null,
          keyOrigin: 'central',
          agentless: it.format === 'ovpn',
        });
      }
      bumps.apply(tx, now, ctx.config.membership_days);
      tx.count('issued.export', items.length);
      const netsAfter = new Map([...nets.keys()].map((id) => [id, tx.getNetwork(id)!]));
      return items.map((it, i) => ({
        now,
        exportSerial: serials[i]!,
        keyPem: issued[i]!.keyPair.privateKeyPem,
        m: tx.getMembership(it.network, it.node) as MembershipRecord,
        net: netsAfter.get(it.network)!,
      }));
    });
  });

  const results: ExportResult[] = [];
  const files: { path: string; data: () => Promise<Uint8Array>; mode: number }[] = [];
  for (const [i, it] of items.entries()) {
    const p = prepared[i]!;
    if (it.format === 'ovpn') {
      const profile = Buffer.from(
        renderStandaloneConfig(networkSpec(p.net, p.m), it.node, {
          ca: p.net.caCertPem,
          cert: p.m.certPem!,
          key: p.keyPem,
          tlsCryptV2: p.m.tlsCryptV2ClientKey,
          crl: p.net.crlPem,
        }),
      );
      results[i] = {
        node: it.node,
        network: it.network,
        format: 'ovpn',
        bundlePath: it.outFile,
        membershipPath: null,
        version: p.m.bundleVersion,
        serial: p.exportSerial,
        sha256: createHash('sha256').update(profile).digest('hex'),
        size: profile.length,
        certSerial: p.m.certSerial!,
      };
      // The profile holds a private key: 0600.
      files.push({ path: it.outFile, data: () => Promise.resolve(profile), mode: 0o600 });
      continue;
    }
    // Built as its files are written, so gzip and signing overlap the fsyncs; dropped once both are handed over.
    // The bundle's file (index 2i) always asks first: mapLimit starts items in order.
    let built: Promise<{ bundle: BuiltBundle; doc: Buffer }> | undefined;
    const build = () =>
      (built ??= buildNodeBundle(key, p.net, p.m, p.keyPem).then((bundle) => {
        const doc = membershipDoc(
          { id: it.node, docSerial: p.exportSerial, docIssuedAt: p.now, docExpiresAt: p.now + ctx.config.membership_days * DAY },
          [{ net: p.net, m: p.m, bundle, url: basename(it.outFile) }],
        );
        results[i] = {
          node: it.node,
          network: it.network,
          format: 'bundle',
          bundlePath: it.outFile,
          membershipPath: membershipPathFor(it.outFile),
          version: p.m.bundleVersion,
          serial: p.exportSerial,
          sha256: bundle.sha256,
          size: bundle.size,
          certSerial: p.m.certSerial!,
        };
        return { bundle, doc: signMembership(doc, key) };
      }));
    // The bundle holds a private key: 0600.
    files.push({ path: it.outFile, data: async () => (await build()).bundle.bytes, mode: 0o600 });
    files.push({
      path: membershipPathFor(it.outFile),
      data: async () => {
        const { doc } = await build();
        built = undefined;
        return doc;
      },
      mode: 0o644,
    });
  }
  // After an anchor rotation, an agent whose config still names an older anchor follows the chain from a file source too.
  const chain = await readChain(ctx.paths);
  if (chain.length > 0) {
    const bytes = serializeChain(chain);
    for (const dir of new Set(items.map((it) => dirname(it.outFile)))) files.push({ path: join(dir, 'anchor-chain.json'), data: async () => bytes, mode: 0o644 });
  }
  await writeFilesAtomic(files);
  return results;
}
