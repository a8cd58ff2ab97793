/**
 * `server plan --apply --servers FILE`: a plan carried out on every server
 * it names, from one place. Each server is reached through its admin
 * channel — an argv prefix that runs `mvpn-client server` there (`ssh
 * root@ops.c mvpn-client server`, `ip netns exec ops-c mvpn-client server`,
 * or just `mvpn-client server --state-dir DIR`). Admin operations never go
 * over the HTTPS API (DESIGN.md §8), and nothing here needs a file system
 * shared between servers: files travel on the channel's stdin and stdout.
 *
 * Order (each step idempotent, so a failed run can simply be re-run):
 * 1. every hub applies its own part (`plan - --apply --server HUB`):
 *    networks with the planned subnets, up; every member with its planned
 *    address and remote (the hub is the one allocation authority, also for
 *    the nodes behind its peers);
 * 2. every link: unless the peer already has it, the hub's anchor
 *    (`anchor`) and link bundle (`link export … --out=-`) go to the peer
 *    (`link add - --hub-anchor … --relay-listen INTERNAL:8444`: the peer
 *    relays the hub's API to the nodes behind it; no relay for a public
 *    peer, whose nodes the plan sends to the hub's API directly);
 * 3. the nodes behind each peer get the peer's internal address with the
 *    port the peer's openvpn server listens on (`node set-remotes` at the hub).
 *
 * Delivering node tarballs (enrollment tokens; `--via` the relay for nodes
 * behind a peer) stays with the testbed: how a file reaches a private node
 * is the testbed's business.
 */
import { z } from 'zod';
import { MvpnError, UsageError, type ErrorCode } from '../../errors.ts';
import type { ExecFn } from '../../util/exec.ts';
import type { ApplyStep } from './plan-apply.ts';
import type { Plan } from './plan.ts';
import { parseWireError } from '../../util/wire-error.ts';

const SERVER_NAME = /^[a-z0-9][a-z0-9-]{0,30}$/;

export const ServersFileSchema = z.strictObject({
  servers: z.record(
    z.string().refine((k) => SERVER_NAME.test(k), { abort: true, message: 'server names are the testbed names of the experiment description (lower-case)' }),
    z.strictObject({
      /** argv that runs `mvpn-client server` on that server; the subcommand's arguments are appended. */
      command: z.array(z.string().min(1)).min(1),
      /** https://HOST:PORT at which peers reach this server's API (for its links); default: its own config. */
      api_url: z.string().regex(/^https:\/\/[^/\s]+$/, 'expected https://HOST:PORT').optional(),
      /** As a peer: the port of the relay to the hub's API on its internal address (default 8444). */
      relay_port: z.int().min(1).max(65535).optional(),
    }),
  ),
});
export type ServersFile = z.infer<typeof ServersFileSchema>;

/** Validates a servers file (zod); every problem named by its path, a bad key by what is wrong with it. */
export function parseServersFile(value: unknown, file: string): ServersFile {
  const r = ServersFileSchema.safeParse(value);
  if (r.success) return r.data;
  const say = (i: z.core.$ZodIssue): string => {
    const nested = 'issues' in i && Array.isArray(i.issues) ? (i.issues as z.core.$ZodIssue[]).map((n) => n.message).join(', ') : '';
    return `${i.path.join('.') || '(top level)'}: ${nested || i.message}`;
  };
  throw new UsageError(`servers file ${file}: ${r.error.issues.map(say).join('; ')}`);
}

export interface ServerStep extends Omit<ApplyStep, 'action'> {
  readonly server: string;
  readonly action: ApplyStep['action'] | 'link-added' | 'link-present';
}

const TIMEOUT_MS = 120_000;
export const DEFAULT_RELAY_PORT = 8444;

export class ServerChannels {
  private readonly servers: ServersFile['servers'];
  private readonly exec: ExecFn;

  constructor(servers: ServersFile, exec: ExecFn) {
    this.servers = servers.servers;
    this.exec = exec;
  }

  private argv(server: string): readonly string[] {
    const s = this.servers[server];
    if (!s) throw new UsageError(`no admin command for server ${server} in the servers file`);
    return s.command;
  }

  apiUrl(server: string): string | undefined {
    return this.servers[server]?.api_url;
  }

  relayPort(server: string): number {
    return this.servers[server]?.relay_port ?? DEFAULT_RELAY_PORT;
  }

  /** Runs a subcommand there; its output without --json (a file on stdout). Throws what the server said on failure. */
  async raw(server: string, args: readonly string[], input?: string): Promise<string> {
    const [cmd, ...pre] = this.argv(server);
    let r;
    try {
      r = await this.exec(cmd!, [...pre, ...args], { timeoutMs: TIMEOUT_MS, ...(input === undefined ? {} : { input }) });
    } catch (err) {
      throw new MvpnError('MVPN_APPLY_FAILED', `server ${server}: cannot run ${[cmd, ...pre].join(' ')}: ${(err as Error).message}`, { cause: err });
    }
    if (r.code !== 0) throw failure(server, args, r.stdout, r.stderr);
    return r.stdout;
  }

