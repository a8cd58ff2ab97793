import { describe, expect, it } from 'vitest';
import type { CliCommand, CliGroup } from '../../src/cli/command.ts';
import { bufferIo } from '../../src/cli/io.ts';
import { main } from '../../src/cli/main.ts';
import { ExitCode, MvpnError } from '../../src/errors.ts';
import { VERSION } from '../../src/version.ts';

const echo: CliCommand<{ word: string; loud: boolean }> = {
  command: 'echo <word>',
  describe: 'print a word',
  builder: (y) => y.positional('word', { type: 'string', demandOption: true }).option('loud', { type: 'boolean', default: false }),
  run: async (args, io) => {
    io.stdout.write((args.loud ? args.word.toUpperCase() : args.word) + '\n');
    return ExitCode.ok;
  },
};
const failing: CliCommand<object> = {
  command: 'fail',
  describe: 'always fails',
  builder: (y) => y,
  run: async () => {
    throw new MvpnError('MVPN_DAEMON_UNREACHABLE', 'cannot reach the daemon', { hint: 'is it running?' });
  },
};
const group: CliGroup = { command: 'grp', describe: 'a group', children: [echo] };
const tree = [echo, failing, group];

describe('CLI entry', () => {
  it('prints the version to stdout', async () => {
    const io = bufferIo();
    expect(await main(['--version'], io, tree)).toBe(ExitCode.ok);
    expect(io.out().trim()).toBe(VERSION);
  });

  it('prints help listing the commands', async () => {
    const io = bufferIo();
    expect(await main(['--help'], io, tree)).toBe(ExitCode.ok);
    expect(io.out()).toContain('echo <word>');
    expect(io.out()).toContain('grp');
  });

  it('dispatches to a subcommand and a nested one', async () => {
    const io = bufferIo();
    expect(await main(['echo', 'hi', '--loud'], io, tree)).toBe(0);
    expect(await main(['grp', 'echo', 'there'], io, tree)).toBe(0);
    expect(io.out()).toBe('HI\nthere\n');
  });

  it.each([
    [['bogus']],
    [['echo']],
    [['echo', 'x', '--no-such-flag']],
    [[]],
    [['grp']],
  ])('rejects bad usage %j with exit code 2 and a message on stderr', async (argv) => {
    const io = bufferIo();
    expect(await main(argv, io, tree)).toBe(ExitCode.usage);
    expect(io.err()).toMatch(/mvpn-client: /);
    expect(io.out()).toBe('');
  });

  it('turns a typed error into its message, code, hint and exit code', async () => {
    const io = bufferIo();
    expect(await main(['fail'], io, tree)).toBe(ExitCode.daemonUnreachable);
    expect(io.err()).toContain('cannot reach the daemon [MVPN_DAEMON_UNREACHABLE]');
    expect(io.err()).toContain('hint: is it running?');
  });

  it('explains a lone "-" after an option (yargs takes it for a stray argument)', async () => {
    const io = bufferIo();
    expect(await main(['echo', 'x', '--loud', '-'], io, tree)).toBe(ExitCode.usage);
    expect(io.err()).toContain('Unknown argument: -');
    expect(io.err()).toContain('hint: to name standard output or input after an option, join them: --out=-');
    const other = bufferIo();
    expect(await main(['echo', 'x', 'y'], other, tree)).toBe(ExitCode.usage);
    expect(other.err()).not.toContain('--out=-');
  });
});
