/**
 * Options shared by the commands that talk to a remote (push, pull, checkout --remote). Kept apart
 * from commands/remote.ts so `checkout` can offer them without loading the HTTP client.
 */
import type { Command } from 'commander';
import type { ClientOptions } from '../remote/client.js';
import { resolveToken } from '../remote/auth.js';
import { DEFAULT_CONCURRENCY, MAX_CONCURRENCY } from '../remote/limits.js';
import { intInRange } from './common.js';
import { looksLikeDigest } from '../core/digest.js';
import type { LocalStore } from '../store/local.js';

export interface RemoteCliOptions {
  concurrency?: number;
  retries?: number;
  token?: string;
  tokenFile?: string;
  batch?: boolean;
}

/** The client options shared by push, pull and checkout --remote. */
export function addRemoteClientOptions(cmd: Command, withBatch = true): Command {
  cmd
    .option('--concurrency <n>', `requests in flight at once (1-${MAX_CONCURRENCY}, default ${DEFAULT_CONCURRENCY})`, intInRange('--concurrency', 1, MAX_CONCURRENCY))
    .option('--retries <n>', 'retries per request on connection errors, timeouts, 429 and 5xx (default 5)', intInRange('--retries', 0, 100))
    .option('--token <token>', 'bearer token for the server (or --token-file, or TREECAST_TOKEN)')
    .option('--token-file <file>', 'read the bearer token from the first line of FILE');
  if (withBatch) cmd.option('--no-batch', "use only the plain Bazel HTTP cache protocol, even when the server offers treecast's batch endpoints");
  return cmd;
}

/** The client options for `url` from the command's options (reads --token-file). */
export function clientOptions(url: string, o: RemoteCliOptions): ClientOptions {
  return {
    url,
    token: resolveToken(o),
    concurrency: o.concurrency,
    retries: o.retries,
    batch: o.batch === false ? 'off' : 'auto',
  };
}

/**
 * True when SPEC names something in the local store: a digest (or digest-shaped text), or a local
 * ref. With --remote, any other name is looked up on the remote (remote/refs.ts).
 */
export function isLocalSpec(store: LocalStore, spec: string): boolean {
  return looksLikeDigest(spec) || /^[0-9a-fA-F]{40,}/.test(spec) || store.readRef(spec) !== undefined;
}

/** Collects a repeatable option's values (`--fallback A --fallback B`). */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
