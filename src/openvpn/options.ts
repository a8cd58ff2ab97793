/**
 * The allow-list for a network spec's `extra_options` (DESIGN.md §4).
 *
 * A bundle never carries a raw openvpn config. The few tuning knobs a
 * network may need arrive as `[directive, ...args]` and pass only if the
 * directive is on the allow-list below and every argument has the shape that
 * directive takes. Anything that runs code, reads or writes files, or
 * changes what the hardened template fixes (trust material, TLS settings,
 * management, pushed-route policy, how the server is authenticated, crypto
 * engines and providers, proxies, devices) is MVPN_OPTION_FORBIDDEN, with the
 * reason in the message (the list follows openvpn 2.6's --help); anything else
 * not listed is MVPN_OPTION_UNKNOWN; a listed directive with bad arguments is
 * MVPN_OPTION_INVALID. Each error names the directive.
 *
 * Directives are normalised before matching (Unicode NFKC, surrounding
 * whitespace of any kind and quotes stripped, leading dashes removed, lower
 * case), so `'UP'`, `"\tup"` or `--Up` are recognised as `up` and refused as
 * such; the config is rendered from the normalised name, never the raw text.
 */
import { RenderError } from '../errors.ts';

export type ExtraOption = readonly string[];

const RUNS_CODE = 'it runs external programs or plugins';
const TOUCHES_FILES = 'it reads or writes files or changes how the agent runs openvpn';
const LOADS_CODE = 'it loads crypto engine or provider code into openvpn';
const WRITES_DEVICES = 'it writes key or statistics files or creates and removes devices';

/** Directive names (after normalisation) that are refused outright, with the reason shown to the user. */
const FORBIDDEN: ReadonlyMap<string, string> = new Map([
  // run programs or plugins
  ...['up', 'down', 'down-pre', 'up-delay', 'up-restart', 'route-up', 'route-pre-down', 'ipchange', 'tls-verify', 'learn-address', 'client-connect', 'client-disconnect', 'auth-user-pass-verify', 'plugin', 'script-security', 'iproute', 'auth-user-pass', 'askpass', 'tls-export-cert', 'tls-crypt-v2-verify'].map(
    (d) => [d, RUNS_CODE] as const,
  ),
  // read or write files, or leave the agent's process model
  ...['config', 'cd', 'chroot', 'log', 'log-append', 'status', 'status-version', 'writepid', 'tmp-dir', 'daemon', 'syslog', 'user', 'group', 'dev-node', 'client-config-dir', 'ccd-exclusive', 'replay-persist', 'ifconfig-pool-persist', 'echo', 'machine-readable-output', 'suppress-timestamps'].map(
    (d) => [d, TOUCHES_FILES] as const,
  ),
  ...['setenv', 'setenv-safe', 'ignore-unknown-option', 'management', 'push', 'pull-filter', 'route-nopull', 'redirect-gateway', 'route', 'route-ipv6', 'route-gateway', 'ifconfig', 'ifconfig-ipv6', 'dhcp-option'].map(
    (d) => [d, 'it changes the environment, management or routing the template fixes'] as const,
  ),
  // load code into openvpn, or take the key from somewhere else
  ...['engine', 'providers', 'show-engines', 'cryptoapicert'].map((d) => [d, LOADS_CODE] as const),
  // create or change devices and files outside the agent's state
  ...['genkey', 'mktun', 'rmtun', 'memstats', 'test-crypto'].map((d) => [d, WRITES_DEVICES] as const),
  // the data plane: both ends must agree, so it is the network's (mtu.ts), never one node's
  ...['tun-mtu', 'link-mtu', 'tun-mtu-extra'].map((d) => [d, "the LAN's MTU is the network option `mtu` (server network create/update --mtu), which the server and every node render alike"] as const),
  ...['fragment', 'mssfix'].map((d) => [d, "fragmentation is the network option `fragment` (server network create/update --fragment), which the server renders alike; one node's own value would not match the server's"] as const),
  ...['lladdr', 'mark', 'bind-dev', 'local', 'nobind', 'topology', 'block-ipv6', 'redirect-private', 'allow-recursive-routing', 'dns', 'port-share', 'remap-usr1', 'inetd', 'server-bridge', 'server-ipv6'].map(
    (d) => [d, 'it changes the interface, routing, sockets or process model the template fixes'] as const,
  ),
  // change whom openvpn trusts, or hand identity data to scripts and peers
  ...['peer-fingerprint', 'x509-track', 'x509-username-field', 'verify-client-cert', 'tls-cert-profile', 'ecdh-curve', 'key-direction', 'keying-material-exporter', 'allow-pull-fqdn', 'pull', 'static-challenge', 'username-as-common-name', 'duplicate-cn', 'opt-verify', 'disable-occ'].map(
    (d) => [d, 'it changes how the server is authenticated or what identity data leaves openvpn; trust is the template\'s alone'] as const,
  ),
  // trust material and TLS settings are the template's alone
  ...['ca', 'capath', 'cert', 'key', 'pkcs12', 'extra-certs', 'crl-verify', 'tls-auth', 'tls-crypt', 'tls-crypt-v2', 'secret', 'dh', 'verify-x509-name', 'remote-cert-tls', 'remote-cert-eku', 'remote-cert-ku', 'verify-hash', 'ns-cert-type', 'tls-version-min', 'tls-version-max', 'tls-cipher', 'tls-ciphersuites', 'tls-groups', 'cipher', 'data-ciphers', 'data-ciphers-fallback', 'ncp-ciphers', 'ncp-disable', 'auth', 'allow-compression', 'compress', 'comp-lzo', 'tls-server', 'tls-client', 'client', 'server', 'mode', 'remote', 'remote-random', 'proto', 'port', 'lport', 'rport', 'bind', 'dev', 'dev-type', 'persist-key', 'persist-tun', 'verb'].map(
    (d) => [d, 'the hardened template sets it; a bundle may not change it'] as const,
  ),
]);

