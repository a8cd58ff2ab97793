/**
 * undici, loaded on first use. Loading it costs ~60 ms of start-up in the
 * executable (measured with --cpu-prof), which every short command
 * (`status`, `--version`, server admin verbs) would pay for nothing; only the
 * agent's fetches and enrollment need it.
 */
import type * as Undici from 'undici';

let mod: typeof Undici | undefined;

export async function loadUndici(): Promise<typeof Undici> {
  mod ??= await import('undici');
  return mod;
}

/** The module if something already loaded it (an undici error implies it was). */
export function loadedUndici(): typeof Undici | undefined {
  return mod;
}
