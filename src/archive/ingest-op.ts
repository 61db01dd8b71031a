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
import * as fs from 'node:fs';
import type { OpContext } from '../fs/worker-ops.js';
import { EMPTY_DIGEST, sha256Hex } from '../core/digest.js';
import { fsError } from '../errors.js';
import { removeQuietly } from '../store/local.js';
import { forEachBatchEntry, type EntryRef } from './local-data.js';
import { handBack } from './tar-write-op.js';
import { CLAIM_OPEN, CLAIM_TAKEN } from './import-ahead.js';

export interface IngestBatch {
  archive: string;
  files: EntryRef[];
  /** The store held no blobs when the import started: store without asking whether each blob is there. */
  storeWasEmpty?: boolean;
  /**
   * For 'archive.stage': the head start's claim slots (shared memory) and this batch's. The batch
   * runs only when this worker moves its slot from open to taken; a cancelled one is skipped.
   */
  claims?: Int32Array;
  slot?: number;
}

/** Hashes of the stored entries, in batch order. */
export type IngestResult = string[];

export function ingestArchiveBatch(b: IngestBatch, ctx: OpContext): IngestResult {
  const hashes: string[] = [];
  const store = ctx.store;
  forEachBatchEntry(b.archive, b.files, (_f, data) => hashes.push((b.storeWasEmpty ? store.putNewSync(data) : store.putSync(data)).hash));
  return hashes;
}

/** Hashes of a staged batch's entries and the temporary files holding them ('' for an empty entry). */
export interface StagedResult {
  hashes: string[];
  tmps: string[];
  /** The batch was cancelled before this worker took it: nothing was read or written. */
  skipped?: boolean;
}

/**
 * Worker op 'archive.stage': as 'archive.ingest', for entries read before the archive was judged:
 * each entry's bytes are checked, hashed and written to a temporary file in its blob's shard
 * folder, but not renamed to the blob's name. The caller commits them (LocalStore.commitTmp) once
 * the whole archive is accepted, or removes them when it is refused. On an error this batch's
 * temporary files are removed. A batch with a claim slot is skipped when the caller cancelled it
 * before this worker took it (import-ahead.ts).
 */
export function stageArchiveBatch(b: IngestBatch, ctx: OpContext): StagedResult {
  if (b.claims !== undefined && Atomics.compareExchange(b.claims, b.slot!, CLAIM_OPEN, CLAIM_TAKEN) !== CLAIM_OPEN) return { hashes: [], tmps: [], skipped: true };
  const hashes: string[] = [];
  const tmps: string[] = [];
  const store = ctx.store;
  try {
    forEachBatchEntry(b.archive, b.files, (_f, data) => {
      const hash = data.length === 0 ? EMPTY_DIGEST.hash : sha256Hex(data);
      hashes.push(hash);
      if (data.length === 0) return void tmps.push('');
      const tmp = store.blobTmpPath(hash);
      tmps.push(tmp);
      try {
        fs.writeFileSync(tmp, data, { mode: 0o444, flag: 'wx' });
      } catch (e) {
        throw fsError(e, 'cannot write blob', store.blobPath(hash));
      }
    });
  } catch (e) {
    for (const t of tmps) if (t) removeQuietly(t);
    throw e;
  }
  return { hashes, tmps };
}

/** Worker op 'archive.store': stores files whose data came with the batch (tar); returns their hashes in order. */
export interface StoreDataBatch {
  files: { at: number; size: number }[];
  data: Uint8Array;
  /** As IngestBatch's: the store held no blobs when the caller started. */
  storeWasEmpty?: boolean;
}

/** The hashes in batch order, and the batch's data when it had a buffer of its own (see handBack). */
export interface StoreDataResult {
  hashes: string[];
  data?: Uint8Array;
}

export function storeDataBatch(b: StoreDataBatch, ctx: OpContext): StoreDataResult {
  const data = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength);
  const put = (bytes: Buffer) => (b.storeWasEmpty ? ctx.store.putNewSync(bytes) : ctx.store.putSync(bytes));
  return { hashes: b.files.map((f) => put(data.subarray(f.at, f.at + f.size)).hash), data: handBack(b.data) };
}
