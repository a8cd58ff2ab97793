import { describe, expect, it } from 'vitest';
import { lookupOpenvpnUser } from '../../src/openvpn/unpriv.ts';
import { execCommand, type ExecFn } from '../../src/util/exec.ts';

// A wrapper is not execCommand itself, so lookupOpenvpnUser asks getent only.
const viaGetent: ExecFn = (cmd, args, opts) => execCommand(cmd, args, opts);

describe('lookupOpenvpnUser', () => {
  it('reads the files databases first and agrees with getent (root, and a name that does not exist)', async () => {
    const files = await lookupOpenvpnUser('root');
    expect(files).toEqual({ user: 'root', group: 'root', uid: 0, gid: 0 });
    expect(await lookupOpenvpnUser('root', viaGetent)).toEqual(files);
    expect(await lookupOpenvpnUser('mvpn-no-such-user')).toBeUndefined();
    expect(await lookupOpenvpnUser('mvpn-no-such-user', viaGetent)).toBeUndefined();
  });

  it('with an injected exec only getent answers', async () => {
    const calls: string[] = [];
    const exec: ExecFn = async (cmd, args) => {
      calls.push(`${cmd} ${args.join(' ')}`);
      return { code: 2, stdout: '', stderr: '' };
    };
    expect(await lookupOpenvpnUser('root', exec)).toBeUndefined();
    expect(calls.sort()).toEqual(['getent group root', 'getent passwd root']);
  });
});
