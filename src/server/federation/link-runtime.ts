/**
 * What a peer's daemon does on the host for a link: the Linux bridge that
 * makes one Ethernet segment of the local openvpn server's tap and the
 * link's tap, the link client's files (its config rendered by the client
 * renderer from a NetworkSpec, like a node's), and the state fetch from the
 * hub's API (with the agent's pinned-CA fetcher).
 *
 * Devices: `ms-<id>` (the mirror's openvpn server) and `ml-<id>` (the link
 * client) are created as persistent taps before openvpn starts, so they
 * survive an openvpn restart and stay enslaved to `mb-<id>`; openvpn attaches
 * to the existing device. The peer's tunnel address (allocated by the hub)
 * sits on the bridge, not on a tap. The bridge runs without STP and with no
 * forward delay (two ports, no loop possible), and nothing else is enslaved:
 * frames move between the two taps only. No IP forwarding is enabled — the
 * bridge forwards at L2 inside the segment; the host's other interfaces are
 * not part of it.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { HttpFetcher } from '../../agent/sources.ts';
import { parseWithSchema, type NetworkSpec } from '../../bundle/schema.ts';
import { limits } from '../../bundle/limits.ts';
import { parseJsonStrict } from '../../bundle/strict-json.ts';
import { FetchError, OpenvpnError } from '../../errors.ts';
import { renderClientConfig } from '../../openvpn/client-config.ts';
import type { ExecFn } from '../../util/exec.ts';
import { ensureDir } from '../../util/fs-atomic.ts';
import { parseCidr } from '../alloc.ts';
import { CIPHERS, KEEPALIVE, dataPlane } from '../documents.ts';
import type { DataPlane } from '../../openvpn/mtu.ts';
import { writeIfChanged, type NetworkFilePaths } from '../network-files.ts';
import { bridgeDev, linkDev, serverDev } from '../devices.ts';
import type { LinkPayload } from './link-bundle.ts';
import type { LinkState } from './links.ts';

/** A stable locally administered MAC for the peer's bridge (distinct per network and peer). */
export function bridgeMac(id: string, peer: string): string {
  const h = createHash('sha256').update(`mvpn-bridge:${id}:${peer}`).digest();
  return ['02', ...[...h.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

async function ip(exec: ExecFn, args: readonly string[], okIf?: RegExp): Promise<void> {
  const r = await exec('ip', args, { timeoutMs: 10_000 });
  if (r.code !== 0 && !(okIf && okIf.test(r.stderr))) {
    throw new OpenvpnError('MVPN_OPENVPN_UNHEALTHY', `ip ${args.join(' ')} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
  }
}

const EXISTS = /File exists|already exists/;

/** Creates (idempotently) the bridge and both taps, enslaves the taps and puts `address/prefix` on the bridge. */
export async function ensureBridge(exec: ExecFn, id: string, peer: string, address: string, prefix: number): Promise<void> {
  const br = bridgeDev(id);
  await ip(exec, ['link', 'add', br, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0'], EXISTS);
  await ip(exec, ['link', 'set', 'dev', br, 'address', bridgeMac(id, peer)]);
  for (const tap of [serverDev(id), linkDev(id)]) {
    await ip(exec, ['tuntap', 'add', 'dev', tap, 'mode', 'tap'], EXISTS);
    await ip(exec, ['link', 'set', 'dev', tap, 'master', br, 'up']);
  }
  await ip(exec, ['addr', 'replace', `${address}/${prefix}`, 'dev', br]);
  await ip(exec, ['link', 'set', 'dev', br, 'up']);
}

/** Removes the taps and the bridge (missing ones are fine). */
export async function removeBridge(exec: ExecFn, id: string): Promise<void> {
  for (const dev of [serverDev(id), linkDev(id), bridgeDev(id)]) await ip(exec, ['link', 'del', 'dev', dev], /Cannot find device|does not exist/);
}

export interface LinkFiles {
  readonly dir: string;
  readonly config: string;
}

/**
 * The link client's keepalive: a dead hub is noticed in 25 s instead of the
 * pushed 60 s. An idle link hears nothing but the hub server's own pings,
 * sent once it has sent nothing for KEEPALIVE.interval (10 s; a failover
 * network's 2 s) — openvpn does not answer pings. So the timeout is two of
 * those intervals plus 5 s: one lost ping is survived, and the timeout never
 * races the hub's next ping (at 10 s an idle link restarted every ~10 s and
 * a frame sent at that moment was lost).
 */
export const LINK_KEEPALIVE = { interval: 2, timeout: 2 * KEEPALIVE.interval + 5 } as const;

/**
 * What the link client is, as a NetworkSpec for the client renderer: a tap
 * client of the hub's server for the network (pinned to its server CN) with
 * the peer's address, which the hub pushes and the bridge holds.
 */
/** The hub network's LAN MTU and fragmentation as the link bundle carries them (documents.ts dataPlane). */
export function linkDataPlane(p: LinkPayload): DataPlane {
  const { mtu, fragment } = p.network;
  return dataPlane({ options: { ...(mtu === undefined ? {} : { mtu }), ...(fragment === undefined ? {} : { fragment }) } });
}

export function linkSpec(p: LinkPayload): NetworkSpec {
  // An L3 network's link is the peer's end of the hub's backbone (a tap server on the hub's hosts, its own port and protocol).
  const bb = p.network.backbone;
  return {
    schema: 1,
    id: p.network.id,
    name: p.network.name,
    dev_type: 'tap',
    proto: bb?.proto ?? p.network.proto,
    remotes: bb ? p.hub.remotes.map((r) => ({ host: r.host, port: bb.port })) : p.hub.remotes,
    server_cn: p.network.server_cn,
    address: { ipv4: `${p.peer.address}/${parseCidr(p.network.subnet).prefix}` },
    ciphers: [...CIPHERS],
    keepalive: { ...LINK_KEEPALIVE },
    // Fragmentation as the hub's server does it (both ends of a link must agree); the backbone server has none.
    ...(bb ? {} : linkDataPlane(p)),
    allow_pushed_routes: false,
  };
}

/**
 * Writes the link client's files under `<network dir>/link`; true if openvpn
 * must restart to see them. The hub's CRL is the mirror's own (synced from
 * the hub, `net.crl`).
 */
export async function writeLinkFiles(net: NetworkFilePaths, mgmtSocket: string, p: LinkPayload): Promise<{ files: LinkFiles; changed: boolean }> {
  const dir = join(net.dir, 'link');
  await ensureDir(dir, 0o700);
  const paths = {
    ca: join(dir, 'ca.crt'),
    cert: join(dir, 'link.crt'),
    key: join(dir, 'link.key'),
    tlsCryptV2: join(dir, 'link-tls-crypt-v2.key'),
    crl: net.crl,
    mgmtSocket,
    dev: linkDev(p.network.id),
  };
  const config = join(dir, 'link.conf');
  const changed = await Promise.all([
    writeIfChanged(config, renderClientConfig(linkSpec(p), paths, [], { bridged: true }), 0o644),
    writeIfChanged(paths.ca, p.ca, 0o644),
    writeIfChanged(paths.cert, p.peer.link_cert, 0o644),
    writeIfChanged(paths.key, p.peer.link_key, 0o600),
    writeIfChanged(paths.tlsCryptV2, p.peer.link_tls_crypt_v2, 0o600),
  ]);
  return { files: { dir, config }, changed: changed.some(Boolean) };
}

const LINK_STATE_BYTES = 64 << 20;
const LINK_STATE_TIMEOUT_MS = 5_000;

const LinkStateSchema = z.object({
  network: z.string(),
  crl: z.string().max(4 << 20),
  crl_number: z.number().int(),
  crl_next_update: z.number().int(),
  members: z.array(z.object({ node: z.string().max(63), address: z.string().max(15), cert_serial: z.string().max(128).nullable(), revoked: z.boolean() })).max(100_000),
  servers: z.array(z.object({ node: z.string().max(63), address: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/) })).max(1000).optional(),
});

/** The agent's pinned-CA fetcher with the peer's API identity; one per link (close it with the link). */
export function linkFetcher(p: LinkPayload): HttpFetcher {
  return new HttpFetcher(
    { ca: p.hub.api_ca, cert: p.peer.api_cert, key: p.peer.api_key },
    { requestTimeoutMs: LINK_STATE_TIMEOUT_MS, deadlineMs: LINK_STATE_TIMEOUT_MS, maxMembershipBytes: LINK_STATE_BYTES, maxBundleBytes: LINK_STATE_BYTES, retries: 0 },
  );
}

/** GET <hub>/v1/anchor-chain.json: the hub's anchor rotation statements (followHubAnchor walks them). */
export async function fetchHubChain(p: LinkPayload, fetcher: HttpFetcher): Promise<Buffer> {
  const url = new URL('/v1/anchor-chain.json', p.hub.api_url);
  const r = await fetcher.get(url, { maxBytes: limits.envelopeBytes, signal: AbortSignal.timeout(LINK_STATE_TIMEOUT_MS), accept: 'application/json' });
  if (r.kind !== 'doc') throw new FetchError('MVPN_FETCH_FAILED', `anchor chain from ${url.origin}: unexpected 304`);
  return r.bytes;
}

/** GET <hub>/v1/link/<network>: the hub's members and CRL for this peer's mirror. */
export async function fetchLinkState(p: LinkPayload, fetcher: HttpFetcher): Promise<LinkState> {
  const url = new URL(`/v1/link/${p.network.id}`, p.hub.api_url);
  const r = await fetcher.get(url, { maxBytes: LINK_STATE_BYTES, signal: AbortSignal.timeout(LINK_STATE_TIMEOUT_MS), accept: 'application/json' });
  if (r.kind !== 'doc') throw new FetchError('MVPN_FETCH_FAILED', `link state from ${url.origin}: unexpected 304`);
  const state = parseWithSchema(LinkStateSchema, parseJsonStrict(r.bytes, LINK_STATE_BYTES, 5, 'link state'), `link state from ${url.origin}`);
  if (state.network !== p.network.id) throw new FetchError('MVPN_FETCH_FAILED', `link state from ${url.origin}: state of network ${state.network}, asked for ${p.network.id}`);
  return state;
}
