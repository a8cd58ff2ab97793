/**
 * Listener addresses as configs write them ("ADDR:PORT", "[v6]:PORT"), for
 * the server (API, metrics, relays) and the agent (metrics) alike.
 */
import { BlockList, isIP } from 'node:net';
import { ConfigError } from '../errors.ts';

/** "ADDR:PORT" or "[v6]:PORT" → host and port; throws ConfigError. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):([0-9]{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || host === undefined || isIP(host) === 0 || port > 65535) {
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
