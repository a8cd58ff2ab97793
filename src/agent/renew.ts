/**
 * Automatic renewal of the node's credentials (DESIGN.md §3 "nothing
 * expires on anyone"; ARCHITECTURE.md "Credential renewal").
 *
 * When the API identity certificate or a network certificate of a
 * node-keyed bundle passes two thirds of its lifetime (or has expired while
 * the server still accepts it), the agent makes a NEW key here, stores it,
 * and sends a CSR to `POST /v1/renew` authenticated by its current
 * identity. The server answers with a new identity certificate and, in the
 * same transaction, reissues every network certificate of the node for the
 * new key (new bundle versions). The agent then switches identity.crt
 * (identity.ts), the same reconcile installs the new bundles (each network's
 * openvpn reloads once with the new key: same process and tap device,
 * plan.ts `replace-reload`), and once every such network runs the
 * new certificate it confirms (`POST /v1/renew/confirm`, with the new
 * identity); only then does the server put the old certificates on the
 * CRLs. A crash anywhere leaves either the old credentials (still valid on
 * the server) or the new ones, and the next pass carries on.
 *
 * Centrally keyed bundles (export) are left alone: their key was made by
 * the server, there is no identity to authenticate a renewal with; they
 * are renewed by exporting again.
 *
 * `decideRenewal` is the pure part (`now` and validity in, a decision out),
 * table-tested; the Reconciler carries it out.
 */
