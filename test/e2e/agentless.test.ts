/**
 * Agentless nodes (issue 18), on the BUILT executable: a node whose image
 * cannot run mvpn-client gets `server export --format ovpn` and runs the
 * stock `openvpn --config NODE.ovpn` in its namespace (src/demo/world.ts,
 * the code `demo --agentless` runs). World: public a1 and private b1 run
 * the agent, private b2 is agentless. Proven here: b2 joins the L2 network
 * and pings the agent-run nodes both ways; openvpn starts the profile at
 * --verb 4 without a warning about unknown or deprecated options; the store
 * lists b2 as agentless; after `server node revoke` b2 is cut off at once
 * and a fresh openvpn with the same profile cannot get back in.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENTLESS_DEV, NETWORK_ID, World } from '../../src/demo/world.ts';
import { publicPrivate } from '../../src/demo/topology.ts';
import { namespacesWithPrefix } from '../../src/netns/lab.ts';
import { Lab, waitFor } from '../helpers/netns.ts';
import { tmpDir } from '../helpers/tmp.ts';
import { builtBinary } from './binary.ts';

const AGENTS = ['a1', 'b1'];
const STOCK = 'b2';
let world: World;
let lab: Lab;
let dir: { path: string; remove: () => Promise<void> };

/** `from` pings `to` over the VPN (a few tries: the first may go to ARP). */
async function pings(from: string, to: string, timeoutMs = 30_000): Promise<boolean> {
  const addr = await world.vpnAddress(to);
  if (addr === undefined) return false;
  return waitFor(() => world.node(from).ns.ping(addr, { count: 1, timeoutS: 2 }), timeoutMs, 500);
}

const log = (): Promise<string> => readFile(join(world.nodeDir(STOCK), 'agent.log'), 'utf8');

describe('agentless node: stock openvpn with an exported profile (built binary)', () => {
  beforeAll(async () => {
    dir = await tmpDir('agentless');
    lab = new Lab();
    world = new World({
      lab,
      bin: [builtBinary()],
      dir: join(dir.path, 'world'),
      testbeds: publicPrivate(1, 2),
      reconcileIntervalS: 300,
      agentless: new Set([STOCK]),
      agentlessArgs: ['--verb', '4'],
    });
    await world.buildTopology();
    await world.setUpServers();
    await world.startServers();
  }, 300_000);

  afterAll(async () => {
    await world?.stopAll();
    expect(await namespacesWithPrefix(lab.prefix)).toEqual([]);
    await dir?.remove();
  }, 120_000);

  it('the export wrote one 0600 profile and no bundle; node list shows the node as agentless', async () => {
    expect((await stat(world.profilePath(STOCK))).mode & 0o777).toBe(0o600);
    await expect(stat(join(world.nodeDir(STOCK), 'startup.tar.gz'))).rejects.toMatchObject({ code: 'ENOENT' });
    const list = JSON.parse(await world.server$(['node', 'list', '--json'])) as { node: string; memberships: { agentless: boolean; key_origin: string }[] }[];
    const byNode = new Map(list.map((e) => [e.node, e.memberships[0]]));
    expect(byNode.get(STOCK)).toMatchObject({ agentless: true, key_origin: 'central' });
    expect(await world.server$(['node', 'list'])).toMatch(new RegExp(`^${STOCK} .* agentless\\s*$`, 'm'));
  });

  it('joins the L2 network and pings the agent-run nodes both ways', async () => {
    for (const id of [...AGENTS, STOCK]) world.startAgent(id);
    expect(await world.waitAll([...AGENTS, STOCK], (id) => world.connected(id), 240_000)).toEqual([]);
    for (const other of AGENTS) {
      expect(await pings(STOCK, other), `${STOCK} -> ${other}`).toBe(true);
      expect(await pings(other, STOCK), `${other} -> ${STOCK}`).toBe(true);
    }
    // one segment: the agent-run node knows the stock node's tap by its MAC
    const proof = await world.neighbourProof([...AGENTS, STOCK], await world.vpnAddresses([...AGENTS, STOCK]));
    expect(proof.find((p) => p.node === 'a1')!.seen).toContain(STOCK);
  }, 300_000);

  it('openvpn --verb 4 read the profile without a warning about unknown or deprecated options', async () => {
    const text = await log();
    expect(text).toContain('Initialization Sequence Completed');
    // --verb 4 prints every option it parsed: the profile was read at that level, inline material and all
    expect(text).toMatch(/verbosity = 4/);
    expect(text).toMatch(/tls_crypt_v2_file = '\[INLINE\]'/);
    const warnings = text.split('\n').filter((l) => /unrecognized option|unknown option|deprecat|no longer supported|ignored/i.test(l) || /WARNING/.test(l));
    expect(warnings).toEqual([]);
  });

  it('after server node revoke it is cut off and a fresh openvpn with the same profile cannot reconnect', async () => {
    const addr = (await world.vpnAddress(STOCK))!;
    await world.server$(['node', 'revoke', STOCK, '--network', NETWORK_ID]);
    expect(await waitFor(async () => !(await world.node('a1').ns.ping(addr, { count: 1, timeoutS: 1 })), 60_000, 500), 'a1 still reaches the revoked node').toBe(true);
    // a fresh start of the stock openvpn with the same profile
    await world.stopAgent(STOCK);
    const before = (await log()).length;
    world.startAgent(STOCK);
    // The server refuses the revoked certificate without an answer (tls-crypt-v2 and the CRL): the client
    // reaches the server, checks its certificate, and then gives the attempt up (keepalive's ping-restart).
    const gaveUp = /TLS: Initial packet from[\s\S]*SIGUSR1\[soft,(ping-restart|tls-error)\]/;
    const refused = await waitFor(async () => gaveUp.test((await log()).slice(before)), 150_000, 1_000);
    const tail = (await log()).slice(before);
    expect(refused, `no attempt that was given up in the log:\n${tail.split('\n').filter((l) => !/ us=\d+ {3}/.test(l)).join('\n')}`).toBe(true);
    expect(tail).not.toContain('Initialization Sequence Completed');
    expect(await world.vpnAddress(STOCK), `${AGENTLESS_DEV} got an address`).toBeUndefined();
    // the agent-run nodes are not affected
    expect(await pings('a1', 'b1')).toBe(true);
  }, 400_000);
});
