/** Limits of the remote client, in a module without the HTTP client so the CLI can show them cheaply. */
export const DEFAULT_CONCURRENCY = 16;
export const MAX_CONCURRENCY = 256;
