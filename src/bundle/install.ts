/**
 * Atomic install of a verified bundle into the agent's state directory
 * (layout in ARCHITECTURE.md):
 *
 *   <stateDir>/networks/<id>                  symlink → .<id>.<version>.<random>
 *   <stateDir>/networks/.<id>.<version>.<random>/   0700: the bundle's files,
 *                                                  openvpn.conf, install.json
 *
 * Steps: make a fresh 0710 directory, write every file (all at once; keys
 * 0600, the rest 0644; we run as root, so they are root-owned), render
 * openvpn.conf into it, fsync each file, then the directory and its parent
 * (together), then switch the symlink atomically
 * (new symlink under a temporary name, rename over the old one), fsync the
 * parent, and only then remove the previous version's directory. A failure
 * or crash before the rename leaves the previous install untouched (the
 * partial directory is removed, or swept by the next install); after the
 * rename the new version is complete on disk.
 *
 * The rendered config refers to files through the stable symlink path, so a
 * bundle update that changes only crl.pem takes effect in the running
 * openvpn (which re-reads crl-verify at every handshake) without a restart.
 *
 * The key openvpn uses is in the version directory too, as node.key: the
 * bundle's own for key_origin "central", a copy of the node's key
 * (`nodeKeyPath`, recorded as `key_path`, its hash as `key_sha256`) for
 * key_origin "node". Every file openvpn loads is then under the stable
 * path, so a renewal (new node.crt, new key) renders the same openvpn.conf
 * and the running openvpn takes it with a soft restart that re-reads the
 * files (Supervisor.reload, client-config.ts has no persist-key).
 *
 * openvpn reads crl.pem, and at such a soft restart the keys, after it has
 * dropped to the mvpn-openvpn user (src/openvpn/unpriv.ts), so with
 * `openvpnUser` the networks directory and each version directory are
 * root:mvpn-openvpn 0710 and crl.pem, node.key and tls-crypt-v2.key are
 * root:mvpn-openvpn 0640 (ARCHITECTURE.md "Hitless renewal" says why that
 * gives a dropped openvpn nothing it does not hold already); the other files
 * are public (certificates, the network spec, the rendered config). Installs
 * made before (0700, crl.pem 0644, keys 0600, the node key outside) are still
 * accepted and shareInstalled() brings the modes up to date.
 *
 * readInstalled/listInstalled re-check what is on disk against the install
 * record and the manifest's hashes, so a tampered or half-deleted install is
 * reported instead of being run. Installs of one network must not run
 * concurrently (the agent's reconcile serialises them); different networks
 * may.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, readlink, rename, rm, symlink, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { BundleError, isMvpnError, type ErrorCode } from '../errors.ts';
import { fsyncDir } from '../util/fs-atomic.ts';
import { mapLimit } from '../util/concurrency.ts';
import { SHARED_DIR_MODE, SHARED_FILE_MODE, shareWithOpenvpn, type OpenvpnUser } from '../openvpn/unpriv.ts';
import { sha256Hex } from './membership.ts';
import { MANIFEST_FILE, MANIFEST_SIG_FILE, NETWORK_ID_RE, parseWithSchema, type Manifest, type NetworkSpec } from './schema.ts';
import type { Anchor } from './sign.ts';
import { parseJsonStrict } from './strict-json.ts';
import { openManifest, parseSpec, type VerifiedBundle } from './verify.ts';

export const CONFIG_FILE = 'openvpn.conf';
export const RECORD_FILE = 'install.json';
const KEY_FILE = 'node.key';
const SECRET_FILES: ReadonlySet<string> = new Set([KEY_FILE, 'tls-crypt-v2.key']);
const CRL_FILE = 'crl.pem';
/** Read by openvpn after it dropped root (the keys at a soft restart). */
const SHARED_FILES: ReadonlySet<string> = new Set([CRL_FILE, ...SECRET_FILES]);
/** Modes readInstalled accepts: the current ones first, then those of older installs (before openvpn dropped root, before reloads). */
const DIR_MODES: readonly number[] = [SHARED_DIR_MODE, 0o700];
function fileModes(name: string): readonly number[] {
  if (SECRET_FILES.has(name)) return [SHARED_FILE_MODE, 0o600];
  return name === CRL_FILE ? [SHARED_FILE_MODE, 0o644] : [0o644];
}

/** Installs listInstalled reads at once. */
const READ_CONCURRENCY = 8;

