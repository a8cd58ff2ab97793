/**
 * Typed errors with stable codes.
 *
 * Programs branch on `code`, never on message text. Messages say what was
 * wrong and, where there is one, what to do (`hint`). `context` carries the
 * fields a caller or a log line needs (network id, path, directive, ...).
 *
 * Add a code to the union below (keep each group sorted) and, when a new
 * family of failures appears, a subclass; never reuse a code for a different
 * meaning.
 */

export type ErrorCode =
  // usage and configuration
  | 'MVPN_USAGE'
  | 'MVPN_CONFIG_INVALID'
  | 'MVPN_CONFIG_MISSING'
  | 'MVPN_NOT_ROOT'
  | 'MVPN_DEPENDENCY_MISSING'
  // documents and schemas (DESIGN.md §4)
  | 'MVPN_JSON_INVALID'
  | 'MVPN_JSON_TOO_LARGE'
  | 'MVPN_SCHEMA_INVALID'
  | 'MVPN_SIGNATURE_INVALID'
  | 'MVPN_SIGNATURE_MISSING'
  | 'MVPN_ANCHOR_INVALID'
  | 'MVPN_ANCHOR_STATEMENT_INVALID'
  | 'MVPN_ANCHOR_ROLLBACK'
  | 'MVPN_ANCHOR_RETIRED'
  | 'MVPN_MEMBERSHIP_WRONG_NODE'
  | 'MVPN_MEMBERSHIP_ROLLBACK'
  | 'MVPN_MEMBERSHIP_EQUIVOCATION'
  | 'MVPN_MEMBERSHIP_EXPIRED'
  // bundles
  | 'MVPN_BUNDLE_SIZE_MISMATCH'
  | 'MVPN_BUNDLE_HASH_MISMATCH'
  | 'MVPN_BUNDLE_TAR_INVALID'
  | 'MVPN_BUNDLE_UNSAFE_ENTRY'
  | 'MVPN_BUNDLE_TOO_LARGE'
  | 'MVPN_BUNDLE_GZIP_INVALID'
  | 'MVPN_BUNDLE_MANIFEST_INVALID'
  | 'MVPN_BUNDLE_FILE_UNLISTED'
  | 'MVPN_BUNDLE_FILE_MISSING'
  | 'MVPN_BUNDLE_FILE_HASH_MISMATCH'
  | 'MVPN_BUNDLE_WRONG_NODE'
  | 'MVPN_BUNDLE_WRONG_NETWORK'
  | 'MVPN_BUNDLE_VERSION_MISMATCH'
  | 'MVPN_BUNDLE_ROLLBACK'
  | 'MVPN_BUNDLE_EXPIRED'
  | 'MVPN_BUNDLE_INSTALL_FAILED'
  | 'MVPN_BUNDLE_URL_INVALID'
  // certificates, CRLs, keys
  | 'MVPN_CERT_INVALID'
  | 'MVPN_CERT_WRONG_ISSUER'
  | 'MVPN_CERT_WRONG_CN'
  | 'MVPN_CERT_WRONG_USAGE'
  | 'MVPN_CERT_EXPIRED'
  | 'MVPN_CERT_REVOKED'
  | 'MVPN_CERT_KEY_MISMATCH'
  | 'MVPN_CRL_MISSING'
  | 'MVPN_CRL_INVALID'
  | 'MVPN_CRL_EXPIRED'
  | 'MVPN_CA_WRONG_NETWORK'
  | 'MVPN_CA_NOT_PINNED'
  | 'MVPN_CA_ROLL_INVALID'
  | 'MVPN_CSR_INVALID'
  | 'MVPN_KEY_INVALID'
  // openvpn config rendering
  | 'MVPN_OPTION_FORBIDDEN'
  | 'MVPN_OPTION_UNKNOWN'
  | 'MVPN_OPTION_INVALID'
  // openvpn processes and management interface
  | 'MVPN_OPENVPN_SPAWN_FAILED'
  | 'MVPN_OPENVPN_EXITED'
  | 'MVPN_OPENVPN_ALREADY_RUNNING'
  | 'MVPN_OPENVPN_HUNG'
  | 'MVPN_OPENVPN_UNHEALTHY'
  | 'MVPN_OPENVPN_PUSH_REFUSED'
  | 'MVPN_PATH_MTU'
  | 'MVPN_LAN_SILENT'
  | 'MVPN_OPENVPN_USER_MISSING'
  | 'MVPN_OPENVPN_USER_NO_ACCESS'
  | 'MVPN_MGMT_CONNECT_FAILED'
  | 'MVPN_MGMT_TIMEOUT'
  | 'MVPN_MGMT_ERROR'
  | 'MVPN_MGMT_CLOSED'
  | 'MVPN_MGMT_PROTOCOL'
  // fetching and discovery (agent)
  | 'MVPN_FETCH_FAILED'
  | 'MVPN_FETCH_TIMEOUT'
  | 'MVPN_FETCH_HTTP_STATUS'
  | 'MVPN_FETCH_TOO_LARGE'
  | 'MVPN_SOURCES_UNREACHABLE'
  | 'MVPN_ENROLL_FAILED'
  | 'MVPN_NOT_ENROLLED'
  | 'MVPN_RENEW_FAILED'
  | 'MVPN_RENEW_NOT_CURRENT'
  // local daemon API
  | 'MVPN_DAEMON_UNREACHABLE'
  | 'MVPN_DAEMON_RUNNING'
  | 'MVPN_PERMISSION_DENIED'
  | 'MVPN_NETWORK_UNKNOWN'
  // server mode
  | 'MVPN_STORE_ERROR'
  | 'MVPN_STORE_CONFLICT'
  | 'MVPN_STORE_UNREACHABLE'
  | 'MVPN_STORE_AUTH_FAILED'
  /** The store's schema is from a newer release than this binary. */
  | 'MVPN_STORE_TOO_NEW'
  | 'MVPN_LEASE_LOST'
  | 'MVPN_NOT_FOUND'
  | 'MVPN_ALREADY_EXISTS'
  | 'MVPN_POOL_EXHAUSTED'
  | 'MVPN_ADDRESS_INVALID'
  | 'MVPN_TOKEN_INVALID'
  | 'MVPN_TOKEN_EXPIRED'
  | 'MVPN_TOKEN_USED'
  | 'MVPN_API_BAD_REQUEST'
  | 'MVPN_API_UNAUTHORIZED'
  | 'MVPN_API_FORBIDDEN'
  | 'MVPN_API_CA_RETIRED'
  | 'MVPN_API_TOO_LARGE'
  | 'MVPN_TARBALL_FAILED'
  | 'MVPN_APPLY_FAILED'
  // planning from testbed requests
  | 'MVPN_RSPEC_INVALID'
  | 'MVPN_RSPEC_DOCTYPE'
  | 'MVPN_RSPEC_TOO_LARGE'
  | 'MVPN_RELAY_FAILED'
  | 'MVPN_METRICS_LISTEN_FAILED'
  | 'MVPN_CA_ROLL_REFUSED'
  // L3 routing (the server's own BIRD)
  | 'MVPN_ROUTING_FAILED'
  | 'MVPN_BIRD_CONTROL'
  // internal
  | 'MVPN_INTERNAL';

