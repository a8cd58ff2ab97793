/**
 * Server-to-server links (DESIGN.md §1, topology 2; ARCHITECTURE.md
 * "Federation"). One server's network is the hub: it holds the only CA key
 * and allocates every address. A peer server joins it:
 *
 * - At the hub, `exportLink` makes the peer a member of the network under
 *   the reserved node id `mvpn-peer-<name>` (so its address, its link
 *   certificate, its ccd file, its revocation and its removal are ordinary
 *   membership operations), issues a second server certificate with the
 *   network's server CN for the peer's own openvpn server, and an API
 *   identity for the peer, and writes all of it as a signed link bundle.
 * - At the peer, `addLink` verifies the bundle with the hub's anchor and
 *   creates a mirror network: a networks row with the hub's id, subnet, CA
 *   certificate (no CA key: nothing can be issued here), the peer server's
 *   certificate, the hub's tls-crypt-v2 server key (so the same node bundle
 *   works at either server) and the hub's CRL. Its memberships are copied
 *   from the hub (`applyLinkState`, run by the daemon every couple of
 *   seconds over the hub's HTTPS API), so a node revoked or removed at the
 *   hub loses its ccd file and lands on the CRL at the peer too.
 * - Nodes behind the peer are registered at the hub (`node add … --remote
 *   <peer's address>`); their bundles come from the hub's CA.
 */
import { DocumentError, StoreError, UsageError } from '../../errors.ts';
import { followChain, initialTrust, parseChain } from '../../bundle/anchor-chain.ts';
import { anchorToString, parseAnchor, type SigningKey } from '../../bundle/sign.ts';
import type { CaMaterial } from '../../pki/ca.ts';
import { issueCert } from '../../pki/cert.ts';
import { generateKeyPairPem, type KeyAlg } from '../../pki/keys.ts';
import { writeFileAtomic } from '../../util/fs-atomic.ts';
import { allocatePort, overlaps, parseCidr, parsePortRange } from '../alloc.ts';
import { parseListen } from '../config.ts';
import { issueNodeCert, serverCn } from '../pki-service.ts';
import { Bumps, DAY, iso, nowOf, type ServerContext } from '../ops/context.ts';
import { checkNetworkId, getNetworkOrThrow } from '../ops/networks.ts';
import { addNode, removeNode } from '../ops/nodes.ts';
import { loadApiCaState } from '../ops/api-ca-roll.ts';
import type { LinkRecord, NetworkRecord } from '../store/store.ts';
import { openLink, parseLinkPayload, sealLink, type LinkPayload } from './link-bundle.ts';
import { isMirror, isPeerNode, mirrorRefusal, peerCn } from './mirror.ts';
import { bridgeDev, linkDev } from '../devices.ts';
import { dataPlane } from '../documents.ts';
import { joinHostPort } from '../../util/host-port.ts';
import { linkDataPlane } from './link-runtime.ts';
import { backboneProto } from '../routing/backbone.ts';

export { isMirror, isPeerNode, peerCn } from './mirror.ts';

const PEER_RE = /^[a-z0-9][a-z0-9-]{0,30}$/;

export interface ExportLinkInput {
  readonly network: string;
  readonly peer: string;
  /** Where to write the bundle (0600); undefined = only return its bytes (`--out -`). */
  readonly out?: string | undefined;
  /** https://HOST:PORT of this (the hub's) API as the peer reaches it; default from the config. */
  readonly apiUrl?: string | undefined;
}

export interface ExportLinkResult {
  readonly network: string;
  readonly peer: string;
  readonly cn: string;
  readonly address: string;
  readonly file: string | null;
  readonly apiUrl: string;
  /** The signed link bundle (holds private keys). */
  readonly bytes: Buffer;
}

function defaultApiUrl(ctx: ServerContext): string {
  const { port } = parseListen(ctx.config.listen);
  const host = ctx.config.hostnames[0] ?? ctx.config.addresses[0];
  if (!host || port === 0) {
    throw new UsageError('cannot tell the URL at which the peer reaches this server\'s API; give --api-url https://HOST:PORT');
  }
  return `https://${joinHostPort(host, port)}`;
}

