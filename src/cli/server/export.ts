import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { signingKeyFromPem } from '../../bundle/sign.ts';
import { exportNode } from '../../server/ops/export.ts';
import type { CliCommand } from '../command.ts';
import type { Io } from '../io.ts';
import { serverAction, serverOptions, type ServerArgs } from './common.ts';

interface ExportArgs extends ServerArgs {
  node: string;
  network: string;
  out: string;
}

/**
 * `server export NODE --network ID --out FILE`: an offline bundle with a key
 * made here (key_origin "central"), and its signed membership document next
 * to it (FILE without .tar.gz + .membership.json). Each export makes a new
 * key and revokes the previous certificate of that membership.
 */
export const serverExportCommand: CliCommand<ExportArgs> = {
  command: 'export <node>',
  describe: 'write an offline bundle (central key) and its membership document for a node',
  builder: (y: Argv) =>
    serverOptions(
      y
        .positional('node', { type: 'string', demandOption: true, describe: 'node id' })
        .option('network', { type: 'string', demandOption: true, describe: 'network id' })
        .option('out', { type: 'string', demandOption: true, describe: 'bundle file to write (.tar.gz); holds a private key, written 0600' }),
    ) as unknown as Argv<ExportArgs>,
  run: (args: ExportArgs, io: Io) =>
    serverAction(args, io, async (ctx) => {
      const key = signingKeyFromPem(await readFile(ctx.paths.signingKey, 'utf8'));
      const r = await exportNode(ctx, key, String(args.node), args.network, resolve(args.out));
      return {
        json: {
          node: r.node,
          network: r.network,
          bundle: r.bundlePath,
          membership: r.membershipPath,
          version: r.version,
          serial: r.serial,
          sha256: r.sha256,
          size: r.size,
          cert_serial: r.certSerial,
          key_origin: 'central',
        },
        text: `wrote ${r.bundlePath} (version ${r.version}, ${r.size} bytes, central key) and ${r.membershipPath}`,
      };
    }),
};
