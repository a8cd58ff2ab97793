/**
 * The backbone of an L3 network across servers (ARCHITECTURE.md "L3
 * networks across servers"): one Ethernet segment that joins the network's
 * servers and nothing else, so every BGP next hop is on-link and a node
 * that moves is one BGP update away from being reachable again.
 *
 * - At the hub: a tap openvpn server `mk-<id>`, rendered by the one server
 *   renderer (`bridged`: its address is put on the device by the daemon),
 *   for the network's peers only: its ccd holds a file for each
 *   `mvpn-peer-*` member and `ccd-exclusive` refuses every other CN, so a
 *   node's certificate from the same CA never reaches the backbone. It
 *   listens on the network's port with the other protocol (a UDP network's
 *   backbone is TCP): no second port to allocate and store, and no other
 *   network can hold that number (ports are unique per server across both
 *   protocols). The cost: node traffic between servers of a UDP network
 *   rides TCP (see ARCHITECTURE.md).
 * - At a peer: its link client `ml-<id>` (federation/link-runtime.ts
 *   linkSpec, tun branch) is its end of the segment.
 * - Devices: the network's tun `ms-<id>` and the backbone's tap are made
 *   persistent before openvpn starts, each with the server's address and
 *   `noprefixroute`, so nothing lands in the main table; openvpn attaches to
 *   them (`ifconfig-noexec` on the tun, no `ifconfig` on the taps).
 */
import { join } from 'node:path';
import { readdir, rm } from 'node:fs/promises';
import { RoutingError } from '../../errors.ts';
import { renderCcd, renderServerConfig } from '../../openvpn/server-config.ts';
import { SHARED_DIR_MODE, SHARED_FILE_MODE, shareWithOpenvpn, type OpenvpnUser } from '../../openvpn/unpriv.ts';
import type { ExecFn } from '../../util/exec.ts';
import { ensureDir } from '../../util/fs-atomic.ts';
import { intToIp, netmaskString, parseCidr, serverAddress, size } from '../alloc.ts';
import type { ServerConfig, ServerPaths } from '../config.ts';
import { backboneDev } from '../devices.ts';
import { CIPHERS } from '../documents.ts';
import { LINK_KEEPALIVE } from '../federation/link-runtime.ts';
import { networkFilePaths, writeIfChanged } from '../network-files.ts';
import type { MemberSummary, NetworkRecord, Proto } from '../store/store.ts';

/** The backbone's protocol: the network's port, the other protocol. */
export function backboneProto(networkProto: Proto): Proto {
  return networkProto === 'udp' ? 'tcp' : 'udp';
}

async function ip(exec: ExecFn, args: readonly string[], okIf?: RegExp): Promise<void> {
  const r = await exec('ip', args, { timeoutMs: 10_000 });
  if (r.code !== 0 && !(okIf && okIf.test(r.stderr))) throw new RoutingError('MVPN_ROUTING_FAILED', `ip ${args.join(' ')} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
}

export interface RoutedDevice {
  readonly dev: string;
  readonly mode: 'tun' | 'tap';
}

/**
 * Creates (idempotently) persistent devices holding `address` without a
 * prefix route, and sets them up. The backbone tap gets `/prefix` (BIRD
 * finds a BGP next hop on the interface whose prefix holds it); the tun only
 * `/32`, or BIRD may resolve another server's next hop onto the tun.
 */
export async function ensureRoutedDevices(exec: ExecFn, devs: readonly RoutedDevice[], address: string, prefix: number): Promise<void> {
  for (const d of devs) {
    await ip(exec, ['tuntap', 'add', 'dev', d.dev, 'mode', d.mode], /File exists|already exists|Device or resource busy/);
    await ip(exec, ['addr', 'replace', `${address}/${d.mode === 'tun' ? 32 : prefix}`, 'dev', d.dev, 'noprefixroute']);
    await ip(exec, ['link', 'set', 'dev', d.dev, 'up']);
  }
}

/** Removes the devices (missing ones are fine). */
export async function removeRoutedDevices(exec: ExecFn, devs: readonly RoutedDevice[]): Promise<void> {
  for (const d of devs) await ip(exec, ['link', 'del', 'dev', d.dev], /Cannot find device|does not exist/);
}

export interface BackboneFiles {
  readonly dir: string;
  readonly config: string;
  readonly ccdDir: string;
}

export function backbonePaths(paths: ServerPaths, id: string): BackboneFiles {
  const dir = join(networkFilePaths(paths, id).dir, 'backbone');
  return { dir, config: join(dir, 'server.conf'), ccdDir: join(dir, 'ccd') };
}

/** The hub's backbone server config: the network's CA, certificate, keys and CRL; its own ccd (the peers only). */
export function renderBackboneConfig(config: ServerConfig, paths: ServerPaths, net: NetworkRecord): string {
  const f = networkFilePaths(paths, net.id);
  const subnet = parseCidr(net.subnet);
  return renderServerConfig(
    {
      id: net.id,
      devType: 'tap',
      proto: backboneProto(net.proto),
      port: net.port,
      local: config.vpn_listen,
      network: intToIp(subnet.base),
      netmask: netmaskString(subnet.prefix),
      serverIp: intToIp(serverAddress(subnet)),
      firstHost: intToIp(subnet.base + 1),
      lastHost: intToIp(subnet.base + size(subnet) - 2),
      ciphers: CIPHERS,
      keepalive: { ...LINK_KEEPALIVE },
      bridged: true,
    },
    { ca: f.ca, cert: f.cert, key: f.key, tlsCryptV2: f.tlsCryptV2, crl: f.crl, ccdDir: backbonePaths(paths, net.id).ccdDir, dev: backboneDev(net.id) },
  );
}

/**
 * Writes the backbone server's config and ccd (one file per peer, nothing
 * else). The CA, certificate and keys are the network's own files (written
 * first by writeNetworkFiles). True when openvpn must restart (its config
 * changed; ccd changes it reads at each connect).
 */
export async function writeBackboneFiles(config: ServerConfig, paths: ServerPaths, net: NetworkRecord, peers: readonly MemberSummary[], who: OpenvpnUser | undefined): Promise<boolean> {
  const b = backbonePaths(paths, net.id);
  for (const dir of [b.dir, b.ccdDir]) {
    await ensureDir(dir, SHARED_DIR_MODE);
    await shareWithOpenvpn(dir, who, SHARED_DIR_MODE);
  }
  const restart = await writeIfChanged(b.config, renderBackboneConfig(config, paths, net), 0o644);
  const netmask = netmaskString(parseCidr(net.subnet).prefix);
  const wanted = new Map(peers.map((m) => [m.node, renderCcd(m.address, netmask)]));
  for (const [node, content] of wanted) await writeIfChanged(join(b.ccdDir, node), content, SHARED_FILE_MODE, { who });
  for (const name of await readdir(b.ccdDir)) if (!wanted.has(name)) await rm(join(b.ccdDir, name), { force: true, recursive: true });
  return restart;
}
