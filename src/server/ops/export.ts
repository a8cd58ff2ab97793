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
 */
import { isMirror, mirrorRefusal } from '../federation/mirror.ts';
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { StoreError } from '../../errors.ts';
import type { SigningKey } from '../../bundle/sign.ts';
import { generateKeyPairPem, type KeyAlg } from '../../pki/keys.ts';
import { fsyncDir } from '../../util/fs-atomic.ts';
import { buildNodeBundle, membershipDoc, signMembership } from '../documents.ts';
import { issueNodeCert } from '../pki-service.ts';
import type { MembershipRecord, RevocationRecord } from '../store/store.ts';
import { applyCrl, Bumps, conflict, DAY, nowOf, planCrl, withRetry, type CrlPlan, type ServerContext } from './context.ts';
import { checkNetworkId } from './networks.ts';
import { checkNodeId } from './nodes.ts';

export interface ExportResult {
  readonly node: string;
  readonly network: string;
  readonly bundlePath: string;
  readonly membershipPath: string;
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
 * Files in one directory, each crash-safe as with writeFileAtomic (temporary
 * sibling, fsync, rename), renamed in order, with a single directory fsync
 * at the end: fsyncs are most of an export's time on a busy disk, and the
 * bundle and its document always go side by side.
 */
async function writeSideBySide(dir: string, files: readonly { path: string; data: Uint8Array; mode: number }[]): Promise<void> {
  const tmps: string[] = [];
  try {
    for (const f of files) {
      const tmp = join(dir, `.${basename(f.path)}.${randomBytes(6).toString('hex')}.tmp`);
      tmps.push(tmp);
      const fh = await open(tmp, 'wx', f.mode);
      try {
        await fh.writeFile(f.data);
        await fh.chmod(f.mode);
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    for (const [i, f] of files.entries()) await rename(tmps[i]!, f.path);
  } catch (err) {
    await Promise.all(tmps.map((t) => rm(t, { force: true })));
    throw err;
  }
  await fsyncDir(dir);
}

export async function exportNode(ctx: ServerContext, key: SigningKey, node: string, network: string, outFile: string): Promise<ExportResult> {
  checkNodeId(node);
  checkNetworkId(network);
  const prepared = await withRetry(async () => {
    const { m, net } = ctx.store.read((tx) => ({ m: tx.getMembership(network, node), net: tx.getNetwork(network) }));
    if (!m || !net) throw new StoreError('MVPN_NOT_FOUND', `node ${node} is not in network ${network}`, { context: { node, network } });
    if (net.state === 'deleted') throw new StoreError('MVPN_STORE_CONFLICT', `network ${network} is deleted`, { context: { network } });
    if (isMirror(net)) throw mirrorRefusal(network);
    if (m.revoked) {
      throw new StoreError('MVPN_STORE_CONFLICT', `node ${node} is revoked in network ${network}`, {
        context: { node, network },
        hint: 'remove it and add it again to let it back in',
      });
    }
    const now = nowOf(ctx);
    const keyPair = await generateKeyPairPem(net.keyAlg as KeyAlg);
    const cert = await issueNodeCert(net, node, keyPair.publicKeyPem, now, ctx.config.cert_days);
    const plans: CrlPlan[] = [];
    if (m.certSerial !== null) {
      const recorded = ctx.store.read((tx) => tx.listRevocations(network));
      const rec: RevocationRecord = { network, serial: m.certSerial, node, address: m.address, reason: 'superseded', revokedAt: now };
      plans.push(await planCrl(net, recorded, [rec], now, ctx.config.crl_days));
    }
    return ctx.store.write((tx) => {
      const cur = tx.getMembership(network, node);
      if (!cur || cur.certSerial !== m.certSerial || cur.revoked) throw conflict(`membership of ${node} in ${network}`);
      const exportSerial = tx.nextSeq();
      const bumps = new Bumps().membership(network, node);
      for (const p of plans) applyCrl(tx, p, bumps, now);
      tx.updateMembership(network, node, { certPem: cert.certPem, certSerial: cert.serialHex, keyOrigin: 'central' });
      bumps.apply(tx, now, ctx.config.membership_days);
      return {
        now,
        exportSerial,
        keyPem: keyPair.privateKeyPem,
        m: tx.getMembership(network, node) as MembershipRecord,
        net: tx.getNetwork(network)!,
      };
    });
  });

  const bundle = await buildNodeBundle(key, prepared.net, prepared.m, prepared.keyPem);
  const doc = membershipDoc(
    { id: node, docSerial: prepared.exportSerial, docIssuedAt: prepared.now, docExpiresAt: prepared.now + ctx.config.membership_days * DAY },
    [{ net: prepared.net, m: prepared.m, bundle, url: basename(outFile) }],
  );
  const membershipPath = membershipPathFor(outFile);
  // The bundle holds a private key: 0600.
  await writeSideBySide(dirname(outFile), [
    { path: outFile, data: bundle.bytes, mode: 0o600 },
    { path: membershipPath, data: signMembership(doc, key), mode: 0o644 },
  ]);
  return {
    node,
    network,
    bundlePath: outFile,
    membershipPath,
    version: prepared.m.bundleVersion,
    serial: prepared.exportSerial,
    sha256: bundle.sha256,
    size: bundle.size,
    certSerial: prepared.m.certSerial!,
  };
}
