/**
 * Listener addresses as configs write them ("ADDR:PORT", "[v6]:PORT"), for
 * the server (API, metrics, relays) and the agent (metrics) alike.
 */
import { BlockList, isIP } from 'node:net';
import { ConfigError } from '../errors.ts';
import { portNumber, splitHostPort } from './host-port.ts';

/** "ADDR:PORT" or "[v6]:PORT" → host and port; throws ConfigError. */
export function parseListen(text: string): { host: string; port: number } {
  const parts = splitHostPort(text);
  const port = parts?.port === undefined ? undefined : portNumber(parts.port);
  const host = parts?.host ?? '';
  // An IPv4 address as is, an IPv6 one in brackets; no names (the daemon binds it), no zone.
  if (port === undefined || port > 65535 || isIP(host) === 0 || host.includes('%') || (isIP(host) === 6 && !parts?.bracketed)) {
    throw new ConfigError('MVPN_CONFIG_INVALID', `listen address ${JSON.stringify(text)} is not ADDR:PORT (e.g. 0.0.0.0:8443 or [::]:8443)`, {
      context: { listen: text },
    });
  }
  return { host, port };
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** True for 127.0.0.0/8 and ::1: only the host itself (its network namespace) reaches a listener there. */
export function isLoopback(host: string): boolean {
  const family = isIP(host);
  return family !== 0 && LOOPBACK.check(host, family === 4 ? 'ipv4' : 'ipv6');
}