/** Absolute paths of the installed trust material, through the stable symlink. */
export interface InstalledPaths {
  readonly ca: string;
  readonly cert: string;
  /** `<dir>/node.key` (for key_origin "node" a copy of `InstalledBundle.keySource`; the node's key itself in installs made before the copy). */
  readonly key: string;
  readonly tlsCryptV2: string;
  readonly crl: string;
}

export interface InstalledBundle {
  readonly network: string;
  readonly version: number;
  /** The stable path `<stateDir>/networks/<id>` (a symlink to the version directory). */
  readonly dir: string;
  /** The version directory the symlink points to. */
  readonly versionDir: string;
  readonly manifest: Manifest;
  readonly spec: NetworkSpec;
  readonly configPath: string;
  /** sha256 of the bundle as fetched (compare with the membership entry). */
  readonly sha256: string;
  readonly paths: InstalledPaths;
  /** Where the key came from: the node's key file it was copied from (key_origin "node"), else `paths.key`. */
  readonly keySource: string;
  /** sha256 of the rendered openvpn.conf: equal before and after an install, a reload takes the new files. */
  readonly configSha256: string;
}

export type InstallStep = 'mkdir' | 'write' | 'render' | 'fsync' | 'switch' | 'cleanup';

export interface InstallOptions {
  readonly stateDir: string;
  /** The node's private key file, for key_origin "node" (copied into the install as node.key). */
  readonly nodeKeyPath?: string;
  /** Renders openvpn.conf; `dir` is the stable path, `files` the installed trust material. */
  readonly render: (spec: NetworkSpec, dir: string, files: InstalledPaths) => string;
  /** The user openvpn drops to: it gets read access to crl.pem (and entry to the directories above it). */
  readonly openvpnUser?: OpenvpnUser | undefined;
  /**
   * Awaited once every file is durable, just before the switch makes the
   * version live: the caller's work that must be on disk first (the
   * network's CA pin, ca-pins.ts) runs alongside the writes. A rejection
   * fails the install like a failed write.
   */
  readonly beforeSwitch?: () => Promise<void>;
  /** Called before each step; tests throw from it to prove a failure at that step loses nothing. */
  readonly beforeStep?: (step: InstallStep) => void | Promise<void>;
}

const InstallRecordSchema = z.strictObject({
  schema: z.literal(1),
  network: z.string().regex(NETWORK_ID_RE),
  version: z.int().min(1),
  bundle_sha256: z.string().regex(/^[0-9a-f]{64}$/),
  manifest_sha256: z.string().regex(/^[0-9a-f]{64}$/),
  config_sha256: z.string().regex(/^[0-9a-f]{64}$/),
  key_path: z.string().min(1).max(4096),
  /** key_origin "node": hash of the copy of key_path in the install (absent in installs made before the copy). */
  key_sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
});
type InstallRecord = z.infer<typeof InstallRecordSchema>;

export function networksDir(stateDir: string): string {
  return join(stateDir, 'networks');
}

function versionDirRe(id: string): RegExp {
  return new RegExp(`^\\.${id}\\.[0-9]{1,16}\\.[0-9a-f]{12}$`);
}

function checkId(id: string): void {
  if (!NETWORK_ID_RE.test(id)) throw new BundleError('MVPN_SCHEMA_INVALID', `${JSON.stringify(id)} is not a network id`, { context: { network: id } });
}

/** `copied`: node.key is in the install (every install but node-keyed ones made before the copy, which name `keySource`). */
function pathsFor(dir: string, keySource: string, copied: boolean): InstalledPaths {
  return { ca: join(dir, 'ca.crt'), cert: join(dir, 'node.crt'), key: copied ? join(dir, KEY_FILE) : keySource, tlsCryptV2: join(dir, 'tls-crypt-v2.key'), crl: join(dir, CRL_FILE) };
}

async function readNodeKey(manifest: Manifest, nodeKeyPath: string | undefined): Promise<Buffer | undefined> {
  if (manifest.key_origin === 'central') return undefined;
  if (nodeKeyPath === undefined) {
    throw new BundleError('MVPN_BUNDLE_INSTALL_FAILED', `network ${manifest.network}: key_origin is "node" but no node key path was given`);
  }
  try {
    return await readFile(nodeKeyPath);
  } catch (err) {
    throw new BundleError('MVPN_BUNDLE_INSTALL_FAILED', `network ${manifest.network}: cannot read the node key ${nodeKeyPath}: ${(err as Error).message}`, {
      context: { network: manifest.network, path: nodeKeyPath },
      cause: err,
    });
  }
}

