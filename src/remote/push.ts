/**
 * Uploading a tree from the local store: ask the server which blobs it lacks (one batch question
 * per 10,000 digests, or HEAD per blob on a plain Bazel cache), then send only those through the
 * window. File blobs go first and the root Directory last, so a server that holds the root holds
 * the whole tree, even after an interrupted push.
 */
import { type Digest, formatDigest } from '../core/digest.js';
import { MAX_DEPTH } from '../core/names.js';
import { InterruptedError, InvalidTreeError } from '../errors.js';
import type { LocalStore } from '../store/local.js';
import { TreeReader } from '../store/tree-reader.js';
import { RemoteClient } from './client.js';
import { BATCH_BLOBS, BATCH_BYTES, MISSING_CHUNK, SINGLE_ABOVE } from './fetch.js';
import { runWindow } from './window.js';

export interface PushSummary {
  root: string;
  /** Distinct non-empty blobs in the tree (directories included). */
  blobs: number;
  /** Of those, already on the server. */
  present: number;
  uploaded: number;
  uploadedBytes: number;
  retried: number;
  requests: number;
  batch: boolean;
}

/** Every distinct non-empty blob under `root` in the local store: files, then directories deepest first. */
export function treeBlobs(store: LocalStore, root: Digest): { files: Digest[]; dirs: Digest[] } {
  const reader = new TreeReader(store);
  const files: Digest[] = [];
  const levels: Digest[][] = [];
  const seen = new Set<string>([root.hash]);
  let level: Digest[] = [root];
  for (let depth = 0; level.length > 0; depth++) {
    if (depth > MAX_DEPTH) throw new InvalidTreeError(`tree ${formatDigest(root)} nests deeper than ${MAX_DEPTH} levels`, { digest: formatDigest(root) });
    levels.push(level);
    const next: Digest[] = [];
    for (const d of level) {
      const dir = reader.getSync(d);
      for (const f of dir.files) {
        if (f.digest.size === 0 || seen.has(f.digest.hash)) continue;
        seen.add(f.digest.hash);
        files.push(f.digest);
      }
      for (const sub of dir.directories) {
        if (seen.has(sub.digest.hash)) continue;
        seen.add(sub.digest.hash);
        next.push(sub.digest);
      }
    }
    level = next;
  }
  return { files, dirs: levels.reverse().flat() };
}

export interface PushOptions {
  /** Checked between requests; true stops starting new ones. */
  shouldStop?: () => boolean;
  onProgress?: (done: number, total: number, bytes: number) => void;
}

export async function push(store: LocalStore, client: RemoteClient, root: Digest, opts: PushOptions = {}): Promise<PushSummary> {
  const { files, dirs } = treeBlobs(store, root);
  const all = [...files, ...dirs];
  const batch = await client.batchAvailable();
  const stop = opts.shouldStop ?? (() => false);
  const checkStop = () => {
    if (stop()) throw new InterruptedError('push interrupted; run the same command again to resume');
  };

  // 1. What does the server lack?
  let missing: Digest[];
  if (batch) {
    const chunks: Digest[][] = [];
    for (let i = 0; i < all.length; i += MISSING_CHUNK) chunks.push(all.slice(i, i + MISSING_CHUNK));
    const answers: Digest[][] = new Array(chunks.length);
    await runWindow(chunks.map((c, i) => ({ c, i })), client.concurrency, async ({ c, i }) => {
      answers[i] = await client.missing(c);
    }, stop);
    missing = answers.flat();
  } else {
    const flags: boolean[] = new Array(all.length);
    await runWindow(all.map((d, i) => ({ d, i })), client.concurrency, async ({ d, i }) => {
      flags[i] = !(await client.has(d));
    }, stop);
    missing = all.filter((_, i) => flags[i]);
  }
  checkStop();

  // 2. Send them: files, then directories deepest first, the root alone at the very end.
  const rootMissing = missing.some((d) => d.hash === root.hash);
  const rest = missing.filter((d) => d.hash !== root.hash);
  const total = missing.length;
  const progress = () => opts.onProgress?.(client.stats.uploaded, total, client.stats.uploadedBytes);
  const send = async (group: Digest[]) => {
    if (group.length === 1 && (!batch || group[0]!.size > SINGLE_ABOVE)) await client.uploadOne(group[0]!, store);
    else await client.uploadBatch(group, store);
    progress();
  };
  await runWindow(batch ? groupForBatches(rest) : rest.map((d) => [d]), client.concurrency, send, stop);
  checkStop();
  if (rootMissing) await send([root]);

  const s = client.stats;
  return {
    root: formatDigest(root),
    blobs: all.length,
    present: all.length - missing.length,
    uploaded: s.uploaded,
    uploadedBytes: s.uploadedBytes,
    retried: s.retried,
    requests: s.requests,
    batch,
  };
}

/** Groups blobs into write batches (big ones alone), keeping their order. */
export function groupForBatches(ds: readonly Digest[]): Digest[][] {
  const out: Digest[][] = [];
  let cur: Digest[] = [];
  let bytes = 0;
  for (const d of ds) {
    if (d.size > SINGLE_ABOVE) {
      out.push([d]);
      continue;
    }
    if (cur.length >= BATCH_BLOBS || bytes + d.size > BATCH_BYTES) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(d);
    bytes += d.size;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}
