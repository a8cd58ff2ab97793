/**
 * `server init`: a new state directory with everything the server needs
 * before its first network — the Ed25519 signing key (whose public half is
 * the nodes' trust anchor), the API CA and the HTTPS listener's certificate,
 * config.json and an empty store.
 *
 * The directory is built under a temporary sibling name and renamed into
 * place at the end, so a failure halfway leaves nothing that looks like an
 * initialised server, and an existing state directory is never touched.
 * It also creates the mvpn-openvpn system user when it is missing
 * (src/openvpn/unpriv.ts).
 *
 * `join`: a further host on an existing PostgreSQL store (src/server/join.ts):
 * the signing key, trust anchor and API CA come from the join material, the
 * listener certificate is this host's own (issued from that API CA), and the
 * host is registered in the store instead of a schema being created.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { hostname as osHostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ConfigError, UsageError } from '../errors.ts';
import { anchorToString, generateSigningKey, signingKeyFromPem, signingKeyToPem } from '../bundle/sign.ts';
import { apiCaCn } from '../bundle/names.ts';
import { isRemoteHost } from '../bundle/schema.ts';
import { createCa, type CaMaterial } from '../pki/ca.ts';
import { issueCert } from '../pki/cert.ts';
import { generateKeyPairPem } from '../pki/keys.ts';
import { checkConfig, defaultConfig, parseListen, serverPaths, type ServerConfig } from './config.ts';
import { parseCidr, parsePortRange } from './alloc.ts';
import { openStore } from './store/open.ts';
import { ensureOpenvpnUser } from '../openvpn/unpriv.ts';
import { addHost, hostRemotes, type JoinMaterial } from './join.ts';
import { DEFAULT_HOST_ID } from './lease.ts';

export interface InitOptions {
  readonly stateDir: string;
  readonly hostnames?: readonly string[];
  readonly addresses?: readonly string[];
  readonly listen?: string;
  readonly vpnListen?: string;
  /** "ADDR:PORT", or null for no metrics; absent: the default loopback listener. */
  readonly metricsListen?: string | null;
  /** metrics_allow_remote: a non-loopback metricsListen is refused without it. */
  readonly metricsAllowRemote?: boolean;
  readonly pool?: string;
  readonly portRange?: string;
  readonly runtimeDir?: string;
  readonly openvpnPath?: string;
  /** Absent: SQLite (store.db); `postgres`: an empty PostgreSQL database, whose schema init creates. */
  readonly store?: ServerConfig['store'];
  /** This host's id among the store's hosts; absent: "primary" (required with `join`). */
  readonly hostId?: string;
  /** Join an existing PostgreSQL store with this material instead of creating a store. */
  readonly join?: JoinMaterial;
  readonly now?: number;
}

export interface InitResult {
  readonly stateDir: string;
  readonly trustAnchor: string;
  readonly trustAnchorPath: string;
  readonly apiCaPath: string;
  readonly config: ServerConfig;
}

const YEAR = 365 * 86_400_000;

/** The HTTPS listener's certificate: the config's host names and addresses, from the API CA (init, and an API CA roll's finish). */
export async function issueListenerCert(apiCa: CaMaterial, config: Pick<ServerConfig, 'hostnames' | 'addresses'>, notBefore: Date, notAfter: Date): Promise<{ certPem: string; keyPem: string }> {
  const key = await generateKeyPairPem('ec-p256');
  const cert = await issueCert({
    ca: apiCa,
    publicKeyPem: key.publicKeyPem,
    cn: config.hostnames[0] ?? config.addresses[0] ?? 'mvpn-server',
    usage: 'server',
    notBefore,
    notAfter,
    dnsNames: config.hostnames,
    ipAddresses: config.addresses,
  });
  return { certPem: cert.certPem, keyPem: key.privateKeyPem };
}

async function isEmptyDir(path: string): Promise<boolean> {
  try {
    return (await readdir(path)).length === 0;
  } catch {
    return false;
  }
}

