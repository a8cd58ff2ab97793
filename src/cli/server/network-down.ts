import { networkStateCommand } from './network-up.ts';

/** `server network down ID`: the daemon stops its openvpn server; nodes keep their config. */
export const networkDownCommand = networkStateCommand('down', "stop a network's openvpn server (nodes keep their config)");
