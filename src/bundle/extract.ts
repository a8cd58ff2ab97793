/**
 * Safe extraction of a bundle's tar.gz into memory.
 *
 * A bundle is a handful of flat regular files, so anything else is refused
 * rather than skipped: the filter admits only regular files (`0` type) whose
 * name is exactly one of the expected flat names, with no setuid/setgid/
 * sticky bits, owned by uid/gid 0, each seen once, within per-file and total
 * caps. Links, hard links, devices, FIFOs, directories, pax/GNU extended
 * headers (they can rename an entry), paths with `/`, `\`, `..`, NUL or
 * non-ASCII, and unknown entry types are all MVPN_BUNDLE_UNSAFE_ENTRY.
 *
 * Nothing is written to disk here: node-tar's Parser runs in `strict` mode
 * over the already-decompressed bytes and the entries are collected into a
 * Map, so the Unpack options that guard a file system (`preserveOwner`,
 * `maxDepth`, link checks) have nothing to guard; install.ts writes the
 * verified files itself with modes it chooses. Decompression is done before
 * the parser by gzip.ts with a hard output cap, and the parser's own
 * gzip/brotli/zstd sniffing is disabled or pre-empted so it never inflates
 * anything a second time.
 *
 * Bytes after the end of the last entry must be zero (the end-of-archive
 * marker and record padding): node-tar stops at the marker, but GNU tar `-i`
 * would extract whatever follows it, so data there is refused, not skipped.
 */
import { Parser, type ReadEntry } from 'tar';
import { BundleError } from '../errors.ts';
import { gunzipStrict } from './gzip.ts';
import { limits as defaultLimits } from './limits.ts';

export interface ExtractLimits {
  readonly bundleBytes: number;
  readonly tarBytes: number;
  readonly fileBytes: number;
  readonly totalFileBytes: number;
  readonly tarEntries: number;
}

/** Plain flat names: lower-case ASCII letters, digits, dot and dash, no leading dot. */
const FLAT_NAME_RE = /^[a-z0-9][a-z0-9.-]{0,63}$/;

