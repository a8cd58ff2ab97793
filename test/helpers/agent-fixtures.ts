/**
 * A small world for agent tests on real parts: a server namespace running one
 * real openvpn server per network (rendered with src/openvpn/server-config),
 * a node namespace joined to it by a veth underlay (198.18.0.0/30), and the
 * agent daemon as a child process inside the node namespace
 * (`node src/main.ts run --config …`), its state and runtime dirs in a
 * tmpDir. Networks get tunnel subnets 198.19.<n>.0/24: server .1, node .10.
 *
 * Membership documents and bundles are made with the real building code
 * (src/bundle/build.ts) and published either as files (a `file` source) or
 * by a tiny HTTPS server started in the server namespace — so the agent's
 * whole path (discovery, verification, install, supervision) runs as in
 * production. Bundles are key_origin "central" (the offline-export path), so
 * these tests need no enrollment; the server-mode e2e tests cover that.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { daemonRequest } from '../../src/agent/control-client.ts';
import type { AgentStatus, NetworkStatus } from '../../src/agent/status.ts';
import { buildBundle, buildMembership, gzipDeterministic, tarFiles } from '../../src/bundle/build.ts';
import type { MembershipDoc, NetworkSpec } from '../../src/bundle/schema.ts';
import { anchorToString, generateSigningKey, parseAnchor, signDetached, type SigningKey } from '../../src/bundle/sign.ts';
import { renderCcd, renderServerConfig } from '../../src/openvpn/server-config.ts';
import { sh, waitFor, withLab, type ExecResult, type Lab, type Netns } from './netns.ts';
import { rawBundle } from './adversarial/raw-bundle.ts';
import type { BundleFixture } from './bundle-fixtures.ts';
import { makeTestPki, writeTestPki, type TestPki } from './pki-fixtures.ts';
import { makeServer, type TestServer } from './server-fixtures.ts';
import { tmpDir } from './tmp.ts';
import { caCn, serverCn } from '../../src/bundle/names.ts';

export const NODE_BIN = join(process.cwd(), 'node_modules/.bin/node');
export const MAIN = join(process.cwd(), 'src/main.ts');
export const SERVER_UNDERLAY = '198.18.0.1';
export const NODE_UNDERLAY = '198.18.0.2';
const DAY = 86_400_000;

/**
 * As user nobody, with CAP_DAC_READ_SEARCH only: the checkout may sit in a
 * directory only root can enter (a clone under `mktemp -d`), and nobody must
 * still be able to read the sources it runs. The capability bypasses read and
 * search checks, never write checks, so connecting to a 0600 socket is still
 * refused, which is what the tests prove.
 */
const AS_NOBODY = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--inh-caps=+dac_read_search', '--ambient-caps=+dac_read_search'];

/** `mvpn-client ARGS` from the sources as a child: inside namespace `ns`, or as user nobody; never throws on a non-zero exit. */
export function runCli(args: readonly string[], opts: { ns?: string | undefined; asNobody?: boolean } = {}): Promise<ExecResult> {
  const argv = [
    ...(opts.ns === undefined ? [] : ['ip', 'netns', 'exec', opts.ns]),
    ...(opts.asNobody ? AS_NOBODY : []),
    NODE_BIN,
    MAIN,
    ...args,
  ];
  return sh(argv[0]!, argv.slice(1), { allowFail: true, timeoutMs: 120_000 });
}

export interface WorldNet {
  readonly id: string;
  readonly n: number;
  readonly port: number;
  readonly serverIp: string;
  readonly nodeIp: string;
  readonly pki: TestPki;
  version: number;
  /** Extra spec fields for the next publish (e.g. a forbidden extra option). */
  specOverrides: Partial<NetworkSpec>;
  /** Replace the CRL in the next publish (a CRL-only change). */
  crlPem?: string;
  server?: ChildProcess;
}

export interface AgentProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  log(): string;
  /** SIGTERM, wait for exit (bounded); resolves to the exit code. */
  stop(): Promise<number | null>;
  exited(): Promise<number | null>;
}

