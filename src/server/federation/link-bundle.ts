/**
 * The link bundle: what a hub hands a peer server so the peer can join one
 * of the hub's networks (DESIGN.md §1, topology 2). One JSON file:
 * `{ "type": "mvpn-link", "payload": <base64 JSON>, "signature": <base64> }`,
 * signed with the hub's Ed25519 signing key over a domain-separated message
 * ("mvpn-link-v1\0" + payload), so it can never pass for a membership
 * document or a bundle manifest and vice versa. The peer verifies it with the
 * hub's trust anchor before using any of it.
 *
 * It holds private keys (the peer's link key, the peer server's key, the
 * hub network's tls-crypt-v2 server key and the peer's API identity key), so
 * it is written 0600 and should travel like an exported bundle.
 */
import { sign, verify } from 'node:crypto';
import { z } from 'zod';
import { DocumentError } from '../../errors.ts';
import type { Anchor, SigningKey } from '../../bundle/sign.ts';
import { parseJsonBounded } from '../../util/json.ts';

const DOMAIN = Buffer.from('mvpn-link-v1\0', 'utf8');
const MAX_BYTES = 256 * 1024;

const pem = (label: string) => z.string().max(64 * 1024).refine((s) => s.includes(`-----BEGIN ${label}`), `expected a PEM ${label}`);
const Remote = z.object({ host: z.string().min(1).max(253), port: z.number().int().min(1).max(65535) });

export const LinkPayloadSchema = z.object({
  schema: z.literal(1),
  kind: z.literal('mvpn-link'),
  created: z.string(),
  network: z.object({
    id: z.string().regex(/^[a-z][a-z0-9-]{0,11}$/),
    name: z.string().min(1).max(128),
    dev_type: z.literal('tap'),
    proto: z.enum(['udp', 'tcp']),
    subnet: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/),
    /** The hub's port for the network; the peer uses the same one when it is free there, so one remote port fits both. */
    port: z.number().int().min(1).max(65535),
    server_cn: z.string().min(1).max(64),
    /** The network's LAN MTU (absent: a network without one, rendered without fragmentation); the peer's mirror and link client render from it (documents.ts dataPlane). */
    mtu: z.number().int().min(576).max(9000).optional(),
  }),
  hub: z.object({
    remotes: z.array(Remote).min(1).max(8),
    api_url: z.string().regex(/^https:\/\/[^/\s]+$/),
    api_ca: pem('CERTIFICATE'),
  }),
  peer: z.object({
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
  const bytes = Buffer.from(JSON.stringify(payload), 'utf8');
  const signature = sign(null, Buffer.concat([DOMAIN, bytes]), key.privateKey);
  return Buffer.from(
    JSON.stringify({ type: 'mvpn-link', key_id: key.keyId, payload: bytes.toString('base64'), signature: signature.toString('base64') }, null, 2) + '\n',
    'utf8',
  );
}

/** Verifies a link file against the hub's anchor and returns its payload. */
export function openLink(file: Uint8Array, anchor: Anchor): LinkPayload {
  const outer = z
    .object({ type: z.literal('mvpn-link'), key_id: z.string().optional(), payload: z.string().max(MAX_BYTES), signature: z.string().max(200) })
    .safeParse(parseJsonBounded(Buffer.from(file), { maxBytes: MAX_BYTES * 2, maxDepth: 4 }, 'link bundle'));
  if (!outer.success) throw new DocumentError('MVPN_SCHEMA_INVALID', 'not a link bundle (expected {"type":"mvpn-link", "payload", "signature"})');
  const bytes = Buffer.from(outer.data.payload, 'base64');
  const sig = Buffer.from(outer.data.signature, 'base64');
  if (sig.length !== 64 || !verify(null, Buffer.concat([DOMAIN, bytes]), anchor.publicKey, sig)) {
    throw new DocumentError('MVPN_SIGNATURE_INVALID', 'the link bundle is not signed by the hub this anchor names', {
      hint: "pass the hub's trust anchor (its <state-dir>/trust-anchor) with --hub-anchor",
    });
  }
  const inner = LinkPayloadSchema.safeParse(parseJsonBounded(bytes, { maxBytes: MAX_BYTES, maxDepth: 6 }, 'link bundle payload'));
  if (!inner.success) {
    throw new DocumentError('MVPN_SCHEMA_INVALID', `link bundle: ${inner.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  return inner.data;
}
