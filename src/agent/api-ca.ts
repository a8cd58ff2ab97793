/**
 * The server's API CA on the node, and how it follows an API CA roll
 * (`server api roll-ca`, src/server/ops/api-ca-roll.ts).
 *
 * Which CAs the node trusts for the API listener (https sources without a
 * `ca` of their own, enrollment, renewal): the API CA pin
 * (`<state>/ca-pins/_api.json`, src/agent/ca-pins.ts) once it exists, else
 * the config's `server_ca`, else the CA it enrolled with. The pin file wins
 * over the config, as anchor.json wins over the config's anchor: the config
 * came in a startup tarball and still names a CA that a roll retired.
 *
 * At each reconcile of an enrolled node the agent reads `GET
 * <API>/v1/api-ca.json` (no client certificate needed): the CAs the
 * server accepts now (the previous one first during an overlap, the
 * issuing one last) and the proof of the last roll, a cross-certificate for
 * the new CA signed by the old CA key. The same rule as for network CAs
 * (src/bundle/verify.ts, checkCaPins) decides: every listed CA must be pinned
 * or be the new CA of a roll whose old CA is pinned. Then the pins become
 * exactly the listed CAs (both during the overlap, the new one alone after
 * the finish, so a retired CA key can no longer be used against the node),
 * written before they are used. A list the rule refuses changes nothing and
 * is reported (`status` api_ca.last_error): a CA that only the channel
 * vouches for is never trusted.
 *
 * When the identity is not from the issuing CA, the agent renews it at once
 * (renew.ts: new key, POST /v1/renew), so its identity moves to the new CA
 * during the overlap. The pin and the renewal marker are on disk, so a
 * restart in the middle carries on where it stopped.
 */
import { X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { apiCaGeneration } from '../bundle/names.ts';
import { checkCaPins, checkCaRoll, checkCaSet, splitPems, type CaScope } from '../bundle/verify.ts';
import { DocumentError, PkiError } from '../errors.ts';
import { caFacts } from '../pki/verify.ts';
import { parseJsonBounded } from '../util/json.ts';
import { API_CA_PINS, loadCaPinFile, saveCaPins } from './ca-pins.ts';

export const apiCaScope: CaScope = {
  label: 'the API',
  generation: apiCaGeneration,
  names: '"mvpn-api-ca" or "mvpn-api-ca.<n>"',
  caFile: 'api-ca.json cas',
  rollFile: 'api-ca.json roll',
  notPinnedHint: 'a server rolls its API CA with `server api roll-ca`, which certifies the new CA with the old one; a node whose pin is two rolls behind needs the current API CA as server_ca and its pin file ca-pins/_api.json removed',
};

const ApiCaDocSchema = z.strictObject({
  format: z.literal('mvpn-api-ca-v1'),
  cas: z.array(z.string().max(16 * 1024)).min(1).max(2),
  roll: z.string().max(32 * 1024).optional(),
});

/** The API CAs the node trusts: PEMs for TLS, and their pins. */
export interface ApiTrust {
  readonly pems: readonly string[];
  readonly pins: readonly string[];
  /** True when they come from the pin file (a roll was followed). */
  readonly pinned: boolean;
}

/** The pin file, else `fallbackPem` (the config's server_ca, or the CA the node enrolled with); undefined without either. */
export async function loadApiTrust(stateDir: string, fallbackPem: string | undefined): Promise<ApiTrust | undefined> {
  const f = await loadCaPinFile(stateDir, API_CA_PINS);
  if (f?.certs !== undefined) return { pems: f.certs, pins: f.pins, pinned: true };
  if (fallbackPem === undefined) return undefined;
  // server_ca is checked for shape only (trust.ts); text around the blocks is allowed there.
  const pems = (fallbackPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => p + '\n');
  return { pems, pins: await Promise.all(pems.map(async (p) => (await caFacts(p)).pin)), pinned: false };
}

export interface ApiCaUpdate {
  readonly trust: ApiTrust;
  /** True when the pins changed (and were written). */
  readonly changed: boolean;
  /** The CA that issues identities now: the last one listed. */
  readonly issuerPem: string;
  readonly issuerCn: string;
}

/**
 * Checks a `/v1/api-ca.json` body against the trust the node has and, when
 * the rule accepts it and the CAs differ, pins them (before returning).
 * Throws MVPN_CA_NOT_PINNED / MVPN_CA_ROLL_INVALID / MVPN_CA_WRONG_NETWORK /
 * MVPN_SCHEMA_INVALID and changes nothing on a list it refuses.
 */
export async function acceptApiCas(stateDir: string, body: Uint8Array, trust: ApiTrust, now: Date): Promise<ApiCaUpdate> {
  let doc: z.infer<typeof ApiCaDocSchema>;
  try {
    doc = ApiCaDocSchema.parse(parseJsonBounded(body, { maxBytes: 64 * 1024, maxDepth: 3 }, 'api-ca.json'));
  } catch (err) {
    throw new DocumentError('MVPN_SCHEMA_INVALID', `api-ca.json: ${(err as Error).message}`);
  }
  const pems = doc.cas.map((p) => splitPems(p.trim() + '\n', ['CERTIFICATE'], 1, 'MVPN_CERT_INVALID', apiCaScope.caFile)[0]!);
  const cas = await checkCaSet(pems, apiCaScope);
  const roll = doc.roll === undefined ? undefined : await checkCaRoll(doc.roll.trim() + '\n', pems, cas, apiCaScope, now);
  checkCaPins(cas, roll, trust.pins, apiCaScope);
  const pins = cas.map((c) => c.pin);
  // Nothing is written while the server lists what the config already names: the config stays in charge until a roll.
  const changed = pins.join() !== trust.pins.join();
  if (changed) await saveCaPins(stateDir, API_CA_PINS, pins, now, pems);
  return { trust: changed ? { pems, pins, pinned: true } : trust, changed, issuerPem: pems[pems.length - 1]!, issuerCn: cas[cas.length - 1]!.cn };
}

/** Whether `certPem` was issued (and signed) by `caPem`. */
export function issuedBy(certPem: string, caPem: string): boolean {
  try {
    const cert = new X509Certificate(certPem);
    const ca = new X509Certificate(caPem);
    return cert.checkIssued(ca) && cert.verify(ca.publicKey);
  } catch (err) {
    throw new PkiError('MVPN_CERT_INVALID', `cannot compare the identity certificate with the API CA: ${(err as Error).message}`);
  }
}
