import { describe, expect, it } from 'vitest';
import { sh } from '../helpers/netns.ts';

describe('host guard', () => {
  it('lab addresses are unreachable from the host namespace while the suite runs', async () => {
    const r = await sh('ip', ['route', 'get', '198.18.0.1'], { allowFail: true });
    // Either our unreachable route or one the host already had for the range: never the default route.
    expect(r.stdout + r.stderr).not.toMatch(/^198\.18\.0\.1 via /m);
    const ping = await sh('ping', ['-n', '-q', '-c', '1', '-W', '1', '198.18.0.1'], { allowFail: true });
    expect(ping.code).not.toBe(0);
  });
});
