/**
 * The shipped units under a live systemd: a clean Debian root booted with
 * systemd-nspawn (test/helpers/systemd-container.ts), the real .deb
 * installed with dpkg while systemd runs, an mvpn server and an agent on the
 * same (container-private) loopback, the agent enrolled over HTTPS with the
 * config-only startup tarball and connected to two networks.
 *
 * What it proves (issue 7, "KillMode chosen deliberately"):
 * - `systemctl restart` and a crash of the daemon (SIGKILL to the main
 *   process only) leave exactly one openvpn per network, all new, none of the
 *   old ones anywhere in the container, and none outside the unit's cgroup;
 *   the server sees one session per network. The same for the server unit.
 * - After a crash it is systemd that kills the old openvpns (KillMode=mixed:
 *   SIGKILL to what is left once the main process is gone) — the journal
 *   names each one and the restarted agent finds nothing to clean up.
 * - The contrast: with KillMode=process the old openvpns survive the crash
 *   (so the checks above can fail), and the restarted agent's leftover
 *   cleanup is what stops them — the second line of defence.
 * - `systemctl stop` leaves no openvpn and an empty cgroup.
 * - Issue 19: every openvpn (node and server) runs as the mvpn-openvpn user
 *   the package made (effective uid from /proc/PID/status) under the units'
 *   hardening; `mvpn-client down` holds across `systemctl restart` and a
 *   reboot of the container, until `up`.
 *
 * Nothing here leaves the container: `--private-network` gives it only its
 * own loopback, on which the "server address" 198.18.0.1 lives.
 *
 * Uses dist/mvpn-client_<version>_amd64.deb from ./build.sh and checks that
 * it carries the unit files as they are in systemd/ now.
 */
import { copyFile, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VERSION } from '../../src/version.ts';
import { ensureCachedRoot } from '../helpers/clean-root.ts';
import { waitFor } from '../helpers/netns.ts';
import { bootSystemdContainer, SYSTEMD_ROOT_INCLUDE, writeInto, type ContainerProcess, type SystemdContainer } from '../helpers/systemd-container.ts';

const DEB = `dist/mvpn-client_${VERSION}_amd64.deb`;
const LONG = 10 * 60_000;
const STEP = 3 * 60_000;
const CLIENT = 'mvpn-client.service';
const SERVER = 'mvpn-server.service';
const NETWORKS = ['lan1', 'lan2'];
const STATE = ['--state-dir', '/var/lib/mvpn-server'];
const SERVER_ADDRESS = '198.18.0.1';

type Role = 'client' | 'server';
interface Openvpn {
  readonly pid: number;
  readonly role: Role | 'unknown';
  readonly network: string;
  readonly cgroup: string;
}

/** Figures for the README, printed at the end; never asserted beyond hang-catching bounds. */
const figures: Record<string, string> = {};

let c: SystemdContainer;

/** Every openvpn in the container, with the network and role its --config path names. */
function openvpns(procs: readonly ContainerProcess[]): Openvpn[] {
  return procs
    .filter((p) => p.comm === 'openvpn')
    .map((p) => {
      const config = p.argv[p.argv.indexOf('--config') + 1] ?? '';
      const m = /^\/var\/lib\/mvpn-(client|server)\/networks\/([^/]+)\//.exec(config);
      return { pid: p.pid, role: (m?.[1] as Role | undefined) ?? 'unknown', network: m?.[2] ?? config, cgroup: p.cgroup };
    });
}

async function openvpnsOf(role: Role): Promise<Openvpn[]> {
  return openvpns(await c.processes()).filter((o) => o.role === role);
}

const unitCgroup = (role: Role): string => `/system.slice/${role === 'client' ? CLIENT : SERVER}`;

/**
 * The invariant after every step: exactly one openvpn per network for the
 * role's unit, every openvpn in the container inside its own unit's cgroup
 * (no orphan anywhere, no stranger).
 */