/** Hub side: makes the peer a member and writes its signed link bundle (0600). */
export async function exportLink(ctx: ServerContext, key: SigningKey, apiCa: CaMaterial, input: ExportLinkInput): Promise<ExportLinkResult> {
  checkNetworkId(input.network);
  if (!PEER_RE.test(input.peer)) {
    throw new UsageError(`peer name ${JSON.stringify(input.peer)} is not valid: a lower-case letter or digit, then up to 30 lower-case letters, digits or "-"`);
  }
  // During an API CA roll the listener's CA and the issuing CA differ; a link bundle names one API CA.
  if ((await loadApiCaState(ctx.paths)).roll) throw new StoreError('MVPN_CA_ROLL_REFUSED', 'the API CA is rolling; a link exported now would name a CA the listener does not use yet', { hint: 'finish the roll first: mvpn-client server api roll-ca --finish' });
  const apiUrl = input.apiUrl ?? defaultApiUrl(ctx);
  if (!/^https:\/\/[^/\s]+$/.test(apiUrl)) throw new UsageError(`--api-url ${JSON.stringify(apiUrl)}: expected https://HOST:PORT`);
  const net = getNetworkOrThrow(ctx, input.network);
  if (isMirror(net)) throw mirrorRefusal(net.id);
  if (net.state === 'deleted') throw new StoreError('MVPN_STORE_CONFLICT', `network ${net.id} is deleted`);
  const cn = peerCn(input.peer);
  if (ctx.store.read((tx) => tx.getMembership(net.id, cn))) {
    throw new StoreError('MVPN_ALREADY_EXISTS', `peer ${input.peer} already has a link to network ${net.id}`, {
      hint: `mvpn-client server link remove ${net.id} --peer ${input.peer} (at the hub) first`,
    });
  }
  await addNode(ctx, { node: cn, network: net.id }, { allowReserved: true });
  const now = nowOf(ctx);
  const alg = net.keyAlg as KeyAlg;
  const [linkKey, serverKey, apiKey] = await Promise.all([generateKeyPairPem(alg), generateKeyPairPem(alg), generateKeyPairPem('ec-p256')]);
  const linkCert = await issueNodeCert(net, cn, linkKey.publicKeyPem, now, ctx.config.cert_days);
  const notBefore = new Date(now - 5 * 60_000);
  const notAfter = new Date(now + ctx.config.cert_days * DAY);
  const serverCert = await issueCert({ ca: { alg, certPem: net.caCertPem, keyPem: net.caKeyPem }, publicKeyPem: serverKey.publicKeyPem, cn: serverCn(net.id), usage: 'server', notBefore, notAfter });
  const apiCert = await issueCert({ ca: apiCa, publicKeyPem: apiKey.publicKeyPem, cn, usage: 'client', notBefore, notAfter });
  const { m, cur } = ctx.store.write((tx) => {
    const mm = tx.getMembership(net.id, cn);
    if (!mm || mm.certSerial !== null) throw new StoreError('MVPN_STORE_CONFLICT', `the link membership ${cn} changed meanwhile; try again`);
    tx.updateMembership(net.id, cn, { certPem: linkCert.certPem, certSerial: linkCert.serialHex, keyOrigin: 'central' });
    tx.updateNode(cn, { identityCertPem: apiCert.certPem, identitySerial: apiCert.serialHex.toLowerCase(), enrolledAt: now, publicKeyPem: null, keyAlg: null });
    new Bumps().membership(net.id, cn).apply(tx, now, ctx.config.membership_days);
    tx.count('issued.link', 3); // the link's client and server certificates and its API identity
    return { m: tx.getMembership(net.id, cn)!, cur: tx.getNetwork(net.id)! };
  });
  const payload: LinkPayload = {
    schema: 1,
    kind: 'mvpn-link',
    created: iso(now),
    network: {
      id: cur.id,
      name: cur.name,
      dev_type: cur.devType,
      proto: cur.proto,
      subnet: cur.subnet,
      port: cur.port,
      server_cn: serverCn(cur.id),
      ...dataPlane(cur),
      // An L3 network's servers meet on the hub's backbone (src/server/routing/backbone.ts).
      ...(cur.devType === 'tun' ? { backbone: { proto: backboneProto(cur.proto), port: cur.port } } : {}),
    },
    hub: { remotes: cur.remotes.map((r) => ({ host: r.host, port: r.port ?? cur.port })), api_url: apiUrl, api_ca: apiCa.certPem },
    peer: {
      name: input.peer,
      cn,
      address: m.address,
      link_cert: linkCert.certPem,
      link_key: linkKey.privateKeyPem,
      link_tls_crypt_v2: m.tlsCryptV2ClientKey,
      server_cert: serverCert.certPem,
      server_key: serverKey.privateKeyPem,
      api_cert: apiCert.certPem,
      api_key: apiKey.privateKeyPem,
    },
    ca: cur.caCertPem,
    tls_crypt_v2_server_key: cur.tlsCryptV2ServerKey,
    crl: cur.crlPem,
    crl_number: cur.crlNumber,
    crl_next_update: cur.crlNextUpdate,
  };
  const bytes = sealLink(payload, key);
  if (input.out !== undefined) await writeFileAtomic(input.out, bytes, 0o600);
  return { network: net.id, peer: input.peer, cn, address: m.address, file: input.out ?? null, apiUrl, bytes };
}

