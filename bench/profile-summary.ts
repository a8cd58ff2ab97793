/**
 * Top costs of a V8 CPU profile (`--cpu-prof`), for the analysis in
 * BENCHMARKS.md. The executable honours NODE_OPTIONS, so:
 *
 *   NODE_OPTIONS="--cpu-prof --cpu-prof-dir=/tmp/prof" dist/mvpn-client status
 *   node bench/profile-summary.ts /tmp/prof/CPU.*.cpuprofile [--top 25]
 *
 * Prints self time by function, inclusive time of the bundled CommonJS
 * modules (the executable is one esbuild bundle, whose wrappers are named by
 * module path, so this is the cost of loading each dependency) and
 * inclusive time by function.
 */
import { readFile } from 'node:fs/promises';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

async function main(): Promise<void> {
  const file = process.argv[2];
  if (!file) throw new Error('usage: node bench/profile-summary.ts FILE.cpuprofile [--top N]');
  const top = Number(flag('top', '25'));
  const p = JSON.parse(await readFile(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000));
  const totalMs = (p.endTime - p.startTime) / 1000;

  const name = (n: ProfileNode): string => `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.split('/').slice(-2).join('/')}:${n.callFrame.lineNumber + 1}`;
  const selfBy = new Map<string, number>();
  for (const [id, ms] of self) selfBy.set(name(byId.get(id)!), (selfBy.get(name(byId.get(id)!)) ?? 0) + ms);

  // Inclusive time per function (counted once per sample even when recursive).
  const incl = new Map<string, number>();
  for (const [id, ms] of self) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = name(byId.get(cur)!);
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + ms);
    }
  }
  const show = (title: string, m: Map<string, number>, filter: (k: string) => boolean = () => true): void => {
    console.log(`\n${title}`);
    for (const [k, ms] of [...m].filter(([k]) => filter(k)).sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms.toFixed(1).padStart(9)} ms  ${k}`);
  };
  console.log(`profile ${file}: ${totalMs.toFixed(1)} ms wall, ${p.samples.length} samples`);
  show('self time', selfBy);
  show('inclusive time of bundled CommonJS modules (esbuild names their wrappers by path)', incl, (k) => /^(node_modules\/|init_)/.test(k));
  show('inclusive time', incl);
}

await main();
