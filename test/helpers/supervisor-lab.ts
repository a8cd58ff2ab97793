/**
 * A two-namespace openvpn lab for the runtime's integration tests: a server
 * namespace and a client namespace joined by a veth underlay
 * (198.18.0.0/30), an L2 tap tunnel 198.19.0.0/24 where the client `node1`
 * gets 198.19.0.10 by client-config-dir. Configs are minimal and hardened
 * like the real templates (tls-crypt-v2, CRL, remote-cert-tls), written
 * into a tmpDir so every openvpn command line names this test run.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { memoryLogger, type Logger } from '../../src/log.ts';
import type { OpenvpnEvent } from '../../src/openvpn/events.ts';
import { isAlive, runtimePaths } from '../../src/openvpn/process.ts';
import type { Supervisor } from '../../src/openvpn/supervisor.ts';
import type { SupervisorDeps } from '../../src/openvpn/supervisor-deps.ts';
import type { InstanceSpec } from '../../src/openvpn/supervisor-state.ts';
import { waitFor, withLab, type Lab, type Netns } from './netns.ts';
import { makeTestPki, writeTestPki, type TestPki, type TestPkiPaths } from './pki-fixtures.ts';
import { tmpDir } from './tmp.ts';

export const SERVER_UNDERLAY = '198.18.0.1';
export const CLIENT_UNDERLAY = '198.18.0.2';
export const SERVER_TUNNEL = '198.19.0.1';
export const CLIENT_TUNNEL = '198.19.0.10';

export interface TunnelLab {
  readonly srv: Netns;
  readonly cli: Netns;
  readonly dir: string;
  readonly runtimeDir: string;
  readonly pki: TestPkiPaths;
  /** The PKI itself (CA key included), to issue or revoke more. */
  readonly material: TestPki;
  readonly serverConfig: string;
  /** Client config per client name. */
  readonly clientConfig: Readonly<Record<string, string>>;
}

function serverConf(p: TestPkiPaths, ccd: string): string {
  return [
    'dev ms-t',
    'dev-type tap',
    'proto udp4',
    `local ${SERVER_UNDERLAY}`,
    'port 1194',
    'server 198.19.0.0 255.255.255.0',
    `client-config-dir ${ccd}`,
    `ca ${p.ca}`,
    `cert ${p.serverCert}`,
    `key ${p.serverKey}`,
    'dh none',
    `tls-crypt-v2 ${p.tlsCryptV2Server}`,
    `crl-verify ${p.crl}`,
    'remote-cert-tls client',
    'tls-version-min 1.2',
    'data-ciphers AES-256-GCM',
    'disable-dco',
    'keepalive 2 10',
    'persist-key',
    'verb 3',
    '',
  ].join('\n');
}

function clientConf(p: TestPkiPaths, name: string): string {
  const c = p.clients[name]!;
  return [
    'client',
    'dev mv-t',
    'dev-type tap',
    'proto udp4',
    `remote ${SERVER_UNDERLAY} 1194`,
    'nobind',
    `ca ${p.ca}`,
    `cert ${c.cert}`,
    `key ${c.key}`,
    `tls-crypt-v2 ${c.tlsCryptV2}`,
    'remote-cert-tls server',
    'verify-x509-name server name',
    'tls-version-min 1.2',
    'data-ciphers AES-256-GCM',
    'disable-dco',
    'connect-retry 1 2',
    'hand-window 5',
    'persist-key',
    'verb 3',
    '',
  ].join('\n');
}

/** `fn` with a fresh tunnel lab in a temp dir labelled `label`; the namespaces and the dir are removed afterwards, also on failure. */
export async function withTunnelLab<T>(label: string, fn: (t: TunnelLab, lab: Lab, dir: string) => Promise<T>): Promise<T> {
  const tmp = await tmpDir(label);
  try {
    return await withLab(async (lab) => fn(await tunnelLab(lab, tmp.path), lab, tmp.path));
  } finally {
    await tmp.remove();
  }
}

export async function tunnelLab(lab: Lab, dir: string, clients: readonly string[] = ['node1']): Promise<TunnelLab> {
  const pkiMaterial = await makeTestPki({ clients: [...clients] });
  const pki = await writeTestPki(pkiMaterial, join(dir, 'pki'));
  const ccd = join(dir, 'ccd');
  const runtimeDir = join(dir, 'run');
  await mkdir(ccd, { recursive: true });
  await mkdir(runtimeDir, { recursive: true, mode: 0o700 });
  await writeFile(join(ccd, 'node1'), `ifconfig-push ${CLIENT_TUNNEL} 255.255.255.0\n`);
  const serverConfig = join(dir, 'server.conf');
  await writeFile(serverConfig, serverConf(pki, ccd));
  const clientConfig: Record<string, string> = {};
  for (const name of clients) {
    clientConfig[name] = join(dir, `${name}.conf`);
    await writeFile(clientConfig[name], clientConf(pki, name));
  }
  const srv = await lab.ns('srv');
  const cli = await lab.ns('cli');
  await lab.link(srv, cli, { aName: 'eth0', bName: 'eth0', aAddr: `${SERVER_UNDERLAY}/30`, bAddr: `${CLIENT_UNDERLAY}/30` });
  return { srv, cli, dir, runtimeDir, pki, material: pkiMaterial, serverConfig, clientConfig };
}

export function serverSpec(t: TunnelLab): InstanceSpec {
  return { id: 'srv', role: 'server', configPath: t.serverConfig, dev: 'ms-t', ...runtimePaths(t.runtimeDir, 'srv') };
}

export function clientSpec(t: TunnelLab, name = 'node1'): InstanceSpec {
  return { id: name, role: 'client', configPath: t.clientConfig[name]!, dev: 'mv-t', expectedAddress: `${CLIENT_TUNNEL}/24`, ...runtimePaths(t.runtimeDir, name) };
}

/** Fast timings so restarts and hang detection happen within seconds. */
export function fastDeps(ns: Netns, logger: Logger<OpenvpnEvent>): Partial<SupervisorDeps> {
  return {
    commandPrefix: ['ip', 'netns', 'exec', ns.name],
    logger,
    health: { intervalMs: 1_000, mgmtTimeoutMs: 1_000, hungLimit: 2, addressMissingLimit: 3, stallLimit: 0 },
    backoff: { initialMs: 500, maxMs: 2_000, factor: 2, jitter: 0.5, minMs: 200 },
    bytecountSeconds: 1,
    graceMs: 3_000,
  };
}

export function recordingLogger(): ReturnType<typeof memoryLogger<OpenvpnEvent>> {
  return memoryLogger<OpenvpnEvent>();
}

/** Readable log for assertion messages. */
export function dump(events: readonly OpenvpnEvent[]): string {
  return events
    .map((e) => JSON.stringify(e))
    .slice(-80)
    .join('\n');
}

/** Wait (hang guard, not a timing assertion) until `cond` holds. */
export async function until(cond: () => boolean | Promise<boolean>, what: string, events: readonly OpenvpnEvent[], timeoutMs = 60_000): Promise<void> {
  if (!(await waitFor(cond, timeoutMs, 100))) throw new Error(`timed out waiting for ${what}; events:\n${dump(events)}`);
}

export async function untilState(sup: Supervisor, state: string, events: readonly OpenvpnEvent[], timeoutMs = 60_000): Promise<void> {
  await until(() => sup.status().state === state, `${sup.spec.id} to be ${state} (is ${sup.status().state})`, events, timeoutMs);
}

/** True while /proc/<pid> exists and is not a zombie. */
export function pidAlive(pid: number): Promise<boolean> {
  return isAlive(pid);
}