async function writeSynced(path: string, data: Uint8Array | string, mode: number): Promise<void> {
  const fh = await open(path, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Version directories of `id` other than `keep` (leftovers of crashed installs, or the previous version). */
async function sweep(nets: string, id: string, keep: string | undefined): Promise<void> {
  const re = versionDirRe(id);
  let names: string[];
  try {
    names = await readdir(nets);
  } catch {
    return;
  }
  for (const n of names) if (re.test(n) && n !== keep) await rm(join(nets, n), { recursive: true, force: true });
  for (const n of names) if (n.startsWith(`.${id}.link.`)) await rm(join(nets, n), { force: true });
}

export async function installBundle(b: VerifiedBundle, opts: InstallOptions): Promise<InstalledBundle> {
  const id = b.manifest.network;
  checkId(id);
  const nets = networksDir(opts.stateDir);
  const dir = join(nets, id);
  const nodeKey = await readNodeKey(b.manifest, opts.nodeKeyPath);
  const keySource = nodeKey === undefined ? join(dir, KEY_FILE) : opts.nodeKeyPath!;
  const paths = pathsFor(dir, keySource, true);
  const step = async (s: InstallStep): Promise<void> => {
    await opts.beforeStep?.(s);
  };

  await mkdir(nets, { recursive: true, mode: SHARED_DIR_MODE });
  await shareWithOpenvpn(nets, opts.openvpnUser, SHARED_DIR_MODE);
  const name = `.${id}.${b.manifest.version}.${randomBytes(6).toString('hex')}`;
  const versionDir = join(nets, name);
  const tmpLink = join(nets, `.${id}.link.${randomBytes(6).toString('hex')}`);
  let switched = false;
  let configSha256: string;
  const written: Promise<void>[] = [];
  // Handled at once (settled and checked below): a write that fails while a later step runs is no unhandled rejection.
  const writing = (p: Promise<void>): void => {
    p.catch(() => undefined);
    written.push(p);
  };
  try {
    await step('mkdir');
    await mkdir(versionDir, { mode: SHARED_DIR_MODE });
    await shareWithOpenvpn(versionDir, opts.openvpnUser, SHARED_DIR_MODE);

    // Every file at once (each written, chmodded and fsynced on the thread
    // pool): one after the other, a bundle's ten files were a chain of about
    // fifty thread-pool hops and ten fsyncs in a row before its openvpn could
    // start (issue 14: join time). Nothing points at the directory until the
    // switch below, so the order in which they land does not matter.
    await step('write');
    const files = [...b.files, ...(nodeKey === undefined ? [] : [[KEY_FILE, nodeKey] as const])];
    for (const [file, data] of files) {
      writing(
        (async () => {
          await writeSynced(join(versionDir, file), data, fileModes(file)[0]!);
          if (SHARED_FILES.has(file)) await shareWithOpenvpn(join(versionDir, file), opts.openvpnUser, SHARED_FILE_MODE);
        })(),
      );
    }

    await step('render');
    const config = opts.render(b.spec, dir, paths);
    writing(writeSynced(join(versionDir, CONFIG_FILE), config, 0o644));
    configSha256 = sha256Hex(Buffer.from(config, 'utf8'));
    const record: InstallRecord = {
      schema: 1,
      network: id,
      version: b.manifest.version,
      bundle_sha256: b.sha256,
      manifest_sha256: sha256Hex(b.files.get(MANIFEST_FILE)!),
      config_sha256: configSha256,
      key_path: keySource,
      ...(nodeKey === undefined ? {} : { key_sha256: sha256Hex(nodeKey) }),
    };
    writing(writeSynced(join(versionDir, RECORD_FILE), JSON.stringify(record, null, 2) + '\n', 0o644));
    // All of them settled before a failure is acted on: the cleanup below removes the directory they are in.
    const failed = (await Promise.allSettled(written)).find((r) => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;

    await step('fsync');
    await Promise.all([fsyncDir(versionDir), fsyncDir(nets)]);

    await step('switch');
    await opts.beforeSwitch?.();
    await symlink(name, tmpLink);
    await rename(tmpLink, dir);
    switched = true;
    await fsyncDir(nets);
  } catch (err) {
    // No write may still be running into the directory removed here.
    await Promise.allSettled(written);
    if (!switched) {
      await rm(tmpLink, { force: true });
      await rm(versionDir, { recursive: true, force: true });
    }
    if (isMvpnError(err)) throw err;
    throw new BundleError('MVPN_BUNDLE_INSTALL_FAILED', `installing network ${id} version ${b.manifest.version} failed: ${(err as Error).message}`, {
      context: { network: id, version: b.manifest.version, path: versionDir },
      cause: err,
    });
  }
  // The new version is live; removing the old one is housekeeping a later install repeats if it fails now.
  try {
    await step('cleanup');
    await sweep(nets, id, name);
  } catch {
    // left for the next install's sweep
  }
  return { network: id, version: b.manifest.version, dir, versionDir, manifest: b.manifest, spec: b.spec, configPath: join(dir, CONFIG_FILE), sha256: b.sha256, paths, keySource, configSha256 };
}

function corrupt(code: ErrorCode, id: string, message: string, context: Record<string, unknown> = {}): BundleError {
  return new BundleError(code, `installed network ${id}: ${message}`, {
    context: { network: id, ...context },
    hint: 'the install on disk was changed after it was written; the agent reinstalls it from the server',
  });
}

/**
 * The installed bundle of `networkId`, re-verified against what was
 * installed (hashes of every file, the config and the manifest, modes, no
 * extra or linked files); undefined if the network is not installed. With
 * `anchor`, manifest.sig is checked again too.
 */
export async function readInstalled(stateDir: string, networkId: string, opts: { anchor?: Anchor } = {}): Promise<InstalledBundle | undefined> {
  checkId(networkId);
  const nets = networksDir(stateDir);
  const dir = join(nets, networkId);
  let st;
  try {
    st = await lstat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  if (!st.isSymbolicLink()) throw corrupt('MVPN_BUNDLE_INSTALL_FAILED', networkId, `${dir} is not a symlink to a version directory`);
  const target = await readlink(dir);
  if (!versionDirRe(networkId).test(target)) throw corrupt('MVPN_BUNDLE_INSTALL_FAILED', networkId, `${dir} points to ${JSON.stringify(target)}, not a version directory`);
  const versionDir = join(nets, target);
  const dst = await lstat(versionDir).catch(() => undefined);
  if (!dst?.isDirectory()) throw corrupt('MVPN_BUNDLE_FILE_MISSING', networkId, `version directory ${target} is missing`);
  if (!DIR_MODES.includes(dst.mode & 0o7777) || dst.uid !== process.getuid?.()) {
    throw corrupt('MVPN_BUNDLE_INSTALL_FAILED', networkId, `version directory ${target} has mode ${(dst.mode & 0o777).toString(8)} or a foreign owner`);
  }

  const files = new Map<string, Buffer>();
  for (const name of await readdir(versionDir)) {
    const p = join(versionDir, name);
    const fst = await lstat(p);
    if (!fst.isFile() || fst.nlink !== 1) throw corrupt('MVPN_BUNDLE_UNSAFE_ENTRY', networkId, `${name} is not a plain regular file`, { file: name });
    if (!fileModes(name).includes(fst.mode & 0o7777)) throw corrupt('MVPN_BUNDLE_INSTALL_FAILED', networkId, `${name} has mode ${(fst.mode & 0o7777).toString(8)}`, { file: name });
    files.set(name, await readFile(p));
  }
  const recordBytes = files.get(RECORD_FILE);
  const config = files.get(CONFIG_FILE);
  if (!recordBytes || !config || !files.has(MANIFEST_FILE)) throw corrupt('MVPN_BUNDLE_FILE_MISSING', networkId, 'install record, config or manifest is missing');
  const record = parseWithSchema(InstallRecordSchema, parseJsonStrict(recordBytes, 16 * 1024, 4, 'install.json'), 'install.json');
  if (sha256Hex(files.get(MANIFEST_FILE)!) !== record.manifest_sha256) throw corrupt('MVPN_BUNDLE_FILE_HASH_MISMATCH', networkId, 'manifest.json changed', { file: MANIFEST_FILE });
  if (sha256Hex(config) !== record.config_sha256) throw corrupt('MVPN_BUNDLE_FILE_HASH_MISMATCH', networkId, `${CONFIG_FILE} changed`, { file: CONFIG_FILE });
  const manifest = openManifest(files, opts.anchor, { installed: true });
  if (manifest.network !== networkId || manifest.version !== record.version || record.network !== networkId) {
    throw corrupt('MVPN_BUNDLE_INSTALL_FAILED', networkId, 'manifest and install record disagree about network or version');
  }
  const copiedKey = manifest.key_origin === 'node' && record.key_sha256 !== undefined;
  const expected = new Set<string>([MANIFEST_FILE, MANIFEST_SIG_FILE, CONFIG_FILE, RECORD_FILE, ...Object.keys(manifest.files), ...(copiedKey ? [KEY_FILE] : [])]);
  for (const name of files.keys()) if (!expected.has(name)) throw corrupt('MVPN_BUNDLE_FILE_UNLISTED', networkId, `unexpected file ${name}`, { file: name });
  if (copiedKey) {
    const key = files.get(KEY_FILE);
    if (!key) throw corrupt('MVPN_BUNDLE_FILE_MISSING', networkId, `${KEY_FILE} is missing`, { file: KEY_FILE });
    if (sha256Hex(key) !== record.key_sha256) throw corrupt('MVPN_BUNDLE_FILE_HASH_MISMATCH', networkId, `${KEY_FILE} changed`, { file: KEY_FILE });
  }
  for (const [name, want] of Object.entries(manifest.files)) {
    const data = files.get(name);
    if (!data) throw corrupt('MVPN_BUNDLE_FILE_MISSING', networkId, `${name} is missing`, { file: name });
    if (sha256Hex(data) !== want) throw corrupt('MVPN_BUNDLE_FILE_HASH_MISMATCH', networkId, `${name} changed`, { file: name });
  }
  const spec = parseSpec(files.get('network.json')!);
  const paths = pathsFor(dir, record.key_path, manifest.key_origin === 'central' || copiedKey);
  return {
    network: networkId,
    version: manifest.version,
    dir,
    versionDir,
    manifest,
    spec,
    configPath: join(dir, CONFIG_FILE),
    sha256: record.bundle_sha256,
    paths,
    keySource: record.key_path,
    configSha256: record.config_sha256,
  };
}

/**
 * Every installed network that passes readInstalled's checks. A broken one
 * is reported to `onError` (if given) and left out, so the agent treats it as
 * not installed and installs it afresh.
 */
export async function listInstalled(stateDir: string, opts: { anchor?: Anchor; onError?: (network: string, err: unknown) => void } = {}): Promise<InstalledBundle[]> {
  let names: string[];
  try {
    names = await readdir(networksDir(stateDir));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  // Several at once: each is a chain of reads and hashes on the thread pool, and a
  // rebooting agent reads every install before it starts any (issue 14: join).
  const read = await mapLimit(
    names.sort().filter((name) => NETWORK_ID_RE.test(name)),
    READ_CONCURRENCY,
    async (name) => {
      try {
        return await readInstalled(stateDir, name, opts);
      } catch (err) {
        opts.onError?.(name, err);
        return undefined;
      }
    },
  );
  return read.filter((b): b is InstalledBundle => b !== undefined);
}

/** Removes a network's install: the symlink first (atomically, so it is never half there), then its directories. */
export async function removeInstalled(stateDir: string, networkId: string): Promise<void> {
  checkId(networkId);
  const nets = networksDir(stateDir);
  const dir = join(nets, networkId);
  const st = await lstat(dir).catch(() => undefined);
  if (st) {
    if (st.isSymbolicLink()) await unlink(dir);
    else throw new BundleError('MVPN_BUNDLE_INSTALL_FAILED', `${dir} is not a symlink; not removing it`, { context: { network: networkId, path: dir } });
    await fsyncDir(nets);
  }
  await sweep(nets, networkId, undefined);
}

/**
 * Gives the openvpn user what it needs of an install (the networks
 * directory, the version directory, crl.pem and the keys); at agent start, for installs
 * made before openvpn dropped root. Idempotent.
 */
export async function shareInstalled(stateDir: string, b: InstalledBundle, who: OpenvpnUser | undefined): Promise<void> {
  await shareWithOpenvpn(networksDir(stateDir), who, SHARED_DIR_MODE);
  await shareWithOpenvpn(b.versionDir, who, SHARED_DIR_MODE);
  for (const name of await readdir(b.versionDir)) if (SHARED_FILES.has(name)) await shareWithOpenvpn(join(b.versionDir, name), who, SHARED_FILE_MODE);
}
