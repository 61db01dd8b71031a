/**
 * Reads one entry's bytes through its local header, checking that the header agrees with the
 * central directory, that the data stays before the next entry, and that the inflated bytes have
 * exactly the declared size and CRC-32. Used by worker ops (unpack, import) and by the main thread
 * (symlink targets, which are judged before anything is written). Synchronous.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { ArchiveError, fsError } from '../errors.js';
import type { ArchiveEntry } from './entry-rules.js';
import { FLAG_DATA_DESCRIPTOR, LOCAL_HEADER_SIZE, METHOD_STORE, SIG_LOCAL, U32_MAX } from './zip-format.js';
import { openFile } from '../fs/open-file.js';
import { readUpTo } from '../fs/read-up-to.js';
import { CorruptDeflateError, PastDeclaredSizeError, inflateRawWhole } from './raw-inflate.js';

/** Entries larger than this (compressed or not) are streamed instead of read whole. */
export const LARGE_ENTRY_BYTES = 64 << 20;

/** The subset of ArchiveEntry a worker needs (plain data, cheap to post). */
export type EntryRef = Pick<ArchiveEntry, 'path' | 'rawName' | 'method' | 'crc' | 'compressedSize' | 'size' | 'localOffset' | 'limit'>;

export function dataError(e: { rawName: string; path: string }, why: string): ArchiveError {
  return new ArchiveError(`archive entry '${e.rawName}': ${why}`, { path: e.path });
}

/** Reads exactly `len` bytes at `pos` into `buf` (from 0); a short read means the archive is truncated. */
export function preadFully(fd: number, buf: Buffer, len: number, pos: number, archive: string): void {
  let got: number;
  try {
    got = readUpTo(fd, buf, 0, len, pos);
  } catch (e) {
    throw fsError(e, 'cannot read archive', archive);
  }
  if (got !== len) throw new ArchiveError(`${archive}: archive is truncated (wanted ${len} bytes at offset ${pos})`, { path: archive });
}

/**
 * Checks the local header at `buf[at]` (the entry's extent is `buf[at .. at + (limit - localOffset))`)
 * and returns where its data starts in `buf`.
 */
export function localDataStart(buf: Buffer, at: number, e: EntryRef): number {
  const extent = e.limit - e.localOffset;
  if (extent < LOCAL_HEADER_SIZE || buf.length - at < LOCAL_HEADER_SIZE || buf.readUInt32LE(at) !== SIG_LOCAL) throw dataError(e, 'local header is missing (the central directory points at something else)');
  const flags = buf.readUInt16LE(at + 6);
  const method = buf.readUInt16LE(at + 8);
  const nameLen = buf.readUInt16LE(at + 26);
  const extraLen = buf.readUInt16LE(at + 28);
  const start = at + LOCAL_HEADER_SIZE + nameLen + extraLen;
  if (start > buf.length) throw dataError(e, 'local header runs past the next entry');
  if (start - at + e.compressedSize > extent) throw dataError(e, 'local header and data overlap the next entry');
  if (!sameName(buf, at + LOCAL_HEADER_SIZE, nameLen, e.rawName)) throw dataError(e, 'local header names a different entry than the central directory');
  if (method !== e.method) throw dataError(e, `local header says method ${method}, central directory says ${e.method}`);
  if ((flags & FLAG_DATA_DESCRIPTOR) === 0) {
    const crc = buf.readUInt32LE(at + 14);
    const csize = buf.readUInt32LE(at + 18);
    const size = buf.readUInt32LE(at + 22);
    if (crc !== e.crc) throw dataError(e, 'local header CRC disagrees with the central directory');
    if ((csize !== U32_MAX && csize !== e.compressedSize) || (size !== U32_MAX && size !== e.size)) {
      throw dataError(e, 'local header sizes disagree with the central directory');
    }
  }
  return start;
}

// The thread's buffer for a name's UTF-8 bytes (sameName), grown as needed.
let nameBytes = Buffer.allocUnsafeSlow(1024);

