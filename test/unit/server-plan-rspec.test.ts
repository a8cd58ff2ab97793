/**
 * GENI request RSpecs into plans (src/server/federation/rspec.ts): request
 * documents written from the GENI v3 and ProtoGENI v2 request schemas and
 * from published examples (test/fixtures/rspec/), each planned and its whole
 * plan asserted; the same description written as JSON plans the same; and
 * every bad input refused with its code and a message naming the element
 * and line, including an entity bomb, which stops at its DOCTYPE.
 *
 * Addresses in these requests (10.x, as in the published examples) are
 * planning data only; nothing here configures an interface.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isMvpnError } from '../../src/errors.ts';
import { parseExperiment, planExperiment, type Plan, type PlanMember } from '../../src/server/federation/plan.ts';
import { MAX_RSPEC_BYTES, parseTestbedsFile, planRequest, type TestbedsFile } from '../../src/server/federation/rspec.ts';

const DIR = join(import.meta.dirname, '../fixtures/rspec');
const read = (name: string): string => readFileSync(join(DIR, name), 'utf8');
const TESTBEDS = parseTestbedsFile(JSON.parse(read('testbeds.json')), 'testbeds.json');
const EMU = { public: '203.0.113.2', internal: '198.18.2.1' };
const WALL = { public: '203.0.113.3', internal: '198.18.3.1' };
const CM = {
  emu: 'urn:publicid:IDN+emulab.net+authority+cm',
  uky: 'urn:publicid:IDN+uky.emulab.net+authority+cm',
  wall: 'urn:publicid:IDN+wall2.ilabt.iminds.be+authority+cm',
};

/** The 1-based line of the first occurrence of `needle` in `text`. */
const lineOf = (text: string, needle: string): number => {
  const i = text.indexOf(needle);
  if (i < 0) throw new Error(`fixture has no ${needle}`);
  return text.slice(0, i).split('\n').length;
};

/** A planned member: node, testbed, server, remote, address, api, api_via, interface. */
const m = (node: string, testbed: string, server: string, remote: string, address: string | null, api: string, apiVia: string | null, iface: string): PlanMember => ({
  node,
  testbed,
  server,
  remote,
  address,
  api,
  api_via: apiVia,
  interface: iface,
});

interface Case {
  readonly file: string;
  readonly schema: 'geni-v3' | 'protogeni-v2';
  readonly plan: Plan;
  readonly ignored: readonly { link: string; reason: string }[];
  readonly unplanned: readonly string[];
}

