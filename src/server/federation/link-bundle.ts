/**
 * The link bundle: what a hub hands a peer server so the peer can join one
 * of the hub's networks (DESIGN.md §1, topology 2). It is a signed envelope
 * (`mvpn-signed-v1`, src/bundle/envelope.ts) of type `link`, signed with the
 * hub's Ed25519 signing key, so the type-bound signature keeps it from ever
 * passing for a membership document or a bundle manifest and vice versa.
 * The peer verifies it with the hub's trust anchor before using any of it;
 * the payload is parsed like every signed document (duplicate keys refused,
 * strict schema: an unknown field is an error).
 *
 * It holds private keys (the peer's link key, the peer server's key, the
 * hub network's tls-crypt-v2 server key and the peer's API identity key), so
 * it is written 0600 and should travel like an exported bundle.
 *
 * Bundles of the previous release (`{"type":"mvpn-link", ...}`, their own
 * signature scheme) are refused with a message that says to re-export.
 */
import { z } from 'zod';
import { openEnvelope, sealEnvelope } from '../../bundle/envelope.ts';
import { limits } from '../../bundle/limits.ts';
import { parseWithSchema } from '../../bundle/schema.ts';
import type { Anchor, SigningKey } from '../../bundle/sign.ts';
import { parseJsonStrict } from '../../bundle/strict-json.ts';
import { DocumentError, isMvpnError } from '../../errors.ts';

const pem = (label: string) => z.string().max(64 * 1024).refine((s) => s.includes(`-----BEGIN ${label}`), `expected a PEM ${label}`);
const Remote = z.strictObject({ host: z.string().min(1).max(253), port: z.number().int().min(1).max(65535) });

export const LinkPayloadSchema = z.strictObject({
  schema: z.literal(1),
  kind: z.literal('mvpn-link'),
  created: z.string(),
  network: z.strictObject({
    id: z.string().regex(/^[a-z][a-z0-9-]{0,11}$/),
    name: z.string().min(1).max(128),
    /** tap: one L2 segment across the servers; tun: an L3 network across servers (src/server/routing), joined by its `backbone`. */
    dev_type: z.enum(['tap', 'tun']),
    proto: z.enum(['udp', 'tcp']),
    subnet: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/),
    /** The hub's port for the network; the peer uses the same one when it is free there, so one remote port fits both. */
    port: z.number().int().min(1).max(65535),
    server_cn: z.string().min(1).max(64),
    /** The network's LAN MTU (absent: a network without one, rendered without fragmentation); the peer's mirror and link client render from it (documents.ts dataPlane). */
    mtu: z.number().int().min(576).max(9000).optional(),
    /** The hub's fragment size (absent: no fragmentation); the link client and the mirror's server fragment the same. */
    fragment: z.number().int().min(576).max(9000).optional(),
    /** tun only: the hub's backbone server (the servers' segment; its hosts are the hub's remotes). */
    backbone: z.strictObject({ proto: z.enum(['udp', 'tcp']), port: z.number().int().min(1).max(65535) }).optional(),
  }).refine((n) => (n.dev_type === 'tun') === (n.backbone !== undefined), 'a tun network has a backbone, a tap network none'),
  hub: z.strictObject({
    remotes: z.array(Remote).min(1).max(8),
    api_url: z.string().regex(/^https:\/\/[^/\s]+$/),
    api_ca: pem('CERTIFICATE'),
  }),
  peer: z.strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,30}$/),
    cn: z.string().min(1).max(63),
    /** The peer's own address on the segment (allocated by the hub): on its bridge. */
    address: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/),
    link_cert: pem('CERTIFICATE'),
    link_key: pem('PRIVATE KEY'),
    link_tls_crypt_v2: pem('OpenVPN tls-crypt-v2 client key'),
    server_cert: pem('CERTIFICATE'),
    server_key: pem('PRIVATE KEY'),
    api_cert: pem('CERTIFICATE'),
    api_key: pem('PRIVATE KEY'),
  }),
  ca: pem('CERTIFICATE'),
  tls_crypt_v2_server_key: pem('OpenVPN tls-crypt-v2 server key'),
  crl: pem('X509 CRL'),
  crl_number: z.number().int().min(1),
  crl_next_update: z.number().int(),
});
export type LinkPayload = z.infer<typeof LinkPayloadSchema>;

export function sealLink(payload: LinkPayload, key: SigningKey): Buffer {
  return sealEnvelope('link', Buffer.from(JSON.stringify(payload), 'utf8'), key);
}

/** Verifies a link bundle against the hub's anchor and returns its payload. */
export function openLink(file: Uint8Array, anchor: Anchor): LinkPayload {
  let bytes: Buffer;
  try {
    bytes = openEnvelope(file, 'link', anchor);
  } catch (err) {
    if (isMvpnError(err) && err.code === 'MVPN_SCHEMA_INVALID' && isPreviousRelease(file)) {
      throw new DocumentError('MVPN_SCHEMA_INVALID', 'this link bundle was made by an earlier release of mvpn-client ({"type":"mvpn-link"}); link bundles are now signed envelopes (mvpn-signed-v1)', {
        hint: 're-export it at the hub with this release: mvpn-client server link remove NETWORK --peer PEER, then mvpn-client server link export NETWORK --peer PEER',
      });
    }
    if (isMvpnError(err) && err.code === 'MVPN_SIGNATURE_INVALID') {
      throw new DocumentError('MVPN_SIGNATURE_INVALID', `link bundle: ${err.message}`, {
        context: err.context,
        hint: "is it from the hub this anchor names? pass the hub's trust anchor (its <state-dir>/trust-anchor) with --hub-anchor",
      });
    }
    throw err;
  }
  return parseLinkPayload(bytes, 'link bundle payload');
}

/**
 * The one parser of a link payload: the signed bundle's (openLink) and the
 * copy a peer keeps in its store (links.ts linkPayload), which is read back
 * as untrusted JSON too — a row edited or written by another release fails
 * here with MVPN_SCHEMA_INVALID naming the field, not later as a crash.
 */
export function parseLinkPayload(bytes: Uint8Array, what: string): LinkPayload {
  return parseWithSchema(LinkPayloadSchema, parseJsonStrict(bytes, limits.envelopeBytes, limits.jsonDepth, what), what);
}

/** The previous release's link bundle: `type` "mvpn-link" and no envelope `format`. */
function isPreviousRelease(file: Uint8Array): boolean {
  try {
    const v = parseJsonStrict(file, limits.envelopeBytes, 4, 'link bundle') as Record<string, unknown> | null;
    return typeof v === 'object' && v !== null && v['type'] === 'mvpn-link' && !('format' in v);
  } catch {
    return false;
  }
}
