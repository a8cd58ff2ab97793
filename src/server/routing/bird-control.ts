/**
 * BIRD's control socket (`bird -s PATH`), spoken directly instead of
 * spawning `birdc` per command. The protocol is line based: on connect BIRD
 * greets with `0001 BIRD <version> ready.`; each command is one line; a
 * reply is lines `NNNN-text` (more follows), ` text` (continuation of the
 * previous code) and a final `NNNN text`. Codes 0xxx are success, 1xxx
 * table data, 8xxx run-time errors and 9xxx parse errors.
 *
 * One connection per command: the daemon asks a few times a second at most,
 * and a fresh connection cannot inherit a half-read reply of an earlier
 * command that timed out.
 */
import { connect } from 'node:net';
import { RoutingError } from '../../errors.ts';

export interface BirdReply {
  /** The final line's code. */
  readonly code: number;
  /** Every line's text, code and separator stripped. */
  readonly lines: readonly string[];
}

const MAX_REPLY = 4 << 20;

/** Sends one command and returns its whole reply; rejects on a connect failure, a timeout or an 8xxx/9xxx reply. */
export function birdCommand(socketPath: string, command: string, timeoutMs = 5_000): Promise<BirdReply> {
  if (/[\r\n]/.test(command)) return Promise.reject(new RoutingError('MVPN_BIRD_CONTROL', 'a BIRD command is one line'));
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let buf = '';
    let greeted = false;
    const lines: string[] = [];
    const fail = (message: string): void => {
      sock.destroy();
      reject(new RoutingError('MVPN_BIRD_CONTROL', `BIRD at ${socketPath}, "${command}": ${message}`));
    };
    sock.setTimeout(timeoutMs, () => fail(`no reply within ${timeoutMs} ms`));
    sock.on('error', (err) => fail(err.message));
    sock.on('close', () => fail('connection closed before the reply ended'));
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_REPLY) return fail('reply too large');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = /^(\d{4})([ -])(.*)$/.exec(line);
        if (!greeted) {
          if (!m || m[1] !== '0001') return fail(`unexpected greeting ${JSON.stringify(line)}`);
          greeted = true;
          sock.write(`${command}\n`);
          continue;
        }
        if (!m) {
          lines.push(line.replace(/^ /, ''));
          continue;
        }
        lines.push(m[3]!);
        if (m[2] === ' ') {
          const code = Number(m[1]);
          sock.removeAllListeners('close');
          sock.destroy();
          if (code >= 8000) reject(new RoutingError('MVPN_BIRD_CONTROL', `BIRD refused "${command}": ${lines.join('; ')}`, { context: { code } }));
          else resolve({ code, lines });
          return;
        }
      }
    });
  });
}

/** `configure`: BIRD re-reads its config file; a config it cannot parse is refused and the running one stays. */
export async function birdConfigure(socketPath: string): Promise<void> {
  const r = await birdCommand(socketPath, 'configure');
  // 0003 Reconfigured, 0004 Reconfiguration in progress, 0018/0019: confirmed / nothing to do.
  if (![3, 4, 18, 19, 20].includes(r.code)) throw new RoutingError('MVPN_BIRD_CONTROL', `BIRD configure: ${r.lines.join('; ')}`);
}

export interface BirdProtocol {
  readonly name: string;
  readonly proto: string;
  readonly state: string;
  readonly info: string;
}

/** `show protocols`: one entry per protocol (name, proto, state up/down/start, info such as BGP's Established). */
export async function birdProtocols(socketPath: string): Promise<BirdProtocol[]> {
  const r = await birdCommand(socketPath, 'show protocols');
  const out: BirdProtocol[] = [];
  for (const l of r.lines) {
    const f = l.trim().split(/\s+/);
    if (f.length < 4 || f[0] === 'Name') continue;
    // Name Proto Table State Since Info (Table is "---" when none; Since is one or two fields).
    out.push({ name: f[0]!, proto: f[1]!, state: f[3]!, info: f.slice(5).join(' ').replace(/^\d{2}:\d{2}:\d{2}(\.\d+)?\s*/, '') });
  }
  return out;
}

/** Prefixes of table `table` learned from protocol `proto` (`show route table T protocol P`). */
export async function birdRoutes(socketPath: string, table: string, proto: string): Promise<string[]> {
  const r = await birdCommand(socketPath, `show route table ${table} protocol ${proto}`);
  return r.lines.map((l) => /^(\d{1,3}(?:\.\d{1,3}){3}\/\d{1,2})\s/.exec(l)?.[1]).filter((p): p is string => p !== undefined);
}

/**
 * The BGP local_pref of every BGP route in `table`, by prefix (`show route
 * table T all`: a route's first line names the prefix, or is indented for
 * another route of the same prefix; its attributes follow, one per line).
 */
export async function birdBgpPrefs(socketPath: string, table: string): Promise<Map<string, number[]>> {
  const r = await birdCommand(socketPath, `show route table ${table} all`);
  const out = new Map<string, number[]>();
  let prefix: string | undefined;
  for (const l of r.lines) {
    const head = /^(\d{1,3}(?:\.\d{1,3}){3}\/\d{1,2})?\s+\w+\s+\[/.exec(l);
    if (head) {
      if (head[1]) prefix = head[1];
      continue;
    }
    const pref = /^\s*BGP\.local_pref:\s*(\d+)/.exec(l);
    if (pref && prefix) out.set(prefix, [...(out.get(prefix) ?? []), Number(pref[1])]);
  }
  return out;
}