const cases: readonly Case[] = [
  {
    file: 'v3-openvpn-lan.xml',
    schema: 'geni-v3',
    plan: {
      servers: [{ testbed: 'emu', ...EMU, hosts: ['lan0'], joins: [] }],
      lans: [
        {
          name: 'lan0',
          subnet: '192.0.2.0/24',
          layer: 2,
          reason: 'link "lan0": link_type openvpn',
          hub: 'emu',
          peers: [],
          members: [
            m('node-0', 'emu', 'emu', EMU.internal, '192.0.2.2', EMU.internal, null, 'node-0:if0'),
            m('node-1', 'emu', 'emu', EMU.internal, '192.0.2.3', EMU.internal, null, 'node-1:if0'),
            m('node-2', 'emu', 'emu', EMU.internal, null, EMU.internal, null, 'node-2:if0'),
          ],
        },
      ],
      links: [],
    },
    ignored: [{ link: 'lan1', reason: 'link_type lan, one component manager' }],
    unplanned: ['island'],
  },
  {
    file: 'pg2-two-cm.xml',
    schema: 'protogeni-v2',
    plan: {
      servers: [{ testbed: 'emu', ...EMU, hosts: ['center'], joins: [] }],
      lans: [
        {
          name: 'center',
          subnet: null,
          layer: 2,
          reason: 'link "center": spans 2 component managers',
          hub: 'emu',
          peers: [],
          members: [m('left', 'emu', 'emu', EMU.internal, null, EMU.internal, null, 'left:if0'), m('right', 'uky', 'emu', EMU.public, null, EMU.public, null, 'right:if0')],
        },
      ],
      links: [],
    },
    ignored: [],
    unplanned: [],
  },
  {
    file: 'v3-three-cm.xml',
    schema: 'geni-v3',
    plan: {
      servers: [
        { testbed: 'emu', ...EMU, hosts: ['stitched-lan'], joins: [] },
        { testbed: 'wall', ...WALL, hosts: [], joins: ['stitched-lan'] },
      ],
      lans: [
        {
          name: 'stitched-lan',
          subnet: '192.0.2.0/24',
          layer: 2,
          reason: 'link "Stitched LAN #1": spans 3 component managers',
          hub: 'emu',
          peers: ['wall'],
          members: [
            m('e1', 'emu', 'emu', EMU.internal, '192.0.2.11', EMU.internal, null, 'e1:if0'),
            m('e2', 'emu', 'emu', EMU.internal, '192.0.2.12', EMU.internal, null, 'e2:if0'),
            m('u1', 'uky', 'emu', EMU.public, '192.0.2.21', EMU.public, null, 'u1:if0'),
            m('w1', 'wall', 'wall', WALL.internal, '192.0.2.31', EMU.public, WALL.internal, 'w1:if0'),
            m('w2', 'wall', 'wall', WALL.internal, '192.0.2.32', EMU.public, WALL.internal, 'w2:if0'),
          ],
        },
      ],
      links: [{ lan: 'stitched-lan', hub: 'emu', peer: 'wall', hub_remote: EMU.public }],
    },
    ignored: [],
    unplanned: [],
  },
  {
    file: 'v3-two-links.xml',
    schema: 'geni-v3',
    plan: {
      servers: [{ testbed: 'emu', ...EMU, hosts: ['left', 'right'], joins: [] }],
      lans: [
        {
          name: 'left',
          subnet: '198.51.100.0/24',
          layer: 2,
          reason: 'link "left": link_type openvpn',
          hub: 'emu',
          peers: [],
          members: [m('router', 'emu', 'emu', EMU.internal, '198.51.100.2', EMU.internal, null, 'router:if0'), m('a1', 'uky', 'emu', EMU.public, '198.51.100.3', EMU.public, null, 'a1:if0')],
        },
        {
          name: 'right',
          subnet: '192.0.2.0/24',
          layer: 2,
          reason: 'link "right": link_type openvpn',
          hub: 'emu',
          peers: [],
          members: [m('router', 'emu', 'emu', EMU.internal, '192.0.2.2', EMU.internal, null, 'router:if1'), m('b1', 'emu', 'emu', EMU.internal, null, EMU.internal, null, 'b1:if0')],
        },
      ],
      links: [],
    },
    ignored: [],
    unplanned: [],
  },
  {
    file: 'v3-l3.xml',
    schema: 'geni-v3',
    plan: {
      servers: [{ testbed: 'emu', ...EMU, hosts: ['routed'], joins: [] }],
      lans: [
        {
          name: 'routed',
          subnet: '198.51.100.0/25',
          layer: 3,
          reason: 'link "routed": link_type openvpn-l3',
          hub: 'emu',
          peers: [],
          members: [
            m('e1', 'emu', 'emu', EMU.internal, '198.51.100.5', EMU.internal, null, 'e1:if0'),
            m('e2', 'emu', 'emu', EMU.internal, null, EMU.internal, null, 'e2:if0'),
            m('u1', 'uky', 'emu', EMU.public, null, EMU.public, null, 'u1:if0'),
          ],
        },
      ],
      links: [],
    },
    ignored: [],
    unplanned: [],
  },
  {
    file: 'v3-extensions.xml',
    schema: 'geni-v3',
    plan: {
      servers: [{ testbed: 'wall', ...WALL, hosts: ['link0'], joins: [] }],
      lans: [
        {
          name: 'link0',
          subnet: '198.51.100.0/24',
          layer: 2,
          reason: 'link "link0": spans 2 component managers',
          hub: 'wall',
          peers: [],
          members: [m('pc1', 'wall', 'wall', WALL.internal, '198.51.100.2', WALL.internal, null, 'pc1:if0'), m('pc2', 'uky', 'wall', WALL.public, '198.51.100.3', WALL.public, null, 'pc2:if0')],
        },
      ],
      links: [],
    },
    // the stitching extension's own <link> elements are another namespace's: not links of the request
    ignored: [],
    unplanned: [],
  },
];

