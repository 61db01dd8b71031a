/**
 * Worker op: hash a batch of files and store those the store lacks. Runs with synchronous calls
 * in a worker thread (fs/worker-pool.ts); returns one hash per file, in order.
 */
import type { OpContext } from '../fs/worker-ops.js';
import { type StatRequest, statPaths } from './walk.js';

export interface IngestItem {
  abs: string;
  /** The walker's lstat, so a file replaced or changed since the walk is reported, not stored. */
  ino: number;
  size: number;
  mtimeMs: number;
  follow: boolean;
}

export function ingestBatch(items: IngestItem[], ctx: OpContext): string[] {
  const out: string[] = new Array(items.length);
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    out[i] = ctx.store.ingestFileSync(it.abs, { ino: it.ino, size: it.size, mtimeMs: it.mtimeMs }, it.follow).digest.hash;
  }
  return out;
}

/** A stat batch's claim slot: free, or taken by the thread that runs it (snapshot.ts StatBatches). */
export const STAT_UNCLAIMED = 0;
export const STAT_TAKEN = 1;

export interface StatBatchPayload {
  files: StatRequest;
  follow: boolean;
  /** With `slot`: the batch runs only where its slot is claimed first; the other thread skips it. */
  claims?: Int32Array<ArrayBufferLike>;
  slot?: number;
}

/**
 * Worker op: lstat a batch of files for the walker (see walk.ts statPaths). A batch the posting
 * thread claimed first (it ran the batch itself) is skipped: an empty result.
 */
export function statBatch(batch: StatBatchPayload): Float64Array {
  if (batch.claims !== undefined && Atomics.compareExchange(batch.claims, batch.slot!, STAT_UNCLAIMED, STAT_TAKEN) !== STAT_UNCLAIMED) return new Float64Array(0);
  return statPaths(batch.files, batch.follow);
}
