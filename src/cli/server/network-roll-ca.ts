import { finishCaRoll, rollNetworkCa } from '../../server/ops/ca-roll.ts';
import { parseTtl } from '../../server/ops/nodes.ts';
import { serverCommand, NETWORK_ARG, type ServerArgs } from './common.ts';

interface RollArgs extends ServerArgs {
  id: string;
  overlap: string;
  finish: boolean;
}

/**
 * `server network roll-ca ID [--overlap 7d] [--finish]`: start a CA roll
 * (src/server/ops/ca-roll.ts), or end its overlap now instead of waiting for
 * the daemon to do it when the overlap is over.
 */
export const networkRollCaCommand = serverCommand<RollArgs>({
  command: 'roll-ca <id>',
  describe: "roll a network's CA to a new one; nodes trust both during the overlap",
  options: (y) =>
    y
      .positional('id', NETWORK_ARG)
      .option('overlap', { type: 'string', default: '7d', describe: 'how long nodes and the server trust both CAs (1m to 90d)' })
      .option('finish', { type: 'boolean', default: false, describe: 'end the overlap now: server certificate from the new CA, old CA dropped' }),
  action: async (ctx, args) => {
    const id = String(args.id);
    if (args.finish) {
      const r = await finishCaRoll(ctx, id);
      return { json: { ...r, finished: true }, text: `network ${id}: CA roll finished, ${r.ca} alone; the daemon restarts the openvpn server with its new certificate` };
    }
    const r = await rollNetworkCa(ctx, id, { overlapMs: parseTtl(args.overlap, '--overlap', 90) });
    return {
      json: { ...r, overlap_until: new Date(r.overlapUntil).toISOString() },
      text: [
        `network ${id}: CA ${r.previous} -> ${r.ca}; ${r.reissued} node certificate(s) re-issued by the new CA`,
        `nodes trust both CAs until ${new Date(r.overlapUntil).toISOString()}; the daemon then moves the server certificate and drops ${r.previous}`,
      ].join('\n'),
    };
  },
});
