import { networkVerbCommand } from './up.ts';

/** `mvpn-client restart NET`: restart that network's openvpn only (needs root). */
export const restartCommand = networkVerbCommand('restart', "restart one network's openvpn (needs root)");