/**
 * Whether `buf[at .. at + len)` holds exactly the UTF-8 bytes of `name`.
 * Perf: Buffer.from(name) made a buffer per entry (78,579 for the Linux tree) only to compare it;
 * the name is now encoded into one buffer the thread keeps. localDataStart over all 83,729 headers
 * of the Linux tree zip, 5 times in one thread, 4 alternating rounds: 168-190 ms of CPU against
 * 210-257 ms (about 0.1 us per entry).
 */
function sameName(buf: Buffer, at: number, len: number, name: string): boolean {
  if (len !== Buffer.byteLength(name)) return false;
  if (nameBytes.length < len) nameBytes = Buffer.allocUnsafeSlow(Math.max(len, nameBytes.length * 2));
  return nameBytes.write(name, 0) === len && nameBytes.compare(buf, at, at + len, 0, len) === 0;
}

/**
 * Decodes the entry whose extent starts at `buf[at]`. Stored data is returned as a view of `buf`,
 * inflated data often as a view of the thread's inflate buffer (raw-inflate.ts): either is valid
 * only until the next entry is decoded on this thread.
 */
export function decodeEntry(buf: Buffer, at: number, e: EntryRef): Buffer {
  const start = localDataStart(buf, at, e);
  const raw = buf.subarray(start, start + e.compressedSize);
  let out: Buffer;
  if (e.method === METHOD_STORE) out = raw;
  else {
    try {
      out = inflateRawWhole(raw, e.size);
    } catch (err) {
      if (err instanceof PastDeclaredSizeError) throw dataError(e, `inflates to more than its declared ${e.size} bytes`);
      if (err instanceof CorruptDeflateError) throw dataError(e, `deflate data is corrupt (${err.message})`);
      throw err;
    }
  }
  if (out.length !== e.size) throw dataError(e, `sizes disagree: declared ${e.size} bytes, data holds ${out.length}`);
  if (zlib.crc32(out) >>> 0 !== e.crc) throw dataError(e, 'CRC-32 mismatch (data is corrupt)');
  return out;
}

/** Reads and decodes one entry on its own (used for symlink targets and single small entries). */
export function readEntry(fd: number, e: EntryRef, archive: string): Buffer {
  const len = e.limit - e.localOffset;
  const buf = Buffer.allocUnsafe(len);
  preadFully(fd, buf, len, e.localOffset, archive);
  return Buffer.from(decodeEntry(buf, 0, e));
}

/** Reads the local header of `e` alone and returns the absolute offset where its data starts. */
export function dataOffset(fd: number, e: EntryRef, archive: string): number {
  const len = Math.min(e.limit - e.localOffset, LOCAL_HEADER_SIZE + 0xffff * 2);
  const buf = Buffer.allocUnsafe(len);
  preadFully(fd, buf, len, e.localOffset, archive);
  return e.localOffset + localDataStart(buf, 0, e);
}

// Perf: one read buffer per thread, grown as needed, instead of one allocation per batch.
let batchBuffer = Buffer.allocUnsafe(8 << 20);

/**
 * Reads the bytes of a batch of entries (consecutive in the archive) with one pread, then hands
 * each entry's checked, decoded data to `use` in order. The data lives in buffers the thread
 * reuses: `use` is done with it when it returns.
 */
export function forEachBatchEntry<F extends EntryRef>(archive: string, files: readonly F[], use: (f: F, data: Buffer) => void): void {
  if (files.length === 0) return;
  const start = files[0]!.localOffset;
  const len = files[files.length - 1]!.limit - start;
  if (batchBuffer.length < len) batchBuffer = Buffer.allocUnsafe(Math.max(len, batchBuffer.length * 2));
  const fd = openFile(archive, 'r', 'cannot open archive');
  try {
    preadFully(fd, batchBuffer, len, start, archive);
  } finally {
    fs.closeSync(fd);
  }
  for (const f of files) use(f, decodeEntry(batchBuffer, f.localOffset - start, f));
}
