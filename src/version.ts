import pkg from '../package.json' with { type: 'json' };

/** The version printed by `--version` and stamped into bundles' tooling field. */
export const VERSION: string = pkg.version;
