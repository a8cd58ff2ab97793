/**
 * The reconcile planner: desired state (verified membership + the bundles
 * fetched for it) against actual state (installed bundles + running
 * networks) → one action per network. Pure and table-tested; reconcile.ts
 * performs the actions.
 *
 * Rules (DESIGN.md §5):
 * - Only what differs changes. A network whose installed bundle matches the
 *   membership entry keeps running untouched.
 * - A changed bundle restarts only its own network, unless the change touches
 *   nothing but `crl.pem`: then the files are swapped under the running
 *   openvpn (it re-reads the CRL for new TLS sessions) without a restart;
 *   or nothing but credential files (a renewal's node.crt, a CA roll): then
 *   the running openvpn reloads them (a soft restart, same process and
 *   device; the node's key, outside the bundle, is reloaded with them).
 * - A network gone from the membership is stopped and removed.
 * - When no membership could be obtained at all (every source unreachable),
 *   nothing is torn down: installed bundles keep running, and are started
 *   (boot from cache) as long as they have not expired.
 * - A new bundle that was rejected leaves the old one running; the reason is
 *   carried to status as the network's last error.
 * - A network an operator took down (`mvpn-client down`) is never started by
 *   reconcile; its bundle is still kept current.
 */

export interface NetError {
  readonly code: string;
  readonly message: string;
}

/** What the planner needs to know about a bundle, installed or freshly verified. */
export interface BundleFacts {
  readonly version: number;
  readonly sha256: string;
  /** File name → sha256, as listed in the signed manifest. */
  readonly files: Readonly<Record<string, string>>;
  /** Epoch ms after which the bundle must not be used. */
  readonly expiresAt: number;
}

export type FetchedBundle =
  | { readonly kind: 'installed' }
  | { readonly kind: 'verified'; readonly facts: BundleFacts }
  | { readonly kind: 'rejected'; readonly error: NetError };

export interface DesiredNetwork {
  readonly id: string;
  readonly version: number;
  readonly sha256: string;
  readonly bundle: FetchedBundle;
}

export type Desired =
  | { readonly kind: 'membership'; readonly networks: readonly DesiredNetwork[] }
  /** No source gave an acceptable membership document this time. */
  | { readonly kind: 'unavailable' };

export interface ActualNetwork {
  readonly id: string;
  readonly installed?: BundleFacts;
  /** A supervisor exists for it (in any state but stopped). */
  readonly running: boolean;
  /** Taken down by an operator; reconcile must not start it. */
  readonly adminDown: boolean;
}

export type ActionKind =
  /** Nothing to do. */
  | 'keep'
  /** The installed bundle is right but nothing runs it (boot, after an error). */
  | 'start'
  /** A network new to this node. */
  | 'install-start'
  /** New bundle for a network that must not run now (operator down). */
  | 'install'
  /** New bundle; restart that network only. */
  | 'replace-restart'
  /** Only credential files changed (renewal): the running openvpn reloads them, its device stays. */
  | 'replace-reload'
  /** Only crl.pem changed: swap files, no restart. */
  | 'swap-crl'
  /** Stop but keep the files (installed bundle expired). */
  | 'stop'
  /** Gone from the membership: stop and remove its files. */
  | 'stop-remove';

export interface Action {
  readonly id: string;
  readonly kind: ActionKind;
  /** Shown in status as the network's last error; undefined clears a previous reconcile error. */
  readonly error?: NetError;
}

/** Networks whose bundle must be fetched before planning: installed version or hash differs. Pure. */
export function bundlesToFetch(
  membership: readonly { id: string; version: number; sha256: string }[],
  installed: ReadonlyMap<string, { version: number; sha256: string }>,
): string[] {
  return membership
    .filter((n) => {
      const have = installed.get(n.id);
      return have === undefined || have.version !== n.version || have.sha256 !== n.sha256;
    })
    .map((n) => n.id);
}

/**
 * Why a membership entry must not even be fetched: it names an older bundle
 * version than the one installed (a replayed or forged document rolling a
 * network back to old trust material). Versions per network only go
 * forwards; the installed version is on disk, so this holds across restarts.
 * Undefined when the entry may be fetched. Pure.
 */
export function bundleRollback(entry: { id: string; version: number }, installed: { version: number } | undefined): NetError | undefined {
  if (installed === undefined || entry.version >= installed.version) return undefined;
  return {
    code: 'MVPN_BUNDLE_ROLLBACK',
    message: `the membership document names bundle version ${entry.version} for ${entry.id}, older than the installed version ${installed.version}; bundle versions never go back`,
  };
}

/**
 * True when two bundles differ in nothing openvpn loads at start: the same
 * files with the same hashes, except `crl.pem`.
 */
