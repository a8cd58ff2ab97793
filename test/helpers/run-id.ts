/**
 * Every test run gets an id (set once by the global setup and inherited by
 * the workers) that is part of every namespace, interface, directory and
 * process argument the tests create, so the suite can check at the end that
 * it left nothing behind and never touches anything it did not make.
 */
import { randomBytes } from 'node:crypto';

export function runId(): string {
  let id = process.env['MVPN_TEST_RUN'];
  if (!id) {
    id = randomBytes(3).toString('hex');
    process.env['MVPN_TEST_RUN'] = id;
  }
  return id;
}

/** Prefix of every network namespace this run creates. */
export function nsPrefix(): string {
  return `mvt-${runId()}-`;
}