function describe(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 60)}…(${s.length} characters)` : s);
}

function unsafe(message: string, context: Record<string, unknown>): BundleError {
  return new BundleError('MVPN_BUNDLE_UNSAFE_ENTRY', message, { context });
}

/** Why an entry may not be admitted, or undefined if it may. */
function judgeEntry(path: string, entry: ReadEntry, allowed: ReadonlySet<string>, seen: ReadonlySet<string>, lim: ExtractLimits): BundleError | undefined {
  const name = describe(path);
  if (entry.extended !== undefined || entry.globalExtended !== undefined) {
    return unsafe(`tar entry ${name} uses a pax extended header; bundles are plain ustar`, { path });
  }
  if (entry.type !== 'File') {
    return unsafe(`tar entry ${name} is a ${entry.type}; bundles hold only regular files`, { path, type: entry.type });
  }
  if (!FLAT_NAME_RE.test(path) || path.includes('..')) {
    return unsafe(`tar entry ${name} is not a plain file name (no directories, "..", absolute paths, backslashes or non-ASCII)`, { path });
  }
  if (!allowed.has(path)) {
    return new BundleError('MVPN_BUNDLE_FILE_UNLISTED', `the bundle holds an unexpected file ${name}`, { context: { path } });
  }
  if (seen.has(path)) return unsafe(`the bundle holds ${name} twice`, { path });
  const mode = entry.mode ?? 0;
  if (mode & 0o7000) return unsafe(`tar entry ${name} has setuid, setgid or sticky bits (mode ${mode.toString(8)})`, { path, mode });
  if (entry.uid !== 0 || entry.gid !== 0) {
    return unsafe(`tar entry ${name} is owned by uid ${entry.uid ?? '?'} gid ${entry.gid ?? '?'}; bundles are built with uid/gid 0`, {
      path,
      uid: entry.uid,
      gid: entry.gid,
    });
  }
  if (entry.size > lim.fileBytes) {
    return new BundleError('MVPN_BUNDLE_TOO_LARGE', `bundle file ${name} is ${entry.size} bytes, more than the limit of ${lim.fileBytes}`, {
      context: { path, size: entry.size, limit: lim.fileBytes },
    });
  }
  return undefined;
}

/**
 * Decompresses and unpacks `bytes` into a name → content map, admitting only
 * names in `allowed`. Throws BundleError: MVPN_BUNDLE_TOO_LARGE,
 * MVPN_BUNDLE_GZIP_INVALID, MVPN_BUNDLE_TAR_INVALID, MVPN_BUNDLE_UNSAFE_ENTRY
 * or MVPN_BUNDLE_FILE_UNLISTED.
 */
export function extractBundle(bytes: Uint8Array, allowed: ReadonlySet<string>, lim: ExtractLimits = defaultLimits): Map<string, Buffer> {
  if (bytes.byteLength > lim.bundleBytes) {
    throw new BundleError('MVPN_BUNDLE_TOO_LARGE', `the bundle is ${bytes.byteLength} bytes, more than the limit of ${lim.bundleBytes}`, {
      context: { size: bytes.byteLength, limit: lim.bundleBytes },
    });
  }
  const tar = gunzipStrict(bytes, lim.tarBytes);
  if (tar.length === 0 || tar.length % 512 !== 0) {
    throw new BundleError('MVPN_BUNDLE_TAR_INVALID', `the bundle's tar stream is ${tar.length} bytes, not a whole number of 512-byte blocks`);
  }
  // node-tar inflates input that starts with gzip magic; we already did, so such input is not a tar.
  if (tar[0] === 0x1f && tar[1] === 0x8b) throw new BundleError('MVPN_BUNDLE_TAR_INVALID', 'the bundle is compressed twice');

  const files = new Map<string, Buffer>();
  const seen = new Set<string>();
  let failure: BundleError | undefined;
  let entries = 0;
  let total = 0;
  let ended = false;
  /** Where the last admitted entry's data ends: every header is one block (no pax/GNU records get through), its data padded to 512. */
  let consumed = 0;

  const parser = new Parser({
    strict: true,
    brotli: false,
    zstd: false,
    maxMetaEntrySize: 4096,
    filter: (path, e) => {
      const entry = e as ReadEntry;
      if (failure) return false;
      if (++entries > lim.tarEntries) {
        failure = new BundleError('MVPN_BUNDLE_TOO_LARGE', `the bundle has more than ${lim.tarEntries} entries`, { context: { limit: lim.tarEntries } });
      } else {
        failure = judgeEntry(path, entry, allowed, seen, lim);
      }
      if (!failure) {
        total += entry.size;
        if (total > lim.totalFileBytes) {
          failure = new BundleError('MVPN_BUNDLE_TOO_LARGE', `the bundle's files add up to more than ${lim.totalFileBytes} bytes`, { context: { limit: lim.totalFileBytes } });
        }
      }
      if (failure) {
        parser.abort(failure);
        return false;
      }
      seen.add(path);
      consumed += 512 + Math.ceil(entry.size / 512) * 512;
      return true;
    },
    onReadEntry: (entry) => {
      const chunks: Buffer[] = [];
      entry.on('data', (c: Buffer) => chunks.push(c));
      entry.on('end', () => {
        const data = Buffer.concat(chunks);
        if (data.length !== entry.size) {
          failure ??= new BundleError('MVPN_BUNDLE_TAR_INVALID', `tar entry ${describe(entry.path)} is truncated (${data.length} of ${entry.size} bytes)`);
          return;
        }
        files.set(entry.path, data);
      });
    },
  });
  parser.on('error', (err: Error) => {
    failure ??= new BundleError('MVPN_BUNDLE_TAR_INVALID', `the bundle's tar stream is invalid: ${err.message}`, { cause: err });
  });
  parser.on('ignoredEntry', (entry: ReadEntry) => {
    failure ??= unsafe(`tar entry ${describe(entry.path)} has an unsupported type ${entry.type} or an oversized header`, { path: entry.path, type: entry.type });
  });
  parser.on('meta', () => {
    failure ??= unsafe('the bundle uses pax or GNU extended headers; bundles are plain ustar', {});
  });
  parser.on('end', () => {
    ended = true;
  });
  parser.write(tar);
  parser.end();
  if (failure) throw failure;
  // The parser is synchronous over a Buffer; if that ever changes, fail closed.
  if (!ended) throw new BundleError('MVPN_BUNDLE_TAR_INVALID', 'the tar parser did not finish');
  const trailing = tar.subarray(consumed).findIndex((b) => b !== 0);
  if (trailing !== -1) {
    throw new BundleError('MVPN_BUNDLE_TAR_INVALID', `the bundle's tar stream has data after its last entry (at byte ${consumed + trailing}); bundles end with zero blocks only`, {
      context: { offset: consumed + trailing },
    });
  }
  return files;
}
