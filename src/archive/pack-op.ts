/**
 * Worker op 'archive.compress': reads and compresses one batch of files for pack. Each file is
 * opened with O_NOFOLLOW and fstat-ed once (the only stat pack makes of a file), read whole into a
 * reused buffer, CRC-ed and deflated; data that deflate would make larger is stored. The batch's
 * output goes into a buffer the main thread lends with the batch and gets back with the result
 * (moved both ways, never copied), so pack owns a fixed set of output buffers. Files over
 * LARGE_FILE_BYTES are deflated in chunks into a temporary file beside the archive, so memory stays
 * bounded for any size.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { dirname } from 'node:path';
import { BlobNotFoundError, CaptureError, DigestMismatchError, fsError } from '../errors.js';
import { METHOD_DEFLATE, METHOD_STORE } from './zip-format.js';
import { sha256Hex } from '../core/digest.js';
import { damagedEntryError } from '../store/local.js';

export const LARGE_FILE_BYTES = 64 << 20;
/** Piece size for large files; pieces are read into the output buffer's free tail. */
const CHUNK = 8 << 20;
/**
 * A batch returns early once its output reaches this size. Perf: 8 MiB keeps each lent output
 * buffer at 16 MiB and is still ~100 files of work per message. `pack --level store` of the Linux
 * tree peaked at 409 MB RSS with a fresh result buffer per batch, 308 MB with lent buffers, and
 * 235 MB with the workers' young generation capped as well (one run each, load 5-7).
 */
export const MAX_OUTPUT = 8 << 20;

export interface CompressFile {
  /** Absolute path to read (a file under the packed directory, or a store blob). */
  src: string;
  /** For store blobs: the expected sha256 and size, verified while reading. */
  hash?: string;
  size?: number;
}

export interface CompressBatch {
  /** zlib level 1-9, or 0 to store. */
  level: number;
  /** Skip the CRC-32 (tar has none; the compressor checks its own). */
  noCrc?: boolean;
  files: CompressFile[];
  /** Prefix for temporary files of large entries (beside the archive). */
  tmpPrefix: string;
  /** Files larger than this are compressed to a temporary file (tests lower it). */
  largeBytes?: number;
  /** Piece size for large files (tests lower it). */
  chunkBytes?: number;
  /**
   * tar from a directory: a file over `largeBytes` is not copied but only checked (regular, its
   * size); the caller reads it from `src` itself (the result's `inPlace`), so no temporary file.
   */
  largeInPlace?: boolean;
  /**
   * The output buffer lent by the caller (see outputBytes), returned as the result's `data`; without
   * one the batch allocates its own.
   */
  out?: Uint8Array;
}

export interface CompressedFile {
  mode: number;
  mtime: number;
  size: number;
  crc: number;
  method: number;
  compressedSize: number;
  /** Where in the batch output the data starts, or the temporary file holding it. */
  at: number;
  tmp?: string;
  /** The data is not in the output: the caller reads the file from its `src` (see CompressBatch.largeInPlace). */
  inPlace?: boolean;
  /** For a file with more than one name (nlink > 1): its device and inode, so tar can write later names as hardlinks. */
  link?: string;
}

export interface CompressResult {
  files: CompressedFile[];
  /** The whole output buffer (the lent one unless it had to grow); the data is its first `used` bytes. */
  data: Uint8Array;
  used: number;
}

/**
 * The output buffer size with which a batch never grows it: it stops adding files at MAX_OUTPUT,
 * the last file is at most `largeBytes` (plus the byte read past the end to notice growth), and
 * large files are read in pieces into the free tail.
 */
export function outputBytes(largeBytes: number, chunkBytes = CHUNK): number {
  return MAX_OUTPUT + Math.max(largeBytes + 1, chunkBytes);
}

// Perf: one input buffer per thread for deflate levels, grown as needed but never past the largest
// file read whole. Level store reads straight into the output buffer and needs none.
let input = Buffer.allocUnsafe(1 << 20);
let tmpCounter = 0;

const OPEN_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW;

function inodeKey(st: fs.BigIntStats): string {
  return `${st.dev}:${st.ino}`;
}

