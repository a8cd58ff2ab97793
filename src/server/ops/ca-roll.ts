/**
 * Rolling a network's CA to a new one, with an overlap in which nodes and
 * the server trust both (issue 19), in a way every node can verify with the
 * CA it pinned (issue 22 finding 4; the pin rule is in src/bundle/verify.ts).
 *
 * 1. `rollNetworkCa` (start): a new CA `mvpn-ca-<id>.<n+1>`; a
 *    cross-certificate for it signed by the old CA key (ca-roll.crt, with the
 *    old CA); every active node certificate re-issued by the new CA for the
 *    same key (issueNodeCert, the one issuance path, also for renewal); the
 *    CRL file holds one CRL per CA; bundles carry both CAs; the openvpn
 *    server trusts both and keeps its old-CA server certificate, so nodes
 *    that have not fetched their new bundle yet stay connected.
 * 2. `finishCaRoll` (at the end of the overlap; the daemon does it by
 *    itself, or `roll-ca --finish`): a new server certificate from the new
 *    CA, the old CA and its CRL dropped everywhere. Nodes hold the new CA
 *    since step 1. ca-roll.crt stays in bundles, so a node that was offline
 *    through the whole overlap still moves its pin when it comes back.
 *
 * Crypto first, then one transaction that re-checks the CA and the CRL
 * number (context.ts's prepare-then-commit rule).
 */
import { caCn, caGeneration } from '../../bundle/names.ts';
import { StoreError } from '../../errors.ts';
import { createCa, crossCertify } from '../../pki/ca.ts';
import { issueCert } from '../../pki/cert.ts';
import { generateKeyPairPem, type KeyAlg } from '../../pki/keys.ts';
import { caFacts, type CaFacts } from '../../pki/verify.ts';
import { parseCertificate, spkiPem } from '../../pki/common.ts';
import { loadX509 } from '../../pki/x509.ts';
import { isMirror, isPeerNode, mirrorRefusal } from '../federation/mirror.ts';
import { buildNetworkCrl, caOf, issueNodeCert, serverCn } from '../pki-service.ts';
import type { CaRollRecord, NetworkRecord } from '../store/store.ts';
import { Bumps, conflict, DAY, nowOf, withRetry, type ServerContext } from './context.ts';
import { getNetworkOrThrow } from './networks.ts';
import { loadApiCaState, nodesBehind } from './api-ca-roll.ts';

/** Default overlap: nodes reconcile at least daily, so a week reaches every node that is up at all. */
export const DEFAULT_OVERLAP_MS = 7 * DAY;
/** A CA within this many days of its end is warned about (logs, `network show`, `status`). */
export const CA_WARN_DAYS = 180;
export const CA_YEARS = 10;
export const BACKDATE = 5 * 60_000;

function refuse(message: string, network: string, hint?: string): StoreError {
  return new StoreError('MVPN_CA_ROLL_REFUSED', message, { context: { network }, ...(hint ? { hint } : {}) });
}

async function publicKeyOfCert(certPem: string): Promise<string> {
  await loadX509();
  return spkiPem(parseCertificate(certPem).publicKey);
}

export interface CaRollResult {
  readonly network: string;
  readonly ca: string;
  readonly previous: string;
  readonly overlapUntil: number;
  readonly reissued: number;
}