/** Prefix families that are forbidden whatever follows (`log-foo`, `setenv-bar`, `management-*`, `plugin-*`). */
const FORBIDDEN_PREFIXES: readonly (readonly [string, string])[] = [
  ['log', 'it writes a log file'],
  ['setenv', 'it changes the environment of scripts'],
  ['management', 'management is fixed to the agent unix socket'],
  ['plugin', 'it loads a plugin'],
  ['tls-crypt', 'trust material is the template\'s alone'],
  ['tls-export', 'it exports data to scripts'],
  ['auth-', 'it concerns authentication scripts or files'],
  ['client-', 'it runs server-side client scripts'],
  ['script', 'it runs scripts'],
  ['route-', 'routing is fixed by the template'],
  ['ifconfig', 'addresses come from the server'],
  ['pkcs11', 'it loads a PKCS#11 provider library or takes the key from a token'],
  ['provider', 'it loads OpenSSL provider code'],
  ['engine', 'it loads an OpenSSL engine'],
  ['http-proxy', 'it sends the connection through a proxy the bundle chooses'],
  ['socks-proxy', 'it sends the connection through a proxy the bundle chooses'],
  ['dns-', 'it runs a DNS update script or changes name resolution'],
  ['push', 'push options are the server\'s, and push-peer-info sends node details to the server'],
  ['iroute', 'routing is fixed by the template'],
  ['show-', 'it is a standalone command, not a connection option'],
];

/** Of the file directives, those DESIGN.md §4 denies in any config (not `user`/`group`, which only drop privileges). */
const DENIED_FILE_DIRECTIVES = new Set(['config', 'cd', 'chroot', 'status', 'status-version', 'writepid', 'tmp-dir']);

/**
 * The deny list of DESIGN.md §4 for a whole config, not only extra_options:
 * why `name` with `args` runs code, writes files or hides options
 * (`management` only when not on a unix socket), or undefined. The rendered
 * standalone profile is checked with it.
 */
