/**
 * A second (third, …) server host on the same PostgreSQL store (issue 21).
 *
 * What a joining host needs that the store does not hold: the signing key
 * (its public half is the nodes' trust anchor: every host signs the same
 * documents), the API CA certificate and key (every host verifies nodes'
 * API certificates and issues them at enrollment; each host gets its own
 * listener certificate from it), and the settings every host must share
 * (pool, port range, validities, the store). The networks' CAs, keys and
 * CRLs are in the store already.
 *
 * Delivery (the admin channel): `server join-material` prints them as one
 * JSON document on stdout, to be piped by the operator over ssh into
 * `server init --join=-` on the new host. The material never passes the
 * HTTPS API (a node-facing service must not be able to hand out the signing
 * key), nor the store (a database login would then be a signing key). It
 * is as secret as signing.key: the pipe holds it in memory only.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { defaultJsonLimits, parseJsonBounded } from '../util/json.ts';
import { loadServerConfig, ServerConfigSchema, type ServerConfig } from './config.ts';
import { Bumps, type ServerContext } from './ops/context.ts';
import type { HostRecord, Remote } from './store/store.ts';

export const JoinMaterialSchema = z.strictObject({
  type: z.literal('mvpn-join'),
  schema: z.literal(1),
  signing_key: z.string().min(1).max(8192),
  trust_anchor: z.string().min(1).max(512),
  /** anchor-chain.json when the anchor was rotated, as it is. */
  anchor_chain: z.string().max(1_000_000).optional(),
  api_ca_cert: z.string().min(1).max(16_384),
  api_ca_key: z.string().min(1).max(16_384),
  /** The settings every host of the store shares. */
  shared: ServerConfigSchema.pick({
    pool: true,
    subnet_prefix: true,
    port_range: true,
    enroll_key_algs: true,
    crl_days: true,
    membership_days: true,
    cert_days: true,
    store: true,
  }),
});
export type JoinMaterial = z.infer<typeof JoinMaterialSchema>;

/** `server join-material`: what a host joining this server's store needs (see the module comment). Only a PostgreSQL store can be shared. */
export async function joinMaterial(stateDir: string): Promise<JoinMaterial> {
  const { config, paths } = await loadServerConfig(stateDir);
  if (config.store === undefined) {
    throw new ConfigError('MVPN_CONFIG_INVALID', 'this server keeps its state in SQLite (store.db); only a PostgreSQL store can be shared by several hosts', {
      hint: 'several hosts need a server initialised with --store-url or --store-file',
    });
  }
  if (existsSync(paths.signingKeyNext) || existsSync(paths.apiCaRollState)) {
    throw new ConfigError('MVPN_CONFIG_INVALID', 'a trust anchor rotation or an API CA roll is in progress on this host; finish it before another host joins', {
      hint: 'run the join once `server anchor rotate` / `server api roll-ca` has finished',
    });
  }
  const read = (p: string) => readFile(p, 'utf8');
  return {
    type: 'mvpn-join',
    schema: 1,
    signing_key: await read(paths.signingKey),
    trust_anchor: (await read(paths.trustAnchor)).trim(),
    ...(existsSync(paths.anchorChain) ? { anchor_chain: await read(paths.anchorChain) } : {}),
    api_ca_cert: await read(paths.apiCaCert),
    api_ca_key: await read(paths.apiCaKey),
    shared: {
      pool: config.pool,
      subnet_prefix: config.subnet_prefix,
      port_range: config.port_range,
      enroll_key_algs: config.enroll_key_algs,
      crl_days: config.crl_days,
      membership_days: config.membership_days,
      cert_days: config.cert_days,
      store: config.store,
    },
  };
}

export function parseJoinMaterial(text: string, source: string): JoinMaterial {
  const parsed = JoinMaterialSchema.safeParse(parseJsonBounded(text, { ...defaultJsonLimits, maxBytes: 2_000_000 }, source));
  if (!parsed.success) {
    throw new ConfigError('MVPN_CONFIG_INVALID', `${source} is not join material: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, {
      hint: 'pipe the output of `mvpn-client server join-material` on an existing host into `server init --join=-`',
    });
  }
  return parsed.data;
}

/** This host's remotes: its config's names and addresses, in order. */
export function hostRemotes(config: Pick<ServerConfig, 'hostnames' | 'addresses'>): Remote[] {
  return [...config.hostnames, ...config.addresses].map((host) => ({ host }));
}

/**
 * The default remotes of a new network and whether it fails over: with
 * several hosts on the store, every host's remotes in join order.
 */
export function networkHosts(hosts: readonly HostRecord[], fallback: readonly Remote[]): { remotes: Remote[]; failover: boolean } {
  if (hosts.length < 2) return { remotes: [...fallback], failover: false };
  const seen = new Set<string>();
  const remotes = hosts.flatMap((h) => h.remotes).filter((r) => !seen.has(r.host) && seen.add(r.host));
  return { remotes, failover: true };
}

/**
 * Registers `host` (refusing an id already taken) and makes every network
 * of the store a failover network whose remotes include the new host's:
 * each member's bundle gets a new version (its remotes and keepalive
 * changed), so nodes learn the new remote with their next update.
 */
export function addHost(ctx: ServerContext, host: HostRecord): void {
  ctx.store.write((tx) => {
    if (tx.listHosts().some((h) => h.id === host.id)) {
      throw new ConfigError('MVPN_ALREADY_EXISTS', `a host with id ${host.id} already serves this store`, { hint: 'give this host another --host-id' });
    }
    tx.putHost(host);
    const bumps = new Bumps();
    for (const net of tx.listNetworks()) {
      if (net.state === 'deleted' || net.kind !== 'own') continue;
      const known = new Set(net.remotes.map((r) => r.host));
      const remotes = [...net.remotes, ...host.remotes.filter((r) => !known.has(r.host))].slice(0, 8);
      tx.updateNetwork(net.id, { remotes, failover: true, updatedAt: host.joinedAt });
      bumps.network(net.id);
    }
    bumps.apply(tx, host.joinedAt, ctx.config.membership_days);
  });
}
