/**
 * The agent's own bundle (issue 14): `mvpn-client run [--config FILE]`, the
 * process that lives on every node for an experiment's whole life. In the
 * executable it is the SEA asset `agent.cjs` with its own code cache
 * (src/sea-entry.ts picks it when argv is the agent's own shape,
 * `fastRunArgs`), so the agent holds the source text and compiled code of
 * its own modules only: not the CLI's command tree, yargs, server mode, the
 * PKI generator, the planner or the demo. src/main.ts (the CLI asset, and
 * `node build/mvpn-client.cjs`) calls the same function.
 */
import type { Io } from './cli/io.ts';
import { reportFailure } from './cli/report.ts';
import { runCommand } from './cli/run.ts';

/** Runs the agent with options `fastRunArgs` read; resolves to the exit code. */
export function runAgent(args: { config: string }, io: Io): Promise<number> {
  return runCommand.run(args, io).catch((err: unknown) => reportFailure(io, err));
}
