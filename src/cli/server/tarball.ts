import { access, readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isSea } from 'node:sea';
import { anchorToString } from '../../bundle/sign.ts';
import { loadApiCaState } from '../../server/ops/api-ca-roll.ts';
import { iso } from '../../server/ops/context.ts';
import { createToken, parseTtl } from '../../server/ops/nodes.ts';
import { makeStartupTarballs, NODE_PATHS } from '../../server/startup-tarball.ts';
import { serverCommand, type ServerArgs } from './common.ts';
import { loadSigningKey } from '../../server/anchor-rotation.ts';

interface TarballArgs extends ServerArgs {
  'server-url': string[];
  via?: string;
  node: string[];
  experiment: boolean;
  'token-ttl': string;
  'token-dir'?: string;
  'node-id-from'?: string;
  binary?: string;
  unit?: string;
  'config-only': boolean;
  out: string;
}

/**
 * `server tarball`: the testbed startup tarball, unpacked at `/` on a node
 * (binary, unit enabled for boot, agent config with the server URLs, trust
 * anchor and pinned API CA). Per node (`--node N`) it carries N's one-time
 * enrollment token; per experiment (`--experiment`) it carries no secret and
 * each `--node` gets a token-only tarball in `--token-dir`. See
 * packaging/README.md for the testbed side.
 */
export const serverTarballCommand = serverCommand<TarballArgs>({
  command: 'tarball',
  describe: 'write a startup tarball for a node or an experiment (unpack at / on the node)',
  options: (y) =>
    y
      .option('server-url', { type: 'string', array: true, demandOption: true, describe: 'https://HOST:PORT/ of the server API, in the order nodes try them; repeat' })
      .option('via', {
        type: 'string',
        describe: 'HOST:PORT of a TCP relay the nodes connect through for every --server-url and enrollment (TLS still verified for the URL host)',
      })
      .option('node', { type: 'string', array: true, default: [], describe: 'node id: the one node of a per-node tarball; with --experiment, nodes that get a token tarball' })
      .option('experiment', { type: 'boolean', default: false, describe: 'one tarball for every node of an experiment, without tokens' })
      .option('token-ttl', { type: 'string', default: '24h', describe: 'how long the enrollment tokens are valid (1m to 30d)' })
      .option('token-dir', { type: 'string', describe: 'with --experiment: where to write NODE.token.tar.gz for each --node' })
      .option('node-id-from', {
        type: 'string',
        describe: 'how the agent learns its node id: id (the --node, default per node), hostname (default per experiment), hostname-full, file:/PATH',
      })
      .option('binary', { type: 'string', describe: 'executable to ship as /usr/bin/mvpn-client (default: this executable)' })
      .option('unit', { type: 'string', describe: 'mvpn-client.service to ship (default: next to the binary\'s build, else the installed one)' })
      .option('config-only', { type: 'boolean', default: false, describe: 'leave out executable and unit (for images with the .deb installed)' })
      .option('out', { type: 'string', demandOption: true, describe: 'tarball to write (.tar.gz; 0600 when it holds a token)' }),
  action: async (ctx, args, io) => {
    const ttl = parseTtl(args['token-ttl']);
    const key = await loadSigningKey(ctx.paths);
    const mode = args.experiment ? 'experiment' : 'node';
    const nodes = args.node.map(String);
    const r = await makeStartupTarballs(
      {
        anchor: anchorToString(key),
        // During an API CA roll's overlap both CAs: the listener still has its old-CA certificate, identities come from the new one.
        apiCaPem: (await loadApiCaState(ctx.paths)).trustedPems.join(''),
        certNames: [...ctx.config.hostnames, ...ctx.config.addresses],
        now: () => ctx.clock.now(),
        knownNode: (n) => ctx.store.read((tx) => tx.getNode(n) !== undefined),
        createToken: (n, ms) => createToken(ctx, n, ms),
      },
      {
        mode,
        nodes,
        serverUrls: args['server-url'].map(String),
        ...(args.via === undefined ? {} : { via: String(args.via) }),
        nodeIdFrom: args['node-id-from'] ?? (mode === 'node' ? 'id' : 'hostname'),
        tokenTtlMs: ttl,
        out: resolve(args.out),
        ...(args['token-dir'] === undefined ? {} : { tokenDir: resolve(args['token-dir']) }),
        ...(args.binary === undefined ? {} : { binaryPath: resolve(args.binary) }),
        ...(args.unit === undefined ? {} : { unitPath: resolve(args.unit) }),
        configOnly: args['config-only'],
      },
      {
        isSea: isSea(),
        execPath: process.execPath,
        fileExists: (p) => access(p).then(() => true, () => false),
        readText: (p) => readFile(p, 'utf8'),
      },
    );
    for (const w of r.warnings) io.stderr.write(`mvpn-client: warning: ${w}\n`);
    const lines = [
      `wrote ${r.tarball.path} (${(r.tarball.size / 1048576).toFixed(1)} MiB, sha256 ${r.tarball.sha256})`,
      r.node !== undefined
        ? `for node ${r.node}; its enrollment token is inside and valid until ${iso(r.tokenExpiresAt!)}`
        : `for every node of the experiment; no token inside (each node needs ${NODE_PATHS.token})`,
      ...r.tokenTarballs.map((t) => `token tarball for ${t.node}: ${t.path} (valid until ${iso(t.expiresAt)})`),
      ...(args.via === undefined ? [] : [`nodes connect through the relay ${String(args.via)}; TLS is verified for ${r.serverUrls.map((u) => new URL(u).host).join(', ')}`]),
      `on the node: tar -xzf FILE -C / (testbed tarball list), then ${NODE_PATHS.startup} as root if it is already running`,
    ];
    return {
      json: {
        out: r.tarball.path,
        size: r.tarball.size,
        sha256: r.tarball.sha256,
        mode: r.mode,
        ...(r.node === undefined ? {} : { node: r.node, token_expires_at: iso(r.tokenExpiresAt!) }),
        server_urls: r.serverUrls,
        ...(args.via === undefined ? {} : { via: String(args.via) }),
        anchor: r.anchor,
        entries: r.tarball.entries,
        token_tarballs: r.tokenTarballs.map((t) => ({ node: t.node, path: t.path, expires_at: iso(t.expiresAt) })),
        warnings: r.warnings,
      },
      text: lines.join('\n'),
    };
  },
});
