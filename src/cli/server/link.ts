/**
 * `server link …`: server-to-server links (src/server/federation).
 *
 *   on the hub:  server link export NETWORK --peer NAME --out FILE|- [--api-url https://HOST:PORT]
 *   on the peer: server link add FILE|- --hub-anchor ANCHOR|@FILE [--relay-listen ADDR:PORT]
 *   either:      server link show [NETWORK]      (peer: its links and their health; hub: its peers)
 *                server link remove NETWORK [--peer NAME]   (--peer on the hub)
 *
 * Every command takes --json and prints one JSON value, so scripts (the
 * federated demo) can drive them. `-` as the bundle file is standard output
 * (export, which then prints nothing else) or standard input (add), so an
 * admin channel such as ssh can carry the bundle from hub to peer.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { CaMaterial } from '../../pki/ca.ts';
import { addLink, exportLink, isPeerNode, linkView, listLinks, removeHubLink, removeLink } from '../../server/federation/links.ts';
import { readStatus } from '../../server/status.ts';
import type { CliGroup } from '../command.ts';
import { readInput } from '../input.ts';
import { serverCommand, NETWORK_ARG, table, type ServerArgs } from './common.ts';
import { loadSigningKey } from '../../server/anchor-rotation.ts';

interface ExportArgs extends ServerArgs {
  network: string;
  peer: string;
  out: string;
  'api-url'?: string;
}

const linkExportCommand = serverCommand<ExportArgs>({
  command: 'export <network>',
  describe: "hub: make a peer server a member of NETWORK and write its signed link bundle",
  options: (y) =>
    y
      .positional('network', { type: 'string', demandOption: true, describe: 'network id (on this, the hub)' })
      .option('peer', { type: 'string', demandOption: true, describe: 'peer server name (its link certificate is mvpn-peer-NAME)' })
      .option('out', { type: 'string', demandOption: true, describe: 'link bundle to write (- = standard output); holds private keys, written 0600' })
      .option('api-url', { type: 'string', describe: "https://HOST:PORT at which the peer reaches this server's API (default: first --hostname/--address and the listen port)" }),
  action: async (ctx, args, io) => {
    const key = await loadSigningKey(ctx.paths);
    const apiCa: CaMaterial = { alg: 'ec-p256', certPem: await readFile(ctx.paths.apiCaCert, 'utf8'), keyPem: await readFile(ctx.paths.apiCaKey, 'utf8') };
    const toStdout = args.out === '-';
    const r = await exportLink(ctx, key, apiCa, { network: String(args.network), peer: args.peer, out: toStdout ? undefined : resolve(args.out), apiUrl: args['api-url'] });
    if (toStdout) {
      io.stdout.write(r.bytes.toString('utf8'));
      return { json: undefined, text: '', quiet: true };
    }
    return {
      json: { network: r.network, peer: r.peer, cn: r.cn, address: r.address, file: r.file, api_url: r.apiUrl },
      text: `wrote ${r.file}: peer ${r.peer} joins ${r.network} as ${r.cn} with address ${r.address}; on the peer: mvpn-client server link add ${r.file} --hub-anchor @<this server's trust-anchor file>`,
    };
  },
});

/** A link bundle is a few certificates and keys: about 10 KiB. */
const MAX_LINK_BUNDLE_BYTES = 1 << 20;

interface AddArgs extends ServerArgs {
  file: string;
  'hub-anchor': string;
  'relay-listen'?: string;
}

const linkAddCommand = serverCommand<AddArgs>({
  command: 'add <file>',
  describe: "peer: verify a hub's link bundle and join its network (mirror network, bridge, link openvpn)",
  options: (y) =>
    y
      .positional('file', { type: 'string', demandOption: true, describe: 'link bundle from `server link export` on the hub (- = standard input)' })
      .option('hub-anchor', { type: 'string', demandOption: true, describe: "the hub's trust anchor (ed25519:…), or @FILE to read it from a file" })
      .option('relay-listen', {
        type: 'string',
        describe: "ADDR:PORT (this server's internal address) where nodes behind it reach the hub's API: a TCP relay, TLS stays end to end (agents: sources[].via)",
      }),
  action: async (ctx, args, io) => {
    const a = args['hub-anchor'];
    const anchor = a.startsWith('@') ? await readFile(resolve(a.slice(1)), 'utf8') : a;
    const r = addLink(ctx, await readInput(io, String(args.file), 'link bundle', MAX_LINK_BUNDLE_BYTES), anchor, { relayListen: args['relay-listen'] });
    const relay = r.relay ? ` Nodes behind this server reach the hub's API through the relay on ${r.relay.listen} (to ${r.relay.to}).` : '';
    return {
      json: r,
      text: `joined ${r.network} (subnet ${r.subnet}) as peer ${r.peer} with address ${r.address}; local openvpn server on port ${r.port}, hub ${r.hub}. The running daemon brings it up.${relay}`,
    };
  },
});

