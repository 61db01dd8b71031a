/**
 * Writes a tar stream sequentially (ustar headers, pax records only where ustar cannot hold a
 * name, link, size or time; tar-format.ts), plain or through a compressor: the `zstd` program
 * (`-T0`: every core) or treecast's own parallel gzip (gzip-process.ts: every core, no name or time
 * in the header, so the output depends on the input alone). The compressor runs in its own process
 * and writes the file (or stdout) itself; this process writes the tar stream into its stdin with
 * blocking writes, so a slower compressor holds the writer back instead of filling memory.
 */
import * as fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { ArchiveError, CaptureError, FileSystemError, fsError, type TreecastError } from '../errors.js';
import { BLOCK, END_OF_ARCHIVE, T, encodeHeader, padding, writeUstarHeader, type HeaderFields } from './tar-format.js';
import { openFile } from '../fs/open-file.js';

export type TarCompression = 'none' | 'gzip' | 'zstd';

/** The header fields pack hands to either writer (zip's EntryHeader shape). */
export interface TarEntryHeader {
  name: string;
  mode: number;
  mtime: number;
  size: number;
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
/** GNU tar pads archives to whole records of 20 blocks; so does treecast, for readers that expect it. */
const RECORD = 20 * BLOCK;

const waitCell = new Int32Array(new SharedArrayBuffer(4));

/** Writes all of `buf` to a blocking (or, retried, non-blocking) descriptor. */
export function writeAll(fd: number, buf: Uint8Array, label: string): void {
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') {
        Atomics.wait(waitCell, 0, 0, 1);
        continue;
      }
      throw fsError(e, 'cannot write', label);
    }
  }
}

/** Where tar bytes go: a file or stdout, directly or through a compressor process. */
export class TarOutput {
  private child: ChildProcess | undefined;
  private fd: number;
  private stderr = '';
  private exited: Promise<number | null> | undefined;
  private spawnError: unknown;
  /**
   * How the compressor ended, once it has. Node closes its stdin pipe when it exits, so our
   * descriptor number is then free for the next file this process opens: no write may use it after.
   */
  private ended: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** The compressor's name in messages. */
  private prog = '';

  /** `dest` is the descriptor of the file (or 1 for stdout) the archive ends up in. */
  constructor(dest: number, private readonly label: string, compression: TarCompression, level: number) {
    if (compression === 'none') {
      this.fd = dest;
      return;
    }
    const prog = (this.prog = compression);
    const child = compression === 'zstd' ? spawn('zstd', ['-q', '-c', '-T0', `-${level}`], { stdio: ['pipe', dest, 'pipe'] }) : spawnGzip(dest, level);
    this.child = child;
    child.on('error', (e) => (this.spawnError = e));
    child.on('exit', (code, signal) => (this.ended = { code, signal }));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr = (this.stderr + d).slice(-2000)));
    this.exited = new Promise((r) => child.on('close', (code) => r(code)));
    // Perf: blocking writes into the pipe (Node makes child pipes non-blocking; libuv can set them
    // back): the tar stream is written with plain write(2) calls from this thread, and a full pipe
    // simply waits for the compressor. 500 MiB went through in 0.25 s that way.
    const handle = (child.stdin as unknown as { _handle?: { fd: number; setBlocking?(b: boolean): number } })._handle;
    if (!handle || handle.fd < 0 || handle.setBlocking?.(true) !== 0) {
      child.kill();
      throw new FileSystemError(`cannot run ${prog}: its input pipe is not available`, { path: prog });
    }
    this.fd = handle.fd;
  }

  write(buf: Uint8Array): void {
    this.throwIfGone();
    writeAll(this.fd, buf, this.label);
  }

  /** Writes all of `bufs`, in order, with as few writev(2) calls as the descriptor allows. */
  writev(bufs: Uint8Array[]): void {
    this.throwIfGone();
    let i = 0;
    while (i < bufs.length) {
      let n: number;
      try {
        n = fs.writevSync(this.fd, i === 0 ? bufs : bufs.slice(i));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') {
          Atomics.wait(waitCell, 0, 0, 1);
          continue;
        }
        throw fsError(e, 'cannot write', this.label);
      }
      // A short write (a signal, a non-blocking descriptor): skip what went out, finish the rest.
      while (i < bufs.length && n >= bufs[i]!.length) n -= bufs[i++]!.length;
      if (n > 0) {
        bufs[i] = bufs[i]!.subarray(n);
      }
    }
  }

  /** The compressor could not start, or stopped before the stream ended (its reader went away). */
  private throwIfGone(): void {
    if (this.spawnError) throw this.toolError();
    if (this.ended) throw this.endedError();
  }

  private endedError(): TreecastError {
    const { code, signal } = this.ended!;
    // Its output's reader went away (`pack DIR - --format tar.zst | head`): the EPIPE a plain tar gets.
    if (signal === 'SIGPIPE' || /EPIPE|broken pipe/i.test(this.stderr)) {
      return new FileSystemError(`cannot write ${this.label}: EPIPE (the reader of the ${this.prog} output went away)`, { path: this.label, syscallCode: 'EPIPE' });
    }
    // Its output's disk is full: zstd says "No space left on device", gzip-process.ts the code.
    const full = /ENOSPC|No space left on device/i.test(this.stderr) ? 'ENOSPC' : /EDQUOT|quota exceeded/i.test(this.stderr) ? 'EDQUOT' : undefined;
    if (full) {
      const what = full === 'ENOSPC' ? 'no space left on device' : 'disk quota exceeded';
      return fsError(Object.assign(new Error(`${what}, said ${this.prog}`), { code: full }), 'cannot write', this.label);
    }
    return new ArchiveError(`${this.prog} failed writing ${this.label}: ${this.stderr.trim() || (signal ?? `exit code ${code}`)}`, { path: this.label });
  }

  private toolError(): FileSystemError {
    const prog = this.prog;
    const code = (this.spawnError as NodeJS.ErrnoException).code;
    const hint = prog === 'zstd' ? 'install the zstd program (Debian: apt-get install zstd)' : undefined;
    return new FileSystemError(`cannot run the ${prog} compressor: ${code ?? this.spawnError}`, { path: prog, syscallCode: code, hint });
  }

  /**
   * What a failed write into the compressor stands for. A write meets EPIPE as soon as the
   * compressor has exited, before its exit and its last words reach this thread, so the cause it
   * gave (a full disk, a reader gone) is read once it has ended; any other error is returned as is,
   * and so is this one if the compressor has not ended within 2 s.
   */
  async explain(e: unknown): Promise<unknown> {
    if (!this.child || (e as FileSystemError)?.syscallCode !== 'EPIPE') return e;
    // Its streams closed, not only its exit seen: the stderr that names the cause is read by then.
    const waited = await Promise.race([this.exited!.then(() => true), sleep(2000, false, { ref: false })]);
    return waited && this.ended ? this.endedError() : e;
  }

  /** Ends the stream and waits for the compressor to finish writing. */
  async close(): Promise<void> {
    if (!this.child) return;
    this.child.stdin!.destroy();
    const code = await this.exited!;
    if (this.spawnError) throw this.toolError();
    if (code !== 0) throw this.endedError();
  }

  /** Stops the compressor without waiting (after a failure). */
  abort(): void {
    if (this.child && this.child.exitCode === null) this.child.kill();
  }
}

