/**
 * The testbed startup tarball: what a node needs to join, as one archive
 * unpacked at `/` (Emulab lists it for the node; `install-tarfile` or plain
 * `tar -xzf FILE -C /` installs it).
 *
 *   usr/bin/mvpn-client                          the executable (0755)
 *   lib/systemd/system/mvpn-client.service       the agent unit
 *   etc/systemd/system/multi-user.target.wants/mvpn-client.service
 *                                                -> the unit: starts at boot
 *   etc/mvpn-client/config.json                  agent config (sources, anchor, CA, token path)
 *   etc/mvpn-client/server-ca.pem                the server's API CA (pinned)
 *   etc/mvpn-client/enroll.token                 one-time token, 0600 (per-node tarballs only)
 *   etc/mvpn-client/startup.sh                   starts the agent now (after unpacking on a running node)
 *
 * Design notes:
 * - Two shapes. Per node: the node's own one-time enrollment token is inside
 *   and `node` is the literal id the token is bound to. Per experiment: one
 *   tarball for every node, no secret in it; the node id comes from the node
 *   (host name or a testbed file) and each node gets its token separately,
 *   as a small token-only tarball (`tokenTarballEntries`) that the testbed
 *   installs next to the shared one.
 * - `configOnly` leaves out the executable and the unit, for images that
 *   already have the .deb installed (its postinst enabled the unit).
 * - The archive never contains a directory entry for a system directory
 *   (usr/, lib/, etc/, ...): on a merged-/usr system `/lib` is a symlink,
 *   and GNU tar replaces a symlink by a directory when the archive has an
 *   entry for it, which would break the node. Only our own directory
 *   (etc/mvpn-client/) has an entry; tar creates other missing parents.
 * - Paths are relative (no leading `/`, no `..`), owner and group are 0
 *   (root), modes are fixed, mtimes are one given time: the archive does
 *   not depend on who builds it or on their umask.
 * - The 100+ MB executable is streamed from disk, never held in memory, and
 *   the tar is written to a temporary sibling and renamed, so a failure
 *   leaves no half-written tarball under the requested name.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { Header } from 'tar';
import { parseAgentConfig, type NodeIdSource } from '../agent/config.ts';
import { viaProblem } from '../agent/via.ts';
import { parseAnchor } from '../bundle/sign.ts';
import { MvpnError, UsageError } from '../errors.ts';
import { fsyncDir } from '../util/fs-atomic.ts';

/** Where things land on the node (absolute) — the agent config refers to these. */
export const NODE_PATHS = {
  binary: '/usr/bin/mvpn-client',
  unit: '/lib/systemd/system/mvpn-client.service',
  wants: '/etc/systemd/system/multi-user.target.wants/mvpn-client.service',
  configDir: '/etc/mvpn-client',
  config: '/etc/mvpn-client/config.json',
  serverCa: '/etc/mvpn-client/server-ca.pem',
  token: '/etc/mvpn-client/enroll.token',
  startup: '/etc/mvpn-client/startup.sh',
} as const;

export type TarEntry =
  | { readonly kind: 'dir'; readonly path: string; readonly mode: number }
  | { readonly kind: 'file'; readonly path: string; readonly mode: number; readonly data: Buffer }
  /** A file streamed from `source` at write time (the executable). */
  | { readonly kind: 'copy'; readonly path: string; readonly mode: number; readonly source: string }
  | { readonly kind: 'symlink'; readonly path: string; readonly target: string };

/**
 * Starts the agent on a node that is already running when the tarball is
 * unpacked (at later boots the wants link does it). Idempotent.
 */
export const STARTUP_SCRIPT = `#!/bin/sh
# mvpn-client: start the agent now, after the startup tarball was unpacked on
# a running node (Emulab: run it as root from the experiment's startup
# command, e.g. "sudo ${NODE_PATHS.startup}"). At later boots systemd starts
# the agent by itself. Safe to run more than once.
set -eu
if [ "$(id -u)" -ne 0 ]; then
	echo "mvpn-client: run this as root (sudo $0)" >&2
	exit 4
fi
if [ ! -d /run/systemd/system ]; then
	echo "mvpn-client: systemd is not running here; start the agent with: ${NODE_PATHS.binary} run --config ${NODE_PATHS.config}" >&2
	exit 1
fi
systemctl daemon-reload
systemctl enable mvpn-client.service
systemctl start mvpn-client.service
`;

