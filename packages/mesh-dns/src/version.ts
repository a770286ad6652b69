import pkg from '../package.json';

/** The package version, shown by /version and --version. */
export const VERSION: string = pkg.version;
