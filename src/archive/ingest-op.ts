/**
 * Worker op 'archive.ingest': stores one batch of archive entries in the local store without
 * writing them anywhere else. Same read path as extract-op (one pread per batch, local header,
 * size and CRC checks); each entry's bytes go to LocalStore.putSync, which hashes and stores them.
 */
import * as fs from 'node:fs';
import { fsError } from '../errors.js';
import type { OpContext } from '../fs/worker-ops.js';
import { decodeEntry, preadFully, type EntryRef } from './local-data.js';

export interface IngestBatch {
  archive: string;
  files: EntryRef[];
}

/** Hashes of the stored entries, in batch order. */
export type IngestResult = string[];

let scratch = Buffer.allocUnsafe(8 << 20);

export function ingestArchiveBatch(b: IngestBatch, ctx: OpContext): IngestResult {
  const files = b.files;
  if (files.length === 0) return [];
  const start = files[0]!.localOffset;
  const len = files[files.length - 1]!.limit - start;
  if (scratch.length < len) scratch = Buffer.allocUnsafe(Math.max(len, scratch.length * 2));
  let fd: number;
  try {
    fd = fs.openSync(b.archive, 'r');
  } catch (e) {
    throw fsError(e, 'cannot open archive', b.archive);
  }
  try {
    preadFully(fd, scratch, len, start, b.archive);
    return files.map((f) => ctx.store.putSync(decodeEntry(scratch, f.localOffset - start, f)).hash);
  } finally {
    fs.closeSync(fd);
  }
}