interface ShowArgs extends ServerArgs {
  network?: string;
}

const linkShowCommand = serverCommand<ShowArgs>({
  command: 'show [network]',
  describe: 'links of this server: as a peer (mirrors, with health) and as a hub (its peers)',
  options: (y) => y.positional('network', { type: 'string', describe: 'only this network' }),
  action: async (ctx, args) => {
    const status = await readStatus(ctx.config.runtime_dir);
    const want = (n: string) => args.network === undefined || n === args.network;
    const peerSide = listLinks(ctx)
      .filter((l) => want(l.network))
      .map((l) => linkView(l, status ? (status.links?.[l.network] ?? { state: 'stopped' }) : null));
    const hubSide = ctx.store.read((tx) =>
      tx
        .listMemberships()
        .filter((m) => isPeerNode(m.node) && want(m.network))
        .map((m) => {
          const client = status?.networks[m.network]?.clients.find((c) => c.cn === m.node);
          return {
            network: m.network,
            peer: m.node.slice('mvpn-peer-'.length),
            cn: m.node,
            address: m.address,
            state: m.revoked ? 'revoked' : 'active',
            connected_from: client?.real_address ?? null,
          };
        }),
    );
    const rows: string[][] = [['ROLE', 'NETWORK', 'PEER', 'ADDRESS', 'STATE', 'DETAIL']];
    for (const v of peerSide) {
      const rt = v['runtime'] as { state?: string; restarts?: number; sync?: { ok: boolean; at: string } | null; relay?: { error?: string } } | null;
      const relay = v['relay'] as { listen: string } | null;
      const relayText = relay ? `, relay ${relay.listen}${rt && 'relay' in rt && rt.relay && 'error' in rt.relay ? ' (NOT LISTENING)' : ''}` : '';
      rows.push(['peer', String(v['network']), String(v['peer']), String(v['address']), rt?.state ?? 'no daemon', `hub ${(v['hub'] as { api_url: string }).api_url}, restarts ${rt?.restarts ?? 0}, sync ${rt?.sync ? (rt.sync.ok ? `ok ${rt.sync.at}` : 'failing') : '-'}${relayText}`]);
    }
    for (const h of hubSide) rows.push(['hub', h.network, h.peer, h.address, h.state, h.connected_from ? `connected from ${h.connected_from}` : 'not connected']);
    return { json: { peer: peerSide, hub: hubSide }, text: rows.length === 1 ? 'no links' : table(rows) };
  },
});

interface RemoveArgs extends ServerArgs {
  network: string;
  peer?: string;
}

const linkRemoveCommand = serverCommand<RemoveArgs>({
  command: 'remove <network>',
  describe: "peer: leave the hub's network (mirror, bridge and link go); hub (--peer NAME): end that peer's link",
  options: (y) =>
    y
      .positional('network', NETWORK_ARG)
      .option('peer', { type: 'string', describe: "on the hub: the peer whose link to end (its certificate goes on the CRL)" }),
  action: async (ctx, args) => {
    if (args.peer !== undefined) {
      const r = await removeHubLink(ctx, String(args.network), args.peer);
      return { json: { ...r, side: 'hub' }, text: `ended peer ${r.peer}'s link to ${r.network} (certificate revoked)` };
    }
    const r = removeLink(ctx, String(args.network));
    return { json: { ...r, side: 'peer' }, text: `removed the link and mirror of ${r.network}; the running daemon stops its openvpn and removes the bridge` };
  },
});

export const linkGroup: CliGroup = {
  command: 'link',
  describe: 'server-to-server links: one network across several servers',
  children: [linkExportCommand, linkAddCommand, linkShowCommand, linkRemoveCommand],
};