async function expectOnePerNetwork(role: Role): Promise<Openvpn[]> {
  const all = openvpns(await c.processes());
  for (const o of all) expect(o.role, `openvpn pid ${o.pid} with an unknown config ${o.network}`).not.toBe('unknown');
  for (const o of all) expect(o.cgroup, `openvpn pid ${o.pid} (${o.role} ${o.network})`).toBe(unitCgroup(o.role as Role));
  const mine = all.filter((o) => o.role === role);
  expect(mine.map((o) => o.network).sort()).toEqual(NETWORKS);
  return mine;
}

/** The container's mvpn-openvpn uid (made by the package's postinst). */
async function openvpnUid(): Promise<number> {
  const line = (await c.exec('getent', ['passwd', 'mvpn-openvpn'])).stdout.trim();
  return Number(line.split(':')[2]);
}

/** Every openvpn in the container runs with the effective uid of mvpn-openvpn. */
async function expectUnprivileged(): Promise<void> {
  const uid = await openvpnUid();
  const procs = (await c.processes()).filter((p) => p.comm === 'openvpn');
  expect(procs.length).toBeGreaterThan(0);
  for (const p of procs) {
    const status = await readFile(`/proc/${p.hostPid}/status`, 'utf8');
    const euid = Number(/^Uid:\s+(.*)$/m.exec(status)![1]!.trim().split(/\s+/)[1]);
    expect(euid, `openvpn ${p.pid} (${p.argv.join(' ')})`).toBe(uid);
  }
}

async function agentNetworks(): Promise<Record<string, { state: string; admin_down: boolean }>> {
  const r = await c.exec('mvpn-client', ['status', '--json'], { allowFail: true });
  const s = JSON.parse(r.stdout || '{}') as { networks?: { id: string; state: string; admin_down: boolean }[] };
  return Object.fromEntries((s.networks ?? []).map((n) => [n.id, n]));
}

async function mainPid(unit: string): Promise<number> {
  return Number(await c.show(unit, 'MainPID'));
}

async function timed<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const r = await fn();
  figures[name] = `${Math.round(performance.now() - t0)} ms`;
  return r;
}

async function mvpn(args: readonly string[]): Promise<string> {
  return (await c.exec('mvpn-client', args, { timeoutMs: STEP })).stdout;
}

/** n1's sessions on the server's openvpn for each network, as the server daemon reports them. */
async function serverSessions(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const n of NETWORKS) {
    const show = JSON.parse(await mvpn(['server', 'network', 'show', n, ...STATE, '--json'])) as { runtime?: { clients?: { cn: string }[] } };
    out[n] = (show.runtime?.clients ?? []).filter((x) => x.cn === 'n1').length;
  }
  return out;
}

async function expectOneSessionEach(): Promise<void> {
  let last: Record<string, number> = {};
  const ok = await waitFor(async () => {
    last = await serverSessions();
    return NETWORKS.every((n) => last[n] === 1);
  }, 60_000, 250);
  expect(ok, `server sessions of n1: ${JSON.stringify(last)}`).toBe(true);
}

async function agentStatus(): Promise<{ code: number; networks: { id: string; state: string }[] }> {
  const r = await c.exec('mvpn-client', ['status', '--json'], { allowFail: true });
  const s = JSON.parse(r.stdout || '{}') as { networks?: { id: string; state: string }[] };
  return { code: r.code, networks: s.networks ?? [] };
}

/** Journal cursor now, so a step reads only the lines it caused. */
async function journalCursor(): Promise<string> {
  const r = await c.exec('journalctl', ['-n', '0', '--show-cursor', '--no-pager']);
  const m = /-- cursor: (.+)/.exec(r.stdout);
  if (!m) throw new Error(`no journal cursor in: ${r.stdout}`);
  return m[1]!.trim();
}