describe('server plan --rspec: request RSpecs planned', () => {
  it.each(cases)('$file', async (c) => {
    const text = read(c.file);
    const r = await planRequest(text, TESTBEDS);
    expect(r.schema).toBe(c.schema);
    expect(r.plan).toEqual(c.plan);
    expect(r.ignored).toEqual(c.ignored.map((l) => ({ ...l, line: lineOf(text, `<link client_id="${l.link}"`) })));
    expect(r.unplanned).toEqual(c.unplanned);
  });

  it('plans the same as the experiment description that says the same in JSON', async () => {
    const fromRspec = await planRequest(read('v3-three-cm.xml'), TESTBEDS);
    const json = parseExperiment({
      testbeds: [
        { name: 'emu', nodes: 'private', ops: EMU },
        { name: 'uky', nodes: 'public' },
        { name: 'wall', nodes: 'private', ops: WALL },
      ],
      nodes: [
        { name: 'e1', testbed: 'emu' },
        { name: 'e2', testbed: 'emu' },
        { name: 'u1', testbed: 'uky' },
        { name: 'w1', testbed: 'wall' },
        { name: 'w2', testbed: 'wall' },
      ],
      lans: [
        {
          name: 'stitched-lan',
          subnet: '192.0.2.0/24',
          layer: 2,
          reason: 'link "Stitched LAN #1": spans 3 component managers',
          members: ['e1', 'e2', 'u1', 'w1', 'w2'].map((n, i) => ({ node: n, address: ['192.0.2.11', '192.0.2.12', '192.0.2.21', '192.0.2.31', '192.0.2.32'][i], interface: `${n}:if0` })),
        },
      ],
    });
    expect(fromRspec.experiment).toEqual(json);
    expect(fromRspec.plan).toEqual(planExperiment(json));
  });

  it('a request with no VPN link plans nothing and says why', async () => {
    const text = read('v3-openvpn-lan.xml').replace('<link_type name="openvpn"/>', '<link_type name="lan"/>');
    const r = await planRequest(text, TESTBEDS);
    expect(r.experiment).toBeNull();
    expect(r.plan).toEqual({ servers: [], lans: [], links: [] });
    expect(r.ignored.map((l) => l.link)).toEqual(['lan0', 'lan1']);
    expect(r.unplanned).toEqual(['node-0', 'node-1', 'node-2', 'island']);
  });
});

/** A minimal v3 request around `body`. */
const doc = (body: string, head = '<?xml version="1.0"?>\n') => `${head}<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">\n${body}\n</rspec>\n`;
const node = (id: string, cm: string, ifaces = `<interface client_id="${id}:if0"/>`) => `  <node client_id="${id}" component_manager_id="${cm}">${ifaces}</node>`;
const vpn = (id: string, ifs: string[], type = 'openvpn') => `  <link client_id="${id}">${ifs.map((i) => `<interface_ref client_id="${i}"/>`).join('')}<link_type name="${type}"/></link>`;
const ip = (id: string, address: string, netmask = '255.255.255.0') => `<interface client_id="${id}:if0"><ip address="${address}" netmask="${netmask}" type="ipv4"/></interface>`;

const BILLION_LAUGHS = `<?xml version="1.0"?>
<!DOCTYPE rspec [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">
  <node client_id="&lol9;" component_manager_id="${CM.emu}"><interface client_id="x:if0"/></node>
</rspec>
`;

