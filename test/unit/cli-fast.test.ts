/**
 * The fast path (src/cli/fast.ts) answers `--version` and plain `status`
 * without yargs. It must read every shape it takes exactly as yargs does,
 * and hand every other shape to yargs: each case below is parsed both ways.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_RUNTIME_DIR } from '../../src/agent/paths.ts';
import { fastCommand, fastRunArgs, runFast } from '../../src/cli/fast.ts';
import { bufferIo } from '../../src/cli/io.ts';
import { main } from '../../src/cli/main.ts';
import { runCommand } from '../../src/cli/run.ts';
import { statusCommand, type StatusArgs } from '../../src/cli/status.ts';

/** What yargs hands the status command for `argv` (the real builder; the run only records). */
async function yargsStatusArgs(argv: string[]): Promise<StatusArgs | undefined> {
  let got: StatusArgs | undefined;
  const recording = { ...statusCommand, run: async (a: StatusArgs) => ((got = { json: a.json, prometheus: a.prometheus, 'runtime-dir': a['runtime-dir'] }), 0) };
  const code = await main(argv, bufferIo(), [recording]);
  return code === 0 ? got : undefined;
}

describe('CLI fast path', () => {
  it.each([
    [['status']],
    [['status', '--json']],
    [['status', '--prometheus']],
    [['status', '--runtime-dir', '/run/x']],
    [['status', '--runtime-dir=/run/x', '--json']],
    [['status', '--json', '--runtime-dir', '/tmp/a b']],
    [['status', '--prometheus', '--json']],
  ])('%j: the same arguments as yargs parses', async (argv) => {
    const fast = fastCommand(argv);
    expect(fast?.kind).toBe('status');
    const viaYargs = await yargsStatusArgs(argv);
    expect(viaYargs).toBeDefined();
    expect(fast?.kind === 'status' ? fast.args : undefined).toEqual(viaYargs);
  });

  it.each([
    [['status', '--help']],
    [['status', '--no-json']],
    [['status', '--json=false']],
    [['status', '--json', '--json']],
    [['status', '--runtime-dir']],
    [['status', '--runtime-dir', '--json']],
    [['status', '--runtime-dir=']],
    [['status', '--jsn']],
    [['status', 'extra']],
    [['status', '-h']],
    [['--version', 'status']],
    [['--help']],
    [['-V']],
    [['stat']],
    [['run']],
    [[]],
  ])('%j goes to yargs', (argv) => {
    expect(fastCommand(argv)).toBeUndefined();
  });

  it('`--version` prints what yargs prints', async () => {
    const viaYargs = bufferIo();
    expect(await main(['--version'], viaYargs)).toBe(0);
    const fast = bufferIo();
    expect(await runFast(fastCommand(['--version'])!, fast)).toBe(0);
    expect(fast.out()).toBe(viaYargs.out());
    expect(fast.err()).toBe('');
  });

  it.each([[['status', '--runtime-dir', '/nonexistent-mvpn-fast']], [['status', '--json', '--prometheus', '--runtime-dir=/nonexistent-mvpn-fast']]])(
    '%j fails with the same message and exit code both ways',
    async (argv) => {
      const viaYargs = bufferIo();
      const yargsCode = await main(argv, viaYargs);
      const fast = bufferIo();
      const fastCode = await runFast(fastCommand(argv)!, fast);
      expect(fastCode).not.toBe(0);
      expect(fastCode).toBe(yargsCode);
      expect(fast.err()).toBe(viaYargs.err());
      expect(fast.out()).toBe(viaYargs.out());
    },
  );

  it('the default runtime directory is the documented one', () => {
    const fast = fastCommand(['status']);
    expect(fast?.kind === 'status' ? fast.args['runtime-dir'] : undefined).toBe(DEFAULT_RUNTIME_DIR);
  });
});

/** What yargs hands the run command for `argv` (its real builder; the run only records). */
async function yargsRunArgs(argv: string[]): Promise<{ config: string } | undefined> {
  let got: { config: string } | undefined;
  const recording = { ...runCommand, describe: 'the agent', run: async (a: { config: string }) => ((got = { config: a.config }), 0) };
  const code = await main(argv, bufferIo(), [recording]);
  return code === 0 ? got : undefined;
}

describe('CLI fast path of the agent (run)', () => {
  it.each([[['run']], [['run', '--config', '/etc/x/config.json']], [['run', '--config=/srv/a b']], [['run', '--config', 'relative/dir']]])(
    '%j: the same config as yargs parses',
    async (argv) => {
      const viaYargs = await yargsRunArgs(argv);
      expect(viaYargs).toBeDefined();
      expect(fastRunArgs(argv)).toEqual(viaYargs);
    },
  );

  it.each([
    [['run', '--help']],
    [['run', '--config']],
    [['run', '--config', '-x']],
    [['run', '--config=']],
    [['run', '--config', 'a', '--config', 'b']],
    [['run', '--config', 'a', 'extra']],
    [['run', 'extra']],
    [['run', '--cfg', 'a']],
    [['status']],
    [['--version']],
  ])('%j goes to yargs', (argv) => {
    expect(fastRunArgs(argv)).toBeUndefined();
  });
});
