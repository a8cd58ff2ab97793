/**
 * Test labs: src/netns/lab.ts with the test rules (DESIGN.md §9) applied —
 * names unique per run (`mvt-<run>-…-<pid>`) so the suite's leak check finds
 * anything left, and only addresses from 198.18.0.0/15 and the documentation
 * ranges. `withLab` destroys the lab also when the test fails.
 */
import { assertLabAddress, Lab as BaseLab, namespacesWithPrefix } from '../../src/netns/lab.ts';
import { nsPrefix } from './run-id.ts';

export { Netns, sh, waitFor, type ShResult as ExecResult } from '../../src/netns/lab.ts';

export const assertTestAddress = assertLabAddress;

export class Lab extends BaseLab {
  constructor() {
    super({ prefix: `${nsPrefix()}${process.pid}-`, checkAddress: assertLabAddress });
  }
}

/** Namespaces of this run that still exist (the suite's final check). */
export function leftoverNamespaces(): Promise<string[]> {
  return namespacesWithPrefix(nsPrefix());
}

export async function withLab<T>(fn: (lab: Lab) => Promise<T>): Promise<T> {
  const lab = new Lab();
  try {
    return await fn(lab);
  } finally {
    await lab.destroy();
  }
}
