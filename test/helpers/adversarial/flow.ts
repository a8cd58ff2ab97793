/**
 * The agent's path from fetched bytes to an installed network, exactly as
 * reconcile runs it (membership → bundle binding → verification → atomic
 * install), for tests that feed it hostile input.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { installBundle, type InstalledBundle } from '../../../src/bundle/install.ts';
import { verifyMembership, type LastAccepted } from '../../../src/bundle/membership.ts';
import { verifyBundle } from '../../../src/bundle/verify.ts';
import { MvpnError } from '../../../src/errors.ts';
import { testRenderer, type BundleFixture } from '../bundle-fixtures.ts';

export async function agentFlow(
  f: BundleFixture,
  input: { membership: Uint8Array; bundle: Uint8Array; last?: LastAccepted; nodeKeyPem?: string; network?: string },
  stateDir: string,
): Promise<InstalledBundle> {
  const m = verifyMembership(input.membership, { anchor: f.anchor, nodeId: f.nodeId, now: f.now, ...(input.last ? { last: input.last } : {}) });
  const network = input.network ?? f.network;
  const entry = m.doc.networks.find((n) => n.id === network);
  if (!entry) throw new MvpnError('MVPN_NETWORK_UNKNOWN', `membership does not list ${network}`);
  const nodeKeyPem = input.nodeKeyPem ?? f.pki.clients[f.nodeId]!.keyPem;
  const v = await verifyBundle(input.bundle, {
    anchor: f.anchor,
    nodeId: f.nodeId,
    now: f.now,
    expect: { network: entry.id, version: entry.bundle.version, sha256: entry.bundle.sha256, size: entry.bundle.size },
    nodeKeyPem,
  });
  // The node's key where the agent keeps it (identity.ts); the install copies it.
  const nodeKeyPath = join(stateDir, 'identity', 'node.key');
  await mkdir(join(stateDir, 'identity'), { recursive: true, mode: 0o700 });
  await writeFile(nodeKeyPath, nodeKeyPem, { mode: 0o600 });
  return installBundle(v, { stateDir, nodeKeyPath, render: testRenderer() });
}
