/**
 * Migration 10: a network's kind is explicit. A store of the previous
 * schema marked a peer's mirror only by an empty CA key; the upgrade turns
 * exactly those rows into `mirror` and every other into `own`.
 */
import { DatabaseSync } from 'node:sqlite';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATIONS, SqliteStore } from '../../src/server/store/sqlite.ts';
import { isMirror } from '../../src/server/federation/mirror.ts';
import { tmpDir } from '../helpers/tmp.ts';

describe('store migration 10 (network kind)', () => {
  let dir: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    dir = await tmpDir('store-kind');
  });
  afterAll(async () => dir.remove());

  it('marks the rows with an empty CA key as mirrors, the others as own', () => {
    const path = join(dir.path, 'v9.db');
    const db = new DatabaseSync(path);
    for (const m of MIGRATIONS.slice(0, 9)) db.exec(m);
    db.exec('PRAGMA user_version = 9');
    const insert = db.prepare(
      `INSERT INTO networks (id, name, dev_type, proto, port, subnet, state, remotes, key_alg, ca_cert, ca_key, server_cert, server_key,
         tls_crypt_v2_server_key, crl, crl_number, crl_next_update, created_at, updated_at)
       VALUES (?, ?, 'tap', 'udp', ?, ?, 'up', '[]', 'ec-p256', 'c', ?, 'sc', 'sk', 't', 'crl', 1, 0, 0, 0)`,
    );
    insert.run('mine', 'mine', 1194, '198.19.0.0/24', 'a CA key');
    insert.run('theirs', 'theirs', 1195, '198.19.1.0/24', '');
    db.close();
    const s = SqliteStore.open(path);
    try {
      const nets = s.read((tx) => tx.listNetworks());
      expect(nets.map((n) => [n.id, n.kind, isMirror(n)])).toEqual([
        ['mine', 'own', false],
        ['theirs', 'mirror', true],
      ]);
    } finally {
      s.close();
    }
  });
});
