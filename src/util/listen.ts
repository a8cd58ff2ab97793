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

/**
 * The one check of a metrics listener, for the server's and the agent's
 * `metrics_listen` alike: ADDR:PORT, and loopback unless the config sets
 * `metrics_allow_remote` (the metrics name networks, nodes and errors;
 * anyone who reaches a non-loopback listener reads them). `portZero` lets a
 * listener that reports its real port (the server's, in status.json) take a
 * free one. `where` names the config file in the message.
 */
export function checkMetricsListen(text: string, opts: { allowRemote: boolean; portZero: boolean; where: string }): { host: string; port: number } {
  const { where } = opts;
  const context = { path: where, field: 'metrics_listen' };
  let listen: { host: string; port: number };
  try {
    listen = parseListen(text);
  } catch (err) {
    throw new ConfigError('MVPN_CONFIG_INVALID', `${where}: metrics_listen: ${(err as Error).message}`, { context, cause: err });
  }
  if (listen.port === 0 && !opts.portZero) {
    throw new ConfigError('MVPN_CONFIG_INVALID', `${where}: metrics_listen: port 0 would pick a port nobody can scrape; name one (e.g. 127.0.0.1:9475)`, { context });
  }
  if (!opts.allowRemote && !isLoopback(listen.host)) {
    throw new ConfigError('MVPN_CONFIG_INVALID', `${where}: metrics_listen: ${text} is not a loopback address; the metrics would be readable by anyone who reaches it`, {
      context,
      hint: 'use 127.0.0.1:PORT (scrape through node_exporter or an SSH tunnel), or set "metrics_allow_remote": true to serve them on that address',
    });
  }
  return listen;
}
