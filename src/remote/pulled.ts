/**
 * The answer to a pull of a tree the store already holds whole (a valid completeness record,
 * store/completeness.ts): nothing fetched, no request made. Apart from fetch.ts so the CLI can
 * answer without loading the HTTP client.
 */
import { type Digest, formatDigest } from '../core/digest.js';
import type { LocalStore } from '../store/local.js';
import { readComplete } from '../store/completeness.js';
import type { FetchSummary } from './fetch.js';

export function pulledAlready(store: LocalStore, root: Digest): FetchSummary | undefined {
  const rec = readComplete(store.root, root);
  if (!rec) return undefined;
  return {
    root: formatDigest(root),
    directories: rec.directories,
    files: rec.files,
    fetched: 0,
    fetchedBytes: 0,
    skipped: rec.directories + rec.files,
    retried: 0,
    requests: 0,
    maxInFlight: 0,
    batch: false,
  };
}
