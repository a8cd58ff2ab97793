/**
 * The shape every benchmark module has, so run.ts can run any subset and
 * BENCHMARKS.md can be rendered again from stored results (a subset run
 * replaces only its own sections of bench/results/latest.json).
 */
import type { AgentWorld } from './agent-world.ts';
import type { BenchEnv } from './env.ts';

export interface Target {
  readonly what: string;
  readonly goal: string;
  readonly measured: string;
  readonly met: boolean;
  /** Why it was missed (filled from analysis where known). */
  readonly note?: string;
}

export interface SectionResult {
  readonly name: string;
  readonly date: string;
  readonly quick: boolean;
  readonly durationS: number;
  readonly targets: readonly Target[];
  readonly data: Record<string, unknown>;
}

export interface BenchContext {
  readonly env: BenchEnv;
  readonly quick: boolean;
  log(msg: string): void;
  /** One shared agent world (namespaces + openvpn servers) for the benchmarks that need one, made on first use. */
  agentWorld(): Promise<AgentWorld>;
  /** Largest network count the shared world has. */
  readonly maxNetworks: number;
}

export interface Benchmark {
  readonly name: string;
  readonly describe: string;
  run(ctx: BenchContext): Promise<Omit<SectionResult, 'name' | 'date' | 'quick' | 'durationS'>>;
  /** Markdown for this section (tables and notes) from its stored result. */
  render(r: SectionResult): string;
}
