import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Argv } from 'yargs';
import { ExitCode, MvpnError, UsageError, toMvpnError } from '../errors.ts';
import { extractBundle } from '../bundle/extract.ts';
import { limits } from '../bundle/limits.ts';
import { sha256Hex, verifyMembership, type AcceptedMembership } from '../bundle/membership.ts';
import { NODE_ID_RE, type Manifest } from '../bundle/schema.ts';
import { parseAnchor, type Anchor } from '../bundle/sign.ts';
import { ALLOWED_NAMES, openManifest, verifyBundle, type BundleExpectation, type VerifiedBundle } from '../bundle/verify.ts';
import { readAtMost } from '../util/read-file.ts';
import type { CliCommand } from './command.ts';
import type { Io } from './io.ts';

interface VerifyArgs {
  bundle: string;
  anchor: string;
  node: string;
  membership?: string;
  'node-key'?: string;
  json: boolean;
  now?: string;
}

/** What `verify --json` prints; fields may be added, never change meaning. */
export interface VerifyReport {
  acceptable: boolean;
  bundle: { path: string; size: number; sha256: string };
  /** True when the fields below were checked against the anchor; false when they are only what a rejected bundle claims. */
  verified: boolean;
  manifest?: Manifest;
  files?: { name: string; size: number; sha256: string }[];
  cert?: { cn: string; serial: string; notBefore: string; notAfter: string };
  crl?: { thisUpdate: string; nextUpdate: string; revoked: number };
  membership?: { serial: number; expiresAt: string; entry?: { network: string; version: number } };
  error?: { code: string; message: string; hint?: string };
}