const two = [node('a', CM.emu), node('b', CM.emu)];

describe('server plan --rspec: bad requests are refused, naming element and line', () => {
  const badCases: readonly (readonly [string, string | Uint8Array, string, RegExp, TestbedsFile?])[] = [
    ['malformed XML', doc(`${two.join('\n')}\n  <link client_id="l"><interface_ref client_id="a:if0"></link>`), 'MVPN_RSPEC_INVALID', /not well-formed XML at line 5, column \d+: /],
    ['an entity bomb (billion laughs)', BILLION_LAUGHS, 'MVPN_RSPEC_DOCTYPE', /line \d+: a DOCTYPE is refused/],
    ['an external entity', `<?xml version="1.0"?>\n<!DOCTYPE rspec SYSTEM "http://198.18.0.1/evil.dtd">\n${doc('').split('\n').slice(2).join('\n')}`, 'MVPN_RSPEC_DOCTYPE', /line 2: a DOCTYPE is refused/],
    ['an entity reference without a declaration', doc(`  <node client_id="&xxe;" component_manager_id="${CM.emu}"/>`), 'MVPN_RSPEC_INVALID', /line 3, column \d+: undefined entity/],
    ['a manifest', doc('').replace('type="request"', 'type="manifest"'), 'MVPN_RSPEC_INVALID', /line 2: <rspec type="manifest"> is not a request/],
    ['another root', '<?xml version="1.0"?>\n<rspec xmlns="http://example.invalid/rspec" type="request"/>', 'MVPN_RSPEC_INVALID', /line 2: the root element is <rspec> in namespace "http:\/\/example.invalid\/rspec"/],
    [
      'an unknown component manager',
      doc([node('a', CM.emu), node('z', 'urn:publicid:IDN+nowhere.example+authority+cm'), vpn('l', ['a:if0', 'z:if0'])].join('\n')),
      'MVPN_RSPEC_INVALID',
      /line 4: <node client_id="z"> is on component manager urn:publicid:IDN\+nowhere\.example\+authority\+cm, which is in no testbed of the testbeds file/,
    ],
    ['an interface_ref naming no interface', doc([...two, vpn('l', ['a:if0', 'ghost:if0'])].join('\n')), 'MVPN_RSPEC_INVALID', /line 5: link "l" has <interface_ref client_id="ghost:if0">, which names no interface/],
    ['a duplicate node client_id', doc([...two, node('a', CM.uky, '')].join('\n')), 'MVPN_RSPEC_INVALID', /line 5: duplicate node client_id "a" \(first at line 3\)/],
    ['a duplicate interface client_id', doc([...two, node('c', CM.emu, '<interface client_id="a:if0"/>')].join('\n')), 'MVPN_RSPEC_INVALID', /line 5: duplicate interface client_id "a:if0" \(first at line 3\)/],
    ['an interface in two links', doc([...two, vpn('l', ['a:if0', 'b:if0']), vpn('m', ['a:if0'])].join('\n')), 'MVPN_RSPEC_INVALID', /line 6: interface a:if0 is in link "m" and in link "l" \(line 5\); an interface belongs to one link/],
    ['a duplicate link client_id', doc([...two, vpn('l', ['a:if0']), vpn('l', ['b:if0'])].join('\n')), 'MVPN_RSPEC_INVALID', /line 6: duplicate link client_id "l" \(first at line 5\)/],
    [
      'members on different subnets',
      doc([node('a', CM.emu, ip('a', '198.18.1.2')), node('b', CM.emu, ip('b', '198.18.2.3')), vpn('l', ['a:if0', 'b:if0'])].join('\n')),
      'MVPN_RSPEC_INVALID',
      /line 4: link "l": interface b:if0 is on 198\.18\.2\.0\/24 but interface a:if0 \(line 3\) is on 198\.18\.1\.0\/24/,
    ],
    ['a netmask that is not one', doc([node('a', CM.emu, ip('a', '198.18.1.2', '255.0.255.0')), vpn('l', ['a:if0'])].join('\n')), 'MVPN_RSPEC_INVALID', /line 3: interface a:if0: netmask "255\.0\.255\.0" is not a usable/],
    [
      'a private node whose testbed has no ops host',
      doc([...two, vpn('l', ['a:if0', 'b:if0'])].join('\n')),
      'MVPN_USAGE',
      /node a is private, but its testbed emu has no server .*\(<node client_id="a"> at line 3\)/,
      { testbeds: [{ name: 'emu', nodes: 'private', component_manager: CM.emu }] },
    ],
    [
      "a fixed address that is the server's",
      doc([node('a', CM.emu, ip('a', '198.18.1.1')), vpn('l', ['a:if0'])].join('\n')),
      'MVPN_USAGE',
      /address 198\.18\.1\.1 of a is not a node address of 198\.18\.1\.0\/24 \(the first host is the server's\) \(<link> of LAN l at line 4\)/,
    ],
    ['a VPN node without a component manager', doc([node('a', CM.emu), '  <node client_id="b"><interface client_id="b:if0"/></node>', vpn('l', ['a:if0', 'b:if0'])].join('\n')), 'MVPN_RSPEC_INVALID', /line 4: <node client_id="b"> is in VPN link "l" but has no component_manager_id/],
    ['a document that is not UTF-8', Buffer.concat([Buffer.from(doc('').slice(0, 30)), Buffer.from([0xff, 0xfe]), Buffer.from(doc('').slice(30))]), 'MVPN_RSPEC_INVALID', /the document is not UTF-8 text/],
    ['an oversize document', doc(`<!-- ${'x'.repeat(MAX_RSPEC_BYTES)} -->`), 'MVPN_RSPEC_TOO_LARGE', /more than the 4194304 accepted/],
  ];

  const rows = badCases.map(([what, text, code, message, testbeds]) => ({ what, text, code, message, testbeds: testbeds ?? TESTBEDS }));
  it.each(rows)('$what', async ({ text, code, message, testbeds }) => {
    const err = await planRequest(text, testbeds).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isMvpnError(err), String(err)).toBe(true);
    if (!isMvpnError(err)) return;
    expect(err.code, err.message).toBe(code);
    expect(err.message).toMatch(message);
  });

  it('an openvpn-l3 link across two private testbeds is an L3 LAN with a hub and a peer, linked like an L2 one', async () => {
    const r = await planRequest(doc([node('a', CM.emu), node('w', CM.wall), vpn('routed', ['a:if0', 'w:if0'], 'openvpn-l3')].join('\n')), TESTBEDS);
    expect(r.plan.lans.map((l) => [l.name, l.layer, l.peers.length])).toEqual([['routed', 3, 1]]);
    expect(r.plan.links.map((l) => l.lan)).toEqual(['routed']);
  });

  it('refuses an entity bomb at its DOCTYPE without expanding it (bounded memory)', { timeout: 10_000 }, async () => {
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 20; i++) await expect(planRequest(BILLION_LAUGHS, TESTBEDS)).rejects.toMatchObject({ code: 'MVPN_RSPEC_DOCTYPE' });
    // Expanded once, lol9 is 3·10^9 characters; refused at the DOCTYPE, the heap barely moves.
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(64 << 20);
  });

  it('refuses a testbeds file whose component managers repeat or are not URNs', () => {
    expect(() => parseTestbedsFile({ testbeds: [{ name: 'a', nodes: 'public', component_manager: CM.emu }, { name: 'b', nodes: 'public', component_manager: CM.emu }] }, 'tb.json')).toThrow(
      /testbeds a and b both say component manager/,
    );
    expect(() => parseTestbedsFile({ testbeds: [{ name: 'a', nodes: 'public', component_manager: 'emulab.net' }] }, 'tb.json')).toThrow(/testbeds\.0\.component_manager: expected a component manager URN/);
  });
});