export class AgentWorld {
  readonly lab: Lab;
  readonly srv: Netns;
  readonly node: Netns;
  readonly dir: string;
  readonly nodeId: string;
  readonly signingKey: SigningKey;
  readonly nets = new Map<string, WorldNet>();
  /** Networks the next publish lists. */
  readonly member = new Set<string>();
  readonly pubDir: string;
  readonly stateDir: string;
  readonly runtimeDir: string;
  private serial = 0;
  private counter = 0;
  private readonly removeDir: () => Promise<void>;

  private constructor(lab: Lab, srv: Netns, node: Netns, dir: { path: string; remove: () => Promise<void> }, nodeId: string) {
    this.lab = lab;
    this.srv = srv;
    this.node = node;
    this.dir = dir.path;
    this.removeDir = dir.remove;
    this.nodeId = nodeId;
    this.signingKey = generateSigningKey();
    this.pubDir = join(this.dir, 'pub');
    this.stateDir = join(this.dir, 'state');
    this.runtimeDir = join(this.dir, 'run');
  }

  static async create(lab: Lab, opts: { nodeId?: string } = {}): Promise<AgentWorld> {
    const dir = await tmpDir('agent');
    // Reachable by `nobody` for the non-root status test (like /run/mvpn-client, 0755).
    await chmod(dir.path, 0o755);
    const srv = await lab.ns('srv');
    const node = await lab.ns('node');
    await lab.link(srv, node, { aName: 'eth0', bName: 'eth0', aAddr: `${SERVER_UNDERLAY}/30`, bAddr: `${NODE_UNDERLAY}/30` });
    const w = new AgentWorld(lab, srv, node, dir, opts.nodeId ?? 'pc1');
    await mkdir(w.pubDir, { recursive: true });
    return w;
  }

  async cleanup(): Promise<void> {
    await this.removeDir();
  }

  get anchor(): string {
    return anchorToString(this.signingKey);
  }

  /** A network with its own PKI and a running openvpn server in the server namespace. */
  async addNetwork(id: string, opts: { server?: boolean } = {}): Promise<WorldNet> {
    const n = ++this.counter;
    const pki = await makeTestPki({ clients: [this.nodeId], serverCn: serverCn(id), caCn: caCn(id) });
    const net: WorldNet = { id, n, port: 1194 + n, serverIp: `198.19.${n}.1`, nodeIp: `198.19.${n}.10`, pki, version: 1, specOverrides: {} };
    const base = join(this.dir, 'srv', id);
    const paths = await writeTestPki(pki, join(base, 'pki'));
    const ccd = join(base, 'ccd');
    await mkdir(ccd, { recursive: true });
    await writeFile(join(ccd, this.nodeId), renderCcd(net.nodeIp, '255.255.255.0'));
    const conf = renderServerConfig(
      {
        id,
        devType: 'tap',
        proto: 'udp',
        port: net.port,
        local: SERVER_UNDERLAY,
        network: `198.19.${n}.0`,
        netmask: '255.255.255.0',
        serverIp: net.serverIp,
        firstHost: `198.19.${n}.2`,
        lastHost: `198.19.${n}.254`,
        ciphers: ['AES-256-GCM'],
        keepalive: { interval: 2, timeout: 10 },
      },
      { ca: paths.ca, cert: paths.serverCert, key: paths.serverKey, tlsCryptV2: paths.tlsCryptV2Server, crl: paths.crl, ccdDir: ccd, dev: `ms-${id}` },
    );
    await writeFile(join(base, 'server.conf'), conf);
    this.nets.set(id, net);
    this.member.add(id);
    if (opts.server === false) return net; // a network whose server never answers
    let out = '';
    const child = this.srv.spawn('openvpn', ['--config', join(base, 'server.conf')]);
    child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
    net.server = child;
    if (!(await waitFor(() => out.includes('Initialization Sequence Completed'), 30_000))) throw new Error(`openvpn server for ${id} did not start:\n${out}`);
    return net;
  }

  spec(net: WorldNet): NetworkSpec {
    return {
      schema: 1,
      id: net.id,
      name: `test network ${net.id}`,
      dev_type: 'tap',
      proto: 'udp',
      remotes: [{ host: SERVER_UNDERLAY, port: net.port }],
      server_cn: serverCn(net.id),
      address: { ipv4: `${net.nodeIp}/24` },
      server_tunnel_ip: net.serverIp,
      ciphers: ['AES-256-GCM'],
      keepalive: { interval: 2, timeout: 10 },
      allow_pushed_routes: false,
      ...net.specOverrides,
    };
  }

