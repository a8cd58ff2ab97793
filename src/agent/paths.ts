/**
 * The agent's default paths. Their own module, free of the config schema
 * (zod), because every agent command's option definitions need them and
 * `status` must not evaluate the schema to print its --help or run.
 */
export const DEFAULT_CONFIG_PATH = '/etc/mvpn-client/config.json';
export const DEFAULT_STATE_DIR = '/var/lib/mvpn-client';
export const DEFAULT_RUNTIME_DIR = '/run/mvpn-client';