export function unsafeDirective(name: string, args: readonly string[] = []): string | undefined {
  const n = normaliseDirective(name);
  if (n === 'management') return args[1] === 'unix' ? undefined : 'management is allowed only on a unix socket';
  if (n === 'ignore-unknown-option') return 'it hides options openvpn does not know';
  const exact = FORBIDDEN.get(n);
  if (exact === RUNS_CODE || exact === LOADS_CODE || exact === WRITES_DEVICES) return exact;
  if (DENIED_FILE_DIRECTIVES.has(n)) return TOUCHES_FILES;
  for (const [prefix, why] of FORBIDDEN_PREFIXES) if (['log', 'setenv', 'plugin', 'tls-export', 'script', 'pkcs11'].includes(prefix) && n.startsWith(prefix)) return why;
  return undefined;
}

type ArgCheck = (args: readonly string[], ctx: OptionContext) => string | undefined;

export interface OptionContext {
  readonly proto?: 'udp' | 'tcp';
}

const INT_RE = /^(?:0|[1-9][0-9]{0,8})$/;

function int(min: number, max: number): (a: string | undefined) => boolean {
  return (a) => a !== undefined && INT_RE.test(a) && Number(a) >= min && Number(a) <= max;
}

/** Arguments: `count` exactly or a range, each tested by its checker. */
function args(spec: readonly ((a: string | undefined) => boolean)[], minCount: number, describeShape: string, extra?: ArgCheck): ArgCheck {
  return (a, ctx) => {
    if (a.length < minCount || a.length > spec.length) return `takes ${describeShape}`;
    for (let i = 0; i < a.length; i++) if (!spec[i]!(a[i])) return `takes ${describeShape}`;
    return extra?.(a, ctx);
  };
}

const udpOnly: ArgCheck = (_a, ctx) => (ctx.proto === 'tcp' ? 'works only with proto udp' : undefined);
const oneOf =
  (...words: string[]) =>
  (a: string | undefined): boolean =>
    a !== undefined && words.includes(a);

/** Allowed directives and the arguments each takes. */
const ALLOWED: ReadonlyMap<string, ArgCheck> = new Map<string, ArgCheck>([
  ['sndbuf', args([int(0, 67108864)], 1, 'bytes 0-67108864')],
  ['rcvbuf', args([int(0, 67108864)], 1, 'bytes 0-67108864')],
  ['txqueuelen', args([int(0, 100000)], 1, 'a length 0-100000')],
  ['mtu-disc', args([oneOf('no', 'maybe', 'yes')], 1, 'no|maybe|yes')],
  ['connect-retry', args([int(1, 86400), int(1, 86400)], 1, 'seconds 1-86400 [max seconds]')],
  ['connect-retry-max', args([int(1, 1000000)], 1, 'a count 1-1000000')],
  ['connect-timeout', args([int(1, 3600)], 1, 'seconds 1-3600')],
  ['server-poll-timeout', args([int(1, 3600)], 1, 'seconds 1-3600')],
  ['resolv-retry', args([(a) => a === 'infinite' || int(0, 86400)(a)], 1, 'seconds 0-86400 or infinite')],
  ['hand-window', args([int(1, 3600)], 1, 'seconds 1-3600')],
  ['reneg-sec', args([int(0, 604800), int(0, 604800)], 1, 'seconds 0-604800 [max]')],
  ['reneg-bytes', args([int(0, 999999999)], 1, 'bytes')],
  ['reneg-pkts', args([int(0, 999999999)], 1, 'packets')],
  ['tls-timeout', args([int(1, 600)], 1, 'seconds 1-600')],
  ['ping', args([int(1, 3600)], 1, 'seconds 1-3600')],
  ['ping-restart', args([int(0, 86400)], 1, 'seconds 0-86400')],
  ['replay-window', args([int(64, 65536), int(1, 3600)], 1, 'packets 64-65536 [seconds]')],
  ['mute-replay-warnings', args([], 0, 'no arguments')],
  ['explicit-exit-notify', args([int(0, 10)], 0, '[count 0-10]', udpOnly)],
  ['fast-io', args([], 0, 'no arguments', udpOnly)],
]);