  /**
   * Sign and write the current membership (the networks in `member`) and
   * their bundles into pubDir. `bundleBytes` lets a test replace one
   * bundle's bytes after signing (tampering in transit).
   */
  async publish(opts: { tamper?: string; hostile?: { id: string; spec: Record<string, unknown> } } = {}): Promise<MembershipDoc> {
    const now = Date.now();
    const networks: MembershipDoc['networks'] = [];
    for (const id of [...this.member].sort()) {
      const net = this.nets.get(id)!;
      const client = net.pki.clients[this.nodeId]!;
      const built = opts.hostile?.id === id ? this.hostileBundle(net, opts.hostile.spec) : await buildBundle({
        signingKey: this.signingKey,
        manifest: {
          node: this.nodeId,
          network: id,
          version: net.version,
          created: new Date(now - 60_000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
          expires: new Date(now + 20 * DAY).toISOString().replace(/\.\d{3}Z$/, 'Z'),
          key_origin: 'central',
        },
        spec: this.spec(net),
        caPem: net.pki.ca.certPem,
        nodeCertPem: client.certPem,
        tlsCryptV2ClientKey: client.tlsCryptV2Key,
        crlPem: net.crlPem ?? net.pki.crlPem,
        nodeKeyPem: client.keyPem,
      });
      const file = `${id}-${net.version}.tar.gz`;
      let bytes = built.bytes;
      if (opts.tamper === id) {
        bytes = Buffer.from(bytes);
        bytes[bytes.length - 20]! ^= 0xff;
      }
      await writeFile(join(this.pubDir, file), bytes);
      networks.push({ id, name: `test network ${id}`, bundle: { version: net.version, sha256: built.sha256, size: built.size, url: file } });
    }
    const doc: MembershipDoc = {
      node: this.nodeId,
      serial: ++this.serial,
      issued_at: new Date(now - 60_000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      expires_at: new Date(now + 7 * DAY).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      networks,
    };
    await writeFile(join(this.pubDir, 'membership.json'), buildMembership(doc, this.signingKey));
    return doc;
  }

  /**
   * A validly signed bundle whose network.json is whatever the caller says
   * (the real builder would refuse it): what a compromised server could send.
   */
  private hostileBundle(net: WorldNet, spec: Record<string, unknown>): { bytes: Buffer; sha256: string; size: number } {
    const f: BundleFixture = {
      now: new Date(),
      signingKey: this.signingKey,
      anchor: parseAnchor(this.anchor),
      pki: net.pki,
      otherPki: net.pki,
      nodeId: this.nodeId,
      network: net.id,
    };
    const bytes = rawBundle(f, { version: net.version, central: true, spec: { ...this.spec(net), ...spec } });
    return { bytes, sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length };
  }

  /** Write the agent config; `sources` defaults to the published file. */
  async writeConfig(extra: Record<string, unknown> = {}): Promise<string> {
    const path = join(this.dir, 'config.json');
    const config = {
      node: { id: this.nodeId },
      sources: [{ type: 'file', path: join(this.pubDir, 'membership.json') }],
      anchor: this.anchor,
      state_dir: this.stateDir,
      runtime_dir: this.runtimeDir,
      reconcile_interval_s: 3600,
      ready_timeout_s: 60,
      openvpn: '/usr/sbin/openvpn',
      fetch: { request_timeout_s: 5, deadline_s: 20, retries: 1 },
      ...extra,
    };
    await writeFile(path, JSON.stringify(config, null, 2));
    return path;
  }

  /** Start `mvpn-client run` in the node namespace. */
  /** `bin`: an executable to run instead of the sources (e.g. the built dist/mvpn-client). */
  startAgent(opts: { config?: string; env?: Record<string, string>; bin?: string } = {}): AgentProcess {
    return startAgentIn(this.lab, this.node, opts.config ?? join(this.dir, 'config.json'), opts.env, opts.bin);
  }

  async status(): Promise<AgentStatus> {
    return (await daemonRequest({ runtimeDir: this.runtimeDir, socket: 'status', method: 'GET', path: '/v1/status', action: 'status' })) as AgentStatus;
  }

  async tryStatus(): Promise<AgentStatus | undefined> {
    try {
      return await this.status();
    } catch {
      return undefined;
    }
  }

  /** Poll status until `pred` holds (bounded); returns the last status seen. */
  async waitStatus(pred: (s: AgentStatus) => boolean, timeoutMs = 90_000): Promise<AgentStatus> {
    return waitStatusOf(() => this.status(), pred, timeoutMs);
  }

  async control(path: string): Promise<unknown> {
    return daemonRequest({ runtimeDir: this.runtimeDir, socket: 'control', method: 'POST', path, action: path });
  }
}

/** A ping stream (5 per second) from `ns` to `ip`, replies counted by sequence number; `stop` says what was delivered. */
export interface PingStream {
  /** Replies so far. */
  received(): number;
  /** Resolves once a reply to a ping sent after this call came back (false: none within `timeoutMs`). */
  answeredAgain(timeoutMs: number): Promise<boolean>;
  /**
   * Waits (up to 5 s) for the next reply, then stops ping. `sent` is ping's
   * own count of requests (its summary), so pings lost at the end count too;
   * sequence numbers start at 1, as ping numbers them.
   */
  stop(): Promise<{ sent: number; lost: number; longestGap: number; lastAnswered: boolean; lostSeqs: number[] }>;
}

export function pingStream(lab: Lab, ns: Netns, ip: string): PingStream {
  const seen = new Set<number>();
  let lastSent = 0;
  let out = '';
  let stopping = false;
  const pinger = ns.spawn('ping', ['-n', '-O', '-i', '0.2', '-W', '1', ip]);
  lab.track(pinger);
  const interrupt = (): void => {
    if (pinger.exitCode === null && pinger.signalCode === null) pinger.kill('SIGINT');
  };
  pinger.stdout?.on('data', (b: Buffer) => {
    out += b.toString();
    // `-O` names every request that had no reply by the next one, so the newest sequence number is always known.
    for (const m of b.toString().matchAll(/(no answer yet for )?icmp_seq=(\d+)/g)) {
      const seq = Number(m[2]);
      lastSent = Math.max(lastSent, seq);
      if (m[1] !== undefined) continue;
      seen.add(seq);
      // Stopped right on a reply: ping has sent nothing since, so the last request counts as answered.
      if (stopping && seq === lastSent) interrupt();
    }
  });
  const answeredAfter = (seq: number): boolean => [...seen].some((s) => s > seq);
  const answeredAgain = (timeoutMs: number): Promise<boolean> => {
    const from = lastSent;
    return waitFor(() => answeredAfter(from), timeoutMs, 50);
  };
  return {
    received: () => seen.size,
    answeredAgain,
    stop: async () => {
      const exited = pinger.exitCode === null && pinger.signalCode === null ? new Promise((r) => pinger.once('exit', r)) : Promise.resolve();
      stopping = true;
      const cancel = setTimeout(interrupt, 5_000);
      await exited;
      clearTimeout(cancel);
      const transmitted = /(\d+) packets transmitted/.exec(out);
      const sent = transmitted ? Number(transmitted[1]) : lastSent;
      let gap = 0;
      let longestGap = 0;
      const lostSeqs: number[] = [];
      for (let seq = 1; seq <= sent; seq++) {
        if (seen.has(seq)) {
          gap = 0;
        } else {
          lostSeqs.push(seq);
          longestGap = Math.max(longestGap, ++gap);
        }
      }
      return { sent, lost: lostSeqs.length, longestGap, lastAnswered: sent > 0 && seen.has(sent), lostSeqs };
    },
  };
}

export function net(s: AgentStatus, id: string): NetworkStatus | undefined {
  return s.networks.find((n) => n.id === id);
}

export function allConnected(s: AgentStatus, ids: readonly string[]): boolean {
  return ids.every((id) => net(s, id)?.state === 'connected') && s.networks.length === ids.length;
}

/** Pids of openvpn processes whose command line names this world's runtime dir. */
export async function openvpnPids(world: { readonly runtimeDir: string }): Promise<number[]> {
  const { readdir, readFile } = await import('node:fs/promises');
  const pids: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = (await readFile(`/proc/${e}/cmdline`, 'utf8')).split('\0');
      if (argv[0]?.endsWith('openvpn') && argv.some((a) => a.startsWith(world.runtimeDir + '/'))) pids.push(Number(e));
    } catch {
      // gone
    }
  }
  return pids;
}

