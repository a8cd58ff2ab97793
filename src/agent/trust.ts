/**
 * Resolving the config's trust material: the Ed25519 anchor (literal or a
 * file holding the line) and the pinned CA of the https sources. Errors are
 * config errors naming the field, because the fix is in the config or the
 * startup tarball.
 */
import { readFile } from 'node:fs/promises';
import { parseAnchor, type Anchor } from '../bundle/sign.ts';
import { ConfigError } from '../errors.ts';

async function literalOrFile(value: string, field: string, isLiteral: (v: string) => boolean): Promise<string> {
  if (isLiteral(value)) return value;
  try {
    return await readFile(value, 'utf8');
  } catch (err) {
    throw new ConfigError('MVPN_CONFIG_INVALID', `config ${field}: cannot read ${value}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      context: { field, path: value },
      cause: err,
    });
  }
}

export async function loadAnchor(value: string): Promise<Anchor> {
  const text = await literalOrFile(value, 'anchor', (v) => v.startsWith('ed25519:'));
  try {
    return parseAnchor(text);
  } catch (err) {
    throw new ConfigError('MVPN_CONFIG_INVALID', `config anchor: ${(err as Error).message}`, {
      context: { field: 'anchor' },
      hint: 'copy the anchor printed by `mvpn-client server init` (or the anchor file from the startup tarball)',
      cause: err,
    });
  }
}

/** PEM of one or more CA certificates; checked for shape only (TLS verifies the rest). */
export async function loadCaPem(value: string, field: string): Promise<string> {
  const pem = await literalOrFile(value, field, (v) => v.includes('-----BEGIN'));
  if (!/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.test(pem)) {
    throw new ConfigError('MVPN_CONFIG_INVALID', `config ${field}: not a PEM certificate`, { context: { field } });
  }
  return pem;
}