/** How the agent on the node finds its id, as the CLI spells it. */
export function parseNodeIdSource(text: string, node?: string): NodeIdSource {
  if (text === 'id') {
    if (node === undefined) throw new UsageError('--node-id-from id needs a node (it writes the node id into the config); use hostname or file:PATH for a per-experiment tarball');
    return { id: node };
  }
  if (text === 'hostname') return { hostname: 'short' };
  if (text === 'hostname-full') return { hostname: 'full' };
  if (text.startsWith('file:') && text.length > 'file:'.length) {
    const path = text.slice('file:'.length);
    if (!path.startsWith('/')) throw new UsageError(`--node-id-from ${text}: the file must be an absolute path on the node`);
    return { file: path };
  }
  throw new UsageError(`--node-id-from ${JSON.stringify(text)}: expected id, hostname, hostname-full or file:/ABSOLUTE/PATH (e.g. file:/var/emulab/boot/nickname)`);
}

/** A server URL as the agent's https source: a base ending in `/`, so the agent asks for `v1/membership` under it. */
export function normaliseServerUrl(text: string): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new UsageError(`--server-url ${JSON.stringify(text)} is not a URL; expected https://HOST:PORT/`);
  }
  if (u.protocol !== 'https:') throw new UsageError(`--server-url ${JSON.stringify(text)}: the server API is https only`);
  if (u.search || u.hash || u.username || u.password) throw new UsageError(`--server-url ${JSON.stringify(text)}: no query, fragment or credentials, just https://HOST:PORT/[PATH/]`);
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return u.href;
}

export interface AgentConfigInput {
  /** Server API base URLs, tried in this order. */
  readonly serverUrls: readonly string[];
  /** `ed25519:<base64>`, the server's trust anchor. */
  readonly anchor: string;
  readonly node: NodeIdSource;
  /** Where the node finds its enrollment token; default NODE_PATHS.token. */
  readonly tokenPath?: string;
  /**
   * `HOST:PORT` of a TCP relay the nodes dial instead of the URLs' hosts (a
   * federated testbed's ops host); TLS stays end to end with the server.
   */
  readonly via?: string;
}

/**
 * The agent config the tarball installs, checked with the agent's own
 * parser (so a tarball can never carry a config the agent refuses).
 */
export function agentConfigFor(input: AgentConfigInput): Record<string, unknown> {
  if (input.serverUrls.length === 0) throw new UsageError('name at least one --server-url');
  parseAnchor(input.anchor);
  const urls = input.serverUrls.map(normaliseServerUrl);
  if (input.via !== undefined) {
    const problem = viaProblem(input.via);
    if (problem !== undefined) throw new UsageError(`--via ${JSON.stringify(input.via)}: ${problem}`);
  }
  const via = input.via === undefined ? {} : { via: input.via };
  const config = {
    node: input.node,
    sources: urls.map((url) => ({ type: 'https', url, ...via })),
    anchor: input.anchor.trim(),
    server_ca: NODE_PATHS.serverCa,
    enroll: { token_file: input.tokenPath ?? NODE_PATHS.token, url: urls[0], ...via },
  };
  parseAgentConfig(config, NODE_PATHS.config);
  return config;
}

export interface StartupTarballInput {
  readonly agentConfig: Record<string, unknown>;
  readonly serverCaPem: string;
  /** The executable to install as /usr/bin/mvpn-client; omitted with configOnly. */
  readonly binaryPath?: string;
  /** Text of mvpn-client.service; omitted with configOnly. */
  readonly unitText?: string;
  /** Per-node tarballs carry the node's one-time token. */
  readonly enrollToken?: string;
  readonly configOnly?: boolean;
}

const rel = (abs: string): string => abs.replace(/^\/+/, '');

