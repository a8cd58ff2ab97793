/**
 * Certificate revocation lists (DESIGN.md §3). A CRL is v2 with a CRL
 * number and authority key identifier, and always has a nextUpdate: a
 * missing or expired CRL is an error, never "allow all". Note that openvpn
 * (through OpenSSL) also refuses every peer once the CRL given to
 * `crl-verify` has passed its nextUpdate, so the server must re-issue CRLs
 * well before then.
 */
import { PkiError } from '../errors.ts';
import type { CaMaterial } from './ca.ts';
import { checkSerialHex, normaliseSerial } from './common.ts';
import { signingAlgorithm } from './keys.ts';
import { readCertificate, readCrl } from './read.ts';
import { derToPem, loadX509, OID, x509 } from './x509.ts';

export interface RevokedEntry {
  readonly serialHex: string;
  readonly revokedAt: Date;
}

/** DER INTEGER of a non-negative safe integer (the CRLNumber extension value). */
function derInteger(n: number): Uint8Array {
  const bytes: number[] = [];
  let v = BigInt(n);
  do {
    bytes.unshift(Number(v & 0xffn));
    v >>= 8n;
  } while (v > 0n);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return Uint8Array.from([0x02, bytes.length, ...bytes]);
}

export async function createCrl(opts: {
  ca: CaMaterial;
  revoked: readonly RevokedEntry[];
  thisUpdate: Date;
  nextUpdate: Date;
  crlNumber: number;
}): Promise<string> {
  await loadX509();
  // The CA module (the PKI generator) loads only here, where a CRL is signed: the agent checks CRLs and never evaluates it.
  const { loadCa } = await import('./ca.ts');
  if (!Number.isSafeInteger(opts.crlNumber) || opts.crlNumber < 0) throw new PkiError('MVPN_CRL_INVALID', `invalid CRL number ${String(opts.crlNumber)}: use a non-negative integer`);
  if (Number.isNaN(opts.thisUpdate.getTime()) || Number.isNaN(opts.nextUpdate.getTime()) || opts.nextUpdate.getTime() <= opts.thisUpdate.getTime()) {
    throw new PkiError('MVPN_CRL_INVALID', 'nextUpdate must be a valid date after thisUpdate');
  }
  const seen = new Set<string>();
  const entries = opts.revoked.map((r) => {
    const serialNumber = checkSerialHex(r.serialHex);
    if (seen.has(serialNumber)) throw new PkiError('MVPN_CRL_INVALID', `serial ${serialNumber} is listed twice`);
    seen.add(serialNumber);
    if (Number.isNaN(r.revokedAt.getTime())) throw new PkiError('MVPN_CRL_INVALID', `invalid revocation date for serial ${serialNumber}`);
    return { serialNumber, revocationDate: r.revokedAt };
  });
  const ca = await loadCa(opts.ca);
  const crl = await x509().X509CrlGenerator.create({
    issuer: ca.cert.subjectName,
    thisUpdate: opts.thisUpdate,
    nextUpdate: opts.nextUpdate,
    signingKey: ca.signingKey,
    signingAlgorithm: signingAlgorithm(ca.alg),
    extensions: [new (x509().AuthorityKeyIdentifierExtension)(ca.keyId, false), new (x509().Extension)(OID.crlNumber, false, derInteger(opts.crlNumber))],
    entries,
  });
  return derToPem('X509 CRL', crl.rawData);
}

export interface CheckedCrl {
  /** Normalised lower-case hex. */
  readonly revokedSerials: string[];
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
}

/**
 * Accepts a CRL only if it is signed by this CA, is current at `now`
 * (thisUpdate <= now < nextUpdate) and has a nextUpdate at all.
 * MVPN_CRL_INVALID for anything unreadable, foreign or not yet valid;
 * MVPN_CRL_EXPIRED once nextUpdate <= now.
 */
export async function checkCrl(opts: { crlPem: string; caCertPem: string; now: Date }): Promise<CheckedCrl> {
  const caCert = readCertificate(opts.caCertPem, 'CA certificate');
  const crl = readCrl(opts.crlPem);
  if (!crl.issuerDer.equals(caCert.subjectDer)) {
    throw new PkiError('MVPN_CRL_INVALID', `the CRL is issued by "${crl.issuer}", not by this network's CA "${caCert.subject}"`);
  }
  if (!crl.signedBy(caCert)) throw new PkiError('MVPN_CRL_INVALID', "the CRL signature does not verify with this network's CA");
  const { thisUpdate, nextUpdate } = crl;
  if (!nextUpdate) throw new PkiError('MVPN_CRL_INVALID', 'the CRL has no nextUpdate');
  const now = opts.now.getTime();
  if (thisUpdate.getTime() > now) {
    throw new PkiError('MVPN_CRL_INVALID', `the CRL is not valid yet (thisUpdate ${thisUpdate.toISOString()}); check the clock`, { context: { thisUpdate: thisUpdate.toISOString() } });
  }
  if (nextUpdate.getTime() <= now) {
    throw new PkiError('MVPN_CRL_EXPIRED', `the CRL expired at ${nextUpdate.toISOString()}; fetch a fresh one from the server`, { context: { nextUpdate: nextUpdate.toISOString() } });
  }
  return { revokedSerials: crl.revokedSerials.map(normaliseSerial), thisUpdate, nextUpdate };
}