export function onlyCrlChanged(old: Readonly<Record<string, string>>, next: Readonly<Record<string, string>>): boolean {
  const a = Object.keys(old).sort();
  const b = Object.keys(next).sort();
  if (a.length !== b.length || a.some((k, i) => k !== b[i])) return false;
  if (!a.includes('crl.pem')) return false;
  return a.every((k) => k === 'crl.pem' || old[k] === next[k]);
}

/** What openvpn reads again at a soft restart without persist-key (besides the CRL it re-reads anyway). */
const RELOADED_FILES: ReadonlySet<string> = new Set(['crl.pem', 'ca.crt', 'node.crt', 'node.key', 'tls-crypt-v2.key']);

/** What openvpn never reads: the CA roll's proof, which only the agent checks to move its CA pin. */
const AGENT_ONLY_FILES: ReadonlySet<string> = new Set(['ca-roll.crt']);

/**
 * True when two bundles differ only in files a soft restart reads again
 * (certificates, keys, CRL) and files openvpn never reads (a CA roll's
 * `ca-roll.crt` may come or go): network.json, from which openvpn.conf is
 * rendered, is the same. A CA roll's start is then a reload like a renewal.
 */
export function onlyCredentialsChanged(old: Readonly<Record<string, string>>, next: Readonly<Record<string, string>>): boolean {
  const a = Object.keys(old).filter((k) => !AGENT_ONLY_FILES.has(k)).sort();
  const b = Object.keys(next).filter((k) => !AGENT_ONLY_FILES.has(k)).sort();
  if (a.length !== b.length || a.some((k, i) => k !== b[i])) return false;
  return a.every((k) => RELOADED_FILES.has(k) || old[k] === next[k]);
}

function expiredError(id: string, expiresAt: number): NetError {
  return {
    code: 'MVPN_BUNDLE_EXPIRED',
    message: `installed bundle for ${id} expired at ${new Date(expiresAt).toISOString()} and no newer one could be fetched`,
  };
}

/** The whole plan, one action per network, sorted by id. Pure. */
export function plan(desired: Desired, actual: readonly ActualNetwork[], now: number): Action[] {
  const byId = new Map(actual.map((a) => [a.id, a]));
  const out: Action[] = [];

  if (desired.kind === 'unavailable') {
    for (const a of actual) out.push(keepWhatIsThere(a, now));
    return sortById(out);
  }

  for (const d of desired.networks) out.push(planNetwork(d, byId.get(d.id), now));
  out.push(...planRemovals(desired.networks, actual));
  return sortById(out);
}

/**
 * The action for one network of the membership, given only its own actual
 * state (undefined: nothing installed, nothing running). plan() is this for
 * each network plus planRemovals; the reconcile also calls it on its own, as
 * soon as that network's bundle is verified, so one network does not wait
 * for the others. Pure.
 */
export function planNetwork(d: DesiredNetwork, actual: ActualNetwork | undefined, now: number): Action {
  const a = actual ?? { id: d.id, running: false, adminDown: false };
  const b = d.bundle;
  switch (b.kind) {
    case 'installed':
      // Installed bundle matches the membership entry.
      return keepWhatIsThere(a, now);
    case 'rejected': {
      // Keep whatever ran before; the reason goes to status.
      const kept = keepWhatIsThere(a, now);
      return kept.error ? kept : { ...kept, error: b.error };
    }
    case 'verified': {
      if (a.installed === undefined) return { id: d.id, kind: a.adminDown ? 'install' : 'install-start' };
      if (a.adminDown) return { id: d.id, kind: 'install' };
      if (!a.running) return { id: d.id, kind: 'install-start' };
      if (onlyCrlChanged(a.installed.files, b.facts.files)) return { id: d.id, kind: 'swap-crl' };
      if (onlyCredentialsChanged(a.installed.files, b.facts.files)) return { id: d.id, kind: 'replace-reload' };
      return { id: d.id, kind: 'replace-restart' };
    }
  }
}

/** Networks installed or running but no longer in the membership: stop and remove each. Pure. */
export function planRemovals(wanted: readonly { readonly id: string }[], actual: readonly ActualNetwork[]): Action[] {
  const ids = new Set(wanted.map((d) => d.id));
  return sortById(actual.filter((a) => !ids.has(a.id) && (a.running || a.installed !== undefined)).map((a) => ({ id: a.id, kind: 'stop-remove' as const })));
}

/** No (usable) news for this network: run what is installed while it is valid. */
function keepWhatIsThere(a: ActualNetwork, now: number): Action {
  if (a.installed === undefined) return { id: a.id, kind: a.running ? 'stop' : 'keep' };
  if (a.installed.expiresAt <= now) {
    return { id: a.id, kind: a.running ? 'stop' : 'keep', error: expiredError(a.id, a.installed.expiresAt) };
  }
  if (!a.running && !a.adminDown) return { id: a.id, kind: 'start' };
  return { id: a.id, kind: 'keep' };
}

function sortById(actions: Action[]): Action[] {
  return actions.sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
}