export async function initServer(opts: InitOptions): Promise<InitResult> {
  const stateDir = resolve(opts.stateDir);
  if (existsSync(stateDir) && !(await isEmptyDir(stateDir))) {
    throw new ConfigError('MVPN_ALREADY_EXISTS', `${stateDir} already exists and is not empty; refusing to overwrite a state directory`, {
      context: { stateDir },
      hint: 'choose another --state-dir, or remove this one yourself if you really mean to start over',
    });
  }
  for (const h of opts.hostnames ?? []) if (!isRemoteHost(h) || isIP(h) !== 0) throw new UsageError(`--hostname ${JSON.stringify(h)} is not a DNS name`);
  for (const a of opts.addresses ?? []) if (isIP(a) === 0) throw new UsageError(`--address ${JSON.stringify(a)} is not an IP address`);
  if (opts.pool !== undefined) parseCidr(opts.pool);
  if (opts.portRange !== undefined) parsePortRange(opts.portRange);
  if (opts.listen !== undefined) parseListen(opts.listen);

  let hostnames = [...(opts.hostnames ?? [])];
  let addresses = [...(opts.addresses ?? [])];
  if (hostnames.length === 0 && addresses.length === 0) {
    const h = osHostname();
    hostnames = isRemoteHost(h) && isIP(h) === 0 ? [h] : [];
    addresses = ['127.0.0.1'];
  }
  const material = opts.join;
  if (material && opts.hostId === undefined) throw new UsageError('--join needs --host-id: the id this host has among the hosts of the store');
  const base = defaultConfig(stateDir);
  const config = checkConfig(
    {
      ...base,
      ...(material ? material.shared : {}),
      ...(opts.hostId === undefined ? {} : { host_id: opts.hostId }),
      ...(opts.listen === undefined ? {} : { listen: opts.listen }),
      hostnames,
      addresses,
      ...(opts.vpnListen === undefined ? {} : { vpn_listen: opts.vpnListen }),
      ...(opts.metricsListen === undefined ? {} : { metrics_listen: opts.metricsListen }),
      ...(opts.metricsAllowRemote === true ? { metrics_allow_remote: true } : {}),
      ...(opts.pool === undefined ? {} : { pool: opts.pool }),
      ...(opts.portRange === undefined ? {} : { port_range: opts.portRange }),
      ...(opts.runtimeDir === undefined ? {} : { runtime_dir: resolve(opts.runtimeDir) }),
      ...(opts.openvpnPath === undefined ? {} : { openvpn_path: opts.openvpnPath }),
      ...(opts.store === undefined ? {} : { store: opts.store }),
    },
    'server init',
  );

  if (material && config.store === undefined) throw new UsageError('--join needs a PostgreSQL store: several hosts share only that');
  const now = opts.now ?? Date.now();
  // The networks' openvpn servers drop to this user; make it now rather than at the first `server run`.
  await ensureOpenvpnUser();
  await mkdir(dirname(stateDir), { recursive: true, mode: 0o755 });
  const tmp = join(dirname(stateDir), `.${basename(stateDir)}.init-${randomBytes(4).toString('hex')}`);
  const paths = serverPaths(tmp);
  let anchor: string;
  try {
    await mkdir(tmp, { mode: 0o700 });
    await chmod(tmp, 0o700);
    await mkdir(paths.apiDir, { mode: 0o700 });
    await mkdir(paths.networksDir, { mode: 0o700 });

    const signing = material ? signingKeyFromPem(material.signing_key) : generateSigningKey();
    anchor = material ? material.trust_anchor : anchorToString(signing);
    if (anchorToString(signing) !== anchor && material?.anchor_chain === undefined) {
      throw new ConfigError('MVPN_CONFIG_INVALID', 'the join material\'s signing key does not match its trust anchor', { hint: 'make the join material again with `server join-material`' });
    }
    await writeFile(paths.signingKey, signingKeyToPem(signing), { mode: 0o600 });
    await writeFile(paths.trustAnchor, anchor + '\n', { mode: 0o644 });
    if (material?.anchor_chain !== undefined) await writeFile(paths.anchorChain, material.anchor_chain, { mode: 0o644 });

    const notBefore = new Date(now - 5 * 60_000);
    const apiCa: CaMaterial = material
      ? { alg: 'ec-p256', certPem: material.api_ca_cert, keyPem: material.api_ca_key }
      : await createCa({ cn: apiCaCn(), alg: 'ec-p256', notBefore, notAfter: new Date(now + 10 * YEAR) });
    const listener = await issueListenerCert(apiCa, config, notBefore, new Date(now + 10 * YEAR));
    await writeFile(paths.apiCaCert, apiCa.certPem, { mode: 0o644 });
    await writeFile(paths.apiCaKey, apiCa.keyPem, { mode: 0o600 });
    await writeFile(paths.apiCert, listener.certPem, { mode: 0o644 });
    await writeFile(paths.apiKey, listener.keyPem, { mode: 0o600 });
    await writeFile(paths.config, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
    const store = await openStore(config, paths, material ? {} : { create: true });
    try {
      const host = { id: config.host_id ?? DEFAULT_HOST_ID, remotes: hostRemotes(config), joinedAt: now };
      if (material) addHost({ config, paths, store, clock: { now: () => now } }, host);
      else store.write((tx) => tx.putHost(host));
    } finally {
      store.close();
    }

    // An existing empty directory (checked above) is replaced by the rename.
    await rename(tmp, stateDir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  const final = serverPaths(stateDir);
  return { stateDir, trustAnchor: anchor, trustAnchorPath: final.trustAnchor, apiCaPath: final.apiCaCert, config };
}