/** Reads at most `max + 1` bytes, so an over-large file reaches the verifier (which refuses it with its own code) without filling memory. */
async function readBounded(path: string, max: number, what: string): Promise<Buffer> {
  try {
    const fh = await open(path, 'r');
    try {
      return await readAtMost(fh, max);
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
}

async function loadAnchor(arg: string): Promise<Anchor> {
  const text = arg.startsWith('ed25519:') ? arg : (await readBounded(arg, 4096, 'anchor file')).toString('utf8');
  try {
    return parseAnchor(text);
  } catch (err) {
    throw new UsageError(`--anchor: ${(err as Error).message}`, { cause: err });
  }
}

function parseNow(arg: string | undefined): Date {
  if (arg === undefined) return new Date();
  const t = Date.parse(arg);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(arg) || !Number.isFinite(t)) throw new UsageError(`--now ${JSON.stringify(arg)} is not an ISO timestamp like 2026-01-31T12:00:00Z`);
  return new Date(t);
}

/** The membership entry this bundle is checked against: the one naming its sha256, else the only one. */
function pickEntry(m: AcceptedMembership, sha256: string): BundleExpectation {
  const nets = m.doc.networks;
  const hit = nets.find((n) => n.bundle.sha256 === sha256) ?? (nets.length === 1 ? nets[0] : undefined);
  if (!hit) {
    throw new MvpnError('MVPN_BUNDLE_HASH_MISMATCH', `the membership document lists no bundle with sha256 ${sha256}`, { context: { sha256 } });
  }
  return { network: hit.id, version: hit.bundle.version, sha256: hit.bundle.sha256, size: hit.bundle.size };
}

function describeFiles(files: ReadonlyMap<string, Buffer>): VerifyReport['files'] {
  return [...files].sort(([a], [b]) => a.localeCompare(b)).map(([name, data]) => ({ name, size: data.length, sha256: sha256Hex(data) }));
}

/** Best effort, for a rejected bundle: what it claims, read with the same safe parsers but without trusting it. */
function inspectUnverified(bytes: Buffer, report: VerifyReport): void {
  try {
    const files = extractBundle(bytes, ALLOWED_NAMES);
    report.files = describeFiles(files);
    report.manifest = openManifest(files, undefined);
  } catch {
    // nothing more to show
  }
}

function fillVerified(v: VerifiedBundle, report: VerifyReport): void {
  report.verified = true;
  report.manifest = v.manifest;
  report.files = describeFiles(v.files);
  report.cert = { cn: v.cert.cn, serial: v.cert.serialHex, notBefore: v.cert.notBefore.toISOString(), notAfter: v.cert.notAfter.toISOString() };
  report.crl = { thisUpdate: v.crl.thisUpdate.toISOString(), nextUpdate: v.crl.nextUpdate.toISOString(), revoked: v.crl.revokedSerials.length };
}

export function formatReport(r: VerifyReport): string {
  const rows: [string, string][] = [['bundle', `${r.bundle.path}  ${r.bundle.size} bytes  sha256 ${r.bundle.sha256}`]];
  const tag = r.verified ? '' : '  (unverified)';
  if (r.membership) {
    const e = r.membership.entry;
    rows.push(['membership', `serial ${r.membership.serial}, expires ${r.membership.expiresAt}${e ? `, lists ${e.network} version ${e.version}` : ''}`]);
  }
  if (r.manifest) {
    const m = r.manifest;
    rows.push(
      ['network', `${m.network}  version ${m.version}${tag}`],
      ['node', `${m.node}${tag}`],
      ['key origin', `${m.key_origin}${tag}`],
      ['created', `${m.created}${tag}`],
      ['expires', `${m.expires}${tag}`],
    );
  }
  if (r.files) rows.push(['files', r.files.map((f) => `${f.name} (${f.size})`).join(', ')]);
  if (r.cert) rows.push(['node cert', `CN ${r.cert.cn}, serial ${r.cert.serial}, valid ${r.cert.notBefore} to ${r.cert.notAfter}`]);
  if (r.crl) rows.push(['CRL', `next update ${r.crl.nextUpdate}, ${r.crl.revoked} revoked`]);
  rows.push(['result', r.acceptable ? 'acceptable' : `rejected: ${r.error?.code ?? '?'}: ${r.error?.message ?? ''}`]);
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n') + '\n';
}

/**
 * `mvpn-client verify BUNDLE --anchor KEY --node ID [--membership FILE]`:
 * the agent's checks, offline, on one bundle file, with the same `now`
 * rules (`--now` to check against another time). Prints what the bundle
 * holds and, when it is not acceptable, the error code and a one-line
 * reason. Exit 0 only when acceptable, 1 when rejected
 * (ExitCode.rejected), 2 for usage errors (unreadable files, a bad anchor).
 */
export const verifyCommand: Omit<CliCommand<VerifyArgs>, 'describe'> = {
  command: 'verify <bundle>',
  builder: (y: Argv) =>
    y
      .positional('bundle', { type: 'string', demandOption: true, describe: 'the bundle (.tar.gz)' })
      .option('anchor', { type: 'string', demandOption: true, describe: 'trust anchor: "ed25519:..." or a file holding it' })
      .option('node', { type: 'string', demandOption: true, describe: 'the node id the bundle must be for' })
      .option('membership', { type: 'string', describe: 'a signed membership document (envelope) that must list this bundle' })
      .option('node-key', { type: 'string', describe: "the node's private key (PEM); node.crt must be its certificate" })
      .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON' })
      .option('now', { type: 'string', describe: 'check validity at this ISO time instead of the current time' }) as unknown as Argv<VerifyArgs>,
  async run(args: VerifyArgs, io: Io): Promise<number> {
    if (!NODE_ID_RE.test(args.node)) throw new UsageError(`--node ${JSON.stringify(args.node)} is not a node id`);
    const now = parseNow(args.now);
    const anchor = await loadAnchor(args.anchor);
    const bytes = await readBounded(args.bundle, limits.bundleBytes, 'bundle');
    const envelope = args.membership === undefined ? undefined : await readBounded(args.membership, limits.envelopeBytes, 'membership file');
    const nodeKeyPem = args['node-key'] === undefined ? undefined : (await readBounded(args['node-key'], 64 * 1024, 'node key')).toString('utf8');

    const sha256 = sha256Hex(bytes);
    const report: VerifyReport = { acceptable: false, bundle: { path: basename(args.bundle), size: bytes.length, sha256 }, verified: false };
    try {
      let expect: BundleExpectation | undefined;
      if (envelope) {
        const m = verifyMembership(envelope, { anchor, nodeId: args.node, now });
        report.membership = { serial: m.doc.serial, expiresAt: m.doc.expires_at };
        expect = pickEntry(m, sha256);
        report.membership.entry = { network: expect.network, version: expect.version };
      }
      const v = await verifyBundle(bytes, { anchor, nodeId: args.node, now, ...(expect ? { expect } : {}), ...(nodeKeyPem ? { nodeKeyPem } : {}) });
      fillVerified(v, report);
      report.acceptable = true;
    } catch (err) {
      const e = toMvpnError(err);
      report.error = { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) };
      inspectUnverified(bytes, report);
    }
    io.stdout.write(args.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report));
    if (!args.json && report.error?.hint) io.stderr.write(`hint: ${report.error.hint}\n`);
    return report.acceptable ? ExitCode.ok : ExitCode.rejected;
  },
};
