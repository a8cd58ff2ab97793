/**
 * `server plan --rspec REQUEST.xml --testbeds FILE --apply --servers FILE`
 * on real state directories, against the same experiment written as a JSON
 * description and applied on a second, fresh set of servers: both leave the
 * servers in the same state (networks with subnet, device type and port,
 * every member's address and remotes, the peer's link and relay). The
 * request has an L2 LAN across three component managers (two servers joined
 * by a link), an L3 LAN that one server carries (a tun network), and an
 * ordinary link that is left alone. A bad request is refused before any
 * server is touched.
 */
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cli, makeServer, type TestServer } from '../helpers/server-fixtures.ts';
import { tmpDir } from '../helpers/tmp.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const admin = (s: TestServer) => ({ command: [process.execPath, join(ROOT, 'src/main.ts'), 'server', '--state-dir', s.stateDir] });
const HUB_API = 'https://198.18.0.1:8443';
const EMU = { public: '198.18.0.1', internal: '198.18.1.1' };
const WALL = { public: '198.18.0.2', internal: '198.18.2.1' };
const CM = {
  emu: 'urn:publicid:IDN+emulab.net+authority+cm',
  uky: 'urn:publicid:IDN+uky.emulab.net+authority+cm',
  wall: 'urn:publicid:IDN+wall2.ilabt.iminds.be+authority+cm',
};

const testbeds = {
  testbeds: [
    { name: 'emu', nodes: 'private', ops: EMU, component_manager: CM.emu },
    { name: 'uky', nodes: 'public', component_manager: CM.uky },
    { name: 'wall', nodes: 'private', ops: WALL, component_manager: CM.wall },
  ],
};

const ifc = (id: string, address?: string) =>
  address ? `<interface client_id="${id}"><ip address="${address}" netmask="255.255.255.0" type="ipv4"/></interface>` : `<interface client_id="${id}"/>`;
const REQUEST = `<?xml version="1.0" encoding="UTF-8"?>
<rspec xmlns="http://www.geni.net/resources/rspec/3" xmlns:emulab="http://www.protogeni.net/resources/rspec/ext/emulab/1" type="request">
  <node client_id="e1" component_manager_id="${CM.emu}"><sliver_type name="raw-pc"/>${ifc('e1:if0', '198.19.4.11')}${ifc('e1:if1')}${ifc('e1:if2')}</node>
  <node client_id="e2" component_manager_id="${CM.emu}">${ifc('e2:if0')}${ifc('e2:if1')}${ifc('e2:if2')}</node>
  <node client_id="e3" component_manager_id="${CM.emu}">${ifc('e3:if0')}</node>
  <node client_id="u1" component_manager_id="${CM.uky}">${ifc('u1:if0')}${ifc('u1:if1')}<emulab:routable_control_ip/></node>
  <node client_id="w1" component_manager_id="${CM.wall}">${ifc('w1:if0', '198.19.4.77')}</node>
  <node client_id="w2" component_manager_id="${CM.wall}">${ifc('w2:if0')}</node>
  <link client_id="fed"><interface_ref client_id="e1:if0"/><interface_ref client_id="e2:if0"/><interface_ref client_id="e3:if0"/><interface_ref client_id="u1:if0"/><interface_ref client_id="w1:if0"/><interface_ref client_id="w2:if0"/></link>
  <link client_id="routed"><interface_ref client_id="e1:if1"/><interface_ref client_id="e2:if1"/><interface_ref client_id="u1:if1"/><link_type name="openvpn-l3"/></link>
  <link client_id="local"><interface_ref client_id="e1:if2"/><interface_ref client_id="e2:if2"/><link_type name="lan"/></link>
</rspec>
`;

