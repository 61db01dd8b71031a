/**
 * Worker op 'archive.ingest': stores one batch of archive entries in the local store without
 * writing them anywhere else. Same read path as extract-op (one pread per batch, local header,
 * size and CRC checks); each entry's bytes go to LocalStore.putSync, which hashes and stores them.
 *
 * Perf: profiled on the Linux tree (a deflated zip), each worker spent its time writing (28%),
 * inflating (21%), hashing (8-12%), renaming (6%), opening (6%), asking whether the blob exists
 * (5%) and checking CRCs (2-4%). Import used 9.0-9.9 s of CPU where unpack used 5.9-6.3 s; what
 * import does beyond unpack is the SHA-256, the existence check, the temp name and rename that
 * keep store writes atomic, and building the tree (on the main thread, overlapping the workers).
 * Into a store that held no blobs at the start the existence check is skipped (`storeWasEmpty`):
 * each blob is then open, write, close and rename (strace). Import of the Linux tree went from
 * 12.5 s wall (5.2 s system) to 7.3 s (2.3 s system), one run each at load 5-7.
 */
import type { OpContext } from '../fs/worker-ops.js';
import { forEachBatchEntry, type EntryRef } from './local-data.js';
import { handBack } from './tar-write-op.js';

export interface IngestBatch {
  archive: string;
  files: EntryRef[];
  /** The store held no blobs when the import started: store without asking whether each blob is there. */
  storeWasEmpty?: boolean;
}

/** Hashes of the stored entries, in batch order. */
export type IngestResult = string[];

export function ingestArchiveBatch(b: IngestBatch, ctx: OpContext): IngestResult {
  const hashes: string[] = [];
  const store = ctx.store;
  forEachBatchEntry(b.archive, b.files, (_f, data) => hashes.push((b.storeWasEmpty ? store.putNewSync(data) : store.putSync(data)).hash));
  return hashes;
}

/** Worker op 'archive.store': stores files whose data came with the batch (tar); returns their hashes in order. */
export interface StoreDataBatch {
  files: { at: number; size: number }[];
  data: Uint8Array;
}

/** The hashes in batch order, and the batch's data when it had a buffer of its own (see handBack). */
export interface StoreDataResult {
  hashes: string[];
  data?: Uint8Array;
}

export function storeDataBatch(b: StoreDataBatch, ctx: OpContext): StoreDataResult {
  const data = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength);
  return { hashes: b.files.map((f) => ctx.store.putSync(data.subarray(f.at, f.at + f.size)).hash), data: handBack(b.data) };
}
