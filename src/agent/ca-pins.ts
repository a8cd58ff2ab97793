/**
 * Each network's CA, pinned by the node (issue 22, finding 4).
 *
 * `<state>/ca-pins/<network>.json` (0600, written atomically) lists the
 * SHA-256 of the SubjectPublicKeyInfo of every CA the node trusts for that
 * network: the CA of its first installed bundle, then whatever a later
 * bundle's ca.crt holds once verifyBundle has accepted it under the pin rule
 * (src/bundle/verify.ts: pinned, or certified by a pinned CA in ca-roll.crt).
 * During a CA roll's overlap that is the old and the new CA; afterwards the
 * new one alone, so the old CA key can no longer move the network anywhere.
 *
 * The pin is on disk before the bundle's install is switched live (it is
 * written alongside the install's files, installBundle's beforeSwitch): a
 * crash in between leaves a pin that the next fetch of the same bundle
 * satisfies. Pins stay
 * when a network leaves the membership, so a stolen signing key cannot drop
 * a network and add it back with its own CA.
 *
 * An agent upgraded from a version without pins takes the pin from the
 * bundle already installed, not from the next one it fetches.
 *
 * The server's API CA (the CA of the HTTPS listener and of the node's API
 * identity) is pinned in the same store under the name `_api` (not a
 * network id: ids have no "_"), with the CA certificates themselves beside
 * the pins (`certs`), because TLS needs the certificates, not only their
 * keys' hashes. It moves only through an API CA roll proved by the pinned
 * CA (src/agent/api-ca.ts).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { splitPems } from '../bundle/verify.ts';
import { PkiError } from '../errors.ts';
import { caFacts } from '../pki/verify.ts';
import { ensureDir, writeFileAtomic } from '../util/fs-atomic.ts';
import { parseJsonBounded } from '../util/json.ts';
import { readIfExists } from '../util/read-file.ts';

const PinFileSchema = z.strictObject({
  schema: z.literal(1),
  network: z.string().max(64),
  pins: z.array(z.string().regex(/^[0-9a-f]{64}$/)).min(1).max(2),
  /** PEM of each pinned CA, in pin order (the API CA's pins: src/agent/api-ca.ts). */
  certs: z.array(z.string().max(16 * 1024)).min(1).max(2).optional(),
  updated_at: z.string().max(64),
});

/** The pin store's name for the server's API CA. */
export const API_CA_PINS = '_api';

export interface CaPinFile {
  readonly pins: string[];
  readonly certs?: string[] | undefined;
}

export function caPinPath(stateDir: string, network: string): string {
  return join(stateDir, 'ca-pins', `${network}.json`);
}

/** The pins of `network`, or undefined when the node has none yet. A pin file it cannot read is refused, never ignored. */
export async function loadCaPins(stateDir: string, network: string): Promise<string[] | undefined> {
  return (await loadCaPinFile(stateDir, network))?.pins;
}

/** The pin file with its certificates, or undefined when there is none. */
export async function loadCaPinFile(stateDir: string, network: string): Promise<CaPinFile | undefined> {
  const path = caPinPath(stateDir, network);
  const bytes = await readIfExists(path);
  if (bytes === undefined) return undefined;
  try {
    const f = PinFileSchema.parse(parseJsonBounded(bytes, { maxBytes: 40 * 1024, maxDepth: 3 }, path));
    if (f.network !== network) throw new Error(`it is for network ${f.network}`);
    if (f.certs !== undefined && f.certs.length !== f.pins.length) throw new Error('it lists another number of certificates than pins');
    return { pins: f.pins, certs: f.certs };
  } catch (err) {
    throw new PkiError('MVPN_CA_NOT_PINNED', `the CA pin file ${path} is unreadable (${(err as Error).message}); ${network === API_CA_PINS ? 'the API CA cannot be checked' : `bundles for network ${network} are refused`} until it is fixed`, {
      context: { network, path },
      hint: network === API_CA_PINS ? 'remove the file: the agent then trusts server_ca from its config (or the API CA it enrolled with) again' : 'remove the file to pin the CA of the next bundle afresh (trust on first use)',
    });
  }
}

export async function saveCaPins(stateDir: string, network: string, pins: readonly string[], now: Date, certs?: readonly string[]): Promise<void> {
  await ensureDir(join(stateDir, 'ca-pins'), 0o700);
  const body: z.infer<typeof PinFileSchema> = { schema: 1, network, pins: [...pins], ...(certs === undefined ? {} : { certs: [...certs] }), updated_at: now.toISOString() };
  await writeFileAtomic(caPinPath(stateDir, network), JSON.stringify(body, null, 2) + '\n', 0o600);
}

/** The pins an installed bundle stands for (the CAs in its ca.crt). */
export async function pinsOfCaFile(caPath: string): Promise<string[]> {
  const text = (await readFile(caPath)).toString('latin1');
  const pems = splitPems(text, ['CERTIFICATE'], 2, 'MVPN_CERT_INVALID', 'ca.crt');
  return Promise.all(pems.map(async (p) => (await caFacts(p)).pin));
}
