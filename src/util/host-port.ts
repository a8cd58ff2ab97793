/**
 * HOST:PORT text, the one way it is split and joined: remotes (`HOST`,
 * `HOST:PORT`, `[V6]`, `[V6]:PORT`), relays (`--via`), listen addresses.
 *
 * Splitting judges neither part: each caller decides which hosts it accepts
 * (IP only, DNS names too), whether the port may be missing or 0, and says
 * so in its own error with its own code. A bare IPv6 address (two or more
 * colons, no brackets) is a host without a port.
 */

export interface HostPortParts {
  readonly host: string;
  /** The text after the port colon (not yet checked to be a number), undefined when there is none. */
  readonly port: string | undefined;
  /** The host was written in brackets (`[2001:db8::1]`). */
  readonly bracketed: boolean;
}

/** Parts of `text`, or undefined when brackets are unbalanced or followed by something other than `:PORT`. Pure. */
export function splitHostPort(text: string): HostPortParts | undefined {
  if (text.startsWith('[')) {
    const m = /^\[([^\]]*)\](?::([^:]*))?$/.exec(text);
    return m ? { host: m[1]!, port: m[2], bracketed: true } : undefined;
  }
  const first = text.indexOf(':');
  if (first < 0 || text.indexOf(':', first + 1) >= 0) return { host: text, port: undefined, bracketed: false };
  return { host: text.slice(0, first), port: text.slice(first + 1), bracketed: false };
}

/** The port number of 1-5 digits, or undefined when `text` is not that (range checks are the caller's). */
export function portNumber(text: string): number | undefined {
  return /^[0-9]{1,5}$/.test(text) ? Number(text) : undefined;
}

/** `host:port`, an IPv6 host in brackets. */
export function joinHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
