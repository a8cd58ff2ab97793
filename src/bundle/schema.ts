/**
 * Schemas for every document that crosses the trust boundary (DESIGN.md §4,
 * wire formats in ARCHITECTURE.md). Every object is strict (an unknown field
 * is an error: it may be a critical field this version does not understand),
 * every string and array is bounded, every integer is a safe integer, and
 * values that end up in file names or openvpn config lines are restricted to
 * characters that cannot change their meaning there.
 *
 * Parse failures become MVPN_SCHEMA_INVALID with the path of the first bad
 * field, e.g. `networks[0].bundle.sha256: expected 64 lower-case hex digits`.
 */
import { isIP, isIPv4 } from 'node:net';
import { z } from 'zod';
import { DocumentError } from '../errors.ts';
import { MAX_PUSHED_ROUTES, pushedRoutePrefixProblem } from '../openvpn/push-policy.ts';
import { limits } from './limits.ts';

/** Network ids become interface names (`mv-<id>`, `ms-<id>`): at most 15 characters. */
export const NETWORK_ID_RE = /^[a-z][a-z0-9-]{0,11}$/;
/** Node ids become certificate CNs and file names. */
export const NODE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** The server certificate CN, written into `verify-x509-name`. */
export const SERVER_CN_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** AEAD data-channel ciphers openvpn 2.6 negotiates; nothing without authentication. */
export const AEAD_CIPHERS = ['AES-256-GCM', 'AES-128-GCM', 'AES-192-GCM', 'CHACHA20-POLY1305'] as const;

/** Files a bundle may carry besides manifest.json and manifest.sig. */
export const BUNDLE_FILES = ['network.json', 'ca.crt', 'node.crt', 'tls-crypt-v2.key', 'crl.pem', 'node.key', 'ca-roll.crt'] as const;
export type BundleFileName = (typeof BUNDLE_FILES)[number];
export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_SIG_FILE = 'manifest.sig';

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lower-case hex digits (a sha256)');
const nodeId = z.string().regex(NODE_ID_RE, `expected a node id matching ${NODE_ID_RE.source}`);
const networkId = z.string().regex(NETWORK_ID_RE, `expected a network id matching ${NETWORK_ID_RE.source}`);
/** Human-readable names: no control, format (bidi) or private-use characters. */
const displayName = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[^\p{C}]+$/u, 'expected printable characters only');
/** RFC 3339 UTC timestamps (`Z` only), years 2000-9999, that are real dates. */
const timestamp = z.iso.datetime().refine((s) => {
  const t = Date.parse(s);
  return Number.isFinite(t) && new Date(t).toISOString().slice(0, 10) === s.slice(0, 10) && s >= '2000' && s < '9999';
}, 'expected a real UTC timestamp like 2026-01-31T12:00:00Z');
const version = z.int().min(1);

const DNS_NAME_RE = /^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** An IPv4/IPv6 literal or a DNS name; never whitespace, quotes, zone ids or an all-numeric non-address. */
export function isRemoteHost(host: string): boolean {
  if (host.length === 0 || host.length > 253) return false;
  if (host.includes('%')) return false;
  if (isIP(host) !== 0) return true;
  if (!DNS_NAME_RE.test(host)) return false;
  // "1.2.3" or "300.1.1.1" are not names; inet_aton would read them as odd addresses.
  const last = host.slice(host.lastIndexOf('.') + 1);
  return !/^[0-9]+$/.test(last);
}

const ipv4 = z.string().refine((s) => isIPv4(s) && !/(^|\.)0\d/.test(s), 'expected a dotted-quad IPv4 address');
const ipv4Cidr = z.string().refine((s) => {
  const m = /^([0-9.]+)\/([0-9]{1,2})$/.exec(s);
  return m !== null && isIPv4(m[1]!) && !/(^|\.)0\d/.test(m[1]!) && Number(m[2]) >= 1 && Number(m[2]) <= 32;
}, 'expected an IPv4 address with prefix length, like 198.18.0.10/24');

