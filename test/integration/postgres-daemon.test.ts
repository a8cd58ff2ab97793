/**
 * The server daemon on a PostgreSQL store, end to end: a real `server run`
 * and a real agent in namespaces, the store on this file's PostgreSQL
 * cluster (test/helpers/postgres.ts).
 *
 * PostgreSQL stopped and started again under the running daemon: the node's
 * ping stream over the LAN goes on (openvpn forwards without the store),
 * the server's openvpn keeps its pid, an API call during the outage is
 * answered 503 MVPN_STORE_UNREACHABLE in bounded time instead of hanging,
 * and so does a CLI command; the daemon logs the loss and the return and
 * shows it in its snapshot and mvpn_server_store_up,
 * and afterwards it serves the API and hears other processes' changes again
 * without a restart: a revoke committed by the CLI reaches the CRL file
 * openvpn reads (the time is printed; BENCHMARKS.md "Change notification").
 */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { loadServerConfig } from '../../src/server/config.ts';
import { networkFilePaths } from '../../src/server/network-files.ts';
import { readStatus } from '../../src/server/status.ts';
import { pingStream, ServerWorld, type AgentProcess } from '../helpers/agent-fixtures.ts';
import { waitFor, withLab } from '../helpers/netns.ts';
import { sharedPostgres } from '../helpers/postgres.ts';
import { cli } from '../helpers/server-fixtures.ts';

describe('a server daemon on PostgreSQL', () => {
  it('keeps the LAN up through a PostgreSQL restart, answers 503 meanwhile, reconnects by itself and hears changes again', async () => {
    await withLab(async (lab) => {
      const w = await ServerWorld.create(lab, { networks: ['alpha'], store: 'postgres' });
      const cluster = await sharedPostgres();
      let agent: AgentProcess | undefined;
      try {
        ({ agent } = await w.startAll(['alpha']));
        const { config, paths } = await loadServerConfig(w.server.stateDir);
        const snapshot = async () => (await readStatus(config.runtime_dir))!;
        const serverPid = (await snapshot()).networks['alpha']!.pid;
        expect(serverPid).toBeGreaterThan(0);

        // An enrollment request from the node: its token is looked up in the store first.
        const token = (await w.server.json<{ token: string }>(['node', 'token', w.nodeId])).token;
        const enrollCall = async (): Promise<{ status: number; body: string; ms: number }> => {
          const started = Date.now();
          const body = JSON.stringify({ node: w.nodeId, token, csr: 'not a CSR' });
          const r = await w.node.exec('curl', ['-sS', '--max-time', '60', '--cacert', w.apiCaPath, '-H', 'content-type: application/json', '-d', body, '-w', '\n%{http_code}', `${w.apiUrl}v1/enroll`], {
            allowFail: true,
          });
          const lines = r.stdout.trimEnd().split('\n');
          return { status: Number(lines.pop()), body: lines.join('\n'), ms: Date.now() - started };
        };
        expect((await enrollCall()).status).toBe(400); // the store answered: the CSR is what is wrong
        const metricsUrl = /Prometheus metrics on (http:\S+)/.exec(w.daemonLog)?.[1];
        expect(metricsUrl, w.daemonLog).toBeDefined();
        const storeUp = async () => /^mvpn_server_store_up (\d)$/m.exec((await w.srv.exec('curl', ['-sS', '--max-time', '30', metricsUrl!], { allowFail: true })).stdout)?.[1];
        expect(await storeUp()).toBe('1');

        const ping = pingStream(lab, w.node, await w.serverTunnelIp('alpha'));
        expect(await waitFor(() => ping.received() >= 5, 20_000, 100)).toBe(true);

        const downAt = ping.received();
        await cluster.down();
        expect(await waitFor(() => w.daemonLog.includes('lost the state store'), 20_000, 100), w.daemonLog).toBe(true);
        expect((await snapshot()).store).toMatchObject({ up: false, last_error: expect.any(String) });
        // A scrape still answers while the store is away, and says so.
        expect(await storeUp()).toBe('0');
        const during = await enrollCall();
        expect(during.status, during.body).toBe(503);
        expect(JSON.parse(during.body)).toMatchObject({ error: { code: 'MVPN_STORE_UNREACHABLE' } });
        // Refused connections fail at once; the request timeout (20 s) bounds the rest.
        expect(during.ms).toBeLessThan(25_000);
        // So does a CLI command.
        const list = await cli(['server', 'network', 'list', '--json', '--state-dir', w.server.stateDir]);
        expect(list.code).not.toBe(0);
        expect(list.json<{ error: { code: string } }>().error.code).toBe('MVPN_STORE_UNREACHABLE');
        // The LAN keeps going while the database is away.
        const away = ping.received();
        expect(await waitFor(() => ping.received() >= away + 10, 20_000, 100)).toBe(true);

        const startedAgain = Date.now();
        await cluster.up();
        const upAfter = Date.now() - startedAgain;
        expect(await waitFor(() => w.daemonLog.includes('state store is back'), 30_000, 10), w.daemonLog).toBe(true);
        const backAfter = Date.now() - startedAgain;
        console.log(
          `PostgreSQL away ${/state store is back after (\S+ s)/.exec(w.daemonLog)?.[1]}; ready ${upAfter} ms after its start, the daemon back ${backAfter} ms after it; a store call meanwhile: ${during.status} in ${during.ms} ms`,
        );
        expect(await waitFor(async () => (await snapshot()).store?.up === true, 10_000, 100)).toBe(true);
        expect(await storeUp()).toBe('1');
        expect((await enrollCall()).status).toBe(400);
        const result = await ping.stop();
        console.log(
          `PostgreSQL restart under the daemon: ${result.sent} pings at 0.2 s, ${result.lost} lost (seq ${result.lostSeqs.join(', ') || 'none'}; PostgreSQL stopped after ${downAt} replies), longest gap ${result.longestGap}`,
        );
        expect(result.lost, JSON.stringify(result)).toBeLessThanOrEqual(1);
        expect(result.lastAnswered).toBe(true);
        expect((await snapshot()).networks['alpha']!.pid).toBe(serverPid);

        // Another process's commit reaches the daemon through the re-established LISTEN: a revoke, into the CRL file.
        const crl = networkFilePaths(paths, 'alpha').crl;
        const before = await readFile(crl, 'utf8');
        const t0 = Date.now();
        await w.server.run(['node', 'revoke', w.nodeId, '--network', 'alpha']);
        const committed = Date.now();
        expect(await waitFor(async () => (await readFile(crl, 'utf8')) !== before, 10_000, 5)).toBe(true);
        const reached = Date.now();
        console.log(`revoke -> CRL file on disk: ${reached - committed} ms after the CLI returned (${reached - t0} ms from its start)`);
      } finally {
        await agent?.stop();
        await cluster.up().catch(() => undefined);
        await w.cleanup();
      }
    });
  });
});
