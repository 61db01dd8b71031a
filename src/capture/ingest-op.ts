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

/** Worker op: lstat a batch of files for the walker (see walk.ts statPaths). */
export function statBatch(batch: { files: StatRequest; follow: boolean }): Float64Array {
  return statPaths(batch.files, batch.follow);
}