const remote = z.strictObject({
  host: z.string().max(253).refine(isRemoteHost, 'expected an IP address or DNS name'),
  port: z.int().min(1).max(65535),
});

const keepalive = z
  .strictObject({ interval: z.int().min(1).max(3600), timeout: z.int().min(2).max(86400) })
  .refine((k) => k.timeout > k.interval, { message: 'timeout must be longer than interval', path: ['timeout'] });

const pushedRoutePrefix = z.string().max(18).superRefine((s, ctx) => {
  const problem = pushedRoutePrefixProblem(s);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
});

/**
 * The `network.json` fields an operator sets per network that the server
 * copies as they are from its store (NetworkRecord.options) into every
 * node's spec, and the client renderer reads: a new field of this kind is
 * added here, validated by this schema when the network is created, and
 * reaches the rendered config without a copy in between (ARCHITECTURE.md,
 * "Adding a field to network.json").
 */
export const NetworkOptionsSchema = z.strictObject({
  /** The LAN's interface MTU (`tun-mtu`); absent: openvpn's 1500. */
  mtu: z.int().min(576).max(9000).optional(),
  /**
   * The largest underlay IP packet openvpn sends, headers included (`fragment N mtu`
   * and `mssfix N mtu`): larger tunnel packets are split by openvpn itself and
   * put back together by the peer, so no path MTU of at least N, black holes
   * included, loses a frame. UDP only; the server renders the same value, so it
   * is part of the signed spec (both ends must agree). Absent: no fragmentation.
   */
  fragment: z.int().min(576).max(9000).optional(),
});
export type NetworkOptions = z.infer<typeof NetworkOptionsSchema>;

/**
 * The structured network description (`network.json`) the agent renders its
 * openvpn config from. `extra_options` strings are only bounded here; the
 * allow-list in src/openvpn/options.ts judges them so the error names the
 * directive. `allow_pushed_routes` is true exactly when `pushed_routes`
 * lists the prefixes the server may push routes for (push-policy.ts).
 */
export const NetworkSpecSchema = z.strictObject({
  schema: z.literal(1),
  id: networkId,
  name: displayName,
  dev_type: z.enum(['tap', 'tun']),
  proto: z.enum(['udp', 'tcp']),
  remotes: z.array(remote).min(1).max(8),
  server_cn: z.string().regex(SERVER_CN_RE, `expected a server CN matching ${SERVER_CN_RE.source}`),
  address: z.strictObject({ ipv4: ipv4Cidr }),
  server_tunnel_ip: ipv4.optional(),
  ...NetworkOptionsSchema.shape,
  ciphers: z
    .array(z.enum(AEAD_CIPHERS))
    .min(1)
    .max(AEAD_CIPHERS.length)
    .refine((c) => new Set(c).size === c.length, 'a cipher is listed twice'),
  keepalive,
  allow_pushed_routes: z.boolean(),
  pushed_routes: z
    .array(pushedRoutePrefix)
    .min(1)
    .max(MAX_PUSHED_ROUTES)
    .refine((r) => new Set(r).size === r.length, 'a prefix is listed twice')
    .optional(),
  extra_options: z.array(z.array(z.string().max(256)).min(1).max(8)).max(32).optional(),
})
  .refine((s) => s.allow_pushed_routes === (s.pushed_routes !== undefined), {
    message: 'allow_pushed_routes must be true exactly when pushed_routes lists the prefixes routes may be pushed for',
    path: ['pushed_routes'],
  })
  .refine((s) => s.fragment === undefined || s.proto === 'udp', { message: 'fragment is for UDP networks only (openvpn fragments UDP datagrams)', path: ['fragment'] });
export type NetworkSpec = z.infer<typeof NetworkSpecSchema>;

/** manifest.json: what the bundle is for and the sha256 of every other file. */
export const ManifestSchema = z.strictObject({
  schema: z.literal(1),
  node: nodeId,
  network: networkId,
  version,
  created: timestamp,
  expires: timestamp,
  key_origin: z.enum(['node', 'central']),
  files: z.partialRecord(z.enum(BUNDLE_FILES), sha256Hex),
});
export type Manifest = z.infer<typeof ManifestSchema>;

