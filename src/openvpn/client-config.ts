/**
 * The openvpn client config, rendered by the agent from `network.json` with
 * the fixed hardened template of DESIGN.md §4. A bundle never ships a config
 * that is run as is; everything here is either a constant or a value the
 * schema has already restricted to characters that cannot start a new
 * directive, a comment or a quoted string in openvpn's config syntax.
 *
 * What the template fixes, and why:
 * - `remote-cert-tls server` + `verify-x509-name <server_cn> name`: only the
 *   network's server certificate, not another node's, is accepted as a peer.
 * - `tls-crypt-v2`: the control channel is wrapped with this node's key.
 * - `crl-verify`: revocations apply at every handshake (the agent refuses a
 *   bundle whose CRL is missing or expired before openvpn ever runs).
 * - `tls-version-min 1.2`, `data-ciphers` from the spec's AEAD allow-list.
 * - `management <sock> unix` + `management-hold`: the agent releases the
 *   hold after it has subscribed to state changes; no TCP management ever.
 * - `script-security 1`: openvpn may run its built-in helpers, no scripts.
 * - `pull-filter` lines so that only the node's own address from the spec
 *   is taken from the server's push, `redirect-gateway`/`redirect-private`
 *   never (a testbed node must never lose its control-network default
 *   route), and routes only for prefixes the spec lists that cover nothing
 *   of the node's underlay (`protect`); `route-nopull` when the spec allows
 *   no pushed routes. The rules and why they hold are in push-policy.ts.
 * - `persist-tun` but no `persist-key`: a soft restart (SIGUSR1, sent by
 *   Supervisor.reload after a renewal, or a ping-restart) keeps the device
 *   and reads certificate and key again, from the install's stable path
 *   (bundle/install.ts); a profile's inline material is simply taken again.
 *   A link client (`bridged`) keeps `persist-key`: its files stay root's.
 * - `connect-retry 0`: no pause before the first tries after a soft restart
 *   (openvpn's default waits 1 s, which a renewal's reload would cost as a
 *   lost ping); repeated failures still back off (2, 4, … s up to 300 s;
 *   a link client's up to 5 s: `connect-retry 0 5`).
 * - `server-poll-timeout 3` (SERVER_POLL_SECONDS): a remote that has not
 *   answered the first handshake packet within 3 s is given up for the next
 *   one. openvpn's default is 120 s, and after a ping-restart it tries the
 *   remote it was connected to again first (a session that came up once
 *   keeps its remote across one restart), so without this a node whose
 *   server died waited a second full ping-restart period (10 s with the
 *   failover keepalive) in a handshake with the dead server before it tried
 *   the next remote: cut → CONNECTED elsewhere ~20 s instead of ~13 s
 *   (BENCHMARKS.md, "Node failover when its server dies"). A live server
 *   answers within milliseconds, and openvpn restarts after this timeout
 *   without any pause or back-off, so a client of a dead network keeps
 *   asking every 3 s (two small datagrams) rather than backing off to 300 s.
 * - `tls-timeout 1`: the first handshake packet is sent again after 1 s,
 *   not openvpn's 2 (then 2, 4, … s). A server that restarts (new
 *   certificate, CA roll) tells its clients RESTART; their first try reaches
 *   the old process while it exits and is ignored, and the server is back
 *   well within the second (src/openvpn/supervisor.ts cuts openvpn's 2 s
 *   exit wait), so the retry finds it: about 1 s of loss instead of 2-6.
 * - no `log`, `status`, `writepid` or script directives: the agent collects
 *   output and state through the management interface.
 * - `tun-mtu`, `fragment` and `mssfix` from the spec's `mtu` and `fragment`
 *   (mtu.ts): the server renders the same, as both ends must.
 * - `remote` lines in the spec's order, no `remote-random`: the order is the
 *   operator's preference (e.g. the server on the node's own testbed first).
 *
 * The same template renders the standalone profile (`server export --format
 * ovpn`) for agentless nodes that run a stock openvpn 2.5/2.6 (Linux or
 * FreeBSD) with `openvpn --config FILE`. Only what needs the agent differs:
 * trust material is inline (`<ca>`, `<cert>`, `<key>`, `<tls-crypt-v2>`,
 * `<crl-verify>`; an inline CRL is read since openvpn 2.4), `dev` is the
 * bare type so the OS names the interface (tap0 on Linux and FreeBSD), and
 * there is no management socket and hold (nobody would release it). No
 * `script-security` line: openvpn's default is 1, the agent's setting, and
 * the profile then carries no directive from the deny list at all.
 *
 * It also renders a peer server's link client to a hub (`bridged`,
 * src/server/federation/link-runtime.ts linkSpec): the same template, plus
 * what a bridge port needs (no address or routes on the tap, the hub's
 * pushed `ping` ignored for the spec's shorter keepalive, fast retries).
 */
