/**
 * `mvpn-client demo` itself, on the built executable: one full run of each
 * topology (public + private; `--federated`, two private testbeds) must end
 * with exit 0 (all 30 pairs, all six connected through the server and
 * address the planner gave them) and leave nothing; `--ha` fails over to
 * the second server host within the run and leaves nothing either (its
 * PostgreSQL included); `--l3` (three servers, one routed LAN) moves a
 * node to another server and every pair answers again; `demo --keep` must leave
 * a running demo that `demo down` removes completely, and the plan it
 * printed must be `server plan`'s for the description it kept, and every
 * openvpn it runs (servers and nodes) has dropped to mvpn-openvpn.
 * The demos keep their files under a tmpDir() (`--dir`), so every process
 * they start names this test run's id and the suite's leak check sees it.
 */
import { spawn } from 'node:child_process';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { namespacesWithPrefix } from '../../src/netns/lab.ts';
import { lookupOpenvpnUser } from '../../src/openvpn/unpriv.ts';
import { tmpDir } from '../helpers/tmp.ts';
import { builtBinary } from './binary.ts';

let bin: string;
let dir: { path: string; remove: () => Promise<void> };

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Processes whose command line names `marker`. */
async function processesNaming(marker: string): Promise<string[]> {
  const found: string[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      const cmd = (await readFile(`/proc/${e}/cmdline`, 'utf8')).split('\0').join(' ');
      if (cmd.includes(marker)) found.push(`${e}: ${cmd}`);
    } catch {
      // gone
    }
  }
  return found;
}

const demoId = (stderr: string): string => /demo ([0-9a-f]{6}): namespaces/.exec(stderr)?.[1] ?? 'unknown';

/** After a demo that tore down: none of its namespaces, files or processes. */
async function expectNothingLeft(stderr: string): Promise<void> {
  expect(await namespacesWithPrefix(`mvd-${demoId(stderr)}-`)).toEqual([]);
  expect(await readdir(dir.path)).toEqual([]);
  expect(await processesNaming(dir.path)).toEqual([]);
}