/** Hub side: ends a peer's link (its certificate goes on the CRL, its address is free, its API identity is gone). */
export async function removeHubLink(ctx: ServerContext, network: string, peer: string): Promise<{ network: string; peer: string }> {
  const cn = peerCn(peer);
  await removeNode(ctx, cn, network, { allowReserved: true });
  ctx.store.write((tx) => {
    if (tx.getNode(cn) && tx.listMemberships({ node: cn }).length === 0) tx.updateNode(cn, { identityCertPem: null, identitySerial: null });
  });
  return { network, peer };
}

export interface LinkStateMember {
  readonly node: string;
  readonly address: string;
  readonly cert_serial: string | null;
  readonly revoked: boolean;
}

/** What the hub tells a peer about a network it links to (GET /v1/link/<network>). */
export interface LinkState {
  readonly network: string;
  readonly crl: string;
  readonly crl_number: number;
  readonly crl_next_update: number;
  readonly members: readonly LinkStateMember[];
  /** The network's other servers (its peers' allowed `mvpn-peer-*` members): an L3 network's BGP neighbours. */
  readonly servers?: readonly { readonly node: string; readonly address: string }[];
}

/** Hub side: the state a linked peer copies. Only for the peer's own network. */
export function linkState(ctx: ServerContext, caller: string, network: string): LinkState | undefined {
  if (!isPeerNode(caller)) return undefined;
  return ctx.store.read((tx) => {
    const net = tx.getNetwork(network);
    const me = tx.getMembership(network, caller);
    if (!net || net.state === 'deleted' || !me || me.revoked) return undefined;
    return {
      network,
      crl: net.crlPem,
      crl_number: net.crlNumber,
      crl_next_update: net.crlNextUpdate,
      members: tx
        .memberAddresses(network)
        .filter((m) => !isPeerNode(m.node))
        .map((m) => ({ node: m.node, address: m.address, cert_serial: m.certSerial, revoked: m.revoked })),
      servers: tx
        .memberAddresses(network)
        .filter((m) => isPeerNode(m.node) && !m.revoked && m.certSerial !== null)
        .map((m) => ({ node: m.node, address: m.address })),
    };
  });
}

export interface AddLinkResult {
  readonly network: string;
  readonly peer: string;
  readonly address: string;
  readonly subnet: string;
  readonly port: number;
  readonly hub: string;
  readonly relay: { readonly listen: string; readonly to: string } | null;
}

/** ADDR:PORT (an IP and a real port) that is not this server's own API listener. */
function checkRelayListen(ctx: ServerContext, text: string): string {
  const { host, port } = parseListen(text);
  if (port === 0) throw new UsageError(`--relay-listen ${text}: give a port (nodes behind this server are told it)`);
  const api = parseListen(ctx.config.listen);
  const wildcard = (h: string) => h === '0.0.0.0' || h === '::';
  if (api.port === port && (api.host === host || wildcard(api.host) || wildcard(host))) {
    throw new UsageError(`--relay-listen ${text} collides with this server's own API listener ${ctx.config.listen}; pick another port`);
  }
  return joinHostPort(host, port);
}

/** host:port of the hub's API, from the link bundle's api_url. */
export function hubApiTarget(p: LinkPayload): string {
  const u = new URL(p.hub.api_url);
  return `${u.hostname}:${u.port || '443'}`;
}

/**
 * Peer side: verifies a link bundle (its bytes) and creates the mirror
 * network (up) with its link; with `relayListen`, the daemon also relays TCP
 * from that address to the hub's API for the nodes behind this server.
 */