/** Whitespace of every kind (tabs, NBSP, ideographic space, zero-width marks), control characters and quotes. */
const STRIP_RE = /^[\s\p{Z}\p{Cc}\p{Cf}"'`\u2018\u2019\u201c\u201d]+|[\s\p{Z}\p{Cc}\p{Cf}"'`\u2018\u2019\u201c\u201d]+$/gu;

/** The directive name openvpn would (or an attacker hopes it would) read from `raw`. */
export function normaliseDirective(raw: string): string {
  let s = raw.normalize('NFKC');
  for (let prev = ''; prev !== s; ) {
    prev = s;
    s = s.replace(STRIP_RE, '').replace(/^[-\u2010-\u2015\u2212]+/, '');
  }
  return s.toLowerCase();
}

function forbiddenReason(name: string): string | undefined {
  const exact = FORBIDDEN.get(name);
  if (exact) return exact;
  for (const [prefix, why] of FORBIDDEN_PREFIXES) if (name.startsWith(prefix)) return why;
  return undefined;
}

function err(code: 'MVPN_OPTION_FORBIDDEN' | 'MVPN_OPTION_UNKNOWN' | 'MVPN_OPTION_INVALID', directive: string, index: number, message: string): RenderError {
  return new RenderError(code, `extra_options[${index}]: ${message}`, { context: { directive, index } });
}

/**
 * Checks one option and returns it in canonical form (normalised directive,
 * arguments as given). Throws RenderError naming the directive.
 */
export function checkExtraOption(opt: ExtraOption, index: number, ctx: OptionContext = {}): string[] {
  const raw = opt[0];
  if (raw === undefined) throw err('MVPN_OPTION_INVALID', '', index, 'an option needs a directive name');
  const name = normaliseDirective(raw);
  // A directive smuggled together with arguments ("up /bin/sh", "up\t/x"): judge its first word.
  const first = name.split(/[\s\p{Z}\p{Cc}\p{Cf}"'`]+/u)[0] ?? '';
  const why = forbiddenReason(name) ?? forbiddenReason(first);
  if (why) {
    const shown = forbiddenReason(first) ? first : name;
    throw err('MVPN_OPTION_FORBIDDEN', shown, index, `directive "${shown}" is forbidden: ${why}`);
  }
  if (!/^[a-z][a-z0-9-]{0,63}$/.test(name)) {
    throw err('MVPN_OPTION_UNKNOWN', name, index, `directive ${JSON.stringify(raw)} is not an openvpn option this agent allows`);
  }
  const check = ALLOWED.get(name);
  if (!check) throw err('MVPN_OPTION_UNKNOWN', name, index, `directive "${name}" is not on the allow-list for extra_options`);
  const rest = opt.slice(1);
  for (const a of rest) {
    if (/[\s"'`\\#;\0]/u.test(a) || /[^\x21-\x7e]/.test(a) || a.length === 0) {
      throw err('MVPN_OPTION_INVALID', name, index, `directive "${name}": argument ${JSON.stringify(a)} may contain only printable ASCII without spaces, quotes, backslashes, # or ;`);
    }
  }
  const problem = check(rest, ctx);
  if (problem) throw err('MVPN_OPTION_INVALID', name, index, `directive "${name}" ${problem}`);
  return [name, ...rest];
}

/**
 * Checks every extra option (DESIGN.md §4): throws RenderError
 * MVPN_OPTION_FORBIDDEN / MVPN_OPTION_UNKNOWN / MVPN_OPTION_INVALID naming the
 * first bad directive; a directive given twice is MVPN_OPTION_INVALID.
 * Returns the canonical options, ready to render one per line.
 */
export function checkExtraOptions(opts: readonly ExtraOption[], ctx: OptionContext = {}): string[][] {
  const out: string[][] = [];
  const seen = new Set<string>();
  for (const [i, opt] of opts.entries()) {
    const canon = checkExtraOption(opt, i, ctx);
    if (seen.has(canon[0]!)) throw err('MVPN_OPTION_INVALID', canon[0]!, i, `directive "${canon[0]!}" is given twice`);
    seen.add(canon[0]!);
    out.push(canon);
  }
  return out;
}
