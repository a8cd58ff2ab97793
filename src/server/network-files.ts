/**
 * The files one network's openvpn server reads, written from the store into
 * `<state>/networks/<id>/`: server.conf, the CA and server certificate, the
 * server key and tls-crypt-v2 server key (0600), the CRL, and ccd/<node>
 * for every node allowed to connect.
 *
 * Each file is replaced atomically and only when its content differs, so an
 * unchanged CRL keeps its mtime (openvpn re-reads it when it changes) and the
 * caller learns whether openvpn must restart (config, certificate or keys
 * changed) or picks the change up by itself (CRL, ccd).
 *
 * openvpn reads the CRL and the ccd files after it has dropped to the
 * mvpn-openvpn user (src/openvpn/unpriv.ts): those two, the ccd directory and
 * the network directory are shared with its group (files 0640, directories
 * 0710); the keys stay 0600 root.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { renderCcd, renderServerConfig, type ServerFiles } from '../openvpn/server-config.ts';
import { SHARED_DIR_MODE, SHARED_FILE_MODE, shareWithOpenvpn, type OpenvpnUser } from '../openvpn/unpriv.ts';
import { ensureDir, writeFileAtomic } from '../util/fs-atomic.ts';
import { intToIp, netmaskString, parseCidr, serverAddress, size } from './alloc.ts';
import { networkDir, type ServerConfig, type ServerPaths } from './config.ts';
import { serverDev } from './devices.ts';
import { CIPHERS, dataPlane, keepaliveOf } from './documents.ts';
import { trustedCaPem } from './pki-service.ts';
import type { MemberSummary, NetworkRecord } from './store/store.ts';

/** Where a network's files live: what the server config names (but its device), plus the directory and the config itself. */
export interface NetworkFilePaths extends Omit<ServerFiles, 'dev'> {
  readonly dir: string;
  readonly config: string;
}

export function networkFilePaths(paths: ServerPaths, id: string): NetworkFilePaths {
  const dir = networkDir(paths, id);
  return {
    dir,
    config: join(dir, 'server.conf'),
    ca: join(dir, 'ca.crt'),
    cert: join(dir, 'server.crt'),
    key: join(dir, 'server.key'),
    tlsCryptV2: join(dir, 'tls-crypt-v2-server.key'),
    crl: join(dir, 'crl.pem'),
    ccdDir: join(dir, 'ccd'),
  };
}

/**
 * The server tap's MAC: stable for a network id (so a restarted server keeps
 * it), locally administered and unicast (02:…).
 */