export async function rollNetworkCa(ctx: ServerContext, id: string, opts: { overlapMs?: number } = {}): Promise<CaRollResult> {
  const overlapMs = opts.overlapMs ?? DEFAULT_OVERLAP_MS;
  return withRetry(async () => {
    const now = nowOf(ctx);
    const net = getNetworkOrThrow(ctx, id);
    if (isMirror(net)) throw mirrorRefusal(id);
    if (net.state === 'deleted') throw refuse(`network ${id} is deleted`, id);
    if (net.caRoll?.prev) {
      throw refuse(`network ${id} is already rolling its CA (overlap until ${new Date(net.caRoll.overlapUntil).toISOString()})`, id, `finish it first: mvpn-client server network roll-ca ${id} --finish`);
    }
    const { members, recorded } = ctx.store.read((tx) => ({ members: tx.listMemberships({ network: id }), recorded: tx.listRevocations(id) }));
    if (members.some((m) => isPeerNode(m.node))) {
      throw refuse(`network ${id} has server-to-server links; rolling its CA is not supported yet`, id, 'remove the links (server link remove), roll, then export them again');
    }
    const old = await caFacts(net.caCertPem);
    const gen = (caGeneration(old.cn, id) ?? 1) + 1;
    const alg = net.keyAlg as KeyAlg;
    const ca = await createCa({ cn: caCn(id, gen), alg, notBefore: new Date(now - BACKDATE), notAfter: new Date(now + CA_YEARS * 365 * DAY) });
    const proofPem = (await crossCertify(caOf(net), ca.certPem, new Date(now - BACKDATE))) + net.caCertPem;
    const next: Pick<NetworkRecord, 'keyAlg' | 'caCertPem' | 'caKeyPem' | 'caRoll'> = {
      keyAlg: net.keyAlg,
      caCertPem: ca.certPem,
      caKeyPem: ca.keyPem,
      caRoll: { prev: { certPem: net.caCertPem, keyPem: net.caKeyPem }, proofPem, startedAt: now, overlapUntil: now + overlapMs },
    };
    const active = members.filter((m) => !m.revoked && m.certPem !== null);
    const certs = await Promise.all(
      active.map(async (m) => ({ node: m.node, ...(await issueNodeCert(next, m.node, await publicKeyOfCert(m.certPem!), now, ctx.config.cert_days)) })),
    );
    const crl = await buildNetworkCrl(next, recorded, net.crlNumber + 1, now, ctx.config.crl_days);
    ctx.store.write((tx) => {
      const cur = tx.getNetwork(id);
      if (!cur || cur.caCertPem !== net.caCertPem || cur.crlNumber !== net.crlNumber) throw conflict(`network ${id}`);
      const bumps = new Bumps();
      for (const c of certs) {
        const m = tx.getMembership(id, c.node);
        if (!m || m.revoked || m.certPem === null) continue;
        // A membership whose certificate changed meanwhile (re-enrolled) is prepared again.
        if (m.certPem !== active.find((a) => a.node === c.node)!.certPem) throw conflict(`membership ${c.node}/${id}`);
        tx.updateMembership(id, c.node, { certPem: c.certPem, certSerial: c.serialHex });
      }
      tx.updateNetwork(id, {
        caCertPem: next.caCertPem,
        caKeyPem: next.caKeyPem,
        caRoll: next.caRoll,
        crlPem: crl.crlPem,
        crlNumber: crl.crlNumber,
        crlNextUpdate: crl.nextUpdate,
        updatedAt: now,
      });
      bumps.network(id);
      bumps.apply(tx, now, ctx.config.membership_days);
      tx.count('issued.ca_roll', certs.length);
      tx.count('crl.published');
    });
    return { network: id, ca: caCn(id, gen), previous: old.cn, overlapUntil: now + overlapMs, reissued: certs.length };
  });
}

/** Ends a roll's overlap: the server certificate moves to the new CA, the old CA leaves every file. */
export async function finishCaRoll(ctx: ServerContext, id: string): Promise<{ network: string; ca: string }> {
  return withRetry(async () => {
    const now = nowOf(ctx);
    const net = getNetworkOrThrow(ctx, id);
    if (!net.caRoll?.prev) throw refuse(`network ${id} is not rolling its CA`, id, `start a roll with mvpn-client server network roll-ca ${id}`);
    const recorded = ctx.store.read((tx) => tx.listRevocations(id));
    const roll: CaRollRecord = { ...net.caRoll, prev: null };
    const next = { ...net, caRoll: roll };
    const alg = net.keyAlg as KeyAlg;
    const serverKey = await generateKeyPairPem(alg);
    const caNotAfter = (await caFacts(net.caCertPem)).notAfter;
    const server = await issueCert({ ca: caOf(net), publicKeyPem: serverKey.publicKeyPem, cn: serverCn(id), usage: 'server', notBefore: new Date(now - BACKDATE), notAfter: caNotAfter });
    const crl = await buildNetworkCrl(next, recorded, net.crlNumber + 1, now, ctx.config.crl_days);
    ctx.store.write((tx) => {
      const cur = tx.getNetwork(id);
      if (!cur || cur.caCertPem !== net.caCertPem || cur.crlNumber !== net.crlNumber || !cur.caRoll?.prev) throw conflict(`network ${id}`);
      tx.updateNetwork(id, { serverCertPem: server.certPem, serverKeyPem: serverKey.privateKeyPem, caRoll: roll, crlPem: crl.crlPem, crlNumber: crl.crlNumber, crlNextUpdate: crl.nextUpdate, updatedAt: now });
      const bumps = new Bumps();
      bumps.network(id);
      bumps.apply(tx, now, ctx.config.membership_days);
      tx.count('crl.published');
    });
    return { network: id, ca: (await caFacts(net.caCertPem)).cn };
  });
}

