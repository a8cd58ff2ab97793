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
 * - no `log`, `status`, `writepid` or script directives: the agent collects
 *   output and state through the management interface.
 * - `remote` lines in the spec's order, no `remote-random`: the order is the
 *   operator's preference (e.g. the server on the node's own testbed first).
 */
import { RenderError } from '../errors.ts';
import type { NetworkSpec } from '../bundle/schema.ts';
import { checkExtraOptions } from './options.ts';
import { acceptedRoutes, pullFilterLines, type ProtectedPrefix } from './push-policy.ts';

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

/**
 * `protect`: what pushed routes must not cover on this node (readProtectedPrefixes);
 * a listed prefix that overlaps it is left out (a comment says why), so openvpn ignores its push.
 */
export function renderClientConfig(spec: NetworkSpec, paths: ClientPaths, protect: readonly ProtectedPrefix[] = []): string {
  checkPaths(paths);
  const routes = spec.pushed_routes === undefined ? undefined : acceptedRoutes(spec.pushed_routes, spec.remotes, protect);
  const extras = checkExtraOptions(spec.extra_options ?? [], { proto: spec.proto });
  const lines: string[] = [
    `# openvpn client config for network ${spec.id}, rendered by mvpn-client from network.json.`,
    '# Do not edit: it is rewritten on every install.',
    'client',
    `dev-type ${spec.dev_type}`,
    `dev ${paths.dev}`,
    `proto ${spec.proto === 'tcp' ? 'tcp-client' : 'udp'}`,
    ...spec.remotes.map((r) => `remote ${r.host} ${r.port}`),
    'nobind',
    'remote-cert-tls server',
    `verify-x509-name ${spec.server_cn} name`,
    `ca ${paths.ca}`,
    `cert ${paths.cert}`,
    `key ${paths.key}`,
    `tls-crypt-v2 ${paths.tlsCryptV2}`,
    `crl-verify ${paths.crl}`,
    'tls-version-min 1.2',
    `data-ciphers ${spec.ciphers.join(':')}`,
    'persist-key',
    'persist-tun',
    `management ${paths.mgmtSocket} unix`,
    'management-hold',
    'script-security 1',
    ...(routes?.refused ?? []).map((r) => `# pushed routes for ${r.prefix} refused on this node: ${r.reason}`),
    ...pullFilterLines(spec.address.ipv4, routes?.accepted),
    `keepalive ${spec.keepalive.interval} ${spec.keepalive.timeout}`,
    ...(spec.mtu === undefined ? [] : [`tun-mtu ${spec.mtu}`]),
    'verb 3',
  ];
  if (spec.mtu !== undefined && extras.some((o) => o[0] === 'tun-mtu')) {
    throw new RenderError('MVPN_OPTION_INVALID', 'extra_options: tun-mtu is given although the spec sets mtu', { context: { directive: 'tun-mtu' } });
  }
  if (extras.length > 0) lines.push('# extra options from network.json (allow-listed)', ...extras.map((o) => o.join(' ')));
  return lines.join('\n') + '\n';
}
