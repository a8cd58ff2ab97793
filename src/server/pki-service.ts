/**
 * The server's use of src/pki: what a network's PKI consists of, the names
 * and lifetimes of its certificates, and CRLs built from the store's
 * revocation records. Every function takes `now`, so validity is testable.
 *
 * Naming: network CA `mvpn-ca-<net>`, server certificate `mvpn-server-<net>`
 * (serverAuth; the agent pins it with `verify-x509-name`), node certificates
 * CN = node id (clientAuth). CRLs are v2 with an increasing CRL number and a
 * nextUpdate `crl_days` ahead; the daemon re-issues them at half-life
 * (openvpn refuses every peer once the CRL has expired).
 */
import { caCn, serverCn } from '../bundle/names.ts';
import { createCa, type CaMaterial } from '../pki/ca.ts';
import { issueCert } from '../pki/cert.ts';
import { createCrl } from '../pki/crl.ts';
import { generateKeyPairPem, type KeyAlg } from '../pki/keys.ts';
import { generateTlsCryptV2ServerKey } from '../pki/tls-crypt-v2.ts';
import type { NetworkRecord, RevocationRecord } from './store/store.ts';

const DAY = 86_400_000;
/** Certificates start a little in the past so a node whose clock is slightly behind accepts them. */
const BACKDATE = 5 * 60_000;

export { serverCn };

/**
 * src/pki caches a parsed and imported CA per CaMaterial object, so the same
 * CA must come back as the same object: importing it again for every
 * certificate would cost more than the signature. Keyed by the certificate
 * and key text, bounded (one entry per network CA in use).
 */
const caObjects = new Map<string, CaMaterial>();

export function caOf(net: Pick<NetworkRecord, 'keyAlg' | 'caCertPem' | 'caKeyPem'>): CaMaterial {
  const k = `${net.keyAlg}\0${net.caCertPem}\0${net.caKeyPem}`;
  let ca = caObjects.get(k);
  if (!ca) {
    ca = { alg: net.keyAlg as KeyAlg, certPem: net.caCertPem, keyPem: net.caKeyPem };
    if (caObjects.size >= 1024) caObjects.delete(caObjects.keys().next().value!);
    caObjects.set(k, ca);
  }
  return ca;
}

/** A new network's key material: the record's PKI fields, with the key type known. */
export type NetworkPki = Pick<
  NetworkRecord,
  'caCertPem' | 'caKeyPem' | 'serverCertPem' | 'serverKeyPem' | 'tlsCryptV2ServerKey' | 'crlPem' | 'crlNumber' | 'crlNextUpdate'
> & { readonly keyAlg: KeyAlg };

/**
 * The CAs a network's nodes and server trust: the issuing CA, preceded by the
 * CA being replaced during a roll's overlap (bundles' ca.crt, the server's
 * `ca` file; verify.ts and openvpn both take several).
 */
export function trustedCaPem(net: Pick<NetworkRecord, 'caCertPem' | 'caRoll'>): string {
  return `${net.caRoll?.prev?.certPem ?? ''}${net.caCertPem}`;
}

/** The CA material of the CA a roll is replacing, during the overlap. */
export function prevCaOf(net: Pick<NetworkRecord, 'keyAlg' | 'caRoll'>): CaMaterial | undefined {
  const prev = net.caRoll?.prev;
  return prev ? caOf({ keyAlg: net.keyAlg, caCertPem: prev.certPem, caKeyPem: prev.keyPem }) : undefined;
}