/** Finishes every roll whose overlap has ended (the daemon's periodic pass). */
export async function finishDueCaRolls(ctx: ServerContext): Promise<string[]> {
  const now = nowOf(ctx);
  const due = ctx.store.read((tx) => tx.listNetworks()).filter((n) => n.state !== 'deleted' && n.caRoll?.prev && n.caRoll.overlapUntil <= now);
  const done: string[] = [];
  for (const n of due) done.push((await finishCaRoll(ctx, n.id)).network);
  return done;
}

export interface CaExpiry {
  readonly which: string;
  readonly cn: string;
  readonly notAfter: string;
  readonly daysLeft: number;
  /** Set when the CA is within CA_WARN_DAYS of its end (or past it). */
  readonly warning?: string;
}

/** How long a CA has left, and a warning with the command that fixes it when that is within the window. `now` is passed in. */
export function caExpiry(which: string, ca: Pick<CaFacts, 'cn' | 'notAfter'>, now: number, fix: string): CaExpiry {
  const daysLeft = Math.floor((ca.notAfter.getTime() - now) / DAY);
  const base = { which, cn: ca.cn, notAfter: ca.notAfter.toISOString(), daysLeft };
  if (daysLeft >= CA_WARN_DAYS) return base;
  const when = daysLeft < 0 ? `expired ${-daysLeft} day(s) ago` : `expires in ${daysLeft} day(s)`;
  return { ...base, warning: `${which} ${ca.cn} ${when} (${ca.notAfter.toISOString()}); roll it now: ${fix}` };
}

export async function networkCaExpiry(net: Pick<NetworkRecord, 'id' | 'caCertPem'>, now: number): Promise<CaExpiry> {
  return caExpiry(`network ${net.id} CA`, await caFacts(net.caCertPem), now, `mvpn-client server network roll-ca ${net.id}`);
}

/** Every CA this server runs on, with how long it has left: each network's CA (not mirrors: their hub rolls them) and the API CA. */
export async function caExpiries(ctx: ServerContext, now: number): Promise<CaExpiry[]> {
  const nets = ctx.store.read((tx) => tx.listNetworks()).filter((n) => n.state !== 'deleted' && !isMirror(n));
  const out = await Promise.all(nets.map((n) => networkCaExpiry(n, now)));
  const api = await loadApiCaState(ctx.paths, { complete: false }).catch(() => undefined);
  if (api === undefined) return out;
  out.push(caExpiry('API CA', await caFacts(api.issuer.certPem), now, 'mvpn-client server api roll-ca'));
  if (api.roll && api.roll.overlapUntil <= now) {
    // The daemon finishes an overdue roll by itself once no node is left behind: say who holds it open.
    const behind = nodesBehind(ctx, api.issuer.certPem);
    const cn = (await caFacts(api.issuer.certPem)).cn;
    out.push({
      which: 'API CA roll',
      cn,
      notAfter: new Date(api.roll.overlapUntil).toISOString(),
      daysLeft: Math.floor((api.roll.overlapUntil - now) / DAY),
      warning: `the API CA roll's overlap ended ${new Date(api.roll.overlapUntil).toISOString()}, but ${behind.length} node(s) still hold identities from ${api.roll.previous} (${behind.slice(0, 10).join(', ')}); they renew once they are up, or finish anyway: mvpn-client server api roll-ca --finish --force`,
    });
  }
  return out;
}
