/** The package version, reported by `--version`, the server's /status and archive comments. */
export const VERSION = '0.1.0';
