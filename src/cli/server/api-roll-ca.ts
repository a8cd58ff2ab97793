import type { Argv } from 'yargs';
import { UsageError } from '../../errors.ts';
import { finishApiCaRoll, rollApiCa } from '../../server/ops/api-ca-roll.ts';
import { parseTtl } from '../../server/ops/nodes.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { serverAction, serverOptions, type ServerArgs } from './common.ts';

interface RollArgs extends ServerArgs {
  overlap: string;
  finish: boolean;
  force: boolean;
}

/**
 * `server api roll-ca [--overlap 7d] [--finish [--force]]`: start an API CA
 * roll (src/server/ops/api-ca-roll.ts), or end its overlap now. Works with
 * the daemon running: it reloads the API CA files within a second.
 */
export const apiRollCaCommand: CliCommand<RollArgs> = {
  command: 'roll-ca',
  describe: "roll the API CA (listener certificate, nodes' API identities) to a new one; both are accepted during the overlap",
  builder: (y: Argv) =>
    serverOptions(
      y
        .option('overlap', { type: 'string', default: '7d', describe: 'how long both API CAs are accepted (1m to 90d); the daemon finishes then, once no node is left on the old CA' })
        .option('finish', { type: 'boolean', default: false, describe: 'end the overlap now: listener certificate from the new CA, old-CA identities refused' })
        .option('force', { type: 'boolean', default: false, describe: 'with --finish: finish although nodes still hold old-CA identities (they must enroll again)' }),
    ) as unknown as Argv<RollArgs>,
  run: (args: RollArgs, io: Io) =>
    serverAction(args, io, async (ctx) => {
      if (args.finish) {
        const r = await finishApiCaRoll(ctx, { force: args.force });
        return {
          json: { ...r, finished: true },
          text: [
            `API CA roll finished: ${r.ca} alone; the listener serves a certificate from it (the daemon reloads it within a second)`,
            ...(r.dropped.length > 0 ? [`forced: ${r.dropped.length} node(s) still on ${r.previous} must enroll again: ${r.dropped.join(', ')}`] : []),
          ].join('\n'),
        };
      }
      if (args.force) throw new UsageError('--force goes with --finish (it finishes although nodes are left on the old API CA)');
      const r = await rollApiCa(ctx, { overlapMs: parseTtl(args.overlap, '--overlap', 90) });
      return {
        json: { ...r, overlap_until: new Date(r.overlapUntil).toISOString() },
        text: [
          `API CA ${r.previous} -> ${r.ca}; identities are issued by ${r.ca} from now on`,
          `the listener accepts identities of both until ${new Date(r.overlapUntil).toISOString()}; ${r.nodes} enrolled node(s) renew onto ${r.ca} at their next reconcile`,
          `then the daemon finishes the roll (or: mvpn-client server api roll-ca --finish)`,
        ].join('\n'),
      };
    }),
};