/** A fresh network PKI: CA (10 years), server certificate (10 years), tls-crypt-v2 server key, empty CRL number 1. */
export async function createNetworkPki(networkId: string, alg: KeyAlg, now: number, crlDays: number): Promise<NetworkPki> {
  const notBefore = new Date(now - BACKDATE);
  const notAfter = new Date(now + 3650 * DAY);
  const ca = await createCa({ cn: caCn(networkId), alg, notBefore, notAfter });
  const serverKey = await generateKeyPairPem(alg);
  const server = await issueCert({ ca, publicKeyPem: serverKey.publicKeyPem, cn: serverCn(networkId), usage: 'server', notBefore, notAfter });
  const crl = await buildCrl(ca, [], 1, now, crlDays);
  return {
    keyAlg: alg,
    caCertPem: ca.certPem,
    caKeyPem: ca.keyPem,
    serverCertPem: server.certPem,
    serverKeyPem: serverKey.privateKeyPem,
    tlsCryptV2ServerKey: generateTlsCryptV2ServerKey(),
    crlPem: crl.crlPem,
    crlNumber: 1,
    crlNextUpdate: crl.nextUpdate,
  };
}

/** A node certificate for one network, from the node's public key (enrolled) or a central one (export). */
export async function issueNodeCert(
  net: Pick<NetworkRecord, 'keyAlg' | 'caCertPem' | 'caKeyPem'>,
  nodeId: string,
  publicKeyPem: string,
  now: number,
  certDays: number,
): Promise<{ certPem: string; serialHex: string }> {
  return issueIdentityCert(caOf(net), nodeId, publicKeyPem, now, certDays);
}

/** A clientAuth certificate with CN = node id from `ca`: the node's API identity (API CA; enrollment and renewal alike), and through issueNodeCert its network certificates. */
export async function issueIdentityCert(
  apiCa: CaMaterial,
  nodeId: string,
  publicKeyPem: string,
  now: number,
  certDays: number,
): Promise<{ certPem: string; serialHex: string }> {
  const r = await issueCert({
    ca: apiCa,
    publicKeyPem,
    cn: nodeId,
    usage: 'client',
    notBefore: new Date(now - BACKDATE),
    notAfter: new Date(now + certDays * DAY),
  });
  return { certPem: r.certPem, serialHex: r.serialHex.toLowerCase() };
}

export interface BuiltCrl {
  readonly crlPem: string;
  readonly crlNumber: number;
  readonly nextUpdate: number;
}

/** A CRL listing `revoked` (store records) plus `extra` serials about to be recorded. */
export async function buildCrl(
  ca: CaMaterial,
  revoked: readonly Pick<RevocationRecord, 'serial' | 'revokedAt'>[],
  crlNumber: number,
  now: number,
  crlDays: number,
): Promise<BuiltCrl> {
  const nextUpdate = now + crlDays * DAY;
  const crlPem = await createCrl({
    ca,
    revoked: revoked.map((r) => ({ serialHex: r.serial, revokedAt: new Date(r.revokedAt) })),
    thisUpdate: new Date(now - BACKDATE),
    nextUpdate: new Date(nextUpdate),
    crlNumber,
  });
  return { crlPem, crlNumber, nextUpdate };
}

/**
 * A network's CRL file: one CRL per trusted CA, in trustedCaPem's order, all
 * listing every revoked serial of the network (serials are random, so a serial
 * of one CA never names a certificate of the other). openvpn's crl-verify
 * loads every CRL of the file and checks each certificate against its
 * issuer's.
 */
export async function buildNetworkCrl(
  net: Pick<NetworkRecord, 'keyAlg' | 'caCertPem' | 'caKeyPem' | 'caRoll'>,
  revoked: readonly Pick<RevocationRecord, 'serial' | 'revokedAt'>[],
  crlNumber: number,
  now: number,
  crlDays: number,
): Promise<BuiltCrl> {
  const cur = await buildCrl(caOf(net), revoked, crlNumber, now, crlDays);
  const prev = prevCaOf(net);
  if (prev === undefined) return cur;
  const old = await buildCrl(prev, revoked, crlNumber, now, crlDays);
  return { ...cur, crlPem: old.crlPem + cur.crlPem };
}

/** True once less than half of the CRL's validity is left: time to re-issue. */
export function crlDue(net: Pick<NetworkRecord, 'crlNextUpdate'>, now: number, crlDays: number): boolean {
  return net.crlNextUpdate - now < (crlDays * DAY) / 2;
}
