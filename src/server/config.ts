/**
 * The server's state directory and its config.json.
 *
 * Layout (everything under the state directory, 0700):
 *   config.json           this config (0600)
 *   signing.key           Ed25519 signing key, PKCS#8 PEM (0600)
 *   trust-anchor          "ed25519:<base64>" — goes into nodes' startup tarballs (the current anchor)
 *   anchor-chain.json     rotation statements since the first anchor (after `server anchor rotate`)
 *   api/ca.crt            API CA certificate — goes into startup tarballs (agents pin it)
 *   api/ca.key            API CA key (0600)
 *   api/server.crt|key    the HTTPS listener's certificate and key
 *   store.db              SQLite store (0600) with every network's CA, keys, nodes, tokens
 *   networks/<id>/        rendered openvpn server config, certs, keys, CRL, ccd/ (written by the daemon)
 * The runtime directory (management sockets, pid files, status snapshot) is
 * `runtime_dir` in the config; `server init` sets it to /run/mvpn-server for
 * the default state directory and to <state>/run otherwise.
 *
 * Address pool: the default 100.96.0.0/12 lies inside the shared address
 * space of RFC 6598 (100.64.0.0/10), which testbeds rarely route and which
 * does not collide with the RFC 1918 ranges experiments use themselves.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { isRemoteHost } from '../bundle/schema.ts';
import { parseJsonBounded } from '../util/json.ts';
import { checkMetricsListen, parseListen } from '../util/listen.ts';
import { parseCidr, parsePortRange } from './alloc.ts';

// The one listener parser, also the agent's; server modules import it from here.
export { parseListen };

export const DEFAULT_STATE_DIR = '/var/lib/mvpn-server';
export const DEFAULT_RUNTIME_DIR = '/run/mvpn-server';
export const DEFAULT_POOL = '100.96.0.0/12';
export const DEFAULT_PORT_RANGE = '1194-1593';
export const DEFAULT_LISTEN = '0.0.0.0:8443';
/** Prometheus metrics; loopback so that only the host's own Prometheus (or a proxy the operator sets up) sees them. */
export const DEFAULT_METRICS_LISTEN = '127.0.0.1:9474';

const cidr = z.string().refine((s) => {
  try {
    parseCidr(s);
    return true;
  } catch {
    return false;
  }
}, 'expected an IPv4 network like 100.96.0.0/12 (no host bits)');

const portRange = z.string().refine((s) => {
  try {
    parsePortRange(s);
    return true;
  } catch {
    return false;
  }
}, 'expected a port range like 1194-1593');

