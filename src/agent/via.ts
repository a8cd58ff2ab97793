/**
 * `via`: reach an https source (or the enrollment endpoint) through a plain
 * TCP relay, like curl's --connect-to. In a federation a testbed's nodes sit
 * on a private LAN and reach only their own ops host, which relays bytes to
 * the hub's API without terminating TLS.
 *
 * Design notes:
 * - Only the TCP connection goes to the relay. TLS runs end to end between
 *   the agent and the server the URL names: SNI (none for an IP host) and the
 *   certificate identity check are the URL host's, against the same pinned
 *   CA, with the same client certificate and timeouts as a direct
 *   connection. A relay, or anyone between, sees ciphertext and cannot
 *   present a certificate of its own: via never weakens verification.
 * - Node's tls checks identity against `servername || host`; with an IP URL
 *   there is no servername and `host` is the relay, so the check is given
 *   explicitly (`tls.checkServerIdentity(urlHost, cert)`).
 * - No fallback: a connection for a via route is never dialled anywhere but
 *   the relay. On a private LAN the URL host is unreachable anyway, and a
 *   silent direct try would hide a broken relay behind a connect timeout.
 * - A via route carries one origin (scheme, host, port), the way
 *   --connect-to maps one HOST:PORT; the connector refuses any other.
 */
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import type * as Undici from 'undici';
import { ConfigError, FetchError } from '../errors.ts';
import { splitHostPort } from '../util/host-port.ts';

/** Where the TCP connection goes. `host` is an IPv4 address, an IPv6 address without brackets, or a DNS name. */
export interface Via {
  readonly host: string;
  readonly port: number;
}

export const VIA_FORMAT = 'HOST:PORT (an IPv4 address, [IPv6] in brackets or a DNS name; port 1-65535)';

const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

function splitVia(text: string): { host: string; port: string } | string {
  if (text.length > 300) return 'too long';
  if (text.includes('/')) return 'a host and a port, not a URL or a path';
  const parts = splitHostPort(text);
  if (parts?.bracketed !== false) {
    if (parts?.port === undefined) return 'an IPv6 address in brackets must be followed by :PORT';
    if (parts.host.includes('%')) return 'an IPv6 zone (%IFACE) is not supported';
    if (!isIPv6(parts.host)) return `${JSON.stringify(parts.host)} is not an IPv6 address`;
    return { host: parts.host, port: parts.port };
  }
  const { host, port } = parts;
  if (host.includes(':')) return 'an IPv6 address goes in brackets, e.g. [2001:db8::1]:8444';
  if (port === undefined) return 'no :PORT';
  if (host === '') return 'no host before :PORT';
  if (!isIPv4(host)) {
    if (/^[0-9.]+$/.test(host)) return `${JSON.stringify(host)} is not an IPv4 address`;
    if (host.length > 253 || !host.split('.').every((l) => DNS_LABEL.test(l))) return `${JSON.stringify(host)} is not an IPv4 address or a DNS name`;
    if (/^[0-9]+$/.test(host.slice(host.lastIndexOf('.') + 1))) return `${JSON.stringify(host)}: a DNS name does not end in a number`;
  }
  return { host, port };
}

/** Why `text` is not a valid via, or undefined when it is. Pure. */
export function viaProblem(text: string): string | undefined {
  const s = splitVia(text);
  if (typeof s === 'string') return `${s}; expected ${VIA_FORMAT}`;
  if (!/^[0-9]{1,5}$/.test(s.port) || Number(s.port) < 1 || Number(s.port) > 65535) {
    return `port ${JSON.stringify(s.port)} is not 1-65535; expected ${VIA_FORMAT}`;
  }
  return undefined;
}

/** Parse a via that config validation accepted; a bad one is a config error. */
export function parseVia(text: string): Via {
  const problem = viaProblem(text);
  if (problem !== undefined) throw new ConfigError('MVPN_CONFIG_INVALID', `via ${JSON.stringify(text)}: ${problem}`, { context: { via: text } });
  const s = splitVia(text) as { host: string; port: string };
  return { host: s.host, port: Number(s.port) };
}

const unbracket = (hostname: string): string => hostname.replace(/^\[(.*)\]$/, '$1');
const portOf = (url: URL): number => (url.port === '' ? 443 : Number(url.port));

/**
 * An undici connector that dials `via` for connections to `target`'s origin
 * and verifies TLS for `target`'s host. `tlsOptions` are exactly what a
 * direct connection gets (`connect` of the Agent: ca, cert, key, timeout).
 */
export function viaConnector(
  buildConnector: typeof Undici.buildConnector,
  tlsOptions: Undici.buildConnector.BuildOptions,
  via: Via,
  target: URL,
): Undici.buildConnector.connector {
  const identityHost = unbracket(target.hostname);
  const targetPort = portOf(target);
  const base = buildConnector({
    ...tlsOptions,
    // Always the URL host, never the relay: see the design notes.
    checkServerIdentity: (_name: string, cert: PeerCertificate) => checkServerIdentity(identityHost, cert),
  });
  return (opts, callback) => {
    const port = opts.port === '' ? 443 : Number(opts.port);
    if (opts.protocol !== 'https:' || unbracket(opts.hostname) !== identityHost || port !== targetPort) {
      callback(
        new FetchError('MVPN_FETCH_FAILED', `the via route for ${target.origin} does not carry ${opts.protocol}//${opts.hostname}:${port}`, {
          context: { permanent: true },
        }),
        null,
      );
      return;
    }
    base(
      {
        ...opts,
        hostname: via.host,
        port: String(via.port),
        // SNI from the URL: a DNS name as is, none for an IP address (undici derives that from `host` too).
        ...(isIP(identityHost) === 0 ? { servername: identityHost } : {}),
      },
      callback,
    );
  };
}

/**
 * The `connect` option of an undici Agent: the TLS options as they are for a
 * direct connection, or, with a via, a connector dialling the relay with
 * those same options.
 */
export function connectOption(
  undici: Pick<typeof Undici, 'buildConnector'>,
  tlsOptions: Undici.buildConnector.BuildOptions,
  route?: { readonly via: string; readonly target: URL },
): Undici.buildConnector.BuildOptions | Undici.buildConnector.connector {
  if (route === undefined) return tlsOptions;
  return viaConnector(undici.buildConnector, tlsOptions, parseVia(route.via), route.target);
}

/** `URL via HOST:PORT`, the label status and logs show for a relayed source. */
export function viaLabel(url: string, via: string | undefined): string {
  return via === undefined ? url : `${url} via ${via}`;
}