import { RenderError } from '../errors.ts';
import type { NetworkSpec } from '../bundle/schema.ts';
import { fastPathLines, mtuLines } from './mtu.ts';
import { checkExtraOptions, unsafeDirective } from './options.ts';
import { acceptedRoutes, pullFilterLines, type ProtectedPrefix } from './push-policy.ts';

/**
 * How long a client waits for a remote's first answer before it tries the
 * next remote (`server-poll-timeout`; see the module comment). Longer than
 * two `tls-timeout 1` resends, far shorter than the keepalive timeout.
 */
export const SERVER_POLL_SECONDS = 3;

export interface ClientPaths {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
  readonly tlsCryptV2: string;
  readonly crl: string;
  readonly mgmtSocket: string;
  /** Interface name, e.g. `mv-<network id>` (at most 15 characters). */
  readonly dev: string;
}

/** Absolute paths without anything openvpn's config parser treats specially. */
const PATH_RE = /^\/[A-Za-z0-9._/+@=,-]{1,4000}$/;
const DEV_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const NODE_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

function checkPaths(paths: ClientPaths): void {
  for (const [k, v] of Object.entries(paths) as [keyof ClientPaths, string][]) {
    const ok = k === 'dev' ? DEV_RE.test(v) : PATH_RE.test(v) && !v.split('/').includes('..');
    if (!ok) {
      throw new RenderError('MVPN_OPTION_INVALID', `cannot render the openvpn config: ${k} ${JSON.stringify(v)} is not a plain ${k === 'dev' ? 'interface name' : 'absolute path'}`, {
        context: { field: k, value: v },
      });
    }
  }
}

/** Trust material of a standalone profile, each PEM text (the CA may be a chain). */
export interface InlineMaterial {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
  readonly tlsCryptV2: string;
  readonly crl: string;
}

/** One or more PEM blocks and nothing else: no line can close the inline tag or start a directive. */
const PEM_RE = /^(?:-----BEGIN [A-Za-z0-9 -]{1,64}-----\n(?:[A-Za-z0-9+/=]{1,128}\n)+-----END [A-Za-z0-9 -]{1,64}-----\n)+$/;

function inlineBlock(tag: keyof InlineMaterial, directive: string, pem: string): string[] {
  const text = pem.replace(/\r\n/g, '\n').replace(/\n*$/, '\n');
  if (!PEM_RE.test(text)) {
    throw new RenderError('MVPN_OPTION_INVALID', `cannot render the standalone profile: ${tag} is not PEM text`, { context: { field: tag } });
  }
  return [`<${directive}>`, ...text.trimEnd().split('\n'), `</${directive}>`];
}

/**
 * A server's link client to a hub (src/server/federation): its tap is a port
 * of the peer's bridge, which holds the address, so openvpn leaves the tap
 * unaddressed and adds no routes; it ignores the hub's pushed `ping` (the
 * spec's short keepalive finds a dead hub sooner) and retries fast.
 */
export interface ClientOptions {
  readonly bridged?: boolean;
}

type Target =
  | { readonly kind: 'agent'; readonly paths: ClientPaths; readonly protect: readonly ProtectedPrefix[]; readonly bridged: boolean }
  | { readonly kind: 'standalone'; readonly node: string; readonly inline: InlineMaterial };

/**
 * The agent's config: files in the installed bundle, management socket with hold.
 * `protect`: what pushed routes must not cover on this node (readProtectedPrefixes);
 * a listed prefix that overlaps it is left out (a comment says why), so openvpn ignores its push.
 */
export function renderClientConfig(spec: NetworkSpec, paths: ClientPaths, protect: readonly ProtectedPrefix[] = [], opts: ClientOptions = {}): string {
  checkPaths(paths);
  return render(spec, { kind: 'agent', paths, protect, bridged: opts.bridged === true });
}

/**
 * The standalone profile of an agentless node (`server export --format
 * ovpn`): the agent's template with everything inline and no management.
 * Refuses to return a profile with a directive that runs code or touches
 * files (checked on its own output, so a later template change cannot slip one in).
 */