export type ErrorContext = Readonly<Record<string, unknown>>;

export interface MvpnErrorOptions {
  readonly context?: ErrorContext;
  readonly hint?: string;
  readonly cause?: unknown;
}

export class MvpnError extends Error {
  readonly code: ErrorCode;
  readonly context: ErrorContext;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: MvpnErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.context = options.context ?? {};
    this.hint = options.hint;
  }

  /** A JSON-safe view for `--json` output and the control API. */
  toJSON(): { code: ErrorCode; message: string; hint?: string; context: ErrorContext } {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint === undefined ? {} : { hint: this.hint }),
      context: this.context,
    };
  }
}

/** Wrong command-line use; exit code 2. */
export class UsageError extends MvpnError {
  constructor(message: string, options: MvpnErrorOptions = {}) {
    super('MVPN_USAGE', message, options);
  }
}

/** A config file or option that cannot be used as written. */
export class ConfigError extends MvpnError {}
/** A signed document (membership, manifest) that must not be acted on. */
export class DocumentError extends MvpnError {}
/** A bundle that must not be installed. */
export class BundleError extends MvpnError {}
/** A certificate, CRL, CSR or key problem. */
export class PkiError extends MvpnError {}
/** A network spec that cannot be rendered into a safe openvpn config. */
export class RenderError extends MvpnError {}
/** An openvpn process or its management interface misbehaved. */
export class OpenvpnError extends MvpnError {}
/** A discovery source or the server API could not be used. */
export class FetchError extends MvpnError {}
/** The local daemon's API could not be reached or refused the request. */
export class DaemonError extends MvpnError {}
/** A server-mode state operation failed. */
export class StoreError extends MvpnError {}
/** A testbed's request (GENI RSpec) that cannot be read or planned; nothing is applied. */
export class RequestError extends MvpnError {}

export class RoutingError extends MvpnError {}

export function isMvpnError(err: unknown): err is MvpnError {
  return err instanceof MvpnError;
}

/** Normalise anything thrown into an MvpnError, keeping the original as cause. */
export function toMvpnError(err: unknown): MvpnError {
  if (err instanceof MvpnError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new MvpnError('MVPN_INTERNAL', `internal error: ${message}`, { cause: err });
}

/**
 * Process exit codes. Documented in README.md (CLI section); scripts depend
 * on them, so never change a value's meaning.
 */
export const ExitCode = {
  ok: 0,
  /** status: at least one network is not connected; verify: not acceptable. */
  notAllConnected: 1,
  /** verify: the bundle is not acceptable (same value as notAllConnected by design: "check failed"). */
  rejected: 1,
  usage: 2,
  /** status/up/down/...: the daemon is not running or its socket is unreachable. */
  daemonUnreachable: 3,
  /** the operation needs root (or the control socket's group). */
  permissionDenied: 4,
  /** any other failure, with a message on stderr. */
  failure: 5,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export function exitCodeFor(err: MvpnError): ExitCodeValue {
  switch (err.code) {
    case 'MVPN_USAGE':
      return ExitCode.usage;
    case 'MVPN_DAEMON_UNREACHABLE':
      return ExitCode.daemonUnreachable;
    case 'MVPN_PERMISSION_DENIED':
    case 'MVPN_NOT_ROOT':
      return ExitCode.permissionDenied;
    default:
      return ExitCode.failure;
  }
}