/** What an operator would write by hand for the same experiment. */
const EXPERIMENT = {
  testbeds: [
    { name: 'emu', nodes: 'private', ops: EMU },
    { name: 'uky', nodes: 'public' },
    { name: 'wall', nodes: 'private', ops: WALL },
  ],
  nodes: ['e1', 'e2', 'e3', 'u1', 'w1', 'w2'].map((n) => ({ name: n, testbed: { e: 'emu', u: 'uky', w: 'wall' }[n[0]!]! })),
  lans: [
    { name: 'fed', subnet: '198.19.4.0/24', members: [{ node: 'e1', address: '198.19.4.11' }, 'e2', 'e3', 'u1', { node: 'w1', address: '198.19.4.77' }, 'w2'] },
    { name: 'routed', layer: 3, members: ['e1', 'e2', 'u1'] },
  ],
};

interface NetworkShow {
  state: string;
  dev_type: string;
  proto: string;
  port: number;
  subnet: string;
  server_address: string;
  remotes: unknown[];
  members: { node: string; address: string; remotes: unknown; bundle_version: number }[];
}

describe('server plan --rspec --apply --servers: the same state as the JSON description', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0)) await c();
  });

  async function servers(label: string) {
    const dir = await tmpDir(`plan-rspec-${label}`);
    cleanup.push(dir.remove);
    const made = new Map<string, TestServer>();
    for (const [name, ops] of [['emu', EMU], ['wall', WALL]] as const) {
      const s = await makeServer({ label: `${label}-${name}`, address: ops.public, extra: ['--address', ops.internal] });
      cleanup.push(s.remove);
      made.set(name, s);
    }
    const file = (name: string, content: string) => writeFile(join(dir.path, name), content).then(() => join(dir.path, name));
    const serversFile = await file('servers.json', JSON.stringify({ servers: Object.fromEntries([...made].map(([n, s]) => [n, { ...admin(s), api_url: HUB_API }])) }));
    return { made, file, serversFile };
  }

  /** Everything the plan decides, as the servers hold it. */
  async function state(made: Map<string, TestServer>) {
    const net = async (s: TestServer, id: string) => {
      const n = await s.json<NetworkShow>(['network', 'show', id]);
      return {
        state: n.state,
        dev_type: n.dev_type,
        proto: n.proto,
        port: n.port,
        subnet: n.subnet,
        server_address: n.server_address,
        remotes: n.remotes,
        members: n.members.map((m) => ({ node: m.node, address: m.address, remotes: m.remotes, bundle_version: m.bundle_version })).sort((a, b) => a.node.localeCompare(b.node)),
      };
    };
    const emu = made.get('emu')!;
    const wall = made.get('wall')!;
    return {
      emu: { networks: (await emu.json<{ id: string }[]>(['network', 'list'])).map((n) => n.id).sort(), fed: await net(emu, 'fed'), routed: await net(emu, 'routed') },
      wall: {
        networks: (await wall.json<{ id: string }[]>(['network', 'list'])).map((n) => n.id).sort(),
        fed: await net(wall, 'fed'),
        links: (await wall.json<{ peer: { network: string; relay: unknown }[] }>(['link', 'show'])).peer.map((l) => ({ network: l.network, relay: l.relay })),
      },
    };
  }

  it('applies a request across two servers exactly as the equivalent JSON description', { timeout: 240_000 }, async () => {
    const viaRspec = await servers('rs');
    const rspec = await viaRspec.file('request.xml', REQUEST);
    const tb = await viaRspec.file('testbeds.json', JSON.stringify(testbeds));
    const r = await cli(['server', 'plan', '--rspec', rspec, '--testbeds', tb, '--apply', '--servers', viaRspec.serversFile, '--json']);
    expect(r.code, r.err).toBe(0);
    const out = r.json<{ plan: { lans: { name: string; layer: number; hub: string; peers: string[]; members: { node: string; interface: string | null }[] }[] }; request: { ignored_links: { link: string }[] } }>();
    expect(out.plan.lans.map((l) => [l.name, l.layer, l.hub, l.peers])).toEqual([
      ['fed', 2, 'emu', ['wall']],
      ['routed', 3, 'emu', []],
    ]);
    expect(out.plan.lans[1]!.members.map((m) => `${m.node}=${m.interface}`)).toEqual(['e1=e1:if1', 'e2=e2:if1', 'u1=u1:if1']);
    expect(out.request.ignored_links.map((l) => l.link)).toEqual(['local']);

    const viaJson = await servers('js');
    const exp = await viaJson.file('experiment.json', JSON.stringify(EXPERIMENT));
    const j = await cli(['server', 'plan', exp, '--apply', '--servers', viaJson.serversFile, '--json']);
    expect(j.code, j.err).toBe(0);

    const fromRspec = await state(viaRspec.made);
    const fromJson = await state(viaJson.made);
    expect(fromRspec).toEqual(fromJson);
    // and that state is the plan: L2 tap across the link, L3 tun on one server, fixed addresses kept, the ordinary link not a network
    expect(fromRspec.emu.networks).toEqual(['fed', 'routed']);
    expect(fromRspec.emu.fed).toMatchObject({ state: 'up', dev_type: 'tap', subnet: '198.19.4.0/24' });
    expect(fromRspec.emu.routed).toMatchObject({ state: 'up', dev_type: 'tun' });
    expect(fromRspec.emu.fed.members.find((m) => m.node === 'w1')).toMatchObject({ address: '198.19.4.77', remotes: [{ host: WALL.internal, port: fromRspec.wall.fed.port }] });
    expect(fromRspec.emu.fed.members.find((m) => m.node === 'e1')).toMatchObject({ address: '198.19.4.11', remotes: [{ host: EMU.internal }] });
    expect(fromRspec.emu.routed.members.find((m) => m.node === 'u1')).toMatchObject({ remotes: [{ host: EMU.public }] });
    expect(fromRspec.wall.links).toEqual([{ network: 'fed', relay: { listen: `${WALL.internal}:8444`, to: '198.18.0.1:8443' } }]);

  });

  it('refuses a bad request before touching any server, with its code and line', { timeout: 120_000 }, async () => {
    const { made, file, serversFile } = await servers('bad');
    const tb = await file('testbeds.json', JSON.stringify(testbeds));
    const cases = [
      [REQUEST.replace('<rspec ', '<!DOCTYPE rspec [<!ENTITY x "y">]>\n<rspec '), 'MVPN_RSPEC_DOCTYPE', 'line 2: a DOCTYPE is refused'],
      [REQUEST.replace('<interface_ref client_id="w2:if0"/>', '<interface_ref client_id="w9:if0"/>'), 'MVPN_RSPEC_INVALID', 'line 9: link "fed" has <interface_ref client_id="w9:if0">'],
      [REQUEST.replace('<interface_ref client_id="u1:if1"/>', '<interface_ref client_id="u1:if1"/><interface_ref client_id="w1:if0"/>'), 'MVPN_RSPEC_INVALID', 'line 10: interface w1:if0 is in link "routed" and in link "fed" (line 9)'],
    ] as const;
    for (const [text, code, says] of cases) {
      const rspec = await file('request.xml', text);
      const r = await cli(['server', 'plan', '--rspec', rspec, '--testbeds', tb, '--apply', '--servers', serversFile, '--json']);
      expect(r.code, says).toBe(5);
      const e = r.json<{ error: { code: string; message: string } }>().error;
      expect(e.code, e.message).toBe(code);
      expect(e.message).toContain(says);
    }
    for (const s of made.values()) expect(await s.json<unknown[]>(['network', 'list'])).toEqual([]);

    const noTestbeds = await cli(['server', 'plan', '--rspec', await file('ok.xml', REQUEST)]);
    expect(noTestbeds.code).toBe(2);
    expect(noTestbeds.err).toContain('--rspec needs --testbeds FILE');
    const both = await cli(['server', 'plan', await file('e.json', JSON.stringify(EXPERIMENT)), '--rspec', await file('ok.xml', REQUEST), '--testbeds', tb]);
    expect(both.code).toBe(2);
    expect(both.err).toContain('not both');
  });
});