/** The entries of a startup tarball, in archive order. Pure. */
export function startupTarballEntries(input: StartupTarballInput): TarEntry[] {
  if (!/-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----/.test(input.serverCaPem)) {
    throw new UsageError('the server API CA is not a PEM certificate');
  }
  const entries: TarEntry[] = [];
  if (!input.configOnly) {
    if (input.binaryPath === undefined || input.unitText === undefined) throw new UsageError('a full startup tarball needs the executable and the unit file');
    entries.push({ kind: 'copy', path: rel(NODE_PATHS.binary), mode: 0o755, source: input.binaryPath });
    entries.push({ kind: 'file', path: rel(NODE_PATHS.unit), mode: 0o644, data: Buffer.from(input.unitText) });
    entries.push({ kind: 'symlink', path: rel(NODE_PATHS.wants), target: NODE_PATHS.unit });
  }
  entries.push({ kind: 'dir', path: rel(NODE_PATHS.configDir) + '/', mode: 0o755 });
  entries.push({ kind: 'file', path: rel(NODE_PATHS.config), mode: 0o644, data: Buffer.from(JSON.stringify(input.agentConfig, null, 2) + '\n') });
  entries.push({ kind: 'file', path: rel(NODE_PATHS.serverCa), mode: 0o644, data: Buffer.from(input.serverCaPem.trim() + '\n') });
  if (input.enrollToken !== undefined) entries.push(tokenEntry(input.enrollToken));
  entries.push({ kind: 'file', path: rel(NODE_PATHS.startup), mode: 0o755, data: Buffer.from(STARTUP_SCRIPT) });
  return entries;
}

function tokenEntry(token: string): TarEntry {
  if (!/^[\x21-\x7e]{1,1024}$/.test(token)) throw new UsageError('an enrollment token is one line of printable characters');
  return { kind: 'file', path: rel(NODE_PATHS.token), mode: 0o600, data: Buffer.from(token + '\n') };
}

/** The token-only tarball a node gets next to a per-experiment one. */
export function tokenTarballEntries(token: string): TarEntry[] {
  return [{ kind: 'dir', path: rel(NODE_PATHS.configDir) + '/', mode: 0o755 }, tokenEntry(token)];
}

function checkEntryPath(p: string): void {
  const bare = p.endsWith('/') ? p.slice(0, -1) : p;
  if (bare === '' || p.startsWith('/') || bare.split('/').some((c) => c === '' || c === '.' || c === '..') || p.length > 99) {
    throw new MvpnError('MVPN_INTERNAL', `unsafe tar entry path ${JSON.stringify(p)}`);
  }
}

function header(fields: ConstructorParameters<typeof Header>[0] & { path: string }, mtime: Date): Buffer {
  const block = Buffer.alloc(512);
  const h = new Header({ uid: 0, gid: 0, uname: 'root', gname: 'root', mtime, ...fields });
  if (h.encode(block, 0)) throw new MvpnError('MVPN_INTERNAL', `tar header for ${fields.path} would need a pax extension`);
  return block;
}

const padding = (size: number): Buffer => Buffer.alloc((512 - (size % 512)) % 512);

async function* tarBlocks(entries: readonly TarEntry[], mtime: Date): AsyncGenerator<Buffer> {
  const t = new Date(Math.floor(mtime.getTime() / 1000) * 1000);
  for (const e of entries) {
    checkEntryPath(e.path);
    switch (e.kind) {
      case 'dir':
        yield header({ path: e.path, mode: e.mode, size: 0, type: 'Directory' }, t);
        break;
      case 'symlink':
        yield header({ path: e.path, mode: 0o777, size: 0, type: 'SymbolicLink', linkpath: e.target }, t);
        break;
      case 'file':
        yield header({ path: e.path, mode: e.mode, size: e.data.length, type: 'File' }, t);
        yield e.data;
        yield padding(e.data.length);
        break;
      case 'copy': {
        const st = await stat(e.source);
        if (!st.isFile()) throw new UsageError(`${e.source} is not a regular file`);
        yield header({ path: e.path, mode: e.mode, size: st.size, type: 'File' }, t);
        let n = 0;
        for await (const chunk of createReadStream(e.source)) {
          n += (chunk as Buffer).length;
          if (n > st.size) break;
          yield chunk as Buffer;
        }
        if (n !== st.size) {
          throw new MvpnError('MVPN_TARBALL_FAILED', `${e.source} changed size while it was being archived (${st.size} -> ${n} bytes)`, {
            context: { path: e.source },
            hint: 'build the tarball again once the file is no longer being written',
          });
        }
        yield padding(st.size);
        break;
      }
    }
  }
  yield Buffer.alloc(1024);
}

export interface WrittenTarball {
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
  readonly entries: readonly string[];
}

