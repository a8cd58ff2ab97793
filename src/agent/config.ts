/**
 * The agent's config file (default /etc/mvpn-client/config.json).
 *
 * Design notes:
 * - Strict schema: an unknown or misspelt field is an error, not a silent
 *   default, because a node that quietly ignores `sourcs` never joins its
 *   networks. Every error names the field (`sources[1].url: ...`).
 * - The config may live in a directory a startup tarball unpacked (Emulab
 *   `install-tarfile`): `--config` may name that directory (then
 *   `config.json` inside it is read), and every relative path in the file
 *   (anchor file, server CA, token file, file sources, state dirs) resolves
 *   against the config file's directory, so the tarball is self-contained.
 * - Loading reads only the config file itself; the anchor, CA and node id are
 *   resolved by the daemon (see trust.ts, node-id.ts) so their errors also
 *   name the field but this module stays free of crypto.
 */
import { readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { parseJsonBounded } from '../util/json.ts';
import { checkMetricsListen } from '../util/listen.ts';
import { DEFAULT_CONFIG_PATH, DEFAULT_RUNTIME_DIR, DEFAULT_STATE_DIR } from './paths.ts';
import { viaProblem } from './via.ts';


const nonEmpty = z.string().min(1).max(4096);
const positiveSeconds = (max: number) => z.number().positive().max(max);

const nodeSourceSchema = z.union([
  z.strictObject({ id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'node id: letters, digits, ".", "_", "-", at most 63') }),
  z.strictObject({ file: nonEmpty }),
  z.strictObject({ hostname: z.union([z.literal(true), z.literal('short'), z.literal('full')]) }),
]);

const httpsUrl = z.string().max(2048).refine((u) => {
  try {
    return new URL(u).protocol === 'https:';
  } catch {
    return false;
  }
}, 'must be an https:// URL');

/** A TCP relay to dial instead of the URL's host; TLS still verifies the URL's host (see via.ts). */
const viaSchema = z.string().superRefine((v, ctx) => {
  const problem = viaProblem(v);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
});

const sourceSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('https'),
    url: httpsUrl,
    /** CA for this source only (a boss/CM with its own certificate); default: server_ca. */
    ca: nonEmpty.optional(),
    via: viaSchema.optional(),
  }),
  z.strictObject({ type: z.literal('file'), path: nonEmpty }),
]);

const fetchSchema = z.strictObject({
  request_timeout_s: positiveSeconds(600).default(15),
  deadline_s: positiveSeconds(3600).default(120),
  max_membership_bytes: z.int().min(1024).max(64 << 20).default(512 << 10),
  max_bundle_bytes: z.int().min(1024).max(256 << 20).default(2 << 20),
  retries: z.int().min(0).max(10).default(3),
});

const configSchema = z.strictObject({
  node: nodeSourceSchema,
  sources: z.array(sourceSchema).min(1, 'name at least one source').max(16),
  anchor: nonEmpty,
  server_ca: nonEmpty.optional(),
  enroll: z
    .strictObject({
      token_file: nonEmpty,
      /** Server to enroll with; default: the first https source's origin. */
      url: httpsUrl.optional(),
      /** Relay for the enrollment request; default: that source's `via` when `url` is not given. */
      via: viaSchema.optional(),
    })
    .optional(),
  state_dir: nonEmpty.default(DEFAULT_STATE_DIR),
  runtime_dir: nonEmpty.default(DEFAULT_RUNTIME_DIR),
  reconcile_interval_s: positiveSeconds(86_400).min(5).default(300),
  /** Fraction of the interval that is randomised, so a testbed does not poll in lockstep. */
  reconcile_jitter: z.number().min(0).max(1).default(0.2),
  /** How long `run` waits for every network to connect or fail before READY=1. */
  ready_timeout_s: positiveSeconds(3600).default(90),
  openvpn: nonEmpty.default('/usr/sbin/openvpn'),
  /** Prometheus text on a TCP listener ("ADDR:PORT"); absent: none (the status socket's GET /v1/metrics is always there). */
  metrics_listen: z.string().min(3).max(64).optional(),
  /** Lets metrics_listen be a non-loopback address (anyone who reaches it reads the node's networks and errors). */
  metrics_allow_remote: z.boolean().default(false),
  fetch: fetchSchema.default({
    request_timeout_s: 15,
    deadline_s: 120,
    max_membership_bytes: 512 << 10,
    max_bundle_bytes: 2 << 20,
    retries: 3,
  }),
});

export type RawAgentConfig = z.infer<typeof configSchema>;

export type NodeIdSource = { readonly id: string } | { readonly file: string } | { readonly hostname: true | 'short' | 'full' };

export type SourceConfig =
  | {
      readonly type: 'https';
      readonly url: string;
      readonly ca?: string;
      /** `HOST:PORT` of a TCP relay dialled instead of the URL's host (TLS still for the URL's host). */
      readonly via?: string;
    }
  | { readonly type: 'file'; readonly path: string };

export interface FetchLimits {
  readonly requestTimeoutMs: number;
  readonly deadlineMs: number;
  readonly maxMembershipBytes: number;
  readonly maxBundleBytes: number;
  readonly retries: number;
}

/**
 * A validated config with every path absolute. `anchor` and `serverCa` stay
 * as written (literal or path) until trust.ts resolves them.
 */
