/**
 * Opens the store a server's config.json names: store.db (SQLite) in the
 * state directory by default, or a PostgreSQL database (`store.postgres`).
 * The PostgreSQL code, and the `pg` client in its worker, load only here and
 * only when configured: never on the agent's path nor for SQLite users.
 */
import { stat, readFile } from 'node:fs/promises';
import { ConfigError } from '../../errors.ts';
import type { ServerConfig, ServerPaths } from '../config.ts';
import { SqliteStore } from './sqlite.ts';
import type { Store } from './store.ts';

export interface OpenStoreOptions {
  /** A new store (server init): create the SQLite file, or the schema in an empty PostgreSQL database. */
  readonly create?: boolean;
  /** PostgreSQL: the connection's application_name (default `mvpn-server`); the daemon's names its host. */
  readonly applicationName?: string;
}

/**
 * The PostgreSQL URL of `store.postgres`: given inline, or read from its
 * connection file — which must belong to the user we run as and be readable
 * by no one else (it holds the password).
 */
export async function postgresUrl(store: NonNullable<ServerConfig['store']>): Promise<string> {
  const pg = store.postgres;
  if ('url' in pg) return pg.url;
  const file = pg.connection_file;
  let st;
  try {
    st = await stat(file);
  } catch (err) {
    throw new ConfigError('MVPN_CONFIG_MISSING', `cannot read the store connection file ${file}: ${(err as Error).message}`, { context: { path: file } });
  }
  const uid = process.getuid?.() ?? 0;
  if (!st.isFile() || st.uid !== uid || (st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(3, '0');
    throw new ConfigError(
      'MVPN_CONFIG_INVALID',
      `the store connection file ${file} holds a password but is ${st.uid !== uid ? `owned by uid ${st.uid}, not ${uid}` : `mode ${mode}, readable by others`}`,
      { context: { path: file }, hint: `chown ${uid} ${file} && chmod 600 ${file}` },
    );
  }
  const url = (await readFile(file, 'utf8')).trim();
  if (!/^postgres(ql)?:\/\//.test(url) || url.includes('\n')) {
    throw new ConfigError('MVPN_CONFIG_INVALID', `the store connection file ${file} must hold one postgresql:// URL`, { context: { path: file } });
  }
  return url;
}

export async function openStore(config: ServerConfig, paths: ServerPaths, opts: OpenStoreOptions = {}): Promise<Store> {
  if (config.store === undefined) return SqliteStore.open(paths.store, opts.create ? { create: true } : {});
  const url = await postgresUrl(config.store);
  const { PostgresStore } = await import('./postgres.ts');
  return PostgresStore.open(url, { ...(opts.create ? { create: true } : {}), ...(opts.applicationName ? { applicationName: opts.applicationName } : {}) });
}