export const ServerConfigSchema = z.strictObject({
  schema: z.literal(1),
  /** HTTPS API listener, "ADDR:PORT" ("[v6]:PORT" for IPv6). */
  listen: z.string().min(3).max(64),
  /** Names and addresses in the listener's certificate; also the default remotes of new networks, in order. */
  hostnames: z.array(z.string().refine(isRemoteHost, 'expected a DNS name')).max(16),
  addresses: z.array(z.string().refine((s) => isIP(s) !== 0, 'expected an IP address')).max(16),
  /** Address openvpn servers bind to (`local`); absent: all addresses. */
  vpn_listen: z
    .string()
    .refine((s) => isIP(s) !== 0, 'expected an IP address')
    .optional(),
  pool: cidr,
  subnet_prefix: z.int().min(8).max(30),
  port_range: portRange,
  runtime_dir: z.string().min(1).max(80),
  openvpn_path: z.string().min(1).max(4096),
  /** Key types a node may enroll with (its CSR). */
  enroll_key_algs: z.array(z.enum(['ec-p256', 'rsa-2048'])).min(1),
  /** CRL validity; the daemon re-issues a CRL once less than half of it is left. */
  crl_days: z.int().min(2).max(365),
  /** Membership document validity; re-signed (new serial) once less than half is left. */
  membership_days: z.int().min(2).max(365),
  /** Node certificate validity. */
  cert_days: z.int().min(1).max(3650),
  /**
   * Prometheus metrics listener (plain HTTP, `GET /metrics`), never the API's.
   * Absent: DEFAULT_METRICS_LISTEN; null: no metrics (prom-client is then never loaded).
   */
  metrics_listen: z.string().min(3).max(64).nullable().optional(),
  /** Lets metrics_listen be a non-loopback address (anyone who reaches it reads the networks, nodes and errors); the agent's option of the same name. */
  metrics_allow_remote: z.boolean().optional(),
  /**
   * This host's id in the store's `hosts` (several hosts on one PostgreSQL
   * store, `server init --join`); absent: "primary" (src/server/lease.ts).
   */
  host_id: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'expected a host id: lowercase letters, digits and dashes, at most 32')
    .optional(),
  /** Opt-in per-node series (label `node`): one series per connected client, so off by default. */
  metrics_per_client: z.boolean().optional(),
  /**
   * Where the state store lives. Absent: store.db (SQLite) in the state
   * directory. `postgres`: a PostgreSQL database, by `url` or by
   * `connection_file` (a file holding the URL, password included, readable
   * only by its owner, the user the server runs as); src/server/store/open.ts.
   */
  store: z
    .strictObject({
      postgres: z.union([
        z.strictObject({ url: z.string().regex(/^postgres(ql)?:\/\//, 'expected a postgresql:// URL').max(4096) }),
        z.strictObject({ connection_file: z.string().startsWith('/', 'expected an absolute path').max(4096) }),
      ]),
    })
    .optional(),
});
export type ServerConfig = z.infer<typeof ServerConfigSchema>;

export interface ServerPaths {
  readonly stateDir: string;
  readonly config: string;
  readonly signingKey: string;
  readonly trustAnchor: string;
  /** Rotation statements, in version order (server/anchor-rotation.ts); absent until the first rotation. */
  readonly anchorChain: string;
  /** The next signing key while a rotation is being committed. */
  readonly signingKeyNext: string;
  readonly apiDir: string;
  readonly apiCaCert: string;
  readonly apiCaKey: string;
  readonly apiCert: string;
  readonly apiKey: string;
  /** The previous API CA, during an API CA roll's overlap only (ops/api-ca-roll.ts). */
  readonly apiCaPrev: string;
  /** The cross-certificate of the last API CA roll, then the CA it replaced. */
  readonly apiCaRoll: string;
  /** The running API CA roll: when it started, when its overlap ends. */
  readonly apiCaRollState: string;
  readonly store: string;
  readonly networksDir: string;
}

export function serverPaths(stateDir: string): ServerPaths {
  const apiDir = join(stateDir, 'api');
  return {
    stateDir,
    config: join(stateDir, 'config.json'),
    signingKey: join(stateDir, 'signing.key'),
    trustAnchor: join(stateDir, 'trust-anchor'),
    anchorChain: join(stateDir, 'anchor-chain.json'),
    signingKeyNext: join(stateDir, 'signing.key.next'),
    apiDir,
    apiCaCert: join(apiDir, 'ca.crt'),
    apiCaKey: join(apiDir, 'ca.key'),
    apiCert: join(apiDir, 'server.crt'),
    apiKey: join(apiDir, 'server.key'),
    apiCaPrev: join(apiDir, 'ca-prev.crt'),
    apiCaRoll: join(apiDir, 'ca-roll.crt'),
    apiCaRollState: join(apiDir, 'roll.json'),
    store: join(stateDir, 'store.db'),
    networksDir: join(stateDir, 'networks'),
  };
}

export function networkDir(paths: ServerPaths, id: string): string {
  return join(paths.networksDir, id);
}

export function defaultConfig(stateDir: string): ServerConfig {
  return {
    schema: 1,
    listen: DEFAULT_LISTEN,
    hostnames: [],
    addresses: [],
    pool: DEFAULT_POOL,
    subnet_prefix: 24,
    port_range: DEFAULT_PORT_RANGE,
    runtime_dir: stateDir === DEFAULT_STATE_DIR ? DEFAULT_RUNTIME_DIR : join(stateDir, 'run'),
    openvpn_path: 'openvpn',
    enroll_key_algs: ['ec-p256'],
    crl_days: 7,
    membership_days: 7,
    cert_days: 825,
  };
}

/** Where metrics are served, or null when they are off. */
export function metricsListen(config: Pick<ServerConfig, 'metrics_listen'>): string | null {
  return config.metrics_listen === undefined ? DEFAULT_METRICS_LISTEN : config.metrics_listen;
}

/** Validates a config object (also what `server init` is about to write). */
export function checkConfig(value: unknown, where: string): ServerConfig {
  const r = ServerConfigSchema.safeParse(value);
  if (r.success) {
    parseListen(r.data.listen);
    const metrics = metricsListen(r.data);
    if (metrics !== null) {
      const m = checkMetricsListen(metrics, { allowRemote: r.data.metrics_allow_remote === true, portZero: true, where });
      const a = parseListen(r.data.listen);
      if (m.port !== 0 && m.port === a.port && (m.host === a.host || a.host === '0.0.0.0' || a.host === '::')) {
        throw new ConfigError('MVPN_CONFIG_INVALID', `${where}: metrics_listen ${metrics} is the API listener; metrics never share the public listener`, {
          context: { path: where, field: 'metrics_listen' },
          hint: `use another port, e.g. the default ${DEFAULT_METRICS_LISTEN}`,
        });
      }
    }
    return r.data;
  }
  const issue = r.error.issues[0]!;
  const field = issue.path.join('.') || '(top level)';
  const message = issue.code === 'unrecognized_keys' ? `unknown field(s) ${issue.keys.join(', ')}` : issue.message;
  throw new ConfigError('MVPN_CONFIG_INVALID', `${where}: ${field}: ${message}`, { context: { path: where, field } });
}

/**
 * The config of an initialised state directory. Every server subcommand but
 * `init` starts here, so "not initialised" is one clear message.
 */
export async function loadServerConfig(stateDir: string): Promise<{ config: ServerConfig; paths: ServerPaths }> {
  const paths = serverPaths(stateDir);
  const missing = () =>
    new ConfigError('MVPN_CONFIG_MISSING', `${stateDir} is not an initialised server state directory (no config.json or store.db)`, {
      context: { stateDir },
      hint: `run \`mvpn-client server init --state-dir ${stateDir}\` first, or pass the right --state-dir`,
    });
  if (!existsSync(paths.config)) throw missing();
  const raw = parseJsonBounded(await readFile(paths.config), { maxBytes: 64 * 1024, maxDepth: 8 }, paths.config);
  const config = checkConfig(raw, paths.config);
  // A PostgreSQL store's absence shows when it is opened (src/server/store/open.ts).
  if (config.store === undefined && !existsSync(paths.store)) throw missing();
  return { config, paths };
}
