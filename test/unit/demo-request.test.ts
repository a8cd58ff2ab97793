/**
 * `demo --rspec` (src/demo/request.ts): the request's testbeds become the
 * demo's namespaces with nodes named by their client_ids and the request's
 * description is what the demo plans; requests the demo cannot build within
 * the lab ranges, or whose proofs do not apply, are refused before anything
 * is built, saying why.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { demoRequest } from '../../src/demo/request.ts';
import { parseTestbedsFile } from '../../src/server/federation/rspec.ts';

const DIR = join(import.meta.dirname, '../fixtures/rspec');
const read = (name: string): string => readFileSync(join(DIR, name), 'utf8');
const TESTBEDS = parseTestbedsFile(JSON.parse(read('demo-testbeds.json')), 'demo-testbeds.json');
const REQUEST = read('demo-request.xml');

describe('demo --rspec: the request as the demo builds it', () => {
  it('builds the testbeds the plan uses, nodes named by client_id; plans the one LAN with its addresses', async () => {
    const r = await demoRequest(REQUEST, TESTBEDS);
    expect(r.testbeds).toEqual([
      { name: 'emu', nodes: 'private', count: 2, nodeIds: ['pc-1', 'pc-2'], ops: { public: '198.18.0.1', internal: '198.18.1.1' } },
      { name: 'uky', nodes: 'public', count: 1, nodeIds: ['vm-a'] },
      { name: 'wall', nodes: 'private', count: 1, nodeIds: ['w-1'], ops: { public: '198.18.0.2', internal: '198.18.2.1' } },
    ]);
    expect(r.experiment.lans).toEqual([
      {
        name: 'vpn-lan',
        subnet: '198.19.0.0/24',
        layer: 2,
        reason: 'link "vpn-lan": spans 3 component managers',
        members: [
          { node: 'pc-1', address: '198.19.0.21', interface: 'pc-1:if0' },
          { node: 'pc-2', interface: 'pc-2:if0' },
          { node: 'vm-a', interface: 'vm-a:if0' },
          { node: 'w-1', address: '198.19.0.41', interface: 'w-1:if0' },
        ],
      },
    ]);
    expect(r.notes).toContain('link local (line 36) left alone');
    expect(r.notes).toContain('nodes in no VPN LAN: island');
  });

  it('gives a LAN without addresses the demo subnet', async () => {
    const r = await demoRequest(REQUEST.replace(/<ip [^>]*\/>/g, ''), TESTBEDS);
    expect(r.experiment.lans[0]!.subnet).toBe('198.19.0.0/24');
  });

  const withTestbed = (name: string, ops: { public: string; internal: string }) => ({
    testbeds: TESTBEDS.testbeds.map((t) => (t.name === name ? { ...t, ops: { ...ops, server: true } } : t)),
  });
  it.each([
    ['addresses outside the lab range', REQUEST.replaceAll('198.19.0.', '192.0.2.'), TESTBEDS, /LAN vpn-lan's addresses \(192\.0\.2\.0\/24\) are outside 198\.19\.0\.0\/16/],
    ['a Layer 3 LAN', REQUEST.replace('<interface_ref client_id="w-1:if0"/>', '<interface_ref client_id="w-1:if0"/><link_type name="openvpn-l3"/>'), TESTBEDS, /LAN vpn-lan is Layer 3/],
    ['two VPN LANs', REQUEST.replace('<link_type name="lan"/>', '<link_type name="openvpn"/>'), TESTBEDS, /the request has 2 VPN LANs \(vpn-lan, local\)/],
    ['no VPN LAN', REQUEST.replace(/<link client_id="vpn-lan">[\s\S]*?<\/link>/, ''), TESTBEDS, /the request has no VPN LAN/],
    ['an ops host off the demo internet', REQUEST, withTestbed('wall', { public: '203.0.113.9', internal: '198.18.2.1' }), /testbed wall: ops public address 203\.0\.113\.9 must be 198\.18\.0\.1 to 198\.18\.0\.10/],
    ['an ops internal address that is not a .1', REQUEST, withTestbed('wall', { public: '198.18.0.2', internal: '198.18.2.7' }), /testbed wall: ops internal address 198\.18\.2\.7 must be the \.1 of a \/24/],
    ['two ops hosts on one LAN', REQUEST, withTestbed('wall', { public: '198.18.0.2', internal: '198.18.1.1' }), /testbeds emu and wall have their ops internal addresses on the same \/24/],
  ] as const)('refuses %s', async (_what, text, testbeds, message) => {
    await expect(demoRequest(text, parseTestbedsFile(testbeds, 't.json'))).rejects.toThrow(message);
  });
});