async function journalSince(cursor: string, unit: string): Promise<string> {
  return (await c.exec('journalctl', ['-u', unit, `--after-cursor=${cursor}`, '-o', 'cat', '--no-pager'])).stdout;
}

/** Wait until the journal since `cursor` matches every pattern (journald may lag a little behind). */
async function expectJournal(cursor: string, unit: string, patterns: readonly RegExp[]): Promise<string> {
  let text = '';
  await waitFor(async () => {
    text = await journalSince(cursor, unit);
    return patterns.every((p) => p.test(text));
  }, 30_000, 250);
  for (const p of patterns) expect(text, `journal of ${unit}`).toMatch(p);
  return text;
}

/** SIGKILL to the main process only, then wait for Restart=on-failure to bring the unit back. */
async function crashAndWaitRestart(unit: string): Promise<void> {
  const restarts = Number(await c.show(unit, 'NRestarts'));
  const oldMain = await mainPid(unit);
  await c.systemctl(['kill', '-s', 'SIGKILL', '--kill-whom=main', unit]);
  const t0 = performance.now();
  const back = await waitFor(async () => {
    const [n, active, main] = await Promise.all([c.show(unit, 'NRestarts'), c.show(unit, 'ActiveState'), mainPid(unit)]);
    return Number(n) === restarts + 1 && active === 'active' && main !== 0 && main !== oldMain;
  }, STEP, 100);
  expect(back, `${unit} did not come back after its main process was killed:\n${(await c.systemctl(['status', unit], { allowFail: true })).stdout}`).toBe(true);
  figures[`${unit} crash -> active again`] = `${Math.round(performance.now() - t0)} ms (RestartSec=2s included)`;
}

beforeAll(async () => {
  try {
    await stat(DEB);
  } catch {
    throw new Error(`${DEB} is missing: run ./build.sh first (this test installs the real package)`);
  }
  // Built once with debootstrap (about a minute), then cached outside the repository.
  await timed('cached systemd root (debootstrap on the first run only)', () => ensureCachedRoot({ include: SYSTEMD_ROOT_INCLUDE }));
  c = await timed('fresh root unpacked + systemd-nspawn -b to "running"', () => bootSystemdContainer('sdlive'));
}, LONG);

afterAll(async () => {
  await c?.stop();
  if (Object.keys(figures).length > 0) {
    process.stderr.write(`systemd-live figures:\n${Object.entries(figures).map(([k, v]) => `  ${k}: ${v}`).join('\n')}\n`);
  }
}, LONG);