export const MembershipNetworkSchema = z.strictObject({
  id: networkId,
  name: displayName,
  bundle: z.strictObject({
    version,
    sha256: sha256Hex,
    size: z.int().min(1).max(limits.bundleBytes),
    url: z
      .string()
      .min(1)
      .max(1024)
      .regex(/^[\x21-\x7e]+$/, 'expected printable ASCII without spaces'),
  }),
});
export type MembershipNetwork = z.infer<typeof MembershipNetworkSchema>;

/** The membership document (DESIGN.md §4): which networks a node is in, at which bundle versions. */
export const MembershipDocSchema = z.strictObject({
  node: nodeId,
  serial: z.int().min(0),
  issued_at: timestamp,
  expires_at: timestamp,
  networks: z.array(MembershipNetworkSchema).max(limits.networks),
});
export type MembershipDoc = z.infer<typeof MembershipDocSchema>;

export const SIGNED_TYPES = ['membership', 'manifest', 'anchor-rotation', 'link'] as const;
const base64 = (max: number) =>
  z
    .string()
    .max(max)
    .regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, 'expected canonical base64');

/** The signed envelope (`mvpn-signed-v1`, ARCHITECTURE.md). `signature` is optional here so its absence gets its own code. */
export const EnvelopeSchema = z.strictObject({
  format: z.literal('mvpn-signed-v1'),
  type: z.enum(SIGNED_TYPES),
  key_id: z.string().regex(/^[0-9a-f]{16}$/, 'expected 16 lower-case hex digits'),
  payload: base64(limits.envelopeBytes),
  signature: base64(128).optional(),
  /** Further signatures over the same payload; only an anchor rotation uses one (the new key's). */
  co_signatures: z
    .array(z.strictObject({ key_id: z.string().regex(/^[0-9a-f]{16}$/, 'expected 16 lower-case hex digits'), signature: base64(128) }))
    .max(4)
    .optional(),
});
export type Envelope = z.infer<typeof EnvelopeSchema>;

const anchorLine = z.string().regex(/^ed25519:[A-Za-z0-9+/]{43}=$/, 'expected "ed25519:<base64 of 32 bytes>"');

/**
 * The payload of an `anchor-rotation` envelope (TUF's root rotation, scaled
 * down): link `version` of the chain (the first anchor is version 1), the
 * anchor it retires, the anchor it makes current, and the membership serial
 * from which documents signed by the new key are accepted.
 */
export const RotationStatementSchema = z.strictObject({
  version: z.int().min(2),
  previous: anchorLine,
  anchor: anchorLine,
  serial_floor: z.int().min(0),
  issued_at: timestamp,
});
export type RotationStatement = z.infer<typeof RotationStatementSchema>;

/** The chain as served (`/v1/anchor-chain.json`, or `anchor-chain.json` beside a file source): envelopes in version order. */
export const AnchorChainSchema = z.strictObject({
  format: z.literal('mvpn-anchor-chain-v1'),
  statements: z.array(base64(8 * 1024)).max(64),
});
export type AnchorChain = z.infer<typeof AnchorChainSchema>;

/** Formats a zod issue path as `networks[0].bundle.sha256`. */
function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out === '' ? '(top level)' : out;
}

/**
 * Validates `value` against `schema`; throws MVPN_SCHEMA_INVALID naming the
 * first bad field. The result has the schema's key order, so serialising it
 * gives the same bytes for the same content.
 */
export function parseWithSchema<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  let field = formatPath(issue.path);
  let message = issue.message;
  if (issue.code === 'unrecognized_keys') {
    field = issue.keys.map((k) => formatPath([...issue.path, k])).join(', ');
    message = 'unknown field (not part of this format version)';
  }
  throw new DocumentError('MVPN_SCHEMA_INVALID', `${what}: ${field}: ${message}`, {
    context: { document: what, field, issues: r.error.issues.length },
  });
}