/**
 * The agent against the real server mode: `mvpn-client server run` as a
 * child in the server namespace (its HTTPS API on 198.18.0.1:8443, its
 * openvpn servers bound to 198.18.0.1), networks and the node made with the
 * server CLI, and the agent enrolling with a one-time token.
 */
export class ServerWorld {
  readonly lab: Lab;
  readonly srv: Netns;
  readonly node: Netns;
  readonly server: TestServer;
  readonly dir: string;
  readonly nodeId: string;
  readonly stateDir: string;
  readonly runtimeDir: string;
  readonly tokenFile: string;
  readonly apiUrl = `https://${SERVER_UNDERLAY}:8443/`;
  daemon: ChildProcess | undefined;
  daemonLog = '';
  private readonly removeDir: () => Promise<void>;

  private constructor(lab: Lab, srv: Netns, node: Netns, server: TestServer, dir: { path: string; remove: () => Promise<void> }, nodeId: string) {
    this.lab = lab;
    this.srv = srv;
    this.node = node;
    this.server = server;
    this.dir = dir.path;
    this.removeDir = dir.remove;
    this.nodeId = nodeId;
    this.stateDir = join(this.dir, 'state');
    this.runtimeDir = join(this.dir, 'run');
    this.tokenFile = join(this.dir, 'enroll.token');
  }