export function addLink(ctx: ServerContext, bundle: Uint8Array, hubAnchorText: string, opts: { relayListen?: string | undefined } = {}): AddLinkResult {
  const relayListen = opts.relayListen === undefined ? null : checkRelayListen(ctx, opts.relayListen);
  let anchor;
  try {
    anchor = parseAnchor(hubAnchorText.trim());
  } catch (err) {
    throw new DocumentError('MVPN_ANCHOR_INVALID', `--hub-anchor: ${(err as Error).message}`);
  }
  const p = openLink(bundle, anchor);
  const now = nowOf(ctx);
  const subnet = parseCidr(p.network.subnet);
  return ctx.store.write((tx) => {
    const existing = tx.getNetwork(p.network.id);
    if (existing) {
      throw new StoreError('MVPN_ALREADY_EXISTS', `this server already has a network ${p.network.id}${tx.getLink(p.network.id) ? ' (a link)' : ''}`, {
        hint: tx.getLink(p.network.id) ? `mvpn-client server link remove ${p.network.id}` : 'a peer mirrors the hub network under the same id',
      });
    }
    const live = tx.listNetworks().filter((n) => n.state !== 'deleted');
    const clash = live.find((n) => overlaps(parseCidr(n.subnet), subnet));
    if (clash) throw new StoreError('MVPN_ADDRESS_INVALID', `the hub's subnet ${p.network.subnet} overlaps this server's network ${clash.id} (${clash.subnet})`);
    const used = new Set(live.map((n) => n.port));
    const port = used.has(p.network.port) ? allocatePort(parsePortRange(ctx.config.port_range), used, undefined) : p.network.port;
    const rec: NetworkRecord = {
      id: p.network.id,
      name: p.network.name,
      kind: 'mirror',
      devType: p.network.dev_type,
      proto: p.network.proto,
      port,
      subnet: p.network.subnet,
      state: 'up',
      remotes: [...ctx.config.hostnames, ...ctx.config.addresses].map((host) => ({ host })),
      keyAlg: 'ec-p256',
      caCertPem: p.ca,
      caKeyPem: '', // nothing can be issued here: the hub holds the CA key
      serverCertPem: p.peer.server_cert,
      serverKeyPem: p.peer.server_key,
      tlsCryptV2ServerKey: p.tls_crypt_v2_server_key,
      crlPem: p.crl,
      crlNumber: p.crl_number,
      crlNextUpdate: p.crl_next_update,
      allocHint: 0,
      // The hub's MTU and fragmentation: the mirror's server fragments like the hub's, so its nodes' bundles match both.
      ...(Object.keys(linkDataPlane(p)).length === 0 ? {} : { options: linkDataPlane(p) }),
      createdAt: now,
      updatedAt: now,
    };
    tx.insertNetwork(rec);
    if (relayListen !== null) {
      const taken = tx.listLinks().find((l) => l.relayListen === relayListen);
      if (taken) throw new StoreError('MVPN_ALREADY_EXISTS', `--relay-listen ${relayListen}: the link of ${taken.network} relays there already`);
    }
    tx.insertLink({ network: rec.id, data: JSON.stringify(p), hubAnchor: anchorToString(anchor), syncedAt: 0, createdAt: now, relayListen });
    return { network: rec.id, peer: p.peer.name, address: p.peer.address, subnet: rec.subnet, port, hub: p.hub.api_url, relay: relayListen ? { listen: relayListen, to: hubApiTarget(p) } : null };
  });
}

/** Peer side: removes the link and its mirror network (the daemon stops its openvpn and removes the bridge). */
export function removeLink(ctx: ServerContext, network: string): { network: string } {
  checkNetworkId(network);
  ctx.store.write((tx) => {
    if (!tx.getLink(network)) throw new StoreError('MVPN_NOT_FOUND', `no link for network ${network} on this server`, { context: { network } });
    // Memberships, history and the link row go with it (foreign keys). Node rows copied from the hub stay (the store never deletes nodes).
    tx.deleteNetwork(network);
  });
  return { network };
}

/** The verified payload a link row keeps, parsed again with the bundle's schema (a bad row is MVPN_SCHEMA_INVALID naming the field). */
/** A hub anchor rotation the peer followed. */
export interface HubAnchorMove {
  readonly from: string;
  readonly to: string;
  readonly version: number;
}

/**
 * Peer side: follows the hub's anchor chain (its `/v1/anchor-chain.json`)
 * from the anchor this link trusts, by the agent's rule (followChain: each
 * statement signed by the anchor it retires and co-signed by the new one;
 * a retired anchor never comes back), and stores the anchor it leads to.
 * The link row keeps only the current anchor: followChain places it in the
 * chain (the link that made it current, vouched for by its co-signature), so
 * the anchors before it are known as retired. Returns the move, if any;
 * throws MVPN_ANCHOR_STATEMENT_INVALID / MVPN_ANCHOR_ROLLBACK for a chain
 * that claims to follow the current anchor but cannot be trusted (the
 * anchor then stays).
 */