/**
 * Starts the parallel gzip (gzip-process.ts, beside this file in the library and in the CLI
 * bundle) writing to `dest`, with one thread-pool thread per core.
 */
function spawnGzip(dest: number, level: number): ChildProcess {
  const threads = Math.min(availableParallelism(), 64);
  const script = fileURLToPath(new URL('./gzip-process.js', import.meta.url));
  return spawn(process.execPath, [script, String(level), String(threads * 2)], {
    stdio: ['pipe', dest, 'pipe'],
    env: { ...process.env, UV_THREADPOOL_SIZE: String(threads) },
  });
}

/** Opens a file of the packed tree for reading: never through a symlink, still a regular file of `size` bytes. */
function openSource(src: string, size: number): number {
  let fd: number;
  try {
    fd = fs.openSync(src, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    throw new CaptureError(`cannot read ${src}: ${(e as NodeJS.ErrnoException).code ?? e}`, { path: src, cause: e });
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile() || st.size !== size) {
    fs.closeSync(fd);
    throw new CaptureError(`${src} changed while it was being read`, { path: src });
  }
  return fd;
}

/**
 * Perf: headers, data and padding are gathered and written with one writev(2) per batch of
 * entries instead of one write(2) each (three per file), and the data is never copied: it stays in
 * the batch buffers until `flush`. Packing the Linux tree to .tar.zst (78,579 files) made 648
 * writev calls; with that and large files read here into one reused buffer, the pack took
 * 3.83-4.24 s (sys 1.2-1.5 s, peak RSS 216-228 MB) against 5.49-6.64 s (sys 3.1-3.6 s,
 * 242-248 MB) before, in the same run (2 runs each, load 3-4).
 */
const IOV_MAX = 1024;
/** Piece size for files read here (reused: a fresh 16 MiB buffer per large file drove pack's peak RSS). */
const PIECE = 4 << 20;
let piece: Buffer | undefined;

/**
 * Headers and padding are written into this reused buffer (one run of it per gap between data
 * buffers in the gathered list), which is written out and reused whenever it fills.
 *
 * Perf: with a Buffer per header (and per padding view), packing the Linux tree to .tar.zst used
 * 8.8-10.0 s of CPU (zstd included) against 7.6-8.4 s written here (3 runs each, interleaved,
 * load 7-9); the main thread's garbage collection fell from 0.9 s to 0.34 s (one profile each).
 */
const SLAB = 256 << 10;

/**
 * A sequential tar writer with the add / addFromFile / finish shape of ZipWriter. Data handed to
 * `add` is held by reference until `flush` (or a later call that fills the gather list): the
 * caller must flush before reusing a buffer it passed.
 */
export class TarWriter {
  private written = 0;
  private iov: Uint8Array[] = [];
  private readonly slab = Buffer.allocUnsafe(SLAB);
  /** Bytes of the slab in use since the last flush; those from `runStart` are not in `iov` yet. */
  private slabUsed = 0;
  private runStart = 0;
  constructor(private readonly out: TarOutput) {}

  /** Writes everything gathered so far. */
  flush(): void {
    this.endRun();
    this.slabUsed = this.runStart = 0;
    if (this.iov.length === 0) return;
    const iov = this.iov;
    this.iov = [];
    this.out.writev(iov);
  }

  /** Uncompressed bytes written so far. */
  get size(): number {
    return this.written;
  }

  private endRun(): void {
    if (this.slabUsed === this.runStart) return;
    this.iov.push(this.slab.subarray(this.runStart, this.slabUsed));
    this.runStart = this.slabUsed;
  }

  private put(b: Uint8Array): void {
    if (b.length === 0) return;
    this.endRun();
    this.iov.push(b);
    this.written += b.length;
    if (this.iov.length >= IOV_MAX) this.flush();
  }

  /** Where `n` more bytes of the slab start (flushing first when it is full). */
  private reserve(n: number): number {
    if (this.slabUsed + n > SLAB) this.flush();
    return this.slabUsed;
  }

  private zeros(n: number): void {
    if (n === 0) return;
    const at = this.reserve(n);
    this.slab.fill(0, at, at + n);
    this.slabUsed += n;
    this.written += n;
  }

  private putHeader(f: HeaderFields): void {
    const at = this.reserve(BLOCK);
    if (writeUstarHeader(this.slab, at, f.name, f.typeflag, f.mode, f.size, f.mtime, f.linkname)) {
      this.slabUsed += BLOCK;
      this.written += BLOCK;
    } else this.put(encodeHeader(f)); // pax records: rare, allocated
  }

  private header(h: TarEntryHeader, linkname?: string): number {
    const fmt = h.mode & S_IFMT;
    const typeflag = fmt === S_IFDIR ? T.DIR : fmt === S_IFLNK ? T.SYMLINK : T.FILE;
    const size = typeflag === T.FILE ? h.size : 0;
    this.putHeader({ name: h.name, typeflag, mode: h.mode & 0o7777, size, mtime: h.mtime, linkname });
    return size;
  }

  /** Adds an entry: a directory (name ends in '/'), a symlink (`data` is its target) or a file with its data. */
  add(h: TarEntryHeader, data?: Uint8Array): void {
    if ((h.mode & S_IFMT) === S_IFLNK) {
      this.header(h, Buffer.from(data ?? []).toString('utf8'));
      return;
    }
    const size = this.header(h);
    if (size === 0) return;
    this.put(data!);
    this.zeros(padding(size));
  }

  /** Adds a hardlink entry: `h.name` is another name of the file an earlier entry, `target`, wrote. */
  addHardlink(h: TarEntryHeader, target: string): void {
    this.putHeader({ name: h.name, typeflag: T.HARDLINK, mode: h.mode & 0o7777, size: 0, mtime: h.mtime, linkname: target });
  }

  /**
   * Adds a file whose data is in `src` (read in pieces, so memory stays bounded). With `source`
   * set, `src` is the user's file itself: it is opened without following a symlink and must still
   * be a regular file of `h.size` bytes, else the pack stops.
   */
  addFromFile(h: TarEntryHeader, src: string, source = false): void {
    const size = this.header(h);
    const fd = source ? openSource(src, size) : openFile(src, 'r', 'cannot read');
    try {
      piece ??= Buffer.allocUnsafe(PIECE);
      for (let pos = 0; pos < size; ) {
        this.flush(); // the piece buffer is about to be refilled
        const n = fs.readSync(fd, piece, 0, Math.min(piece.length, size - pos), pos);
        if (n === 0) throw new ArchiveError(`${src} is shorter than its ${size} bytes`, { path: src });
        this.put(piece.subarray(0, n));
        pos += n;
      }
      this.flush();
      if (source && fs.readSync(fd, piece, 0, 1, size) !== 0) throw new CaptureError(`${src} changed while it was being read`, { path: src });
    } finally {
      fs.closeSync(fd);
    }
    this.zeros(padding(size));
  }

  /** The end-of-archive blocks, padded to a whole record. */
  finish(): void {
    this.put(END_OF_ARCHIVE);
    const rest = (RECORD - (this.written % RECORD)) % RECORD;
    if (rest > 0) this.put(Buffer.alloc(rest));
    this.flush();
  }
}
