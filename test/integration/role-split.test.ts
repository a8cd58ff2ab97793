/**
 * Role-split start-up (issue 14), on the BUILT executable: `--version`,
 * `status` and the agent (`run`) never evaluate server mode, the PKI
 * generator, the planner, the demo or the packages only those use. The
 * bundle ends every module with a trace call (scripts/bundle.mjs); with
 * MVPN_TRACE_MODULES=FILE the executable appends each evaluated module's
 * path to FILE. An eager import of a server module anywhere on these paths
 * makes this test fail, and so does the agent's join loading the X.509
 * library (@peculiar/x509) again.
 */
import { readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtBinary } from '../e2e/binary.ts';
import { AgentWorld, allConnected, ServerWorld, startAgentIn } from '../helpers/agent-fixtures.ts';
import { sh, withLab } from '../helpers/netns.ts';
import { tmpDir } from '../helpers/tmp.ts';

const ROOT = resolve(import.meta.dirname, '../..');

/** Server mode, the PKI generator, the planner and the demo: not even in the agent's asset. */
const SERVER_MODE = [/^src\/server\//, /^src\/cli\/server\//, /^src\/demo\//, /^src\/cli\/demo\.ts$/, /^src\/pki\/(ca|cert|tls-crypt-v2)\.ts$/, /^node_modules\/saxes\//];
/** Modules no client path may evaluate (prom-client is in the agent's asset, loaded only for `metrics_listen`). */
const SERVER_SIDE = [...SERVER_MODE, /^node_modules\/prom-client\//];
/** What `--version` and `status` need beyond that: none of the agent's machinery either. */
const AGENT_SIDE = [/^src\/agent\/(daemon|config|reconcile|sources)\.ts$/, /^src\/bundle\//, /^src\/openvpn\//, /^node_modules\/(zod|tar|undici|@peculiar\/x509)\//];
/** The CLI asset's entry and command tree: the agent's own asset has none of them. */
const CLI_ASSET_ONLY = [/^src\/main\.ts$/, /^src\/cli\/(main|commands)\.ts$/, /^node_modules\/(yargs|yargs-parser|cliui)\//];
/** Libraries the agent loads on first use, each its own asset (scripts/bundle.mjs): not in agent.cjs. */
const AGENT_LIBS = [/^node_modules\/(undici|@peculiar\/x509|reflect-metadata|prom-client)\//];
/**
 * The agent verifies certificates, CRLs and CA roll-overs with node:crypto
 * and the DER reader (pki/read.ts); the X.509 library is for issuing only
 * (and for a CSR at enrollment or renewal, which this join does not do).
 */
const X509_LIBRARY = [/^node_modules\/(@peculiar|reflect-metadata|pvtsutils|@?asn1js|tsyringe)\b/];
/**
 * The agent's push policy does CIDR arithmetic with the server's address
 * allocator module (pure functions, no imports beyond errors.ts).
 */
const SHARED = new Set(['src/server/alloc.ts']);

function offenders(mods: readonly string[], rules: readonly RegExp[]): string[] {
  return mods.filter((m) => !SHARED.has(m) && rules.some((r) => r.test(m)));
}

async function traced(bin: string, args: string[]): Promise<{ code: number | null; mods: string[] }> {
  const dir = await tmpDir('trace');
  try {
    const file = join(dir.path, 'modules');
    const r = await sh('env', [`MVPN_TRACE_MODULES=${file}`, bin, ...args], { allowFail: true, timeoutMs: 60_000 });
    return { code: r.code, mods: (await readFile(file, 'utf8')).split('\n').filter(Boolean) };
  } finally {
    await dir.remove();
  }
}

describe('role-split start-up (built executable)', () => {
  it('the trace sees what a command evaluates: `server --help` evaluates server mode (the check below can fail)', async () => {
    const r = await traced(builtBinary(), ['server', '--help']);
    expect(r.code).toBe(0);
    expect(r.mods).toContain('src/cli/server/group.ts');
    expect(offenders(r.mods, SERVER_SIDE).length).toBeGreaterThan(0);
  });

  it.each([[['--version']], [['--help']], [['status', '--runtime-dir', '/nonexistent-mvpn-run']], [['status', '--json', '--runtime-dir', '/nonexistent-mvpn-run']]])(
    '%j evaluates neither server mode nor the agent daemon',
    async (args) => {
      const r = await traced(builtBinary(), args);
      expect(r.mods).toContain('src/cli/fast.ts');
      expect(offenders(r.mods, SERVER_SIDE)).toEqual([]);
      expect(offenders(r.mods, AGENT_SIDE)).toEqual([]);
    },
  );

  it.each([[['--version']], [['status', '--runtime-dir', '/nonexistent-mvpn-run']], [['status', '--json', '--runtime-dir=/nonexistent-mvpn-run']]])(
    '%j takes the fast path: neither yargs nor the command tree is evaluated',
    async (args) => {
      const r = await traced(builtBinary(), args);
      expect(r.mods).toContain('src/cli/fast.ts');
      expect(r.mods.filter((m) => /^node_modules\/(yargs|yargs-parser)\//.test(m) || m === 'src/cli/main.ts' || m === 'src/cli/commands.ts')).toEqual([]);
    },
  );

  it('`--help` still builds the command tree with yargs (the check above can fail)', async () => {
    const r = await traced(builtBinary(), ['--help']);
    expect(r.code).toBe(0);
    expect(r.mods).toContain('src/cli/main.ts');
    expect(r.mods.some((m) => m.startsWith('node_modules/yargs/'))).toBe(true);
  });

  it('the agent asset the executable carries holds none of server mode or the CLI tree (its source is what a long-lived agent keeps)', async () => {
    // scripts/bundle.mjs ends every bundled module with __mvpnTrace("PATH"): the list of what a bundle contains.
    const contained = (text: string): string[] => [...text.matchAll(/__mvpnTrace\("([^"]+)"\)/g)].map((m) => m[1]!);
    const agentText = await readFile(join(ROOT, 'build/mvpn-agent.cjs'), 'utf8');
    // The very text built into dist/mvpn-client (build.sh), not a stale intermediate.
    expect((await readFile(builtBinary())).includes(Buffer.from(agentText))).toBe(true);
    const agentMods = contained(agentText);
    expect(agentMods).toContain('src/agent/daemon.ts');
    expect(offenders(agentMods, SERVER_MODE)).toEqual([]);
    expect(offenders(agentMods, CLI_ASSET_ONLY)).toEqual([]);
    // The libraries it loads on first use are assets of their own (lib-NAME.cjs).
    expect(offenders(agentMods, AGENT_LIBS)).toEqual([]);
    // The check can fail: the CLI asset carries all of it.
    const cliMods = contained(await readFile(join(ROOT, 'build/mvpn-client.cjs'), 'utf8'));
    expect(offenders(cliMods, SERVER_MODE).length).toBeGreaterThan(0);
    expect(offenders(cliMods, CLI_ASSET_ONLY).length).toBeGreaterThan(0);
  });

  it('the agent loads those libraries from their assets when used: enrollment over HTTPS (undici, a CSR with @peculiar/x509) and metrics_listen (prom-client)', async () => {
    const bin = builtBinary();
    await withLab(async (lab) => {
      const w = await ServerWorld.create(lab, { networks: ['alpha'] });
      const dir = await tmpDir('trace');
      const file = join(dir.path, 'modules');
      try {
        await w.startServer();
        const config = await w.writeConfig({ metrics_listen: '127.0.0.1:9475' });
        await w.newToken();
        const agent = startAgentIn(lab, w.node, config, { MVPN_TRACE_MODULES: file }, bin);
        try {
          await w.waitStatus((st) => st.ready && allConnected(st, ['alpha']), 180_000);
          const scrape = await w.node.exec('curl', ['-sf', 'http://127.0.0.1:9475/metrics']);
          expect(scrape.stdout).toMatch(/^mvpn_/m);
        } finally {
          expect(await agent.stop(), agent.log()).toBe(0);
        }
        const mods = (await readFile(file, 'utf8')).split('\n').filter(Boolean);
        expect(mods).toContain('src/agent-main.ts');
        for (const lib of ['undici', '@peculiar/x509', 'reflect-metadata', 'prom-client']) expect(mods.some((m) => m.startsWith(`node_modules/${lib}/`)), lib).toBe(true);
        expect(offenders(mods, CLI_ASSET_ONLY)).toEqual([]);
        expect(offenders(mods, SERVER_MODE)).toEqual([]);
      } finally {
        await dir.remove();
        await w.cleanup();
      }
    });
  });

  it('the agent joins a network and never evaluates server mode', async () => {
    const bin = builtBinary();
    await withLab(async (lab) => {
      const w = await AgentWorld.create(lab);
      const dir = await tmpDir('trace');
      const file = join(dir.path, 'modules');
      try {
        await w.addNetwork('alpha');
        await w.publish();
        await w.writeConfig();
        const agent = w.startAgent({ bin, env: { MVPN_TRACE_MODULES: file } });
        try {
          await w.waitStatus((st) => st.ready && allConnected(st, ['alpha']));
        } finally {
          expect(await agent.stop(), agent.log()).toBe(0);
        }
        const mods = (await readFile(file, 'utf8')).split('\n').filter(Boolean);
        expect(mods).toContain('src/agent/daemon.ts');
        // The agent asset (agent.cjs, entry src/agent-main.ts), not the CLI asset, whose
        // entry module src/main.ts is evaluated first whenever cli.cjs runs.
        expect(mods).toContain('src/agent-main.ts');
        expect(offenders(mods, CLI_ASSET_ONLY)).toEqual([]);
        expect(offenders(mods, SERVER_SIDE)).toEqual([]);
        expect(mods).toContain('src/pki/read.ts');
        expect(offenders(mods, X509_LIBRARY)).toEqual([]);
      } finally {
        await rm(file, { force: true });
        await dir.remove();
        await w.cleanup();
      }
    });
  });
});
