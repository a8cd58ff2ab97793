/**
 * The agent daemon on real parts, with signed documents and bundles made by
 * the real building code and published as files (a `file` source): real
 * openvpn servers and the agent's openvpn clients in namespaces, the agent
 * as a child process (`node src/main.ts run`) in the node's namespace.
 * Server-mode end-to-end tests (HTTPS API, enrollment) are in agent-e2e.
 */
import { spawn } from 'node:child_process';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createCrl } from '../../src/pki/crl.ts';
import { ExitCode } from '../../src/errors.ts';
import { AgentWorld, allConnected, MAIN, net, NODE_BIN, openvpnPids } from '../helpers/agent-fixtures.ts';
import { waitFor, withLab } from '../helpers/netns.ts';
import { startNotifyListener } from '../helpers/notify-listener.ts';

function cli(args: string[], opts: { asNobody?: boolean } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const argv = opts.asNobody ? ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', NODE_BIN, MAIN, ...args] : [NODE_BIN, MAIN, ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

async function world(lab: Parameters<Parameters<typeof withLab>[0]>[0], ids: string[]): Promise<AgentWorld> {
  const w = await AgentWorld.create(lab);
  for (const id of ids) await w.addNetwork(id);
  await w.publish();
  await w.writeConfig();
  return w;
}

describe('agent daemon (file source)', () => {
  it('joins three networks at once: all connected, a ping over each, status shows three and exits 0; a non-root user can read status but not take a network down', async () => {
    await withLab(async (lab) => {
      const w = await world(lab, ['alpha', 'beta', 'gamma']);
      const agent = w.startAgent();
      try {
        const s = await w.waitStatus((st) => st.ready && allConnected(st, ['alpha', 'beta', 'gamma']));
        for (const id of ['alpha', 'beta', 'gamma']) {
          const n = w.nets.get(id)!;
          expect(await waitFor(() => w.node.ping(n.serverIp), 30_000), `no ping over ${id}`).toBe(true);
          expect(net(s, id)).toMatchObject({ tunnel_address: expect.stringContaining(n.nodeIp), server: `198.18.0.1:${n.port}`, bundle_version: 1, last_error: null });
        }
        expect(s.membership?.serial).toBe(1);

        const table = await cli(['status', '--runtime-dir', w.runtimeDir]);
        expect(table.code).toBe(ExitCode.ok);
        expect(table.stdout.trim().split('\n')).toHaveLength(4);
        for (const id of ['alpha', 'beta', 'gamma']) expect(table.stdout).toMatch(new RegExp(`^${id}\\s+connected\\s+198\\.19\\.`, 'm'));

        const asNobody = await cli(['status', '--json', '--runtime-dir', w.runtimeDir], { asNobody: true });
        expect(asNobody.code).toBe(ExitCode.ok);
        expect((JSON.parse(asNobody.stdout) as { networks: unknown[] }).networks).toHaveLength(3);
        const down = await cli(['down', 'beta', '--runtime-dir', w.runtimeDir], { asNobody: true });
        expect(down.code).toBe(ExitCode.permissionDenied);
        expect(down.stderr).toContain('permission denied: down beta needs root (try sudo)');
        expect(net(await w.status(), 'beta')?.state).toBe('connected');
      } finally {
        expect(await agent.stop()).toBe(0);
        if (process.env['AGENT_TEST_LOG']) console.log(agent.log());
        await w.cleanup();
      }
      expect(await openvpnPids(w)).toEqual([]);
    });
  });
});