export function compressBatch(b: CompressBatch): CompressResult {
  const files: CompressedFile[] = [];
  const large = b.largeBytes ?? LARGE_FILE_BYTES;
  const pieceBytes = b.chunkBytes ?? CHUNK;
  let output = b.out ? Buffer.from(b.out.buffer, b.out.byteOffset, b.out.byteLength) : Buffer.allocUnsafe(outputBytes(large, pieceBytes));
  let used = 0;
  // Only a lent buffer smaller than outputBytes (tests) ever grows.
  const ensure = (n: number) => {
    if (used + n <= output.length) return;
    const next = Buffer.allocUnsafe(Math.max(output.length * 2, used + n));
    output.copy(next, 0, 0, used);
    output = next;
  };
  for (const f of b.files) {
    // The walker batches by count (it knows no sizes), so a batch of large files stops here once
    // its output is big enough; the caller sends the rest again. Bounds memory per batch.
    if (used >= MAX_OUTPUT && files.length > 0) break;
    if (f.size === 0) {
      files.push({ mode: 0o100644, mtime: 0, size: 0, crc: 0, method: METHOD_STORE, compressedSize: 0, at: used });
      continue;
    }
    let fd: number;
    try {
      fd = fs.openSync(f.src, OPEN_FLAGS);
    } catch (e) {
      // A tree from the store whose blob is gone (gc, verify --repair, a partial pull) is a missing
      // blob (exit 3, as checkout reports it), not a file that could not be captured.
      if (f.hash !== undefined && (e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new BlobNotFoundError(`blob ${f.hash}/${f.size} is not in the store ${dirname(dirname(dirname(f.src)))}`, {
          digest: `${f.hash}/${f.size}`,
          path: f.src,
          hint: 'fetch it with `treecast pull`, or pack the directory instead',
          cause: e,
        });
      }
      // A symbolic link planted at a blob's name in the store: never read through (O_NOFOLLOW).
      if (f.hash !== undefined && (e as NodeJS.ErrnoException).code === 'ELOOP') {
        throw damagedEntryError(dirname(dirname(dirname(f.src))), f.src, 'a symbolic link', `the file of blob ${f.hash}/${f.size}`, {
          digest: `${f.hash}/${f.size}`,
          then: 'fetch or snapshot the blob again',
        });
      }
      throw new CaptureError(`cannot read ${f.src}: ${(e as NodeJS.ErrnoException).code ?? e}`, { path: f.src, cause: e });
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new CaptureError(`${f.src} is no longer a regular file`, { path: f.src });
      const size = st.size;
      // Exact (bigint) numbers, as a rounded inode could make two files one; stat again only for the rare linked file.
      const link = st.nlink > 1 ? inodeKey(fs.fstatSync(fd, { bigint: true })) : undefined;
      const mode = st.mode;
      const mtime = Math.floor(st.mtimeMs / 1000);
      if (size > large && b.largeInPlace && f.hash === undefined) {
        files.push({ mode, mtime, size, link, crc: 0, method: METHOD_STORE, compressedSize: size, at: used, inPlace: true });
        continue;
      }
      if (size > large) {
        // The free tail of the output buffer holds the pieces (their size is fixed: one tree, one zip).
        ensure(pieceBytes);
        const pieces = output.subarray(used, used + pieceBytes);
        files.push({ mode, mtime, size, link, ...compressLarge(fd, f, size, b.level, b.noCrc === true, pieces, `${b.tmpPrefix}${process.pid}-${++tmpCounter}-${Math.random().toString(36).slice(2)}`), at: used });
        continue;
      }
      // Perf: level store reads the file straight into the output buffer (no input buffer, no copy).
      let into = output;
      let at = used;
      if (b.level > 0) {
        if (input.length < size + 1) input = Buffer.allocUnsafe(Math.max(size + 1, Math.min(input.length * 2, large + 1)));
        into = input;
        at = 0;
      } else ensure(size + 1);
      let got = 0;
      let n: number;
      // Read one byte past the size so a file that grew while read is noticed. A regular file reads
      // short only at its end, so a short read ends the loop: no second read to see the end.
      // Perf: that second read was one pread(2) per file, 78,579 of them packing the Linux tree.
      while (got <= size) {
        const want = size + 1 - got;
        n = fs.readSync(fd, into, at + got, want, got);
        got += n;
        if (n < want) break;
      }
      if (got !== size) throw new CaptureError(`${f.src} changed while it was being read`, { path: f.src });
      const raw = into.subarray(at, at + size);
      if (f.hash !== undefined) verifyBlob(raw, f);
      const crc = b.noCrc ? 0 : zlib.crc32(raw) >>> 0;
      let compressedSize = size;
      let method = METHOD_STORE;
      if (b.level > 0 && size > 0) {
        const z = zlib.deflateRawSync(raw, { level: b.level });
        const data = z.length < size ? z : raw;
        if (data === z) method = METHOD_DEFLATE;
        ensure(data.length);
        data.copy(output, used);
        compressedSize = data.length;
      }
      files.push({ mode, mtime, size, link, crc, method, compressedSize, at: used });
      used += compressedSize;
    } catch (e) {
      throw fsError(e, 'cannot read', f.src);
    } finally {
      fs.closeSync(fd);
    }
  }
  // The whole buffer goes back (moved, not copied: a posted view would clone its whole backing
  // ArrayBuffer, which cost 11 s of system time packing the Linux tree).
  return { files, data: output, used };
}

function verifyBlob(raw: Buffer, f: CompressFile): void {
  const h = sha256Hex(raw);
  if (h !== f.hash || raw.length !== f.size) {
    throw new DigestMismatchError(`corrupt blob ${f.hash}/${f.size}: its bytes hash to ${h}/${raw.length}`, { path: f.src });
  }
}

/**
 * Deflates a large file in independent pieces of `chunk`'s size (each a raw deflate stream ended with a full
 * flush, the last one finished), which concatenate into one valid deflate stream, as pigz does.
 * Falls back to storing the bytes when deflate does not make them smaller.
 */
function compressLarge(fd: number, f: CompressFile, size: number, level: number, noCrc: boolean, chunk: Buffer, tmp: string): Pick<CompressedFile, 'crc' | 'method' | 'compressedSize' | 'tmp'> {
  const out = fs.openSync(tmp, 'wx', 0o600);
  // A piece buffer lent by the caller, not a new one per file: a worker's heap is small and rarely
  // collected, so 16 MiB per large file piled up (pack --level store, Linux tree).
  const pieceBytes = chunk.length;
  try {
    const hash = f.hash !== undefined ? createHash('sha256') : undefined;
    let crc = 0;
    let pos = 0;
    let written = 0;
    const put = (d: Uint8Array) => {
      let off = 0;
      while (off < d.length) off += fs.writeSync(out, d, off, d.length - off);
      written += d.length;
    };
    while (pos < size) {
      const n = fs.readSync(fd, chunk, 0, Math.min(pieceBytes, size - pos), pos);
      if (n === 0) throw new CaptureError(`${f.src} changed while it was being read`, { path: f.src });
      const piece = chunk.subarray(0, n);
      if (!noCrc) crc = zlib.crc32(piece, crc);
      hash?.update(piece);
      pos += n;
      if (level > 0) put(zlib.deflateRawSync(piece, { level, finishFlush: pos < size ? zlib.constants.Z_FULL_FLUSH : zlib.constants.Z_FINISH }));
      else put(piece);
    }
    if (fs.readSync(fd, chunk, 0, 1, pos) !== 0) throw new CaptureError(`${f.src} changed while it was being read`, { path: f.src });
    if (hash && hash.digest('hex') !== f.hash) throw new DigestMismatchError(`corrupt blob ${f.hash}/${f.size}`, { path: f.src });
    if (level > 0 && written >= size) {
      // Deflate did not pay: store the bytes instead.
      fs.ftruncateSync(out, 0);
      written = 0;
      for (pos = 0; pos < size; ) {
        const n = fs.readSync(fd, chunk, 0, Math.min(pieceBytes, size - pos), pos);
        if (n === 0) throw new CaptureError(`${f.src} changed while it was being read`, { path: f.src });
        fs.writeSync(out, chunk, 0, n, pos);
        pos += n;
      }
      return { crc: crc >>> 0, method: METHOD_STORE, compressedSize: size, tmp };
    }
    return { crc: crc >>> 0, method: level > 0 ? METHOD_DEFLATE : METHOD_STORE, compressedSize: written, tmp };
  } catch (e) {
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* gone */
    }
    throw e;
  } finally {
    fs.closeSync(out);
  }
}
