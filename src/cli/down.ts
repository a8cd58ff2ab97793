import { networkVerbCommand } from './up.ts';

/** `mvpn-client down NET`: stop a network until `up` or a daemon restart; reconcile will not start it meanwhile. */
export const downCommand = networkVerbCommand('down', 'stop a network until `up` or a daemon restart (needs root)');