  /** `store` overrides MVPN_TEST_STORE for this world's server (a test that is about one engine). */
  static async create(lab: Lab, opts: { networks: readonly string[]; nodeId?: string; store?: 'sqlite' | 'postgres' }): Promise<ServerWorld> {
    const dir = await tmpDir('agent-e2e');
    await chmod(dir.path, 0o755);
    const srv = await lab.ns('srv');
    const node = await lab.ns('node');
    await lab.link(srv, node, { aName: 'eth0', bName: 'eth0', aAddr: `${SERVER_UNDERLAY}/30`, bAddr: `${NODE_UNDERLAY}/30` });
    const server = await makeServer({
      label: 'e2e-srv',
      address: SERVER_UNDERLAY,
      listen: `${SERVER_UNDERLAY}:8443`,
      extra: ['--vpn-listen', SERVER_UNDERLAY],
      ...(opts.store ? { store: opts.store } : {}),
    });
    const w = new ServerWorld(lab, srv, node, server, dir, opts.nodeId ?? 'pc1');
    for (const id of opts.networks) {
      await server.run(['network', 'create', id, '--remote', SERVER_UNDERLAY]);
      await server.run(['node', 'add', w.nodeId, '--network', id]);
      await server.run(['network', 'up', id]);
    }
    return w;
  }

  async cleanup(): Promise<void> {
    await this.stopServer();
    await this.server.remove();
    await this.removeDir();
  }

  get anchorPath(): string {
    return join(this.server.stateDir, 'trust-anchor');
  }

  get apiCaPath(): string {
    return join(this.server.stateDir, 'api', 'ca.crt');
  }

  /** `server run` in the server namespace; resolves once its API answers. */
  async startServer(): Promise<void> {
    const child = this.srv.spawn(NODE_BIN, [MAIN, 'server', 'run', '--state-dir', this.server.stateDir], { cwd: process.cwd() });
    child.stdout?.on('data', (d: Buffer) => (this.daemonLog += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.daemonLog += d.toString()));
    this.daemon = child;
    const up = await waitFor(async () => (await this.srv.exec('ss', ['-Htln', `sport = :8443`], { allowFail: true })).stdout.includes('8443'), 60_000, 200);
    if (!up) throw new Error(`server API did not come up:\n${this.daemonLog}`);
  }

  /** SIGTERM the server daemon (it stops its openvpn servers) and wait for it. */
  async stopServer(): Promise<void> {
    const d = this.daemon;
    if (!d || d.exitCode !== null || d.signalCode !== null) return;
    const exited = new Promise((r) => d.once('exit', r));
    d.kill('SIGTERM');
    await exited;
  }

  async newToken(): Promise<string> {
    const { token } = await this.server.json<{ token: string }>(['node', 'token', this.nodeId]);
    await writeFile(this.tokenFile, token + '\n', { mode: 0o600 });
    return token;
  }

