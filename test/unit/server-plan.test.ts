/**
 * The planner as a pure function: the two DESIGN.md §1 topologies (fixtures
 * shared with the demo) and every invalid description it must refuse with a
 * message naming the problem.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isMvpnError } from '../../src/errors.ts';
import { formatPlan, parseExperiment, planExperiment, type Experiment } from '../../src/server/federation/plan.ts';

const fixture = (name: string): Experiment => parseExperiment(JSON.parse(readFileSync(join(import.meta.dirname, '../fixtures', name), 'utf8')));

describe('server plan', () => {
  it('topology 2 (B and C both private): B hosts, C joins by a link, every node uses its own ops internal address', () => {
    const plan = planExperiment(fixture('experiment-two-private.json'));
    expect(plan.lans).toHaveLength(1);
    const lan = plan.lans[0]!;
    // 3 vs 3: ties go to the first name.
    expect([lan.hub, lan.peers]).toEqual(['b', ['c']]);
    expect(plan.links).toEqual([{ lan: 'lan0', hub: 'b', peer: 'c', hub_remote: '203.0.113.2' }]);
    expect(Object.fromEntries(lan.members.map((m) => [m.node, `${m.server}@${m.remote}`]))).toEqual({
      b1: 'b@198.18.2.1',
      b2: 'b@198.18.2.1',
      b3: 'b@198.18.2.1',
      c1: 'c@198.18.3.1',
      c2: 'c@198.18.3.1',
      c3: 'c@198.18.3.1',
    });
    expect(plan.servers.map((s) => [s.testbed, s.hosts, s.joins])).toEqual([
      ['b', ['lan0'], []],
      ['c', [], ['lan0']],
    ]);
    expect(formatPlan(plan)).toMatch(/lan0\s+c\s+b\s+203\.0\.113\.2/);
    // the hub's API: b's nodes at b's internal address; c's nodes cannot reach b, so through the relay on c's ops host
    expect(Object.fromEntries(lan.members.map((m) => [m.node, m.api_via ? `${m.api} via ${m.api_via}` : m.api]))).toEqual({
      b1: '198.18.2.1',
      b2: '198.18.2.1',
      b3: '198.18.2.1',
      c1: '203.0.113.2 via 198.18.3.1',
      c2: '203.0.113.2 via 198.18.3.1',
      c3: '203.0.113.2 via 198.18.3.1',
    });
    expect(formatPlan(plan)).toMatch(/lan0\s+c1\s+c\s+c\s+198\.18\.3\.1\s+\(allocated by hub\)\s+203\.0\.113\.2 via 198\.18\.3\.1\n/);
  });

  it('topology 1 (A public + B private): B hosts, no links, A nodes use B-ops public address, B nodes its internal one', () => {
    const plan = planExperiment(fixture('experiment-public-private.json'));
    const lan = plan.lans[0]!;
    expect([lan.hub, lan.peers, plan.links]).toEqual(['b', [], []]);
    expect(lan.members.map((m) => [m.node, m.server, m.remote, m.address])).toEqual([
      ['a1', 'b', '203.0.113.2', null],
      ['a2', 'b', '203.0.113.2', '198.19.20.20'],
      ['b1', 'b', '198.18.2.1', null],
      ['b2', 'b', '198.18.2.1', null],
    ]);
    // public nodes reach the hub's API at its public address, directly
    expect(lan.members.map((m) => [m.node, m.api, m.api_via])).toEqual([
      ['a1', '203.0.113.2', null],
      ['a2', '203.0.113.2', null],
      ['b1', '198.18.2.1', null],
      ['b2', '198.18.2.1', null],
    ]);
  });

  it('gives the hub to the private testbed with most members; public nodes of a third testbed use the hub', () => {
    const plan = planExperiment(
      parseExperiment({
        testbeds: [
          { name: 'a', nodes: 'public', ops: { public: '203.0.113.1', internal: '198.18.1.1' } },
          { name: 'b', nodes: 'private', ops: { public: '203.0.113.2', internal: '198.18.2.1' } },
          { name: 'c', nodes: 'private', ops: { public: '203.0.113.3', internal: '198.18.3.1' } },
        ],
        nodes: [
          { name: 'a1', testbed: 'a' },
          { name: 'b1', testbed: 'b' },
          { name: 'c1', testbed: 'c' },
          { name: 'c2', testbed: 'c' },
        ],
        lans: [{ name: 'x', members: ['a1', 'b1', 'c1', 'c2'] }, { name: 'pub', members: ['a1'] }],
      }),
    );
    expect([plan.lans[0]!.hub, plan.lans[0]!.peers]).toEqual(['c', ['b']]);
    expect(plan.lans[0]!.members.find((m) => m.node === 'a1')).toMatchObject({ server: 'c', remote: '203.0.113.3' });
    // A public-only LAN goes to a member testbed with a server, reached by its internal address.
    expect(plan.lans[1]).toMatchObject({ hub: 'a', peers: [], members: [{ node: 'a1', server: 'a', remote: '198.18.1.1' }] });
  });

  it('plans an L3 LAN like an L2 one: on one server, or across servers with the same hub, peers and links', () => {
    const testbeds = [
      { name: 'a', nodes: 'public' },
      { name: 'b', nodes: 'private', ops: { public: '203.0.113.2', internal: '198.18.2.1' } },
      { name: 'c', nodes: 'private', ops: { public: '203.0.113.3', internal: '198.18.3.1' } },
    ];
    const nodes = [
      { name: 'a1', testbed: 'a' },
      { name: 'b1', testbed: 'b' },
      { name: 'c1', testbed: 'c' },
    ];
    const plan = planExperiment(parseExperiment({ testbeds, nodes, lans: [{ name: 'l3', layer: 3, members: ['a1', 'b1'] }, { name: 'l2', members: ['b1', 'c1'] }] }));
    expect(plan.lans.map((l) => [l.name, l.layer, l.hub, l.peers])).toEqual([
      ['l3', 3, 'b', []],
      ['l2', 2, 'b', ['c']],
    ]);
    const across = planExperiment(parseExperiment({ testbeds, nodes, lans: [{ name: 'l3', layer: 3, members: ['a1', 'b1', 'c1'] }] }));
    const l2 = planExperiment(parseExperiment({ testbeds, nodes, lans: [{ name: 'l3', members: ['a1', 'b1', 'c1'] }] }));
    expect(across.lans[0]!.layer).toBe(3);
    expect({ ...across.lans[0]!, layer: 2 }).toEqual(l2.lans[0]);
    expect(across.links).toEqual(l2.links);
    expect(across.links).toEqual([{ lan: 'l3', hub: 'b', peer: 'c', hub_remote: '203.0.113.2' }]);
    expect(() => parseExperiment({ testbeds, nodes, lans: [{ name: 'x', layer: 4, members: ['a1'] }] })).toThrow(/lans\.0\.layer/);
  });

  it("L3 only: a public testbed that runs a server serves its own nodes as a peer, at its public address, the hub's API direct", () => {
    const testbeds = [
      { name: 'a', nodes: 'public', ops: { public: '203.0.113.1', internal: '198.18.1.1' } },
      { name: 'b', nodes: 'private', ops: { public: '203.0.113.2', internal: '198.18.2.1' } },
      { name: 'c', nodes: 'private', ops: { public: '203.0.113.3', internal: '198.18.3.1' } },
    ];
    const nodes = ['a1', 'a2', 'b1', 'b2', 'c1', 'c2'].map((name) => ({ name, testbed: name[0]! }));
    const members = nodes.map((n) => n.name);
    const l3 = planExperiment(parseExperiment({ testbeds, nodes, lans: [{ name: 'l3', layer: 3, members }] }));
    expect([l3.lans[0]!.hub, l3.lans[0]!.peers]).toEqual(['b', ['c', 'a']]);
    expect(l3.links.map((l) => l.peer)).toEqual(['c', 'a']);
    expect(l3.servers.map((s) => [s.testbed, s.hosts, s.joins])).toEqual([
      ['a', [], ['l3']],
      ['b', ['l3'], []],
      ['c', [], ['l3']],
    ]);
    const a1 = l3.lans[0]!.members.find((m) => m.node === 'a1');
    expect(a1).toMatchObject({ server: 'a', remote: '203.0.113.1', api: '203.0.113.2', api_via: null });
    expect(l3.lans[0]!.members.find((m) => m.node === 'c1')).toMatchObject({ server: 'c', remote: '198.18.3.1', api_via: '198.18.3.1' });
    // the same description as L2: a's nodes use the hub, a runs no server
    const l2 = planExperiment(parseExperiment({ testbeds, nodes, lans: [{ name: 'l2', members }] }));
    expect([l2.lans[0]!.hub, l2.lans[0]!.peers]).toEqual(['b', ['c']]);
    expect(l2.lans[0]!.members.find((m) => m.node === 'a1')).toMatchObject({ server: 'b', remote: '203.0.113.2' });
    expect(l2.servers.map((s) => s.testbed)).toEqual(['b', 'c']);
  });

  const base = {
    testbeds: [
      { name: 'a', nodes: 'public' },
      { name: 'b', nodes: 'private', ops: { public: '203.0.113.2', internal: '198.18.2.1' } },
    ],
    nodes: [
      { name: 'a1', testbed: 'a' },
      { name: 'b1', testbed: 'b' },
    ],
    lans: [{ name: 'lan0', subnet: '198.19.0.0/24', members: ['a1', 'b1'] }],
  };
  it.each([
    ['an unknown node in a LAN', { ...base, lans: [{ name: 'lan0', members: ['a1', 'ghost'] }] }, /node "ghost", which is not described/],
    ['an unknown testbed', { ...base, nodes: [...base.nodes, { name: 'z1', testbed: 'zz' }] }, /testbed "zz", which is not described/],
    ['a duplicate node', { ...base, nodes: [...base.nodes, { name: 'a1', testbed: 'b' }] }, /duplicate node name "a1"/],
    ['a duplicate testbed', { ...base, testbeds: [...base.testbeds, { name: 'a', nodes: 'public' }] }, /duplicate testbed name "a"/],
    ['a duplicate LAN', { ...base, lans: [...base.lans, { name: 'lan0', members: ['a1'] }] }, /duplicate LAN name "lan0"/],
    [
      'a private node whose testbed has no server',
      { ...base, testbeds: [{ name: 'a', nodes: 'public' }, { name: 'b', nodes: 'private' }] },
      /node b1 is private, but its testbed b has no server/,
    ],
    [
      'overlapping LAN subnets',
      { ...base, lans: [...base.lans, { name: 'lan1', subnet: '198.19.0.128/25', members: ['a1'] }] },
      /lan1's subnet 198\.19\.0\.128\/25 overlaps LAN lan0's/,
    ],
    [
      'one address for two nodes',
      { ...base, lans: [{ name: 'lan0', members: [{ node: 'a1', address: '198.19.0.9' }, { node: 'b1', address: '198.19.0.9' }] }] },
      /gives address 198\.19\.0\.9 to two nodes/,
    ],
    ['an address outside the subnet', { ...base, lans: [{ name: 'lan0', subnet: '198.19.0.0/24', members: [{ node: 'a1', address: '198.19.1.9' }] }] }, /not a node address of/],
    ['a node listed twice', { ...base, lans: [{ name: 'lan0', members: ['a1', 'a1'] }] }, /lists node a1 twice/],
    ['no server anywhere', { ...base, testbeds: [{ name: 'a', nodes: 'public' }], nodes: [{ name: 'a1', testbed: 'a' }], lans: [{ name: 'lan0', members: ['a1'] }] }, /no server to host it/],
    ['a bad LAN name', { ...base, lans: [{ name: 'LAN 0', members: ['a1'] }] }, /lans\.0\.name/],
    ['an unknown field', { ...base, extra: 1 }, /extra/],
  ])('refuses %s', (_what, value, message) => {
    let err: unknown;
    try {
      planExperiment(parseExperiment(value));
    } catch (e) {
      err = e;
    }
    expect(isMvpnError(err) && err.code).toBe('MVPN_USAGE');
    expect((err as Error).message).toMatch(message);
  });
});