export function serverMac(id: string): string {
  const h = createHash('sha256').update(`mvpn-server-tap:${id}`).digest();
  return ['02', ...[...h.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** Members allowed to connect: active and holding a certificate. */
export function allowedMembers<M extends MemberSummary>(memberships: readonly M[]): M[] {
  return memberships.filter((m) => !m.revoked && m.certSerial !== null);
}

/**
 * `bridge`: the server's own address sits on a device the daemon made. A
 * tap: a peer's mirror of a hub network (src/server/federation), the
 * address is the peer's (allocated by the hub) on the bridge, so the tap
 * gets neither `ifconfig` nor the network's server MAC (which the hub's tap
 * has on the same segment). A tun: an L3 network across servers
 * (src/server/routing), rendered `routed` with that address.
 */
export function renderNetworkConfig(config: ServerConfig, paths: ServerPaths, net: NetworkRecord, bridge?: { readonly address: string }): string {
  const f = networkFilePaths(paths, net.id);
  const subnet = parseCidr(net.subnet);
  return renderServerConfig(
    {
      id: net.id,
      devType: net.devType,
      proto: net.proto,
      port: net.port,
      local: config.vpn_listen,
      network: intToIp(subnet.base),
      netmask: netmaskString(subnet.prefix),
      serverIp: bridge?.address ?? intToIp(serverAddress(subnet)),
      firstHost: intToIp(subnet.base + 1),
      lastHost: intToIp(subnet.base + size(subnet) - 2),
      ciphers: CIPHERS,
      keepalive: keepaliveOf(net),
      bridged: bridge !== undefined && net.devType === 'tap',
      routed: bridge !== undefined && net.devType === 'tun',
      routeGateway: bridge !== undefined && net.devType === 'tun' ? intToIp(serverAddress(subnet)) : undefined,
      lladdr: net.devType === 'tap' && bridge === undefined ? serverMac(net.id) : undefined,
      pushedRoutes: net.pushedRoutes,
      dataPlane: dataPlane(net),
    },
    { ca: f.ca, cert: f.cert, key: f.key, tlsCryptV2: f.tlsCryptV2, crl: f.crl, ccdDir: f.ccdDir, dev: serverDev(net.id) },
  );
}

/** Replaces `path` atomically only when its content differs; true when it did. `share`: readable by openvpn after it drops root. */
export async function writeIfChanged(path: string, content: string, mode: number, share?: { who: OpenvpnUser | undefined }): Promise<boolean> {
  try {
    if ((await readFile(path, 'utf8')) === content) {
      // Also an unchanged file written before openvpn dropped root (an upgrade) becomes readable.
      if (share) await shareWithOpenvpn(path, share.who, mode);
      return false;
    }
  } catch {
    // missing: write it
  }
  if (share) {
    // Shared before the rename, so openvpn never sees the new file without access to it.
    await writeFileAtomic(path, content, mode, (tmp) => shareWithOpenvpn(tmp, share.who, mode));
  } else {
    await writeFileAtomic(path, content, mode);
  }
  return true;
}

export interface WriteResult {
  /** Something openvpn only reads at start changed (config, CA, certificate, keys). */
  readonly restartNeeded: boolean;
  readonly crlChanged: boolean;
  readonly ccdChanged: boolean;
}

export async function writeNetworkFiles(
  config: ServerConfig,
  paths: ServerPaths,
  net: NetworkRecord,
  memberships: readonly MemberSummary[],
  bridge?: { readonly address: string },
  who?: OpenvpnUser,
): Promise<WriteResult> {
  const f = networkFilePaths(paths, net.id);
  const share = { who };
  await ensureDir(f.dir, SHARED_DIR_MODE);
  await ensureDir(f.ccdDir, SHARED_DIR_MODE);
  await shareWithOpenvpn(f.dir, who, SHARED_DIR_MODE);
  await shareWithOpenvpn(f.ccdDir, who, SHARED_DIR_MODE);
  const changed = await Promise.all([
    writeIfChanged(f.config, renderNetworkConfig(config, paths, net, bridge), 0o644),
    writeIfChanged(f.ca, trustedCaPem(net), 0o644),
    writeIfChanged(f.cert, net.serverCertPem, 0o644),
    writeIfChanged(f.key, net.serverKeyPem, 0o600),
    writeIfChanged(f.tlsCryptV2, net.tlsCryptV2ServerKey, 0o600),
  ]);
  const crlChanged = await writeIfChanged(f.crl, net.crlPem, SHARED_FILE_MODE, share);

  // ccd: exactly one file per allowed node; anything else goes (ccd-exclusive then refuses that CN).
  const netmask = netmaskString(parseCidr(net.subnet).prefix);
  const wanted = new Map(allowedMembers(memberships).map((m) => [m.node, renderCcd(m.address, netmask)]));
  let ccdChanged = false;
  for (const [node, content] of wanted) if (await writeIfChanged(join(f.ccdDir, node), content, SHARED_FILE_MODE, share)) ccdChanged = true;
  for (const name of await readdir(f.ccdDir)) {
    if (!wanted.has(name)) {
      await rm(join(f.ccdDir, name), { force: true, recursive: true });
      ccdChanged = true;
    }
  }
  return { restartNeeded: changed.some(Boolean), crlChanged, ccdChanged };
}
