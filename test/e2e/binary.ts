/**
 * The e2e suite drives the built single executable, never the sources: what
 * it proves is what ships. A missing build fails every e2e test with one
 * clear message instead of a confusing spawn error.
 */
import { accessSync, constants } from 'node:fs';
import { resolve } from 'node:path';

export const BINARY = resolve(import.meta.dirname, '../../dist/mvpn-client');

export function builtBinary(): string {
  try {
    accessSync(BINARY, constants.X_OK);
  } catch {
    throw new Error(`${BINARY} does not exist (or is not executable): run ./build.sh first`);
  }
  return BINARY;
}