describe('mvpn-client demo (built binary)', () => {
  beforeAll(async () => {
    bin = builtBinary();
    dir = await tmpDir('demo');
  });
  afterAll(async () => {
    await run(['demo', 'down', '--dir', dir.path]);
    await dir.remove();
  }, 120_000);

  it('runs the whole demo: 30/30 pairs, six nodes connected, exit 0, nothing left behind', async () => {
    const r = await run(['demo', '--dir', dir.path]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toContain('30/30 ordered pairs answered');
    expect(r.stdout).toContain('RESULT: OK: 6/6 nodes connected as planned');
    expect(r.stdout.match(/sees 5\/5/g)).toHaveLength(6);
    for (const what of ['topology built', 'plan applied', 'servers up', 'all enrolled', 'all connected', 'ping matrix']) expect(r.stdout).toContain(what);
    // topology 1: one server (b's ops host) for everyone, no link; public nodes at its public address, private at its internal one
    expect(r.stdout).toMatch(/links:\n\(none\)/);
    expect(r.stdout).toMatch(/^a1 +planned b at 198\.18\.0\.1 +in use 198\.18\.0\.1:\d+ +as planned$/m);
    expect(r.stdout).toMatch(/^b1 +planned b at 198\.18\.1\.1 +in use 198\.18\.1\.1:\d+ +as planned$/m);
    expect(r.stdout.match(/ as planned$/gm)).toHaveLength(6);
    expect(r.stdout).toMatch(/== broadcast: a1 pings 198\.19\.0\.255 on the VPN; answered by 5\/5: /);
    await expectNothingLeft(r.stderr);
  }, 600_000);

  it('demo --federated: private testbeds b and c, a server on each ops host joined by a link, as planned; 30/30; nothing left behind', async () => {
    const r = await run(['demo', '--federated', '--dir', dir.path]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    // the plan: b hosts the LAN, c joins it by a link to b's public address; every node through its own ops host
    expect(r.stdout).toMatch(/^b +198\.18\.0\.1 +198\.18\.1\.1 +demo +-$/m);
    expect(r.stdout).toMatch(/^c +198\.18\.0\.2 +198\.18\.2\.1 +- +demo$/m);
    expect(r.stdout).toMatch(/^demo +c +b +198\.18\.0\.1$/m);
    // applied on both servers: the link exported at b and added at c
    expect(r.stdout).toMatch(/^b +link-exported /m);
    expect(r.stdout).toMatch(/^c +link-added .*relay to the hub's API on 198\.18\.2\.1:8444$/m);
    // c's nodes reach the hub's API through that relay: they enrolled with keys made on the node (no export)
    expect(r.stdout).toMatch(/^demo +c1 +c +c +198\.18\.2\.1 +\(allocated by hub\) +198\.18\.0\.1 via 198\.18\.2\.1$/m);
    for (const what of ['all enrolled', 'all connected']) expect(r.stdout).toContain(what);
    for (const id of ['b1', 'b2', 'b3']) expect(r.stdout).toMatch(new RegExp(`^${id} +planned b at 198\\.18\\.1\\.1 +in use 198\\.18\\.1\\.1:\\d+ +as planned$`, 'm'));
    for (const id of ['c1', 'c2', 'c3']) expect(r.stdout).toMatch(new RegExp(`^${id} +planned c at 198\\.18\\.2\\.1 +in use 198\\.18\\.2\\.1:\\d+ +as planned$`, 'm'));
    expect(r.stdout).toContain('30/30 ordered pairs answered');
    expect(r.stdout.match(/sees 5\/5/g)).toHaveLength(6);
    // a broadcast from a node behind b reaches all five others, three of them behind c
    expect(r.stdout).toMatch(/== broadcast: b1 pings 198\.19\.0\.255 on the VPN; answered by 5\/5: b2 b3 c1 c2 c3\n/);
    expect(r.stdout).toContain('RESULT: OK: 6/6 nodes connected as planned');
    await expectNothingLeft(r.stderr);
  }, 600_000);

  it('demo --rspec: the testbeds and LAN a GENI request describes (three component managers, a link between two servers), as planned; 12/12; nothing left behind', async () => {
    const fixtures = join(import.meta.dirname, '../fixtures/rspec');
    const r = await run(['demo', '--rspec', join(fixtures, 'demo-request.xml'), '--testbeds', join(fixtures, 'demo-testbeds.json'), '--dir', dir.path]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    // the request's notes and the plan from it: emu hosts, wall joins, nodes named by client_id with their interfaces
    expect(r.stdout).toContain('link local (line 36) left alone');
    expect(r.stdout).toMatch(/^vpn-lan +L2 +emu +wall +198\.19\.0\.0\/24 +link "vpn-lan": spans 3 component managers$/m);
    expect(r.stdout).toMatch(/^vpn-lan +w-1 +wall +wall +198\.18\.2\.1 +198\.19\.0\.41 +198\.18\.0\.1 via 198\.18\.2\.1 +w-1:if0$/m);
    for (const [id, server, remote] of [['pc-1', 'emu', '198.18.1.1'], ['pc-2', 'emu', '198.18.1.1'], ['vm-a', 'emu', '198.18.0.1'], ['w-1', 'wall', '198.18.2.1']] as const) {
      expect(r.stdout).toMatch(new RegExp(`^${id} +planned ${server} at ${remote.replaceAll('.', '\\.')} +in use ${remote.replaceAll('.', '\\.')}:\\d+ +as planned$`, 'm'));
    }
    // the request's fixed addresses are the nodes' VPN addresses
    expect(r.stdout).toMatch(/^vpn-lan +connected +198\.19\.0\.21\/24 /m);
    expect(r.stdout).toMatch(/^vpn-lan +connected +198\.19\.0\.41\/24 /m);
    expect(r.stdout).toContain('12/12 ordered pairs answered');
    expect(r.stdout.match(/sees 3\/3/g)).toHaveLength(4);
    expect(r.stdout).toMatch(/== broadcast: pc-1 pings 198\.19\.0\.255 on the VPN; answered by 3\/3: pc-2 vm-a w-1\n/);
    expect(r.stdout).toContain('RESULT: OK: 4/4 nodes connected as planned');
    await expectNothingLeft(r.stderr);

    // a request the demo cannot build in the lab ranges is refused before anything is built
    const tenNet = join(dir.path, 'ten.xml');
    await writeFile(tenNet, (await readFile(join(fixtures, 'demo-request.xml'), 'utf8')).replaceAll('198.19.0.', '192.0.2.'));
    const bad = await run(['demo', '--rspec', tenNet, '--testbeds', join(fixtures, 'demo-testbeds.json'), '--dir', dir.path]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("LAN vpn-lan's addresses (192.0.2.0/24) are outside 198.19.0.0/16");
    await rm(tenNet);
    expect(await readdir(dir.path)).toEqual([]);
  }, 600_000);

  it('demo --ha: two server hosts on a PostgreSQL of its own, four nodes; the owner killed, every pair answers again through the other host; nothing left behind', async () => {
    const r = await run(['demo', '--ha', '--dir', dir.path]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    // PostgreSQL on a unix socket in the demo's directory, no TCP
    expect(r.stderr).toMatch(new RegExp(`PostgreSQL \\d+ on the unix socket in ${dir.path}/[0-9a-f]{6}/pg/sock \\(no TCP\\)`));
    // both hosts in every node's bundle, hub first
    for (const n of ['a1', 'a2', 'a3', 'a4']) expect(r.stdout).toMatch(new RegExp(`^b +node-remotes-set +${n} +remotes 198\\.18\\.0\\.1, then 198\\.18\\.0\\.2 \\(b2, same store\\)$`, 'm'));
    expect(r.stdout).toContain("== high availability: the LAN's server on b (198.18.0.1) and b2 (198.18.0.2), one PostgreSQL store");
    expect(r.stdout).toContain('owner before: host b (198.18.0.1), epoch 1');
    expect(r.stdout).toContain('owner after: host b2 (198.18.0.2), epoch 2');
    // the matrix before and after the kill, all 12 pairs each time
    expect(r.stdout.match(/^12\/12 ordered pairs answered$/gm)).toHaveLength(2);
    const s = Number(/^every pair answered again (\d+\.\d) s after the kill$/m.exec(r.stdout)?.[1]);
    expect(s).toBeGreaterThan(0);
    expect(s).toBeLessThan(60); // a hang guard; the figure is BENCHMARKS.md's "HA failover"
    expect(r.stdout).toMatch(/RESULT: OK: 4\/4 nodes connected as planned, 12\/12 ordered pairs ping over one L2 network, and again \d+\.\d s after the owning host was killed/);
    // PostgreSQL was the demo's, stopped with it (its command line named the demo's directory: the leak check)
    await expectNothingLeft(r.stderr);
  }, 600_000);

  it('demo --l3 --keep: three servers (public a, private b and c), one L3 LAN; a1 cut off from its server moves to c and every pair answers again; demo down removes it all, BIRD included', async () => {
    const r = await run(['demo', '--l3', '--keep', '--dir', dir.path]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    // the plan: L3, hub b, peers c and a (a public testbed with a server of its own serves its nodes in an L3 LAN)
    expect(r.stdout).toMatch(/^demo +L3 +b +c,a +198\.19\.0\.0\/24 +-$/m);
    expect(r.stdout).toMatch(/^a +198\.18\.0\.3 +198\.18\.3\.1 +- +demo$/m);
    for (const peer of ['a', 'c']) expect(r.stdout).toMatch(new RegExp(`^${peer} +link-added `, 'm'));
    expect(r.stdout).toMatch(/^b +node-remotes-set +a1 +remotes 198\.18\.0\.3:\d+, then 198\.18\.0\.2:\d+ \(c's server\)$/m);
    for (const [ids, server, remote] of [[['a1', 'a2'], 'a', '198.18.0.3'], [['b1', 'b2'], 'b', '198.18.1.1'], [['c1', 'c2'], 'c', '198.18.2.1']] as const) {
      for (const id of ids) expect(r.stdout).toMatch(new RegExp(`^${id} +planned ${server} at ${remote.replaceAll('.', '\\.')} +in use ${remote.replaceAll('.', '\\.')}:\\d+ +as planned$`, 'm'));
    }
    // the matrix before and after the move, all 30 pairs each time; a1 ends on c's server with its address
    expect(r.stdout.match(/^30\/30 ordered pairs answered$/gm)).toHaveLength(2);
    expect(r.stdout).toMatch(/^a1 connected at c's server \d+\.\d s after the cut/m);
    expect(r.stdout).toMatch(/^a1 now in use 198\.18\.0\.2:\d+: c's server, same address 198\.19\.0\.\d+$/m);
    const s = Number(/^every pair answered again (\d+\.\d) s after the cut$/m.exec(r.stdout)?.[1]);
    expect(s).toBeGreaterThan(0);
    expect(s).toBeLessThan(180); // a hang guard: openvpn's failover alone takes ~40 s
    console.log(`demo --l3: ${/^a1 connected at c's server .*$/m.exec(r.stdout)?.[0]}; every pair answered again ${s} s after the cut`);
    expect(r.stdout).toMatch(/RESULT: OK: 6\/6 nodes connected as planned, 30\/30 ordered pairs ping over one L3 network routed across 3 servers, and again \d+\.\d s after a1's first server was cut off/);
    // kept: each server's daemon runs its own BIRD (its config under the demo's directory)
    expect((await processesNaming(dir.path)).filter((p) => /^\d+: \S*bird /.test(p))).toHaveLength(3);
    const down = await run(['demo', 'down', '--dir', dir.path]);
    expect(down.code, down.stderr).toBe(0);
    expect(down.stdout).toContain(`removed demo(s) ${demoId(r.stderr)}`);
    await expectNothingLeft(r.stderr);

    const both = await run(['demo', '--l3', '--ha', '--dir', dir.path]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--federated, --ha and --l3 are different demos: give one');
    expect(await readdir(dir.path)).toEqual([]);
  }, 600_000);

  it('demo --keep --agentless 2 leaves it running with commands to look around, two nodes on stock openvpn in the matrix; demo down removes everything', async () => {
    const r = await run(['demo', '--keep', '--agentless', '2', '--dir', dir.path]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    const id = demoId(r.stderr);
    // a3 (public) and b3 (private) run `openvpn --config` of their exported profile, and ping and are pinged like the rest
    for (const n of ['a3', 'b3']) expect(r.stdout).toMatch(new RegExp(`^-- ${n}: .*AGENTLESS: stock openvpn --config \\S+/${n}\\.ovpn`, 'm'));
    expect(r.stdout.match(/AGENTLESS/g)).toHaveLength(2);
    expect(r.stdout).toMatch(/^a3 +planned b at 198\.18\.0\.1 +in use 198\.18\.0\.1:\d+ +as planned$/m);
    expect(r.stdout).toContain('30/30 ordered pairs answered');
    expect(r.stdout).toContain('RESULT: OK: 6/6 nodes connected as planned');
    expect((await processesNaming('.ovpn')).filter((p) => p.includes(dir.path))).toHaveLength(2);
    expect(r.stdout).toContain('ip netns exec mvd-');
    expect(r.stdout).toContain(`demo down --dir ${dir.path}`);
    expect((await namespacesWithPrefix(`mvd-${id}-`)).length).toBeGreaterThan(0);
    expect((await processesNaming(dir.path)).length).toBeGreaterThan(6);
    // every openvpn of the demo, the servers' and the nodes', runs as mvpn-openvpn (issue 19)
    const who = await lookupOpenvpnUser();
    expect(who).toBeDefined();
    const openvpns = (await processesNaming(dir.path)).filter((p) => /\/openvpn-[^ /]+\.sock /.test(p) && /^\d+: \S*openvpn /.test(p));
    // the server and the four agent-run nodes; the two agentless nodes run a stock openvpn as their operator starts it (no management socket)
    expect(openvpns.length, 'the server and four agent-run nodes at least').toBeGreaterThanOrEqual(5);
    for (const p of openvpns) {
      const status = await readFile(`/proc/${p.split(':')[0]}/status`, 'utf8').catch(() => '');
      expect(Number(/^Uid:\s+\d+\s+(\d+)/m.exec(status)?.[1]), p).toBe(who!.uid);
    }
    // the printed status command works as printed
    const statusLine = r.stdout.split('\n').find((l) => l.includes(' status --runtime-dir '))!.trim().split(/\s+/);
    const st = await new Promise<number | null>((resolve) => spawn(statusLine[0]!, statusLine.slice(1), { stdio: 'ignore' }).once('exit', resolve));
    expect(st).toBe(0);
    // the plan the demo printed is what the planner says of the description it kept (server plan, no state needed)
    const expFile = /== plan \(mvpn-client server plan (\S+)\)/.exec(r.stdout)?.[1];
    expect(expFile).toBeDefined();
    const planned = await run(['server', 'plan', expFile!]);
    expect(planned.code, planned.stderr).toBe(0);
    expect(r.stdout).toContain(planned.stdout);

    const down = await run(['demo', 'down', '--dir', dir.path]);
    expect(down.code, down.stderr).toBe(0);
    expect(down.stdout).toContain(`removed demo(s) ${id}`);
    expect(await namespacesWithPrefix(`mvd-${id}-`)).toEqual([]);
    expect(await processesNaming(dir.path)).toEqual([]);
    expect(await readdir(dir.path)).toEqual([]);
  }, 600_000);
});
