/** How every command's failure reaches the user: one line with the code, a hint, and for usage errors where help is. */
import { exitCodeFor, toMvpnError, UsageError, type MvpnError } from '../errors.ts';
import type { Io } from './io.ts';

export function reportError(io: Io, e: MvpnError): void {
  io.stderr.write(`mvpn-client: ${e.message} [${e.code}]\n`);
  if (e.hint) io.stderr.write(`hint: ${e.hint}\n`);
}

/** Reports whatever a command threw; resolves to its exit code. */
export function reportFailure(io: Io, err: unknown): number {
  const e = toMvpnError(err);
  reportError(io, e);
  if (e instanceof UsageError) io.stderr.write('see: mvpn-client --help\n');
  return exitCodeFor(e);
}