/**
 * Write `entries` as a gzip'd tar to `outPath` (temporary sibling, fsync,
 * rename). `mode` 0600 for anything holding a token.
 */
export async function writeTarball(entries: readonly TarEntry[], outPath: string, opts: { mtime: Date; mode: number }): Promise<WrittenTarball> {
  const tmp = join(dirname(outPath), `.${basename(outPath)}.${process.pid}.tmp`);
  const hash = createHash('sha256');
  let size = 0;
  const measure = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  });
  try {
    await pipeline(Readable.from(tarBlocks(entries, opts.mtime)), createGzip({ level: 6 }), measure, createWriteStream(tmp, { mode: opts.mode, flags: 'wx' }));
    const fh = await open(tmp, 'r+');
    try {
      await fh.chmod(opts.mode);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, outPath);
    await fsyncDir(dirname(outPath));
  } catch (err) {
    await rm(tmp, { force: true });
    if (err instanceof MvpnError) throw err;
    const e = err as NodeJS.ErrnoException;
    throw new MvpnError('MVPN_TARBALL_FAILED', `cannot write ${outPath}: ${e.code ?? e.message}`, {
      context: { path: outPath, ...(e.path ? { failedPath: e.path } : {}) },
      cause: err,
    });
  }
  return { path: outPath, size, sha256: hash.digest('hex'), entries: entries.map((e) => e.path) };
}