  async writeConfig(extra: Record<string, unknown> = {}): Promise<string> {
    const path = join(this.dir, 'config.json');
    const config = {
      node: { id: this.nodeId },
      sources: [{ type: 'https', url: this.apiUrl }],
      anchor: this.anchorPath,
      server_ca: this.apiCaPath,
      enroll: { token_file: this.tokenFile },
      state_dir: this.stateDir,
      runtime_dir: this.runtimeDir,
      reconcile_interval_s: 3600,
      ready_timeout_s: 90,
      openvpn: '/usr/sbin/openvpn',
      fetch: { request_timeout_s: 3, deadline_s: 15, retries: 1 },
      ...extra,
    };
    await writeFile(path, JSON.stringify(config, null, 2));
    return path;
  }

  startAgent(opts: { env?: Record<string, string> } = {}): AgentProcess {
    return startAgentIn(this.lab, this.node, join(this.dir, 'config.json'), opts.env);
  }

  /** The usual start: the server daemon, the agent's config and token, the agent; resolves once it is ready with `networks` connected. */
  async startAll(networks: readonly string[]): Promise<{ agent: AgentProcess; status: AgentStatus }> {
    await this.startServer();
    await this.writeConfig();
    await this.newToken();
    const agent = this.startAgent();
    return { agent, status: await this.waitStatus((st) => st.ready && allConnected(st, networks), 180_000) };
  }

  async status(): Promise<AgentStatus> {
    return (await daemonRequest({ runtimeDir: this.runtimeDir, socket: 'status', method: 'GET', path: '/v1/status', action: 'status' })) as AgentStatus;
  }

  async waitStatus(pred: (s: AgentStatus) => boolean, timeoutMs = 90_000): Promise<AgentStatus> {
    return waitStatusOf(() => this.status(), pred, timeoutMs);
  }

  async control(path: string): Promise<unknown> {
    return daemonRequest({ runtimeDir: this.runtimeDir, socket: 'control', method: 'POST', path, action: path });
  }

  /** The tunnel address the server allocated to this node in `network`. */
  async nodeAddress(network: string): Promise<string> {
    const v = await this.server.json<{ members: { node: string; address: string }[] }>(['network', 'show', network]);
    const m = v.members.find((x) => x.node === this.nodeId);
    if (!m) throw new Error(`node ${this.nodeId} is not in ${network}: ${JSON.stringify(v)}`);
    return m.address.split('/')[0]!;
  }

  async serverTunnelIp(network: string): Promise<string> {
    const v = await this.server.json<Record<string, unknown>>(['network', 'show', network]);
    const ip = (v['server_address'] ?? v['server_ip']) as string | undefined;
    if (typeof ip !== 'string') throw new Error(`network show ${network} has no server address: ${JSON.stringify(v)}`);
    return ip.split('/')[0]!;
  }
}

/** What withConnectedWorld hands its body. */
export interface ConnectedWorld {
  readonly lab: Lab;
  readonly w: ServerWorld;
  /** The agent's status once it was ready with the network connected. */
  readonly s0: AgentStatus;
  /** The server's tunnel address, answering the node's pings. */
  readonly srvIp: string;
  /** The running agent: set it when the test stops or starts one, so the cleanup stops the right one. */
  agent: AgentProcess | undefined;
}

/**
 * The start the roll tests share: a lab with a ServerWorld whose `network`
 * is up, the server daemon and the agent started, the node connected and
 * pinging the server's tunnel address; the agent and the world are stopped
 * and removed however `body` ends.
 */
export async function withConnectedWorld(network: string, body: (c: ConnectedWorld) => Promise<void>): Promise<void> {
  await withLab(async (lab) => {
    const w = await ServerWorld.create(lab, { networks: [network] });
    let agent: AgentProcess | undefined;
    let c: ConnectedWorld | undefined;
    try {
      const started = await w.startAll([network]);
      agent = started.agent;
      const srvIp = await w.serverTunnelIp(network);
      if (!(await waitFor(() => w.node.ping(srvIp), 30_000))) throw new Error(`the node does not reach the server's tunnel address ${srvIp}:\n${w.daemonLog}`);
      c = { lab, w, s0: started.status, srvIp, agent };
      await body(c);
    } finally {
      await (c ? c.agent : agent)?.stop();
      await w.cleanup();
    }
  });
}