import { X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { isMvpnError, MvpnError } from '../errors.ts';
import { createCsr } from '../pki/csr.ts';
import { detectKeyAlg, generateKeyPairPem } from '../pki/keys.ts';
import { certMatchesKey, verifyCert } from '../pki/verify.ts';
import type { AgentConfig } from './config.ts';
import { apiUrl, IdentityReplySchema, postJson } from './enroll.ts';
import { saveRenewalKey, switchIdentity, type Identity } from './identity.ts';
import { fetchErrorFrom } from './sources.ts';
import { parseWireError } from '../util/wire-error.ts';

/** Fraction of a certificate's lifetime after which it is renewed. */
export const RENEW_FRACTION = 2 / 3;

export interface CertLife {
  /** What the certificate is, for status and logs: "identity" or "network <id>". */
  readonly what: string;
  /** ms since the epoch */
  readonly notBefore: number;
  readonly notAfter: number;
}

export type RenewDecision =
  | { readonly kind: 'renew'; readonly what: string; readonly expired: boolean; readonly reason: string }
  /** `at`: the earliest renewal point (undefined: nothing to renew). */
  | { readonly kind: 'wait'; readonly at: number | undefined };

/** The instant a certificate is due: two thirds into its validity. */
export function renewAt(c: Pick<CertLife, 'notBefore' | 'notAfter'>): number {
  return c.notBefore + Math.floor((c.notAfter - c.notBefore) * RENEW_FRACTION);
}

/**
 * Renew now, or wait until when. Pure. Due = `now` at or past a
 * certificate's two-thirds point; an expired certificate is due too (the
 * server may still accept it, e.g. when this node's clock runs ahead).
 * The most urgent certificate names the reason.
 */
export function decideRenewal(now: number, certs: readonly CertLife[]): RenewDecision {
  let due: CertLife | undefined;
  let at: number | undefined;
  for (const c of certs) {
    const point = renewAt(c);
    if (now >= point) {
      if (due === undefined || c.notAfter < due.notAfter) due = c;
    } else if (at === undefined || point < at) at = point;
  }
  if (due === undefined) return { kind: 'wait', at };
  const expired = now >= due.notAfter;
  const reason = expired
    ? `the ${due.what} certificate expired at ${new Date(due.notAfter).toISOString()}`
    : `the ${due.what} certificate passed two thirds of its lifetime (expires ${new Date(due.notAfter).toISOString()})`;
  return { kind: 'renew', what: due.what, expired, reason };
}

/** Validity of a PEM certificate; throws on garbage (the caller decides what that means). */
export function certLife(pem: string, what: string): CertLife {
  const x = new X509Certificate(pem);
  return { what, notBefore: Date.parse(x.validFrom), notAfter: Date.parse(x.validTo) };
}

export function serialOf(pem: string): string {
  return new X509Certificate(pem).serialNumber.toLowerCase().replace(/^0+(?=.)/, '');
}

/** Where renewals go: the enrollment URL, else the first https source that is an API base (URL ending in `/`). */
export interface RenewTarget {
  readonly url: string;
  readonly via?: string;
  readonly ca?: string | undefined;
}

export function renewTarget(config: AgentConfig, defaultCa: string | undefined): RenewTarget | undefined {
  if (config.enroll) return { url: config.enroll.url, ...(config.enroll.via === undefined ? {} : { via: config.enroll.via }), ca: defaultCa };
  for (const s of config.sources) {
    if (s.type === 'https' && new URL(s.url).pathname.endsWith('/')) return { url: s.url, ...(s.via === undefined ? {} : { via: s.via }), ca: defaultCa };
  }
  return undefined;
}

export interface RenewOptions {
  readonly stateDir: string;
  readonly nodeId: string;
  readonly identity: Identity;
  readonly target: RenewTarget;
  readonly now: Date;
  readonly timeoutMs: number;
}

function failed(what: string, err: unknown, context: Record<string, unknown> = {}): MvpnError {
  const e = isMvpnError(err) ? err : new MvpnError('MVPN_RENEW_FAILED', String(err));
  return new MvpnError('MVPN_RENEW_FAILED', `${what}: ${e.message}`, {
    context: { ...context, cause: e.code },
    cause: e,
    hint: 'the current certificates keep working; the agent retries with backoff (see `mvpn-client status --json` renewal)',
  });
}

async function call(route: string, body: unknown, o: Pick<RenewOptions, 'identity' | 'target' | 'timeoutMs'>): Promise<unknown> {
  const url = apiUrl(o.target.url, route);
  let reply: { status: number; json: unknown };
  try {
    reply = await postJson(url, body, { ca: o.target.ca, cert: o.identity.certPem, key: o.identity.keyPem }, o.timeoutMs, o.target.via);
  } catch (err) {
    throw failed(`cannot reach ${url.href}${o.target.via === undefined ? '' : ` (via ${o.target.via})`}`, isMvpnError(err) ? err : fetchErrorFrom(err, url), { url: url.href });
  }
  if (reply.status !== 200) {
    const err = parseWireError(reply.json);
    const code = err.code ?? 'MVPN_RENEW_FAILED';
    const message = err.message?.slice(0, 300) ?? `HTTP ${reply.status}`;
    throw failed(`${url.href} refused`, new MvpnError(code, message), { url: url.href, status: reply.status, serverCode: code });
  }
  return reply.json;
}

/**
 * One renewal: new key (stored first), CSR, new identity certificate
 * (checked: chains to the API CA, CN, matches the new key), switch.
 * Resolves to the new identity; throws MVPN_RENEW_FAILED and leaves the
 * current identity in place.
 */
export async function renewIdentity(o: RenewOptions): Promise<Identity> {
  const keyPair = await generateKeyPairPem(detectKeyAlg(o.identity.keyPem));
  await saveRenewalKey(o.stateDir, keyPair.privateKeyPem);
  const csr = await createCsr({ keyPair, cn: o.nodeId });
  const json = await call('v1/renew', { csr }, o);
  const parsed = IdentityReplySchema.safeParse(json);
  if (!parsed.success || parsed.data.node !== o.nodeId) throw failed('renewal', new MvpnError('MVPN_RENEW_FAILED', `the reply is not an identity for node ${o.nodeId}`));
  const { identity_cert: certPem, api_ca: caPem } = parsed.data;
  try {
    await verifyCert({ certPem, caCertPem: caPem, usage: 'client', now: o.now, expectCn: o.nodeId });
    if (!(await certMatchesKey(certPem, keyPair.privateKeyPem))) throw new MvpnError('MVPN_CERT_KEY_MISMATCH', 'the identity certificate is not for the key this node sent');
  } catch (err) {
    throw failed('the server returned an unusable identity certificate', err);
  }
  return switchIdentity(o.stateDir, { certPem, caPem, replacedSerial: serialOf(o.identity.certPem) });
}

const ConfirmReplySchema = z.strictObject({ node: z.string().max(128), revoked: z.record(z.string(), z.string().max(64)) });

/** Tells the server the new certificates are in use (it then revokes the old ones). With the NEW identity. */
export async function confirmRenewal(o: Pick<RenewOptions, 'identity' | 'target' | 'timeoutMs'>): Promise<Record<string, string>> {
  const r = ConfirmReplySchema.safeParse(await call('v1/renew/confirm', {}, o));
  if (!r.success) throw failed('renewal confirmation', new MvpnError('MVPN_RENEW_FAILED', 'the reply is not a confirmation'));
  return r.data.revoked;
}
