/**
 * Worker op 'archive.compress': reads and compresses one batch of files for pack. Each file is
 * opened with O_NOFOLLOW and fstat-ed once (the only stat pack makes of a file), read whole into a
 * reused buffer, CRC-ed and deflated; data that deflate would make larger is stored. The batch's
 * output is one buffer (copied once to the main thread). Files over LARGE_FILE_BYTES are deflated
 * in chunks into a temporary file beside the archive, so memory stays bounded for any size.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { CaptureError, DigestMismatchError, fsError } from '../errors.js';
import { METHOD_DEFLATE, METHOD_STORE } from './zip-format.js';

export const LARGE_FILE_BYTES = 64 << 20;
const CHUNK = 16 << 20;
/**
 * A batch returns early once its output reaches this size. Perf: 8 MiB keeps a thread's output
 * buffer at 16 MiB (pack of the Linux tree: peak RSS under 300 MB) and is still ~100 files of
 * work per message.
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
}

export interface CompressResult {
  files: CompressedFile[];
  data: Buffer;
}

// Perf: one input and one output buffer per thread, grown as needed (postMessage copies the
// output, so it can be reused at once).
let input = Buffer.allocUnsafe(1 << 20);
let output = Buffer.allocUnsafe(8 << 20);
let tmpCounter = 0;

const OPEN_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW;

export function compressBatch(b: CompressBatch): CompressResult {
  const files: CompressedFile[] = [];
  let used = 0;
  const ensure = (n: number) => {
    if (used + n <= output.length) return;
    const next = Buffer.allocUnsafe(Math.max(output.length * 2, used + n));
    output.copy(next, 0, 0, used);
    output = next;
  };
  const large = b.largeBytes ?? LARGE_FILE_BYTES;
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
      throw new CaptureError(`cannot read ${f.src}: ${(e as NodeJS.ErrnoException).code ?? e}`, { path: f.src, cause: e });
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new CaptureError(`${f.src} is no longer a regular file`, { path: f.src });
      const size = st.size;
      const base = { mode: st.mode, mtime: Math.floor(st.mtimeMs / 1000), size };
      if (size > large) {
        files.push({ ...base, ...compressLarge(fd, f, size, b.level, b.noCrc === true, b.chunkBytes ?? CHUNK, `${b.tmpPrefix}${process.pid}-${++tmpCounter}-${Math.random().toString(36).slice(2)}`), at: used });
        continue;
      }
      if (input.length < size + 1) input = Buffer.allocUnsafe(Math.max(size + 1, input.length * 2));
      let got = 0;
      let n: number;
      // Read one byte past the size so a file that grew while read is noticed.
      while (got <= size && (n = fs.readSync(fd, input, got, size + 1 - got, got)) > 0) got += n;
      if (got !== size) throw new CaptureError(`${f.src} changed while it was being read`, { path: f.src });
      const raw = input.subarray(0, size);
      if (f.hash !== undefined) verifyBlob(raw, f);
      const crc = b.noCrc ? 0 : zlib.crc32(raw) >>> 0;
      let data: Buffer = raw;
      let method = METHOD_STORE;
      if (b.level > 0 && size > 0) {
        const z = zlib.deflateRawSync(raw, { level: b.level });
        if (z.length < size) {
          data = z;
          method = METHOD_DEFLATE;
        }
      }
      ensure(data.length);
      data.copy(output, used);
      files.push({ ...base, crc, method, compressedSize: data.length, at: used });
      used += data.length;
    } catch (e) {
      throw fsError(e, 'cannot read', f.src);
    } finally {
      fs.closeSync(fd);
    }
  }
  // Perf: a trimmed copy, because posting a view clones its whole backing ArrayBuffer (the reused
  // output buffer is 8+ MiB): packing the Linux tree spent 11 s of system time on that.
  return { files, data: Buffer.from(output.subarray(0, used)) };
}

function verifyBlob(raw: Buffer, f: CompressFile): void {
  const h = createHash('sha256').update(raw).digest('hex');
  if (h !== f.hash || raw.length !== f.size) {
    throw new DigestMismatchError(`corrupt blob ${f.hash}/${f.size}: its bytes hash to ${h}/${raw.length}`, { path: f.src });
  }
}

/**
 * Deflates a large file in independent 16 MiB pieces (each a raw deflate stream ended with a full
 * flush, the last one finished), which concatenate into one valid deflate stream, as pigz does.
 * Falls back to storing the bytes when deflate does not make them smaller.
 */
function compressLarge(fd: number, f: CompressFile, size: number, level: number, noCrc: boolean, pieceBytes: number, tmp: string): Pick<CompressedFile, 'crc' | 'method' | 'compressedSize' | 'tmp'> {
  const out = fs.openSync(tmp, 'wx', 0o600);
  try {
    // The thread's read buffer, not a new one per file: a worker's heap is small and rarely
    // collected, so 16 MiB per large file piled up (pack --level store, Linux tree).
    if (input.length < pieceBytes) input = Buffer.allocUnsafe(pieceBytes);
    const chunk = input;
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
