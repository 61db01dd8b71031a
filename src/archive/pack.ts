/**
 * pack: a directory on disk, or a tree in the store, -> zip or tar. The entry list is made a
 * batch ahead of the readers (a walk with one readdir per directory; files are stat-ed by the
 * worker that reads them, so each file costs one fstat); file batches are read (for zip,
 * compressed) in worker threads (pack-op.ts) and written in entry order as their results arrive.
 * The archive is written to a temporary name beside OUT and renamed when complete, so OUT is never
 * a half-written archive.
 */
import * as fs from 'node:fs';
import { crc32 as zcrc32 } from 'node:zlib';
import { basename, dirname, resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { MAX_DEPTH, compareNames } from '../core/names.js';
import type { Directory } from '../core/reapi.js';
import type { Digest } from '../core/digest.js';
import { TreeReader } from '../store/tree-reader.js';
import type { ArchiveSummary } from './unpack.js';
import { defaultStorePath, type LocalStore } from '../store/local.js';
import { CaptureError, InvalidTreeError, TargetError, UsageError, fsError } from '../errors.js';
import { escapeControl } from '../core/display.js';
import { lossyEntryName, lossyLinkTarget } from '../fs/byte-names.js';
import { ARCHIVE_YOUNG_MB, WorkerPool, runBatches } from '../fs/worker-pool.js';
import { ZipWriter } from './zip-writer.js';
import { TarOutput, TarWriter } from './tar-writer.js';
import { METHOD_STORE, S_IFDIR, S_IFLNK, S_IFREG } from './zip-format.js';
import { outputBytes, type CompressBatch, type CompressFile, type CompressResult } from './pack-op.js';
import { throwIfAborted } from './unpack.js';

export const LEVELS = { store: 0, fast: 1, default: 6, best: 9 } as const;
export type Level = keyof typeof LEVELS;
/** What --level means for the compressors of tar archives. */
const TAR_LEVELS = { gzip: { store: 1, fast: 1, default: 6, best: 9 }, zstd: { store: 1, fast: 1, default: 3, best: 19 } } as const;

export const FORMATS = ['zip', 'tar', 'tar.gz', 'tar.zst'] as const;
export type ArchiveFormat = (typeof FORMATS)[number];

/** The format `--format` names, else the one OUT's name ends in (zip when it names none); '-' needs --format. */
export function formatOf(out: string, format?: ArchiveFormat): ArchiveFormat {
  if (format !== undefined) {
    if (!FORMATS.includes(format)) throw new UsageError(`--format must be one of ${FORMATS.join(', ')}, got '${format}'`);
    return format;
  }
  if (out === '-') throw new UsageError("writing to stdout ('-') needs --format zip, tar, tar.gz or tar.zst");
  if (/\.tar$/i.test(out)) return 'tar';
  if (/\.(tar\.gz|tgz)$/i.test(out)) return 'tar.gz';
  if (/\.(tar\.zst|tzst)$/i.test(out)) return 'tar.zst';
  // A name that promises another format (out.tar.xz) would get a zip under it, found out only when
  // something tries to read it as what its name says.
  const other = /(\.tar\.[^./]+|\.(?:txz|tbz2?|tlz|taz|gz|zst|xz|bz2|lz|lz4|lzma|7z|rar))$/i.exec(out);
  if (other) {
    throw new UsageError(`cannot tell the format of OUT '${out}': pack writes zip, tar, tar.gz or tar.zst, and '${other[1]}' is none of them`, {
      hint: 'name OUT .zip, .tar, .tar.gz (.tgz) or .tar.zst (.tzst), or pass --format',
    });
  }
  return 'zip';
}

/** Trees from the store carry no times: entries get this fixed one, so one tree packs to one zip. */
export const STORE_MTIME = 315532800; // 1980-01-01T00:00:00Z, the earliest DOS time

export interface PackOptions {
  level: Level;
  /** Default: told by OUT's name (see formatOf). */
  format?: ArchiveFormat;
  jobs: number;
  onProgress?: (p: { done: number; total: number; bytes: number }) => void;
  onWarning?: (code: string, message: string) => void;
  /** Files above this many bytes are compressed via a temporary file (default 8 MiB). */
  largeBytes?: number;
  /** Piece size for large files (default 16 MiB; tests lower it). */
  chunkBytes?: number;
  /** Aborting stops after the batches in flight; OUT is left as it was. */
  signal?: AbortSignal;
  /** A store that lies inside the packed directory is left out (default: the default store's path). */
  storeRoot?: string;
}

/** What pack reports: the same counts as unpack. */
export type PackSummary = ArchiveSummary;

type Item =
  | { kind: 'dir'; name: string; mode: number; mtime: number }
  | { kind: 'symlink'; name: string; target: string; mtime: number }
  | { kind: 'file'; name: string; batch: number; slot: number; mode?: number; mtime?: number };

/**
 * What pack writes: the entries in order, their files grouped in batches. The tree is listed
 * while the first batches are read: `more()` lists on until another batch is closed (or the walk
 * ends) and says whether the walk goes on.
 */
interface Source {
  items: Item[];
  batches: CompressFile[][];
  /** Files listed so far. */
  files: number;
  more(): boolean;
}

// Perf: batches of up to 128 files / 4 MiB: enough work per message to hide the round trip.
const BATCH_FILES = 128;
const BATCH_BYTES = 4 << 20;
/**
 * Output buffers pack owns beyond one per batch in flight: spares let workers run ahead while an
 * earlier batch keeps the writer waiting.
 *
 * Perf: each batch is lent one of a fixed set of output buffers and the buffer comes back with its
 * result (moved both ways), so compressed output in flight or waiting is bounded by construction.
 * A batch that is not the one the writer needs next waits for a free buffer. Unbounded,
 * `--level store` on the Linux tree held up to 359 MB of results (peak RSS 730 MB-1.4 GB); with a
 * 32 MiB bound on waiting bytes but a fresh buffer per result, freed only when V8 collected it,
 * peak RSS was still 385-430 MB.
 */
const SPARE_BUFFERS = 2;
/**
 * Perf: a file read whole is held by its worker in a buffer that grows by doubling and is kept for
 * reuse, plus its output buffer; at 64 MiB, the few 10-30 MB files of the Linux tree left each
 * worker holding ~130 MB. Larger files go through a temporary file in pieces (10 files there).
 */
const LARGE_BYTES = 8 << 20;

/**
 * Items written are forgotten in steps of this many (batches sent, in steps of this many files).
 *
 * Perf: kept to the end, the Linux tree's 83,730 items, their batches' file lists and the sent
 * batches survived every scavenge of the main thread and were promoted. Packing it to .tar.zst
 * took 181-338 ms of GC that way against 155-173 ms dropping them (--trace-gc, 3 interleaved runs
 * each, load 9-11 on 2 cores). With this, no per-file objects for the listing's slots and no
 * progress callback without a bar: 5.16-5.43 s of CPU (user + sys, zstd's included) against
 * 5.27-5.65 s, peak RSS 98-111 MB against 133-134 MB (4 interleaved pairs, load 12-14; the
 * `tar -cf - . | zstd -T0 -3` beside them 4.94-5.43 s). A second set of 5 at load 12.5-13.3 showed
 * less: medians 5.92 s against 5.96 s (tar | zstd 5.83 s), less CPU in 4 pairs of 5.
 */
const FORGET_AFTER = 4096;
/** What a written batch's file list becomes. */
const WRITTEN: CompressFile[] = [];

/** A fixed set of equal buffers, made on first need and handed out again when given back. */
class BufferSet {
  private readonly free: Buffer[] = [];
  private made = 0;
  constructor(
    private readonly count: number,
    private readonly bytes: number,
  ) {}
  get available(): boolean {
    return this.free.length > 0 || this.made < this.count;
  }
  take(): Buffer | undefined {
    if (this.free.length > 0) return this.free.pop();
    if (this.made >= this.count) return undefined;
    this.made++;
    return Buffer.allocUnsafe(this.bytes);
  }
  give(b: Uint8Array): void {
    this.free.push(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
  }
}

class Batcher {
  readonly batches: CompressFile[][] = [];
  files = 0;
  private cur: CompressFile[] = [];
  private bytes = 0;
  /** Adds `f` to the open batch (closing it first when full) and returns its slot there; `open` is that batch's number. */
  add(f: CompressFile, sizeHint: number): number {
    if (this.cur.length >= BATCH_FILES || (this.cur.length > 0 && this.bytes + sizeHint > BATCH_BYTES)) this.close();
    this.cur.push(f);
    this.bytes += sizeHint;
    this.files++;
    return this.cur.length - 1;
  }
  get open(): number {
    return this.batches.length;
  }
  close(): void {
    if (this.cur.length === 0) return;
    this.batches.push(this.cur);
    this.cur = [];
    this.bytes = 0;
  }
}

/** A Source whose `more()` takes entries by `step` while `listing()` holds, until another batch is closed. */
function listedInSteps(items: Item[], batcher: Batcher, listing: () => boolean, step: () => void): Source {
  const src: Source = {
    items,
    batches: batcher.batches,
    files: 0,
    more: () => {
      const had = batcher.batches.length;
      while (listing() && batcher.batches.length === had) step();
      if (!listing()) batcher.close();
      src.files = batcher.files;
      return listing();
    },
  };
  return src;
}

/**
 * Lists a directory tree: parents before children, names in byte order, one readdir per
 * directory, a batch at a time (see Source).
 *
 * Perf: listing the Linux tree whole (readdir, lstat of directories, sorting) took about 0.15 s of
 * the main thread (one profile) before the first file was read, while the compressor waited;
 * listed a batch ahead of the readers, the first batch goes out after a few directories.
 */
export function listDirectory(root: string, leftOut: LeftOut, warn: PackOptions['onWarning']): Source {
  const items: Item[] = [];
  const batcher = new Batcher();
  // Sizes are unknown until a worker fstat-s the file; batch by count with a nominal size.
  const NOMINAL = 16 << 10;
  /** The directories being listed, innermost last, each with its identity and the next of its entries to take. */
  const stack: { abs: string; rel: string; depth: number; id: DirId; ents: fs.Dirent[]; i: number }[] = [];
  const open = (abs: string, rel: string, depth: number, id: DirId) => {
    let ents: fs.Dirent[];
    try {
      ents = fs.readdirSync(abs, { withFileTypes: true });
    } catch (e) {
      throw fsError(e, 'cannot read directory', abs);
    }
    ents.sort((a, b) => compareNames(a.name, b.name));
    stack.push({ abs, rel, depth, id, ents, i: 0 });
  };
  /** Takes the next entry of the innermost directory (or leaves it when it has none left). */
  const step = () => {
    const f = stack[stack.length - 1]!;
    if (f.i === f.ents.length) {
      stack.pop();
      return;
    }
    const d = f.ents[f.i++]!;
    const childAbs = `${f.abs}/${d.name}`;
    const name = f.rel + d.name;
    if (leftOut.file(f.id, d.name)) return;
    // Else its lossy spelling is read: ENOENT, or a sibling really named with U+FFFD packed twice.
    if (d.name.includes('\ufffd')) refuseByteName(f.abs, d.name);
    if (d.isFile()) {
      // Perf: no `{ ...batcher.add() }` object per file (see listStoreTree).
      const slot = batcher.add({ src: childAbs }, NOMINAL);
      items.push({ kind: 'file', name, batch: batcher.open, slot });
    } else if (d.isDirectory()) {
      const st = lstat(childAbs);
      if (leftOut.dir !== undefined && sameDir(st, leftOut.dir)) return;
      items.push({ kind: 'dir', name: `${name}/`, mode: st.mode, mtime: Math.floor(st.mtimeMs / 1000) });
      if (f.depth > 1024) throw new TargetError(`${childAbs} nests deeper than 1024 levels`, { path: childAbs });
      open(childAbs, `${name}/`, f.depth + 1, st);
    } else if (d.isSymbolicLink()) {
      const st = lstat(childAbs);
      let target: string;
      try {
        target = fs.readlinkSync(childAbs);
      } catch (e) {
        throw fsError(e, 'cannot read symlink', childAbs);
      }
      // Read lossily too: a target that is not UTF-8 would be packed as another one.
      if (target.includes('\ufffd')) refuseByteTarget(childAbs);
      items.push({ kind: 'symlink', name, target, mtime: Math.floor(st.mtimeMs / 1000) });
    } else {
      warn?.('ARCHIVE_SPECIAL_SKIPPED', `skipped special file ${childAbs} (socket, FIFO or device)`);
    }
  };
  open(root, '', 0, dirId(root) ?? { dev: -1, ino: -1 });
  return listedInSteps(items, batcher, () => stack.length > 0, step);
}

/** Node decodes a name that is not UTF-8 lossily (U+FFFD): the raw bytes tell it from a real U+FFFD. */
function refuseByteName(dirAbs: string, name: string): void {
  const raw = lossyEntryName(dirAbs, name);
  if (raw === undefined) return;
  throw new CaptureError(`${dirAbs}/${escapeControl(raw)} has a name that is not valid UTF-8; treecast's zip and tar entries hold UTF-8 names only`, {
    path: `${dirAbs}/${name}`,
    hint: 'rename it (for example with convmv) or move it out of the directory',
  });
}

function refuseByteTarget(path: string): void {
  const raw = lossyLinkTarget(path);
  if (raw === undefined) return;
  throw new CaptureError(`symlink ${escapeControl(path)} has a target that is not valid UTF-8 ('${escapeControl(raw)}'); treecast's zip and tar entries hold UTF-8 targets only`, {
    path,
    hint: 'point it at a UTF-8 name, or move it out of the directory',
  });
}

/** A directory's identity: the same directory under any spelling (symlinks, `..`, bind mounts). */
export interface DirId {
  dev: number;
  ino: number;
}

function dirId(p: string): DirId | undefined {
  const st = fs.statSync(p, { throwIfNoEntry: false });
  return st?.isDirectory() ? { dev: st.dev, ino: st.ino } : undefined;
}

function sameDir(a: DirId, b: DirId): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/**
 * What a listing of a directory leaves out, told by identity rather than by path, as GNU tar
 * tells "file is the archive; not dumped", so a symlinked spelling of DIR or OUT changes nothing:
 * `file(dir, name)` for the archive being written and its temporary files (a name in the
 * directory that holds them), `dir` for a store inside DIR (as snapshot leaves it out).
 */
export interface LeftOut {
  file(dir: DirId, name: string): boolean;
  dir?: DirId;
}

function lstat(p: string): fs.Stats {
  try {
    return fs.lstatSync(p);
  } catch (e) {
    throw fsError(e, 'cannot stat', p);
  }
}

/**
 * Lists a tree of the store, with fixed modes (0644/0755) and time, in TreeReader.walk's order
 * (each directory's files, then its symlinks, then each subdirectory and what it holds), a batch
 * at a time like listDirectory; directory messages come from the tree's pack when it has one.
 *
 * Perf: listed whole before the first batch, the Linux tree's 5,096 directory messages took about
 * 0.4 s of the main thread (one profile) while the compressor waited. With this, one reader and
 * one-shot hashing, `pack DIGEST out.tar.zst` of that tree took 8.1-9.0 s (CPU 9.0-9.7 s) against
 * 9.7-15.7 s (CPU 11.6-13.1 s) before, the same bytes (3 runs each, interleaved, load 9-10).
 */
export function listStoreTree(store: LocalStore, root: Digest): Source {
  const reader = new TreeReader(store);
  reader.usePack(root);
  const items: Item[] = [];
  const batcher = new Batcher();
  /** Blob shard folders (by number) found real folders (LocalStore.checkShard). */
  const checkedShards = new Uint8Array(256);
  /** The directories being listed, innermost last; `i` runs over files, then symlinks, then directories. */
  const stack: { dir: Directory; prefix: string; depth: number; i: number }[] = [];
  const open = (d: Digest, prefix: string, depth: number) => {
    if (depth > MAX_DEPTH) throw new InvalidTreeError(`tree nests deeper than ${MAX_DEPTH} levels at '${prefix}'`);
    stack.push({ dir: reader.getSync(d), prefix, depth, i: 0 });
  };
  const step = () => {
    const f = stack[stack.length - 1]!;
    const { files, symlinks, directories } = f.dir;
    let i = f.i++;
    if (i < files.length) {
      const e = files[i]!;
      const src = store.blobPath(e.digest.hash);
      // The shard folder checked as every blob reader does (a link there is refused, never read
      // through; the worker's O_NOFOLLOW open guards only the blob's own name); an empty file is not
      // read at all. Perf: looked up by shard number here, not by checkShard's folder path per file:
      // 78,549 blob paths (the Linux tree's count, a synthetic store, 14 rounds in 2 processes, load
      // ~10) took 7.7-29.2 ms of CPU (median 11.9) against 33.3-61.7 ms (median 41.1) calling
      // checkShard for each (blobPath alone: 2.5-7.6 ms).
      const shard = parseInt(e.digest.hash.slice(0, 2), 16);
      if (checkedShards[shard] === 0 && e.digest.size > 0) {
        store.checkShard(src);
        checkedShards[shard] = 1;
      }
      const c: CompressFile = { src, hash: e.digest.hash, size: e.digest.size };
      const slot = batcher.add(c, e.digest.size);
      items.push({ kind: 'file', name: f.prefix + e.name, mode: S_IFREG | (e.executable ? 0o755 : 0o644), mtime: STORE_MTIME, batch: batcher.open, slot });
      return;
    }
    i -= files.length;
    if (i < symlinks.length) {
      const s = symlinks[i]!;
      items.push({ kind: 'symlink', name: f.prefix + s.name, target: s.target, mtime: STORE_MTIME });
      return;
    }
    i -= symlinks.length;
    if (i < directories.length) {
      const d = directories[i]!;
      items.push({ kind: 'dir', name: `${f.prefix}${d.name}/`, mode: S_IFDIR | 0o755, mtime: STORE_MTIME });
      open(d.digest, `${f.prefix}${d.name}/`, f.depth + 1);
      return;
    }
    stack.pop();
  };
  open(root, '', 0);
  return listedInSteps(items, batcher, () => stack.length > 0, step);
}

/**
 * Worker threads that read (and for zip, compress) the files: `jobs`, except for a compressed tar,
 * whose compressor runs in its own process on every core; there one reader per four cores keeps it
 * fed (a reader moves over 1 GB/s; zstd -3 takes about 0.3-0.5 GB/s per core). For zstd on fewer
 * than four cores the files are read on this thread (0: inline), as GNU tar reads them.
 *
 * Perf: packing the Linux tree to .tar.zst on 2 cores, 1 reader against 2 used 7.5-8.0 s of CPU
 * against 8.0-10.2 s (zstd's threads included; 3 runs each, interleaved, load 6-7), and peak RSS
 * 188-190 MB against 207-216 MB. Inline against 1 reader, treecast's own CPU (zstd's taken out,
 * timed on its own) was 1.6-1.8 s against 2.0-2.2 s (3 runs each, interleaved, load 4-7), and
 * 1.78-1.95 s against 2.33-2.49 s (4 pairs at load 14-19; same archive bytes in every pair): the
 * reader's posts, its isolate's GC and the thread hand-offs go, and this thread, which waits on
 * the compressor most of the time, does the reads; peak RSS 133-135 MB against 173-177 MB. Not for
 * gzip (treecast's own compressor, gzip-process.ts): one pair of runs at load 9 took 41.6 s inline
 * against 29.9 s with a reader, for the same CPU.
 */
export function readerThreads(format: ArchiveFormat, jobs: number, cores = availableParallelism()): number {
  if (format !== 'tar.gz' && format !== 'tar.zst') return jobs;
  return Math.min(jobs, Math.max(format === 'tar.zst' ? 0 : 1, Math.floor(cores / 4)));
}

export function checkPackOptions(o: PackOptions): void {
  if (!(o.level in LEVELS)) throw new UsageError(`--level must be one of ${Object.keys(LEVELS).join(', ')}, got '${o.level}'`);
  if (!(Number.isInteger(o.jobs) && o.jobs >= 0 && o.jobs <= 256)) throw new UsageError(`--jobs must be an integer from 0 to 256, got ${o.jobs}`);
}

function specialKind(st: fs.Stats | undefined): string | undefined {
  if (st?.isCharacterDevice()) return 'character device';
  if (st?.isBlockDevice()) return 'block device';
  if (st?.isFIFO()) return 'FIFO';
  if (st?.isSocket()) return 'socket';
  return undefined;
}

/** Packs a directory (`{dir}`) or a store tree (`{store, root}`) into `out`. */
export async function pack(source: { dir: string } | { store: LocalStore; root: Digest }, out: string, opts: PackOptions): Promise<PackSummary> {
  checkPackOptions(opts);
  const t0 = process.hrtime.bigint();
  const format = formatOf(out, opts.format);
  const toStdout = out === '-';
  const outPath = toStdout ? '-' : resolve(out);
  if (!toStdout && fs.statSync(outPath, { throwIfNoEntry: false })?.isDirectory()) {
    throw new TargetError(`cannot write the archive to ${outPath}: it is a directory`, { path: outPath, hint: 'name the archive file to write, such as DIR/out.zip' });
  }
  // OUT is replaced by a renamed file: a device or FIFO there (/dev/null as root) would be replaced, not written to.
  const existing = toStdout ? undefined : fs.lstatSync(outPath, { throwIfNoEntry: false });
  const special = specialKind(existing);
  if (special) {
    throw new TargetError(`cannot write the archive to ${outPath}: it is a ${special}, which pack would replace with a file`, {
      path: outPath,
      hint: `write to standard output and redirect it: treecast pack SOURCE - --format ${format} > ${outPath}`,
    });
  }
  const tmp = toStdout ? '-' : `${dirname(outPath)}/.${outPath.slice(dirname(outPath).length + 1)}.treecast-${process.pid}`;
  const tmpPrefix = toStdout ? `${resolve('.')}/.treecast-pack-large-` : `${tmp}-large-`;
  const src = 'dir' in source ? listDirectory(resolve(source.dir), leftOutOf(outPath, tmp, tmpPrefix, opts.storeRoot ?? defaultStorePath()), opts.onWarning) : listStoreTree(source.store, source.root);
  // Three batches decide between worker threads and running inline (see the pool below).
  let listing = true;
  while (listing && src.batches.length < 3) listing = src.more();
  // tar: files are read uncompressed by the workers; the whole stream is compressed on its way out.
  const level = format === 'zip' ? LEVELS[opts.level] : 0;
  let fd: number;
  try {
    fd = toStdout ? 1 : fs.openSync(tmp, 'wx', 0o644);
  } catch (e) {
    throw fsError(e, 'cannot create the archive', outPath);
  }
  let tarOut: TarOutput | undefined;
  let writer: ZipWriter | TarWriter;
  try {
    // An OUT replaced keeps its permissions (a private archive stays private), as `tar -cf` over it does.
    if (existing?.isFile()) fs.fchmodSync(fd, existing.mode & 0o777);
    if (format === 'zip') writer = new ZipWriter(fd, outPath);
    else {
      const compression = format === 'tar.gz' ? 'gzip' : format === 'tar.zst' ? 'zstd' : 'none';
      tarOut = new TarOutput(fd, outPath, compression, compression === 'none' ? 0 : TAR_LEVELS[compression][opts.level]);
      writer = new TarWriter(tarOut);
    }
  } catch (e) {
    if (!toStdout) {
      fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
    }
    throw e;
  }
  /**
   * Results by batch number: a batch may come back in parts (each from its first slot `start`);
   * `lent` when its buffer is one of `buffers`, given back once the part is written.
   */
  const results = new Map<number, { start: number; r: CompressResult; lent: boolean }[]>();
  const pending = new Set<string>();
  let next = 0;
  // tar from a directory: the first name written of each file with several (by device and inode).
  // Not from the store, where files with equal content share a blob but are not links.
  const linkNames = format !== 'zip' && 'dir' in source ? new Map<string, string>() : undefined;
  let done = 0;
  let bytesIn = 0;
  let files = 0;
  let dirs = 0;
  let symlinks = 0;
  let bytesOut = 0;

  /** Batches before this one are written whole; their file lists are dropped. */
  let firstUnwritten = 0;
  // Writes every item whose data is ready, in list order; tar's gathered output goes out at the end.
  const drain = () => {
    drainReady();
    if (writer instanceof TarWriter) writer.flush();
    // Perf: written items are dropped, so they die young instead of being kept (and promoted by
    // every scavenge) to the end: see FORGET_AFTER.
    if (next >= FORGET_AFTER) {
      src.items.splice(0, next);
      next = 0;
    }
  };
  const drainReady = () => {
    for (; next < src.items.length; next++) {
      const it = src.items[next]!;
      if (it.kind === 'file' && it.batch > firstUnwritten) {
        // Items come in batch order: every file of the earlier batches is written.
        for (; firstUnwritten < it.batch; firstUnwritten++) src.batches[firstUnwritten] = WRITTEN;
      }
      if (it.kind === 'dir') {
        writer.add({ name: it.name, mode: it.mode, mtime: it.mtime, method: METHOD_STORE, crc: 0, compressedSize: 0, size: 0 });
        dirs++;
      } else if (it.kind === 'symlink') {
        const data = Buffer.from(it.target);
        writer.add({ name: it.name, mode: S_IFLNK | 0o777, mtime: it.mtime, method: METHOD_STORE, crc: crc32(data), compressedSize: data.length, size: data.length }, data);
        symlinks++;
      } else {
        const part = results.get(it.batch)?.find((x) => it.slot >= x.start && it.slot < x.start + x.r.files.length);
        if (!part) return;
        const r = part.r;
        const f = r.files[it.slot - part.start]!;
        const h = { name: it.name, mode: it.mode ?? f.mode, mtime: it.mtime ?? f.mtime, method: f.method, crc: f.crc, compressedSize: f.compressedSize, size: f.size };
        // A file with another name already written becomes a hardlink entry, as GNU tar writes it.
        const firstName = linkNames && f.link !== undefined ? linkNames.get(f.link) : undefined;
        if (firstName !== undefined) (writer as TarWriter).addHardlink(h, firstName);
        else if (f.inPlace) (writer as TarWriter).addFromFile(h, src.batches[it.batch]![it.slot]!.src, true);
        else if (f.tmp) writer.addFromFile(h, f.tmp);
        else writer.add(h, r.data.subarray(f.at, f.at + f.compressedSize));
        if (linkNames && f.link !== undefined && firstName === undefined) linkNames.set(f.link, it.name);
        if (f.tmp) {
          fs.unlinkSync(f.tmp);
          pending.delete(f.tmp);
        }
        if (it.slot === part.start + r.files.length - 1) {
          const parts = results.get(it.batch)!;
          parts.splice(parts.indexOf(part), 1);
          if (part.lent) {
            if (writer instanceof TarWriter) writer.flush(); // the gathered output may point into it
            buffers.give(r.data);
          }
          if (parts.length === 0) results.delete(it.batch);
        }
        files++;
        done++;
        bytesIn += f.size;
        opts.onProgress?.({ done, total: src.files, bytes: bytesIn });
      }
    }
  };

  /** Whether the writer waits for `p`: it holds the file at the write position. */
  const neededNext = (p: { n: number; start: number }) => {
    const it = src.items[next];
    return it?.kind === 'file' && it.batch === p.n && it.slot >= p.start;
  };

  const pool = new WorkerPool(src.batches.length > 2 ? readerThreads(format, opts.jobs) : 0, {}, { youngGenerationMb: ARCHIVE_YOUNG_MB });
  const largeBytes = opts.largeBytes ?? LARGE_BYTES;
  const buffers = new BufferSet(pool.parallelism + SPARE_BUFFERS, outputBytes(largeBytes, opts.chunkBytes));
  /** Payloads dispatched with a buffer of `buffers`. */
  const lentTo = new Set<unknown>();
  try {
    type Payload = CompressBatch & { n: number; start: number };
    // tar from a directory: large files are read here straight from the tree, not via a temporary file.
    const largeInPlace = format !== 'zip' && 'dir' in source;
    const queue: Payload[] = [];
    let queued = 0;
    const enqueue = () => {
      for (; queued < src.batches.length; queued++) {
        const i = queued;
        queue.push({ n: i, start: 0, level, noCrc: format !== 'zip', files: src.batches[i]!, tmpPrefix, largeBytes, chunkBytes: opts.chunkBytes, largeInPlace });
      }
    };
    enqueue();
    // A queue rather than a fixed list: a batch that returns early is sent again for the rest, and
    // the listing adds batches as the readers take them. An error of the listing stops new batches;
    // it is thrown once those in flight are done.
    let head = 0;
    let listError: unknown;
    const batches: IterableIterator<Payload> = {
      next: () => {
        if (head >= FORGET_AFTER / BATCH_FILES) {
          queue.splice(0, head);
          head = 0;
        }
        while (head >= queue.length && listing && listError === undefined) {
          try {
            listing = src.more();
          } catch (e) {
            listError = e;
          }
          enqueue();
        }
        return head < queue.length && listError === undefined ? { value: queue[head++]!, done: false } : { value: undefined, done: true };
      },
      [Symbol.iterator]() {
        return this;
      },
    };
    await runBatches<Payload, CompressResult>(pool, 'archive.compress', batches, (r, p) => {
      for (const f of r.files) if (f.tmp) pending.add(f.tmp);
      // The rest of a batch that returned early goes next, not last: entries are written in order,
      // so every later batch's output would otherwise wait in memory for it (--level store on the
      // Linux tree peaked at 1.4 GB that way).
      if (r.files.length < p.files.length) queue.splice(head, 0, { ...p, start: p.start + r.files.length, files: p.files.slice(r.files.length) });
      let parts = results.get(p.n);
      if (!parts) results.set(p.n, (parts = []));
      parts.push({ start: p.start, r, lent: lentTo.delete(p) });
      drain();
    }, {
      shouldStop: () => opts.signal?.aborted === true,
      // The batch the writer needs next never waits: without a free buffer it makes its own.
      admit: (p) => buffers.available || neededNext(p),
      payloadOf: (p) => {
        const out = buffers.take();
        if (out) lentTo.add(p);
        return { ...p, out };
      },
      transferOf: (posted) => {
        const out = (posted as CompressBatch).out;
        return out ? [out.buffer as ArrayBuffer] : [];
      },
    });
    if (listError !== undefined) throw listError;
    throwIfAborted(opts.signal, 'interrupted; the archive was not written');
    drain();
    writer.finish();
    await tarOut?.close();
    if (!toStdout) {
      bytesOut = fs.fstatSync(fd).size;
      fs.closeSync(fd);
      try {
        fs.renameSync(tmp, outPath);
      } catch (e) {
        throw fsError(e, 'cannot replace', outPath);
      }
    } else bytesOut = writer.size;
  } catch (err) {
    const e = tarOut ? await tarOut.explain(err) : err;
    tarOut?.abort();
    try {
      if (!toStdout) fs.closeSync(fd);
    } catch {
      /* closed */
    }
    for (const p of toStdout ? pending : [tmp, ...pending]) fs.rmSync(p, { force: true });
    for (const parts of results.values()) for (const { r } of parts) for (const f of r.files) if (f.tmp) fs.rmSync(f.tmp, { force: true });
    throw e;
  } finally {
    await pool.close();
  }
  return { entries: files + dirs + symlinks, files, dirs, symlinks, bytesIn, bytesOut, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

/**
 * The listing goes on while the archive and its temporary files are written: none of them is
 * packed (nor an OUT there before, which the archive replaces), nor the store.
 */
function leftOutOf(outPath: string, tmp: string, tmpPrefix: string, storeRoot: string): LeftOut {
  const outDir = outPath === '-' ? undefined : dirId(dirname(outPath));
  const tmpDir = dirId(dirname(tmpPrefix));
  const outName = basename(outPath);
  const tmpName = basename(tmp);
  const largeName = basename(tmpPrefix);
  return {
    file: (dir, name) =>
      (outDir !== undefined && (name === outName || name === tmpName) && sameDir(dir, outDir)) ||
      (tmpDir !== undefined && name.startsWith(largeName) && sameDir(dir, tmpDir)),
    dir: dirId(storeRoot),
  };
}

function crc32(b: Buffer): number {
  return zcrc32(b) >>> 0;
}
