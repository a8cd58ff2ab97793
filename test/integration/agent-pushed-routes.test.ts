/**
 * The agent's own path for a network that allows pushed routes (issue 22,
 * finding 3): `mvpn-client run` reads the node's underlay in its namespace
 * when it installs the bundle and renders route filters only for listed
 * prefixes that overlap none of it; the refused one is logged and named in
 * the rendered config, and the network still connects. When its server then
 * turns hostile, `mvpn-client status` shows the network degraded with the
 * refused push, and the node's routes stay as they were. The cases of a
 * hostile server one by one are hostile-push.test.ts.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentWorld, net, runCli } from '../helpers/agent-fixtures.ts';
import { withLab } from '../helpers/netns.ts';

describe('agent: pushed-route prefixes on the node', () => {
  it('accepts a listed prefix, refuses one that overlaps a subnet of the node (logged, named in the config), connects; a server turned hostile shows as degraded in status', async () => {
    await withLab(async (lab) => {
      const w = await AgentWorld.create(lab);
      // A second underlay subnet on the node, standing for its testbed control network.
      await w.node.exec('ip', ['addr', 'add', '192.0.2.2/24', 'dev', 'eth0']);
      await w.addNetwork('alpha');
      await w.publish({ hostile: { id: 'alpha', spec: { allow_pushed_routes: true, pushed_routes: ['203.0.113.0/24', '192.0.2.0/25'] } } });
      await w.writeConfig();
      const agent = w.startAgent();
      try {
        const s = await w.waitStatus((st) => net(st, 'alpha')?.state === 'connected');
        expect(net(s, 'alpha')).toMatchObject({ state: 'connected', last_error: null });
        const conf = await readFile(join(w.stateDir, 'networks', 'alpha', 'openvpn.conf'), 'utf8');
        expect(conf).toContain('pull-filter accept "route 203.0.113.0 255.255.255.0"\n');
        expect(conf).not.toContain('pull-filter accept "route 192.0.2.0');
        expect(conf).toContain('# pushed routes for 192.0.2.0/25 refused on this node: it overlaps the subnet of eth0 (192.0.2.0/24)');
        expect(conf).toContain('pull-filter ignore "route"\n');
        expect(agent.log()).toContain('alpha: pushed routes for 192.0.2.0/25 refused on this node: it overlaps the subnet of eth0 (192.0.2.0/24)');

        // The server turns hostile (its client-config-dir is read at every connect); a restart makes the node pull again.
        const routesBefore = (await w.node.exec('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout;
        await writeFile(join(w.dir, 'srv', 'alpha', 'ccd', w.nodeId), 'ifconfig-push 128.0.0.5 128.0.0.0\npush "route 0.0.0.0 128.0.0.0"\npush "route 128.0.0.0 128.0.0.0"\n');
        expect((await runCli(['restart', 'alpha', '--runtime-dir', w.runtimeDir])).code).toBe(0);
        const bad = await w.waitStatus((st) => net(st, 'alpha')?.last_error?.code === 'MVPN_OPENVPN_PUSH_REFUSED' && net(st, 'alpha')?.state === 'degraded');
        expect(net(bad, 'alpha')?.last_error?.message).toContain("'ifconfig 128.0.0.5 128.0.0.0'");
        expect(net(bad, 'alpha')?.last_error?.message).toContain("'route 0.0.0.0 128.0.0.0'");
        const table = await runCli(['status', '--runtime-dir', w.runtimeDir]);
        expect(table.stdout).toMatch(/^alpha\s+degraded\b/m);
        expect(table.stdout).toContain('MVPN_OPENVPN_PUSH_REFUSED');
        const routesAfter = (await w.node.exec('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout;
        // The old address's routes went with the restart (the tap stays, unaddressed); nothing new appeared.
        const added = routesAfter.split('\n').filter((l) => l !== '' && !routesBefore.split('\n').includes(l));
        expect(added).toEqual([]);
        expect(routesAfter).not.toMatch(/^(0\.0\.0\.0|128\.0\.0\.0)\/1 /m);
      } finally {
        await agent.stop();
        await w.cleanup();
      }
    });
  });
});