export function followHubAnchor(ctx: ServerContext, network: string, chain: Uint8Array): HubAnchorMove | undefined {
  const link = ctx.store.read((tx) => tx.getLink(network));
  if (!link) return undefined;
  const before = initialTrust(parseAnchor(link.hubAnchor));
  const after = followChain(before, parseChain(chain));
  if (after.anchor.publicKey.equals(before.anchor.publicKey)) return undefined;
  const to = anchorToString(after.anchor);
  const moved = ctx.store.write((tx) => {
    // Only from the anchor this walk started at: a concurrent `link remove` / `link add` wins.
    if (tx.getLink(network)?.hubAnchor !== link.hubAnchor) return false;
    tx.setLinkAnchor(network, to);
    return true;
  });
  return moved ? { from: link.hubAnchor, to, version: after.version ?? 1 } : undefined;
}

export function linkPayload(l: LinkRecord): LinkPayload {
  return parseLinkPayload(Buffer.from(l.data, 'utf8'), `link of network ${l.network} (store)`);
}

/**
 * Peer side: copies the hub's state into the mirror (memberships, CRL).
 * Returns whether anything changed (then the daemon reconciles: ccd files,
 * CRL, `kill` of sessions no longer allowed).
 */
export function applyLinkState(ctx: ServerContext, state: LinkState): boolean {
  const now = nowOf(ctx);
  return ctx.store.write((tx) => {
    const net = tx.getNetwork(state.network);
    if (!net || !isMirror(net) || !tx.getLink(state.network)) return false;
    let changed = false;
    if (state.crl_number > net.crlNumber || (state.crl_number === net.crlNumber && state.crl !== net.crlPem)) {
      tx.updateNetwork(net.id, { crlPem: state.crl, crlNumber: state.crl_number, crlNextUpdate: state.crl_next_update, updatedAt: now });
      changed = true;
    }
    const have = new Map(tx.memberAddresses(net.id).map((m) => [m.node, m]));
    const want = new Map(state.members.filter((m) => !isPeerNode(m.node)).map((m) => [m.node, m]));
    for (const [node] of have) {
      if (!want.has(node)) {
        tx.deleteMembership(net.id, node);
        changed = true;
      }
    }
    for (const [node, m] of want) {
      const h = have.get(node);
      if (h && h.address === m.address && h.certSerial === m.cert_serial && h.revoked === m.revoked) continue;
      if (h) tx.deleteMembership(net.id, node);
      if (!tx.getNode(node)) {
        tx.insertNode({ id: node, publicKeyPem: null, keyAlg: null, identityCertPem: null, identitySerial: null, enrolledAt: null, docSerial: 0, docIssuedAt: now, docExpiresAt: now, createdAt: now });
      }
      tx.insertMembership({
        network: net.id,
        node,
        address: m.address,
        certPem: null,
        certSerial: m.cert_serial,
        keyOrigin: null,
        tlsCryptV2ClientKey: '',
        revoked: m.revoked,
        remotes: null,
        bundleVersion: 0,
        bundleCreatedAt: now,
        addedAt: now,
      });
      changed = true;
    }
    tx.setLinkSynced(net.id, now);
    return changed;
  });
}

/** JSON view of a peer's link. */
export function linkView(l: LinkRecord, runtime?: unknown): Record<string, unknown> {
  const p = linkPayload(l);
  return {
    network: l.network,
    peer: p.peer.name,
    cn: p.peer.cn,
    address: p.peer.address,
    subnet: p.network.subnet,
    hub: { api_url: p.hub.api_url, remotes: p.hub.remotes, anchor: l.hubAnchor },
    // An L3 network's link has no bridge: the peer's address is on its backbone end, the link's tap (src/server/routing).
    bridge: p.network.dev_type === 'tap' ? bridgeDev(l.network) : null,
    ...(p.network.dev_type === 'tun' ? { backbone: linkDev(l.network) } : {}),
    relay: l.relayListen === null ? null : { listen: l.relayListen, to: hubApiTarget(p) },
    synced_at: l.syncedAt === 0 ? null : new Date(l.syncedAt).toISOString(),
    created_at: new Date(l.createdAt).toISOString(),
    ...(runtime === undefined ? {} : { runtime }),
  };
}

export function listLinks(ctx: ServerContext): LinkRecord[] {
  return ctx.store.read((tx) => tx.listLinks());
}