  /** Runs a subcommand there with --json; its JSON value. */
  async json<T>(server: string, args: readonly string[], input?: string): Promise<T> {
    const out = await this.raw(server, [...args, '--json'], input);
    try {
      return JSON.parse(out) as T;
    } catch {
      throw new MvpnError('MVPN_APPLY_FAILED', `server ${server}: mvpn-client server ${args.join(' ')} did not print JSON (is it an mvpn-client of this version?): ${out.slice(0, 200)}`);
    }
  }
}

/** The server's own error (code and message from its --json output or stderr), named by server and command. */
function failure(server: string, args: readonly string[], stdout: string, stderr: string): MvpnError {
  let code: ErrorCode = 'MVPN_APPLY_FAILED';
  let message = stderr.trim().split('\n').filter((l) => !l.startsWith('hint:'))[0]?.replace(/^mvpn-client: /, '') ?? '';
  const e = parseWireError(stdout); // not JSON: stderr says it
  if (e.message) message = e.message;
  if (e.code) code = e.code;
  return new MvpnError(code, `server ${server}: mvpn-client server ${args.filter((a) => a !== '--json').join(' ')} failed: ${message || '(no message)'}`, {
    context: { server },
  });
}

/** Every server the plan names must have an admin command; says which are missing. */
export function checkServers(plan: Plan, servers: ServersFile): void {
  const missing = plan.servers.map((s) => s.testbed).filter((t) => !servers.servers[t]);
  if (missing.length > 0) {
    throw new UsageError(`the servers file has no admin command for ${missing.join(', ')} (the plan's servers: ${plan.servers.map((s) => s.testbed).join(', ')})`);
  }
}

export async function applyAcrossServers(plan: Plan, experimentJson: string, channels: ServerChannels): Promise<ServerStep[]> {
  const steps: ServerStep[] = [];
  for (const s of plan.servers.filter((x) => x.hosts.length > 0)) {
    const r = await channels.json<{ steps: ApplyStep[] }>(s.testbed, ['plan', '-', '--apply', '--server', s.testbed], experimentJson);
    for (const st of r.steps) steps.push({ server: s.testbed, ...st });
  }
  for (const link of plan.links) {
    const shown = await channels.json<{ peer: { network: string; relay: { listen: string } | null }[] }>(link.peer, ['link', 'show', link.lan]);
    const present = shown.peer.find((p) => p.network === link.lan);
    if (present) {
      const relay = present.relay ? `, relay on ${present.relay.listen}` : ', no relay';
      steps.push({ server: link.peer, action: 'link-present', lan: link.lan, peer: link.peer, detail: `already joined to ${link.hub}${relay}` });
    } else {
      const { trust_anchor: anchor } = await channels.json<{ trust_anchor: string }>(link.hub, ['anchor']);
      const api = channels.apiUrl(link.hub);
      const bundle = await channels.raw(link.hub, ['link', 'export', link.lan, '--peer', link.peer, '--out=-', ...(api ? ['--api-url', api] : [])]);
      steps.push({ server: link.hub, action: 'link-exported', lan: link.lan, peer: link.peer, detail: `to ${link.peer}` });
      // A relay only where the plan sends a node of this peer through it (a public peer's nodes reach the hub's API directly).
      const relayed = plan.lans.find((l) => l.name === link.lan)!.members.some((m) => m.server === link.peer && m.api_via !== null);
      const peerOps = plan.servers.find((x) => x.testbed === link.peer)!;
      const relayListen = relayed ? `${peerOps.internal}:${channels.relayPort(link.peer)}` : undefined;
      const added = await channels.json<{ address: string; port: number }>(
        link.peer,
        ['link', 'add', '-', '--hub-anchor', anchor, ...(relayListen ? ['--relay-listen', relayListen] : [])],
        bundle,
      );
      steps.push({
        server: link.peer,
        action: 'link-added',
        lan: link.lan,
        peer: link.peer,
        detail: `link address ${added.address}, local server on port ${added.port}, ${relayListen ? `relay to the hub's API on ${relayListen}` : 'no API relay (its nodes reach the hub directly)'}`,
      });
    }
    const { port } = await channels.json<{ port: number }>(link.peer, ['network', 'show', link.lan]);
    const lan = plan.lans.find((l) => l.name === link.lan)!;
    for (const m of lan.members.filter((x) => x.server === link.peer)) {
      const remote = `${m.remote}:${port}`;
      const r = await channels.json<{ changed: boolean; address: string }>(link.hub, ['node', 'set-remotes', m.node, '--network', link.lan, '--remote', remote]);
      steps.push({ server: link.hub, action: 'node-remotes-set', lan: link.lan, node: m.node, detail: `${r.address} via ${remote}${r.changed ? '' : ' (unchanged)'}` });
    }
  }
  return steps;
}