/** The executable's magic bytes: refuse to ship anything that is not an ELF file as /usr/bin/mvpn-client. */
export async function checkExecutable(path: string): Promise<void> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw new UsageError(`cannot read the executable to ship, ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  try {
    const st = await fh.stat();
    const magic = Buffer.alloc(4);
    await fh.read(magic, 0, 4, 0);
    if (!st.isFile() || !magic.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) {
      throw new UsageError(`${path} is not an ELF executable; pass --binary with the mvpn-client single executable (dist/mvpn-client)`);
    }
  } finally {
    await fh.close();
  }
}

/**
 * The agent unit to ship: the one next to the shipped executable's build
 * (`<dir>/../systemd/`, a repository checkout), else the installed one.
 */
export function unitCandidates(binaryPath: string): string[] {
  return [join(dirname(binaryPath), '..', 'systemd', 'mvpn-client.service'), NODE_PATHS.unit, '/usr/lib/systemd/system/mvpn-client.service'];
}

/** What `server tarball` makes, from the server's state. */
export interface StartupTarballRequest {
  /** Per node: exactly one node, whose token goes inside. Per experiment: any number of nodes, each getting a token-only tarball in tokenDir. */
  readonly mode: 'node' | 'experiment';
  readonly nodes: readonly string[];
  readonly serverUrls: readonly string[];
  /** Relay for every server URL and for enrollment (AgentConfigInput.via). */
  readonly via?: string;
  readonly nodeIdFrom: string;
  readonly tokenTtlMs: number;
  readonly out: string;
  readonly tokenDir?: string;
  readonly binaryPath?: string;
  readonly unitPath?: string;
  readonly configOnly: boolean;
}

export interface StartupTarballResult {
  readonly tarball: WrittenTarball;
  readonly mode: 'node' | 'experiment';
  readonly anchor: string;
  readonly serverUrls: readonly string[];
  readonly node?: string;
  readonly tokenExpiresAt?: number;
  readonly tokenTarballs: readonly { readonly node: string; readonly path: string; readonly expiresAt: number }[];
  readonly warnings: readonly string[];
}

/** The server state the tarball needs; `ServerContext` plus its signing key, passed in so this module stays free of the store. */
export interface TarballServer {
  readonly anchor: string;
  readonly apiCaPem: string;
  /** Names and addresses the API listener's certificate holds. */
  readonly certNames: readonly string[];
  readonly now: () => number;
  /** Whether the server knows this node (checked for every node before anything is written). */
  readonly knownNode: (node: string) => boolean;
  /** A one-time token bound to the node (fails for an unknown node). */
  readonly createToken: (node: string, ttlMs: number) => { token: string; expiresAt: number };
}

export async function makeStartupTarballs(server: TarballServer, req: StartupTarballRequest, deps: { readonly isSea: boolean; readonly execPath: string; readonly fileExists: (p: string) => Promise<boolean>; readonly readText: (p: string) => Promise<string> }): Promise<StartupTarballResult> {
  if (req.mode === 'node' && req.nodes.length !== 1) throw new UsageError('a per-node tarball is for exactly one --node (use --experiment for one tarball for many nodes)');
  if (req.mode === 'experiment' && req.nodes.length > 0 && req.tokenDir === undefined) {
    throw new UsageError('--experiment with --node needs --token-dir DIR for the per-node token tarballs');
  }
  const node = req.mode === 'node' ? req.nodes[0] : undefined;
  for (const n of req.nodes) {
    if (!server.knownNode(n)) {
      throw new MvpnError('MVPN_NOT_FOUND', `no node ${n} on this server`, { context: { node: n }, hint: `add it first: mvpn-client server node add ${n} --network ID` });
    }
  }
  const config = agentConfigFor({
    serverUrls: req.serverUrls,
    anchor: server.anchor,
    node: parseNodeIdSource(req.nodeIdFrom, node),
    ...(req.via === undefined ? {} : { via: req.via }),
  });
  const serverUrls = (config['sources'] as { url: string }[]).map((s) => s.url);

  // A node that cannot match the listener's certificate name never connects; say so now rather than at swap-in.
  const names = new Set(server.certNames.map((n) => n.toLowerCase()));
  const warnings = serverUrls
    .map((u) => new URL(u).hostname.replace(/^\[|\]$/g, '').toLowerCase())
    .filter((h) => !names.has(h))
    .map((h) => `${h} is not a name or address in the server's API certificate (${[...names].join(', ') || 'none'}); nodes will refuse the TLS connection unless it is a relay with that CA`);

  let binaryPath: string | undefined;
  let unitText: string | undefined;
  if (!req.configOnly) {
    binaryPath = req.binaryPath;
    if (binaryPath === undefined) {
      if (!deps.isSea) {
        throw new UsageError('this is not the mvpn-client single executable, so it cannot ship itself; pass --binary PATH (e.g. dist/mvpn-client) or --config-only');
      }
      binaryPath = deps.execPath;
    }
    await checkExecutable(binaryPath);
    let unitPath = req.unitPath;
    if (unitPath === undefined) {
      for (const c of unitCandidates(binaryPath)) {
        if (await deps.fileExists(c)) {
          unitPath = c;
          break;
        }
      }
    }
    if (unitPath === undefined) {
      throw new UsageError(`no mvpn-client.service found (looked in ${unitCandidates(binaryPath).join(', ')}); pass --unit PATH`);
    }
    unitText = await deps.readText(unitPath);
    if (!/^ExecStart=\/usr\/bin\/mvpn-client run\b/m.test(unitText)) {
      throw new UsageError(`${unitPath} does not look like the agent unit (no "ExecStart=/usr/bin/mvpn-client run")`);
    }
  }

  const mtime = new Date(server.now());
  let token: { token: string; expiresAt: number } | undefined;
  if (node !== undefined) token = server.createToken(node, req.tokenTtlMs);
  const tarball = await writeTarball(
    startupTarballEntries({
      agentConfig: config,
      serverCaPem: server.apiCaPem,
      configOnly: req.configOnly,
      ...(binaryPath === undefined ? {} : { binaryPath }),
      ...(unitText === undefined ? {} : { unitText }),
      ...(token ? { enrollToken: token.token } : {}),
    }),
    req.out,
    { mtime, mode: token ? 0o600 : 0o644 },
  );

  const tokenTarballs: { node: string; path: string; expiresAt: number }[] = [];
  if (req.mode === 'experiment' && req.nodes.length > 0) {
    await mkdir(req.tokenDir!, { recursive: true, mode: 0o700 });
    for (const n of req.nodes) {
      const t = server.createToken(n, req.tokenTtlMs);
      const path = join(req.tokenDir!, `${n}.token.tar.gz`);
      await writeTarball(tokenTarballEntries(t.token), path, { mtime, mode: 0o600 });
      tokenTarballs.push({ node: n, path, expiresAt: t.expiresAt });
    }
  }
  return {
    tarball,
    mode: req.mode,
    anchor: server.anchor,
    serverUrls,
    ...(node === undefined ? {} : { node }),
    ...(token ? { tokenExpiresAt: token.expiresAt } : {}),
    tokenTarballs,
    warnings,
  };
}