describe('the units under a live systemd (systemd-nspawn container)', () => {
  it('dpkg -i with systemd running: units loaded, agent enabled but not started without a config, server unit disabled', async () => {
    await copyFile(DEB, join(c.root.path, 'var/tmp/mvpn-client.deb'));
    const r = await timed('dpkg -i', () => c.exec('dpkg', ['-i', '/var/tmp/mvpn-client.deb'], { allowFail: true, timeoutMs: STEP }));
    expect(r.code, r.stderr + r.stdout).toBe(0);
    await rm(join(c.root.path, 'var/tmp/mvpn-client.deb'));
    for (const unit of [CLIENT, SERVER]) {
      const shipped = await readFile(join('systemd', unit), 'utf8');
      expect(await readFile(join(c.root.path, 'lib/systemd/system', unit), 'utf8'), `${DEB} carries an older ${unit}: run ./build.sh`).toBe(shipped);
      expect(await c.show(unit, 'KillMode')).toBe('mixed');
      expect(await c.show(unit, 'LoadState')).toBe('loaded');
    }
    expect((await c.systemctl(['is-enabled', CLIENT], { allowFail: true })).stdout.trim()).toBe('enabled');
    expect((await c.systemctl(['is-enabled', SERVER], { allowFail: true })).stdout.trim()).toBe('disabled');
    expect(await c.show(CLIENT, 'ActiveState')).toBe('inactive');
    expect(openvpns(await c.processes())).toEqual([]);
  }, STEP);

  it('mvpn-server.service: start runs one openvpn server per network, in the unit\'s cgroup', async () => {
    await c.exec('ip', ['addr', 'add', `${SERVER_ADDRESS}/32`, 'dev', 'lo']);
    await mvpn(['server', 'init', ...STATE, '--address', SERVER_ADDRESS, '--pool', '198.19.0.0/16']);
    for (const n of NETWORKS) {
      await mvpn(['server', 'network', 'create', n, ...STATE]);
      await mvpn(['server', 'node', 'add', 'n1', '--network', n, ...STATE]);
      await mvpn(['server', 'network', 'up', n, ...STATE]);
    }
    await timed('systemctl start mvpn-server (2 networks, to READY)', () => c.systemctl(['start', SERVER], { timeoutMs: STEP }));
    expect(await c.show(SERVER, 'ActiveState')).toBe('active');
    const servers = await expectOnePerNetwork('server');
    expect(servers.every((o) => o.cgroup === unitCgroup('server'))).toBe(true);
  }, STEP);

  it('mvpn-client.service: start enrolls over HTTPS with the startup tarball and runs one connected openvpn per network', async () => {
    await mvpn(['server', 'tarball', ...STATE, '--node', 'n1', '--config-only', '--server-url', `https://${SERVER_ADDRESS}:8443/`, '--out', '/var/tmp/n1.tar.gz']);
    await c.exec('tar', ['-xzf', '/var/tmp/n1.tar.gz', '-C', '/']);
    await timed('systemctl start mvpn-client (enroll, 2 networks, to READY = connected)', () => c.systemctl(['start', CLIENT], { timeoutMs: STEP }));
    expect(await c.show(CLIENT, 'ActiveState')).toBe('active');
    expect(await c.show(CLIENT, 'StatusText')).toBe('2/2 networks connected');
    const status = await agentStatus();
    expect(status.code).toBe(0);
    expect(status.networks.map((n) => [n.id, n.state]).sort()).toEqual(NETWORKS.map((n) => [n, 'connected']));
    await expectOnePerNetwork('client');
    await expectOneSessionEach();
  }, STEP);

  it('systemctl restart mvpn-client: the old openvpns are gone, exactly one new one per network, the server sees one session each', async () => {
    const before = await expectOnePerNetwork('client');
    const oldMain = await mainPid(CLIENT);
    await timed('systemctl restart mvpn-client (stop 2 openvpns, start, reconnect, READY)', () => c.systemctl(['restart', CLIENT], { timeoutMs: STEP }));
    const after = await expectOnePerNetwork('client');
    expect(await mainPid(CLIENT)).not.toBe(oldMain);
    const alive = new Set((await c.processes()).map((p) => p.pid));
    for (const o of before) expect(alive.has(o.pid), `old openvpn ${o.pid} (${o.network}) still running`).toBe(false);
    expect(after.map((o) => o.pid).filter((p) => before.some((b) => b.pid === p))).toEqual([]);
    expect((await agentStatus()).code).toBe(0);
    await expectOneSessionEach();
  }, STEP);

  it('crash (SIGKILL to the agent alone): systemd kills its openvpns (KillMode=mixed) and restarts it; one new openvpn per network', async () => {
    const before = await expectOnePerNetwork('client');
    const cursor = await journalCursor();
    await crashAndWaitRestart(CLIENT);
    const journal = await expectJournal(
      cursor,
      CLIENT,
      before.map((o) => new RegExp(`Killing process ${o.pid} \\(openvpn\\) with signal SIGKILL`)),
    );
    // systemd did it: the restarted agent found nothing of its previous run.
    expect(journal).not.toMatch(/stopped leftover openvpn/);
    expect(journal).not.toMatch(/Found left-over process/);
    const after = await expectOnePerNetwork('client');
    const alive = new Set((await c.processes()).map((p) => p.pid));
    for (const o of before) expect(alive.has(o.pid), `old openvpn ${o.pid} (${o.network}) survived the crash`).toBe(false);
    expect(after.some((o) => before.some((b) => b.pid === o.pid))).toBe(false);
    await waitFor(async () => (await agentStatus()).code === 0, 60_000, 250);
    expect((await agentStatus()).code).toBe(0);
    await expectOneSessionEach();
  }, STEP);

  it('contrast, KillMode=process: the crash leaves the old openvpns running, and the restarted agent stops them itself', async () => {
    // A longer RestartSec keeps the orphans observable between the crash and the restart.
    await writeInto(c, `etc/systemd/system/${CLIENT}.d/kill-mode-process.conf`, '[Service]\nKillMode=process\nRestartSec=5s\n');
    await c.systemctl(['daemon-reload']);
    try {
      expect(await c.show(CLIENT, 'KillMode')).toBe('process');
      const before = await expectOnePerNetwork('client');
      const oldMain = await mainPid(CLIENT);
      const cursor = await journalCursor();
      const restarts = Number(await c.show(CLIENT, 'NRestarts'));
      await c.systemctl(['kill', '-s', 'SIGKILL', '--kill-whom=main', CLIENT]);
      // Between the crash and the restart: the agent is gone, its openvpns are not.
      const inGap = await waitFor(async () => !(await c.processes()).some((p) => p.pid === oldMain) && Number(await c.show(CLIENT, 'NRestarts')) === restarts, 10_000, 50);
      expect(inGap, 'missed the window between the crash and the restart').toBe(true);
      const orphans = await openvpnsOf('client');
      expect(orphans.map((o) => o.pid).sort()).toEqual(before.map((o) => o.pid).sort());

      await waitFor(async () => Number(await c.show(CLIENT, 'NRestarts')) === restarts + 1 && (await c.show(CLIENT, 'ActiveState')) === 'active', STEP, 100);
      await expectJournal(cursor, CLIENT, [
        ...before.map((o) => new RegExp(`Found left-over process ${o.pid} \\(openvpn\\)`)),
        ...before.map((o) => new RegExp(`stopped leftover openvpn pid ${o.pid} `)),
      ]);
      const after = await expectOnePerNetwork('client');
      expect(after.some((o) => before.some((b) => b.pid === o.pid))).toBe(false);
    } finally {
      await rm(join(c.root.path, `etc/systemd/system/${CLIENT}.d`), { recursive: true, force: true });
      await c.systemctl(['daemon-reload']);
    }
    expect(await c.show(CLIENT, 'KillMode')).toBe('mixed');
  }, STEP);

  it('systemctl stop mvpn-client: no openvpn client and no agent remain; the unit\'s cgroup is empty', async () => {
    await expectOnePerNetwork('client');
    await timed('systemctl stop mvpn-client (2 openvpns)', () => c.systemctl(['stop', CLIENT], { timeoutMs: STEP }));
    expect(await c.show(CLIENT, 'ActiveState')).toBe('inactive');
    const procs = await c.processes();
    expect(openvpns(procs).filter((o) => o.role !== 'server')).toEqual([]);
    expect(procs.filter((p) => p.cgroup === unitCgroup('client')).map((p) => `${p.pid} ${p.argv.join(' ')}`)).toEqual([]);
    expect(procs.filter((p) => p.argv[0] === '/usr/bin/mvpn-client' && p.argv[1] === 'run')).toEqual([]);
  }, STEP);

  it('mvpn-server.service: restart and crash leave exactly one new openvpn server per network; stop leaves none', async () => {
    let before = await expectOnePerNetwork('server');
    await timed('systemctl restart mvpn-server (2 networks)', () => c.systemctl(['restart', SERVER], { timeoutMs: STEP }));
    const after = await expectOnePerNetwork('server');
    expect(after.some((o) => before.some((b) => b.pid === o.pid))).toBe(false);

    before = after;
    const cursor = await journalCursor();
    await crashAndWaitRestart(SERVER);
    await expectJournal(cursor, SERVER, before.map((o) => new RegExp(`Killing process ${o.pid} \\(openvpn\\) with signal SIGKILL`)));
    // READY comes once every network is up, so the new servers exist by now.
    await expectOnePerNetwork('server');
    const alive = new Set((await c.processes()).map((p) => p.pid));
    for (const o of before) expect(alive.has(o.pid), `old openvpn server ${o.pid} (${o.network}) survived the crash`).toBe(false);

    await timed('systemctl stop mvpn-server (2 networks)', () => c.systemctl(['stop', SERVER], { timeoutMs: STEP }));
    const procs = await c.processes();
    expect(openvpns(procs)).toEqual([]);
    expect(procs.filter((p) => p.cgroup.startsWith('/system.slice/mvpn-')).map((p) => `${p.pid} ${p.argv.join(' ')}`)).toEqual([]);
  }, STEP);

  it('every openvpn runs as mvpn-openvpn under the units; down holds across systemctl restart and a reboot of the container, until up', async () => {
    expect(await openvpnUid()).toBeGreaterThan(0);
    await c.systemctl(['start', SERVER], { timeoutMs: STEP });
    await c.systemctl(['start', CLIENT], { timeoutMs: STEP });
    await waitFor(async () => (await agentStatus()).code === 0, 60_000, 250);
    await expectOnePerNetwork('client');
    await expectOnePerNetwork('server');
    await expectUnprivileged();

    // down, then systemctl restart: lan2 stays down, lan1 comes back
    await mvpn(['down', 'lan2']);
    await timed('systemctl restart mvpn-client (one network down)', () => c.systemctl(['restart', CLIENT], { timeoutMs: STEP }));
    let nets = await agentNetworks();
    expect(nets['lan2']).toMatchObject({ state: 'stopped', admin_down: true });
    expect(nets['lan1']).toMatchObject({ state: 'connected', admin_down: false });
    expect((await openvpnsOf('client')).map((o) => o.network)).toEqual(['lan1']);
    expect((await c.exec('mvpn-client', ['status'], { allowFail: true })).stdout).toMatch(/^lan2\s+down \(admin\)/m);

    // reboot: both units come up by themselves (the lab address too, from a unit of the test's), lan2 still down
    await writeInto(c, 'etc/systemd/system/mvt-lab-address.service', `[Unit]\nBefore=${SERVER} ${CLIENT}\n[Service]\nType=oneshot\nExecStart=ip addr add ${SERVER_ADDRESS}/32 dev lo\n[Install]\nWantedBy=multi-user.target\n`);
    await c.systemctl(['enable', 'mvt-lab-address.service', SERVER]);
    const root = c.root;
    await timed('container reboot (stop, boot the same root)', async () => {
      await c.stop({ keepRoot: true });
      c = await bootSystemdContainer('sdlive', { root });
    });
    const back = await waitFor(async () => (await agentNetworks())['lan1']?.state === 'connected', STEP, 500);
    expect(back, `agent after the reboot: ${JSON.stringify(await agentNetworks())}`).toBe(true);
    nets = await agentNetworks();
    expect(nets['lan2']).toMatchObject({ state: 'stopped', admin_down: true });
    expect((await openvpnsOf('client')).map((o) => o.network)).toEqual(['lan1']);
    await expectOnePerNetwork('server');
    await expectUnprivileged();

    await mvpn(['up', 'lan2']);
    await waitFor(async () => (await agentStatus()).code === 0, 60_000, 250);
    expect((await agentStatus()).code).toBe(0);
    await expectOnePerNetwork('client');
    await expectUnprivileged();
    await c.systemctl(['stop', CLIENT, SERVER], { timeoutMs: STEP });
  }, LONG);
});