export function renderStandaloneConfig(spec: NetworkSpec, node: string, inline: InlineMaterial): string {
  if (!NODE_RE.test(node)) throw new RenderError('MVPN_OPTION_INVALID', `cannot render the standalone profile: node id ${JSON.stringify(node)} is not a plain name`, { context: { field: 'node' } });
  const text = render(spec, { kind: 'standalone', node, inline });
  let inBlock = false;
  for (const line of text.split('\n')) {
    if (/^<\/[a-z0-9-]+>$/.test(line)) inBlock = false;
    else if (/^<[a-z0-9-]+>$/.test(line)) inBlock = true;
    else if (!inBlock && line !== '' && !line.startsWith('#')) {
      const [name = '', ...args] = line.split(' ');
      const why = unsafeDirective(name, args);
      if (why) throw new RenderError('MVPN_OPTION_FORBIDDEN', `standalone profile: directive "${name}" is forbidden: ${why}`, { context: { directive: name } });
    }
  }
  return text;
}

function render(spec: NetworkSpec, target: Target): string {
  // A standalone profile cannot see its node's underlay: nothing to protect beyond the remotes.
  const protect = target.kind === 'agent' ? target.protect : [];
  const routes = spec.pushed_routes === undefined ? undefined : acceptedRoutes(spec.pushed_routes, spec.remotes, protect);
  const extras = checkExtraOptions(spec.extra_options ?? [], { proto: spec.proto });
  const agent = target.kind === 'agent' ? target.paths : undefined;
  const inline = target.kind === 'standalone' ? target.inline : undefined;
  const bridged = target.kind === 'agent' && target.bridged;
  const header = bridged
    ? [`# link client of network ${spec.id} to its hub, rendered by mvpn-client server. Do not edit.`]
    : target.kind === 'agent'
      ? [`# openvpn client config for network ${spec.id}, rendered by mvpn-client from network.json.`, '# Do not edit: it is rewritten on every install.']
      : [
          `# Standalone openvpn profile of node ${target.node} in network ${spec.id}, made by mvpn-client server export.`,
          '# Run it with a stock openvpn 2.5 or later: openvpn --config THIS_FILE',
          '# It holds the private key. It gets no updates: export it again to renew it or refresh its CRL.',
        ];
  const lines: string[] = [
    ...header,
    'client',
    `dev-type ${spec.dev_type}`,
    `dev ${agent ? agent.dev : spec.dev_type}`,
    `proto ${spec.proto === 'tcp' ? 'tcp-client' : 'udp'}`,
    ...spec.remotes.map((r) => `remote ${r.host} ${r.port}`),
    'nobind',
    'remote-cert-tls server',
    `verify-x509-name ${spec.server_cn} name`,
    ...(agent ? [`ca ${agent.ca}`, `cert ${agent.cert}`, `key ${agent.key}`, `tls-crypt-v2 ${agent.tlsCryptV2}`, `crl-verify ${agent.crl}`] : []),
    'tls-version-min 1.2',
    `data-ciphers ${spec.ciphers.join(':')}`,
    'persist-tun',
    // A link client's certificate and key are root's and never renewed in
    // place: after a ping-restart it must not read them again as nobody.
    ...(bridged ? ['persist-key'] : []),
    bridged ? 'connect-retry 0 5' : 'connect-retry 0',
    `server-poll-timeout ${SERVER_POLL_SECONDS}`,
    'tls-timeout 1',
    ...(agent ? [`management ${agent.mgmtSocket} unix`, 'management-hold', 'script-security 1'] : []),
    ...(routes?.refused ?? []).map((r) => `# pushed routes for ${r.prefix} refused on this node: ${r.reason}`),
    ...pullFilterLines(spec.address.ipv4, routes?.accepted, spec.server_tunnel_ip),
    ...(bridged ? ['pull-filter ignore "ping"', 'ifconfig-noexec', 'route-noexec'] : []),
    `keepalive ${spec.keepalive.interval} ${spec.keepalive.timeout}`,
    ...mtuLines({ mtu: spec.mtu, fragment: spec.fragment }),
    ...fastPathLines(spec.proto),
    'verb 3',
  ];
  if (extras.length > 0) lines.push('# extra options from network.json (allow-listed)', ...extras.map((o) => o.join(' ')));
  if (inline) {
    lines.push(
      ...inlineBlock('ca', 'ca', inline.ca),
      ...inlineBlock('cert', 'cert', inline.cert),
      ...inlineBlock('key', 'key', inline.key),
      ...inlineBlock('tlsCryptV2', 'tls-crypt-v2', inline.tlsCryptV2),
      ...inlineBlock('crl', 'crl-verify', inline.crl),
    );
  }
  return lines.join('\n') + '\n';
}