export interface AgentConfig {
  readonly path: string;
  readonly node: NodeIdSource;
  readonly sources: readonly SourceConfig[];
  /** `ed25519:...` literal, or an absolute path to a file holding it. */
  readonly anchor: string;
  /** PEM literal or absolute path; pinned CA of the https sources. */
  readonly serverCa?: string;
  readonly enroll?: { readonly tokenFile: string; readonly url: string; readonly via?: string };
  readonly stateDir: string;
  readonly runtimeDir: string;
  readonly reconcileIntervalMs: number;
  readonly reconcileJitter: number;
  readonly readyTimeoutMs: number;
  readonly openvpnPath: string;
  readonly fetch: FetchLimits;
  /** The metrics listener, parsed; absent: off (prom-client is then loaded only for a `status --prometheus`). */
  readonly metricsListen?: { readonly host: string; readonly port: number };
}

const MAX_CONFIG_BYTES = 256 * 1024;

function isPemOrLiteral(v: string): boolean {
  return v.includes('-----BEGIN') || v.startsWith('ed25519:');
}

/** Validate parsed JSON; `baseDir` anchors relative paths. Pure. */
export function parseAgentConfig(json: unknown, path: string): AgentConfig {
  const r = configSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const field = issue.path.length === 0 ? '(top level)' : formatPath(issue.path);
    throw new ConfigError('MVPN_CONFIG_INVALID', `config ${path}: ${field}: ${issue.message}`, {
      context: { path, field, issues: r.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`) },
      hint: 'fix the field named above; the agent does not start with a config it cannot use as written',
    });
  }
  const c = r.data;
  const base = dirname(path);
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(base, p));
  const https = c.sources.find((s) => s.type === 'https');
  let enroll: AgentConfig['enroll'];
  if (c.enroll) {
    const url = c.enroll.url ?? (https ? new URL(https.url).origin : undefined);
    if (url === undefined) {
      throw new ConfigError('MVPN_CONFIG_INVALID', `config ${path}: enroll.url: needed when no https source is configured`, {
        context: { path, field: 'enroll.url' },
      });
    }
    // The default URL is the source's origin, so it is reached the way that source is.
    const via = c.enroll.via ?? (c.enroll.url === undefined ? https?.via : undefined);
    enroll = { tokenFile: abs(c.enroll.token_file), url, ...(via === undefined ? {} : { via }) };
  }
  return {
    path,
    ...(c.metrics_listen === undefined ? {} : { metricsListen: checkMetricsListen(c.metrics_listen, { allowRemote: c.metrics_allow_remote, portZero: false, where: `config ${path}` }) }),
    node: 'file' in c.node ? { file: abs(c.node.file) } : c.node,
    sources: c.sources.map((s): SourceConfig => {
      if (s.type === 'file') return { type: 'file', path: abs(s.path) };
      return {
        type: 'https',
        url: s.url,
        ...(s.ca === undefined ? {} : { ca: isPemOrLiteral(s.ca) ? s.ca : abs(s.ca) }),
        ...(s.via === undefined ? {} : { via: s.via }),
      };
    }),
    anchor: isPemOrLiteral(c.anchor) ? c.anchor : abs(c.anchor),
    ...(c.server_ca === undefined ? {} : { serverCa: isPemOrLiteral(c.server_ca) ? c.server_ca : abs(c.server_ca) }),
    ...(enroll ? { enroll } : {}),
    stateDir: abs(c.state_dir),
    runtimeDir: abs(c.runtime_dir),
    reconcileIntervalMs: Math.round(c.reconcile_interval_s * 1000),
    reconcileJitter: c.reconcile_jitter,
    readyTimeoutMs: Math.round(c.ready_timeout_s * 1000),
    openvpnPath: abs(c.openvpn),
    fetch: {
      requestTimeoutMs: Math.round(c.fetch.request_timeout_s * 1000),
      deadlineMs: Math.round(c.fetch.deadline_s * 1000),
      maxMembershipBytes: c.fetch.max_membership_bytes,
      maxBundleBytes: c.fetch.max_bundle_bytes,
      retries: c.fetch.retries,
    },
  };
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out;
}

/**
 * Read and validate the config. `path` may be the file or the directory a
 * startup tarball unpacked into (then `config.json` inside it).
 */
export async function loadAgentConfig(path: string = DEFAULT_CONFIG_PATH): Promise<AgentConfig> {
  let file = resolve(path);
  try {
    if ((await stat(file)).isDirectory()) file = join(file, 'config.json');
  } catch {
    // reported below when the read fails
  }
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(
      code === 'ENOENT' ? 'MVPN_CONFIG_MISSING' : 'MVPN_CONFIG_INVALID',
      `cannot read config ${file}: ${(err as Error).message}`,
      { context: { path: file }, hint: 'write the agent config there or pass --config PATH (a file or the directory holding config.json)', cause: err },
    );
  }
  let json: unknown;
  try {
    json = parseJsonBounded(bytes, { maxBytes: MAX_CONFIG_BYTES, maxDepth: 8 }, `config ${file}`);
  } catch (err) {
    throw new ConfigError('MVPN_CONFIG_INVALID', (err as Error).message, { context: { path: file }, cause: err });
  }
  return parseAgentConfig(json, file);
}