export function startAgentIn(lab: Lab, ns: Netns, config: string, env: Record<string, string> = {}, bin?: string): AgentProcess {
  const child = spawn('ip', ['netns', 'exec', ns.name, ...(bin === undefined ? [NODE_BIN, MAIN] : [bin]), 'run', '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  lab.track(child);
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    pid: child.pid!,
    log: () => out,
    exited: () => exit,
    stop: async () => {
      try {
        process.kill(child.pid!, 'SIGTERM');
      } catch {
        // gone
      }
      return exit;
    },
  };
}

async function waitStatusOf(get: () => Promise<AgentStatus>, pred: (s: AgentStatus) => boolean, timeoutMs: number): Promise<AgentStatus> {
  let last: AgentStatus | undefined;
  const ok = await waitFor(
    async () => {
      try {
        last = await get();
      } catch {
        return false;
      }
      return pred(last);
    },
    timeoutMs,
    250,
  );
  if (!ok) throw new Error(`status did not reach the expected state within ${timeoutMs} ms; last: ${JSON.stringify(last, null, 2)}`);
  return last!;
}

/**
 * A hostile HTTPS server for "the server turned malicious": it has the
 * server's TLS certificate (so it is validly transported) and its signing
 * key (so its documents verify), and serves whatever files it is given.
 * Runs as a child in `ns` (node, no dependencies), stopped by pid.
 */
const STATIC_HTTPS = String.raw`
import { createServer } from 'node:https';
import { readFileSync } from 'node:fs';
const cfg = JSON.parse(readFileSync(process.argv[1], 'utf8'));
const server = createServer({ cert: readFileSync(cfg.cert), key: readFileSync(cfg.key), requestCert: true, rejectUnauthorized: false }, (req, res) => {
  const file = cfg.routes[req.url.split('?')[0]];
  if (!file) { res.writeHead(404, { 'content-type': 'application/json' }); res.end('{"error":{"code":"MVPN_NOT_FOUND","message":"no"}}'); return; }
  const body = readFileSync(file);
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
  res.end(body);
});
server.listen(cfg.port, cfg.host, () => console.log('listening'));
`;

export async function startStaticHttps(
  lab: Lab,
  ns: Netns,
  opts: { dir: string; host: string; port: number; cert: string; key: string; routes: Record<string, string> },
): Promise<{ stop: () => Promise<void> }> {
  const cfgPath = join(opts.dir, `static-https-${opts.port}.json`);
  await writeFile(cfgPath, JSON.stringify(opts));
  const child = spawn('ip', ['netns', 'exec', ns.name, NODE_BIN, '--input-type=module', '-e', STATIC_HTTPS, cfgPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  lab.track(child);
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  if (!(await waitFor(() => out.includes('listening'), 20_000))) throw new Error(`static https server did not start: ${out}`);
  return {
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      process.kill(child.pid!, 'SIGTERM');
      await exited;
    },
  };
}

/**
 * A bundle built without the builder's checks, from the files of an
 * installed bundle with `network.json` replaced, signed with `key`: what a
 * malicious server holding the signing key could send.
 */
export function hostileBundleFrom(
  installedDir: string,
  manifest: { node: string; network: string; version: number; created: string; expires: string },
  spec: Record<string, unknown>,
  key: SigningKey,
  readFileSync: (p: string) => Buffer,
): { bytes: Buffer; sha256: string; size: number } {
  const content = new Map<string, Buffer>([['network.json', Buffer.from(JSON.stringify(spec, null, 2) + '\n')]]);
  for (const f of ['ca.crt', 'node.crt', 'tls-crypt-v2.key', 'crl.pem']) content.set(f, readFileSync(join(installedDir, f)));
  const files: Record<string, string> = {};
  for (const name of [...content.keys()].sort()) files[name] = createHash('sha256').update(content.get(name)!).digest('hex');
  const m = Buffer.from(JSON.stringify({ schema: 1, ...manifest, key_origin: 'node', files }, null, 2) + '\n');
  const all = new Map(content);
  all.set('manifest.json', m);
  all.set('manifest.sig', Buffer.from(signDetached('manifest', m, key).toString('base64')));
  const bytes = gzipDeterministic(tarFiles(all, new Date(manifest.created)));
  return { bytes, sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length };
}
