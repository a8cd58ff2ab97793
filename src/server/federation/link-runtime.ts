/**
 * What a peer's daemon does on the host for a link: the Linux bridge that
 * makes one Ethernet segment of the local openvpn server's tap and the
 * link's tap, the link client's openvpn config, and the state sync with the
 * hub's API.
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
import { request } from 'node:https';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { FetchError, OpenvpnError } from '../../errors.ts';
import type { ExecFn } from '../../util/exec.ts';
import { ensureDir, writeFileAtomic } from '../../util/fs-atomic.ts';
import { parseJsonBounded } from '../../util/json.ts';
import { fastPathLines, mtuLines } from '../../openvpn/mtu.ts';
import { dataPlane } from '../documents.ts';
import type { LinkPayload } from './link-bundle.ts';
import type { LinkState } from './links.ts';

export function bridgeDev(id: string): string {
  return `mb-${id}`;
}

export function linkDev(id: string): string {
  return `ml-${id}`;
}

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
  for (const tap of [`ms-${id}`, linkDev(id)]) {
    await ip(exec, ['tuntap', 'add', 'dev', tap, 'mode', 'tap'], EXISTS);
    await ip(exec, ['link', 'set', 'dev', tap, 'master', br, 'up']);
  }
  await ip(exec, ['addr', 'replace', `${address}/${prefix}`, 'dev', br]);
  await ip(exec, ['link', 'set', 'dev', br, 'up']);
}

/** Removes the taps and the bridge (missing ones are fine). */
export async function removeBridge(exec: ExecFn, id: string): Promise<void> {
  for (const dev of [`ms-${id}`, linkDev(id), bridgeDev(id)]) await ip(exec, ['link', 'del', 'dev', dev], /Cannot find device|does not exist/);
}

export interface LinkFiles {
  readonly dir: string;
  readonly config: string;
}

/**
 * The link client's openvpn config: a tap client of the hub's server for the
 * network, pinned to the network's server CN, that leaves the tap
 * unaddressed (`ifconfig-noexec`, `route-noexec`: the address is on the
 * bridge) and detects a dead hub in 10 s instead of the pushed 60 s.
 */
export function renderLinkConfig(p: LinkPayload, dir: string): string {
  const lines = [
    `# link client of network ${p.network.id} to its hub, rendered by mvpn-client server. Do not edit.`,
    'client',
    'dev-type tap',
    `dev ${linkDev(p.network.id)}`,
    `proto ${p.network.proto === 'tcp' ? 'tcp-client' : 'udp'}`,
    ...p.hub.remotes.map((r) => `remote ${r.host} ${r.port}`),
    'nobind',
    'connect-retry 1 5',
    `ca ${join(dir, 'ca.crt')}`,
    `cert ${join(dir, 'link.crt')}`,
    `key ${join(dir, 'link.key')}`,
    `tls-crypt-v2 ${join(dir, 'link-tls-crypt-v2.key')}`,
    'remote-cert-tls server',
    `verify-x509-name ${p.network.server_cn} name`,
    'tls-version-min 1.2',
    'data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305',
    'ifconfig-noexec',
    'route-noexec',
    // Fragmentation as the hub's server does it (both ends of a link must agree).
    ...mtuLines(dataPlane(p.network)),
    ...fastPathLines(p.network.proto),
    'pull-filter ignore "ping"',
    'ping 2',
    'ping-restart 10',
    'persist-key',
    'persist-tun',
    'script-security 1',
    'verb 3',
  ];
  return lines.join('\n') + '\n';
}

async function writeIfChanged(path: string, content: string, mode: number): Promise<boolean> {
  if ((await readFile(path, 'utf8').catch(() => undefined)) === content) return false;
  await writeFileAtomic(path, content, mode);
  return true;
}

/** Writes the link client's files under `<networkDir>/link`; true if openvpn must restart to see them. */
export async function writeLinkFiles(networkDir: string, p: LinkPayload): Promise<{ files: LinkFiles; changed: boolean }> {
  const dir = join(networkDir, 'link');
  await ensureDir(dir, 0o700);
  const changed = await Promise.all([
    writeIfChanged(join(dir, 'link.conf'), renderLinkConfig(p, dir), 0o644),
    writeIfChanged(join(dir, 'ca.crt'), p.ca, 0o644),
    writeIfChanged(join(dir, 'link.crt'), p.peer.link_cert, 0o644),
    writeIfChanged(join(dir, 'link.key'), p.peer.link_key, 0o600),
    writeIfChanged(join(dir, 'link-tls-crypt-v2.key'), p.peer.link_tls_crypt_v2, 0o600),
  ]);
  return { files: { dir, config: join(dir, 'link.conf') }, changed: changed.some(Boolean) };
}

const LinkStateSchema = z.object({
  network: z.string(),
  crl: z.string().max(4 << 20),
  crl_number: z.number().int(),
  crl_next_update: z.number().int(),
  members: z.array(z.object({ node: z.string().max(63), address: z.string().max(15), cert_serial: z.string().max(128).nullable(), revoked: z.boolean() })).max(100_000),
});

/** GET <hub>/v1/link/<network> with the peer's API identity; the hub's API CA is pinned. */
export function fetchLinkState(p: LinkPayload, timeoutMs = 5_000): Promise<LinkState> {
  const url = new URL(`/v1/link/${p.network.id}`, p.hub.api_url);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'GET', ca: p.hub.api_ca, cert: p.peer.api_cert, key: p.peer.api_key, timeout: timeoutMs, agent: false, servername: url.hostname.replace(/^\[|\]$/g, '') },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > 64 << 20) req.destroy(new FetchError('MVPN_FETCH_TOO_LARGE', 'link state is too large'));
          else chunks.push(c);
        });
        res.on('end', () => {
          if (res.statusCode !== 200) {
            reject(new FetchError('MVPN_FETCH_HTTP_STATUS', `hub ${url.origin} answered ${res.statusCode} for the link state: ${Buffer.concat(chunks).toString('utf8').slice(0, 300)}`));
            return;
          }
          try {
            const r = LinkStateSchema.safeParse(parseJsonBounded(Buffer.concat(chunks), { maxBytes: 64 << 20, maxDepth: 5 }, 'link state'));
            if (!r.success) throw new Error(r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
            if (r.data.network !== p.network.id) throw new Error(`state of network ${r.data.network}, asked for ${p.network.id}`);
            resolve(r.data);
          } catch (err) {
            reject(new FetchError('MVPN_FETCH_FAILED', `link state from ${url.origin}: ${(err as Error).message}`));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new FetchError('MVPN_FETCH_TIMEOUT', `hub ${url.origin} did not answer in ${timeoutMs} ms`)));
    req.on('error', (err) => reject(err instanceof FetchError ? err : new FetchError('MVPN_FETCH_FAILED', `hub ${url.origin}: ${err.message}`)));
    req.end();
  });
}
