/**
 * Reads a tar stream once, judging each entry as it arrives with the zip path's rules
 * (entry-rules.ts: names, duplicates, entries under a file or symlink of the archive, symlink
 * targets, setuid bits, --max-size) plus tar's own (hardlink targets, special types, pax and GNU
 * records, --strip-components), and hands the accepted entries to a consumer: directories,
 * symlinks and hardlinks one by one, small files as batches of data (one buffer per batch, for a
 * worker thread), large files as a stream of chunks. Shared by unpack and import.
 *
 * Nothing here writes: the consumer decides where (a staging directory, the store).
 */
import { ArchiveError, SpecialFileError, UnsafePathError } from '../errors.js';
import { DEFAULT_MAX_RATIO, PathKinds, entryPath, symlinkTargetRule } from './entry-rules.js';
import { T } from './tar-format.js';
import { TarParser, type TarHeader } from './tar-parser.js';
import type { TarInput } from './tar-input.js';

export interface TarReadOptions {
  maxRatio?: number;
  maxSize?: number;
  /** Refuse symlinks whose targets are absolute or leave the extraction root (see symlinkTargetRule). */
  safeLinks?: boolean;
  /** Leading path components removed from every name (and hardlink target), as GNU tar does. */
  stripComponents?: number;
  /** Special entries (devices, FIFOs, sparse files, unknown types) are errors instead of skipped. */
  strict?: boolean;
  onWarning?: (code: string, message: string) => void;
  /** How the target filesystem folds names (case, Unicode normalization), when it does. */
  fold?: (path: string) => string;
}

interface Base {
  /** Relative '/'-separated path without a trailing slash. */
  path: string;
  /** The name as stored (for messages). */
  shown: string;
  mtime: number;
  uid: number;
  gid: number;
}
export type TarDir = Base & { type: 'dir'; perm: number };
export type TarSymlink = Base & { type: 'symlink'; target: string };
export type TarHardlink = Base & { type: 'hardlink'; target: string };
export type TarFile = Base & { type: 'file'; perm: number; size: number };

/** A file of a batch: its data is `data[at, at + size)`. */
export interface BatchFile {
  path: string;
  rawName: string;
  perm: number;
  mtime: number;
  size: number;
  at: number;
  uid: number;
  gid: number;
}

export interface TarConsumer {
  dir(e: TarDir): void;
  symlink(e: TarSymlink): void;
  hardlink(e: TarHardlink): void;
  /**
   * A batch of small files with their data; the walk keeps at most `parallelism` unsettled. `data`
   * lies in a SharedArrayBuffer (post it, never transfer it), which the walk reuses once the
   * promise resolved; only a batch of one file larger than a batch buffer has an ArrayBuffer of
   * its own, to be transferred and dropped (see `transferOf`).
   */
  batch(files: BatchFile[], data: Buffer): Promise<void>;
  /** A file too large to batch: `begin`, then its chunks, then `end`, all synchronous. */
  largeBegin(e: TarFile): void;
  largeData(chunk: Buffer): void;
  largeEnd(e: TarFile): void;
  /**
   * Awaited after each input chunk when it returns a promise (work the consumer queued is behind),
   * and with `all` once before the walk returns (everything queued must be done).
   */
  settle?(all: boolean): Promise<void> | undefined;
}

export interface TarWalkLimits {
  /** Unsettled batches allowed at once. */
  parallelism: number;
  /** Files larger than this are streamed instead of batched (default 64 MiB). */
  largeBytes?: number;
  /** Size of a batch buffer (default BATCH_BYTES; tests make it small to cut files at every offset). */
  batchBytes?: number;
  signal?: AbortSignal;
}

/** A batch buffer and what holds it: the reader while it fills it, and each batch in it. */
interface Slab {
  buf: Buffer;
  refs: number;
}

export interface TarWalkSummary {
  /** Entries kept (written or stored): those --strip-components dropped or skipped are not counted. */
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  /** Directories no entry named, only paths under them. */
  impliedDirs: number;
  skipped: number;
  bytesOut: number;
}

// Perf: batches of up to 256 files / 8 MiB, as zip unpack (extract-plan.ts): one message each way
// per batch keeps two workers busy.
const BATCH_FILES = 256;
export const BATCH_BYTES = 8 << 20;
const LARGE_BYTES = 64 << 20;

/** The transfer list for a batch's data: only a buffer of its own moves; a shared one is posted. */
export function transferOf(data: Uint8Array): ArrayBuffer[] {
  return data.buffer instanceof ArrayBuffer ? [data.buffer] : [];
}

/** Removes `n` leading components (GNU tar counts every component, '.' included); undefined when none is left. */
export function stripComponents(name: string, n: number): string | undefined {
  if (n === 0) return name;
  let i = 0;
  for (let k = 0; k < n; k++) {
    const slash = name.indexOf('/', i);
    if (slash < 0) return undefined;
    i = slash + 1;
    while (name[i] === '/') i++;
  }
  return i >= name.length ? undefined : name.slice(i);
}

/** Drops the leading './' that `tar -cf - .` writes; '.' or './' alone is the root itself (''). */
function dropDotSlash(name: string): string {
  let s = name;
  while (s.startsWith('./')) s = s.slice(2);
  return s === '.' ? '' : s;
}

/** Judges tar headers one by one; keeps what later entries are judged against. */
export class TarJudge {
  readonly kinds: PathKinds;
  totalSize = 0;
  constructor(private readonly o: TarReadOptions) {
    this.kinds = new PathKinds(o.fold);
  }

  /** The relative path of a stored name after --strip-components, checked; undefined to skip. */
  private pathOf(name: string): { path: string; slash: boolean } | undefined {
    const stripped = stripComponents(name, this.o.stripComponents ?? 0);
    if (stripped === undefined) return undefined;
    const rel = dropDotSlash(stripped);
    if (rel === '' || rel === '/') return undefined;
    if (rel === name) return entryPath(rel);
    try {
      return entryPath(rel);
    } catch (e) {
      // Name the entry as stored, not as stripped.
      const shown = name.length > 200 ? `${name.slice(0, 200)}...` : name;
      throw new UnsafePathError(`archive entry '${shown}': ${(e as Error).message.replace(/^archive entry '.*?': /s, '')}`, { path: shown });
    }
  }

  judge(h: TarHeader): TarDir | TarSymlink | TarHardlink | TarFile | undefined {
    const shown = h.name.length > 200 ? `${h.name.slice(0, 200)}...` : h.name;
    const special = (why: string) => {
      if (this.o.strict) throw new SpecialFileError(`archive entry '${shown}': ${why}; refused with --strict`, { path: shown });
      this.o.onWarning?.('ARCHIVE_SPECIAL_SKIPPED', `skipped archive entry '${shown}': ${why}`);
      return undefined;
    };
    const checked = this.pathOf(h.name);
    if (!checked) {
      // The root ('./') carries nothing treecast restores; a name stripped away entirely is skipped.
      if (h.name.startsWith('/') || h.name.includes('\0')) entryPath(h.name); // still refuse what is hostile
      return undefined;
    }
    const { path, slash } = checked;
    const t = h.typeflag;
    let perm = h.mode & 0o7777;
    if (perm & 0o7000) {
      this.o.onWarning?.('ARCHIVE_MODE_STRIPPED', `'${shown}': setuid/setgid/sticky bits stripped (mode 0o${perm.toString(8)})`);
      perm &= 0o777;
    }
    // Perf: each result is one literal, no `{ ...base }`: the spread was 0.12 s of 0.7 s for the
    // Linux tree's 83,731 entries (the walk alone, --cpu-prof, 6 runs). With this and the one-sum
    // header checksum, the walk alone (read, parse, judge, copy) took 0.38-0.45 s of CPU, against
    // 0.69-0.75 s before (4 runs each, shared machine).
    const { mtime, uid, gid } = h;
    if (h.sparse) return special('is a sparse file');
    if (t === T.DIR || t === T.GNU_DUMPDIR) {
      this.kinds.add(path, 'dir', shown);
      return { path, shown, mtime, uid, gid, type: 'dir', perm };
    }
    if (t === T.SYMLINK) {
      if (slash) throw new ArchiveError(`archive entry '${shown}': a symlink whose name ends with '/'`, { path: shown });
      const why = symlinkTargetRule(path, h.linkname, this.o.safeLinks);
      if (why) throw new UnsafePathError(`archive entry '${shown}': ${why}`, { path: shown });
      this.kinds.add(path, 'symlink', shown);
      return { path, shown, mtime, uid, gid, type: 'symlink', target: h.linkname };
    }
    if (t === T.HARDLINK) {
      if (slash) throw new ArchiveError(`archive entry '${shown}': a hardlink whose name ends with '/'`, { path: shown });
      const target = this.hardlinkTarget(h.linkname, shown);
      this.kinds.add(path, 'file', shown);
      return { path, shown, mtime, uid, gid, type: 'hardlink', target };
    }
    if (t === T.FILE || t === T.CONTIGUOUS) {
      if (slash) throw new ArchiveError(`archive entry '${shown}': a file whose name ends with '/'`, { path: shown });
      this.kinds.add(path, 'file', shown);
      this.totalSize += h.size;
      const max = this.o.maxSize ?? Number.MAX_SAFE_INTEGER;
      if (this.totalSize > max) throw new ArchiveError(`archive entry '${shown}': total size ${this.totalSize} bytes exceeds --max-size ${max}`, { path: shown });
      return { path, shown, mtime, uid, gid, type: 'file', perm, size: h.size };
    }
    if (t === T.CHAR || t === T.BLOCK) return special(`is a ${t === T.CHAR ? 'character' : 'block'} device`);
    if (t === T.FIFO) return special('is a FIFO');
    if (t === T.GNU_MULTIVOL) throw new ArchiveError(`archive entry '${shown}': continues a multi-volume archive, which treecast does not read`, { path: shown });
    if (t === T.GNU_VOLUME) return undefined;
    return special(`has entry type '${String.fromCharCode(t)}', which treecast does not extract`);
  }

  /** A hardlink must name a regular file an earlier entry of this archive created (never a symlink, a directory or a path outside). */
  private hardlinkTarget(linkname: string, shown: string): string {
    const refuse = (why: string) => new UnsafePathError(`archive entry '${shown}': hardlink target '${linkname}' ${why}`, { path: shown });
    if (linkname === '') throw refuse('is empty');
    if (linkname.startsWith('/') || /^[A-Za-z]:/.test(linkname)) throw refuse('is absolute');
    let checked;
    try {
      checked = this.pathOf(linkname);
    } catch (e) {
      throw refuse(`is not a safe path (${(e as Error).message.replace(/^archive entry '.*?': /, '')})`);
    }
    if (!checked) throw refuse('names nothing inside the extraction directory');
    const kind = this.kinds.get(checked.path);
    if (kind === 'symlink') throw refuse('is a symlink');
    if (kind !== 'file') throw refuse(kind === undefined ? 'is not an earlier file of this archive' : `is a ${kind === 'implied' ? 'dir' : kind}, not a file`);
    return checked.path;
  }
}

/**
 * Reads the whole stream: judges every entry, hands it to `consumer`, and returns once the
 * end-of-archive marker was read and every batch settled. On any failure it stops reading, waits
 * for the batches in flight, and rethrows the first error.
 */
export async function walkTar(input: TarInput, label: string, opts: TarReadOptions, limits: TarWalkLimits, consumer: TarConsumer): Promise<TarWalkSummary> {
  const judge = new TarJudge(opts);
  const sum: TarWalkSummary = { entries: 0, files: 0, dirs: 0, symlinks: 0, hardlinks: 0, impliedDirs: 0, skipped: 0, bytesOut: 0 };
  const largeBytes = limits.largeBytes ?? LARGE_BYTES;
  const slabBytes = limits.batchBytes ?? BATCH_BYTES;
  const maxRatio = opts.maxRatio ?? DEFAULT_MAX_RATIO;
  // Perf: where the source can read in place (a plain file, zstd's output), the stream is read
  // straight into the batch buffers and a batch names where its files' data already lie; only a
  // file cut at a buffer's end is copied, to the start of the next. Every file must then fit one
  // buffer, so a walk that batches larger files (import) copies each file's data in instead.
  // Unpack of the Linux tree's .tar (1.36 GB): 3.13-3.33 s of CPU against 3.66-3.94 s copying
  // (median wall 1.98 s against 2.33 s; 3 interleaved pairs, load 3-5 on 2 cores). For its
  // .tar.zst no difference showed (5.4-5.9 s of CPU either way): zstd's share dominates there.
  const direct = input.readInto && largeBytes <= slabBytes ? input.readInto : undefined;

  // Perf: batch buffers are reused rather than allocated per batch: fresh ones were freed only by a
  // lazy GC, and unpack of the node_modules corpus peaked at 530 MB RSS that way (about the whole
  // decompressed stream). They are shared with the workers, not transferred: a buffer transferred
  // back arrives as new external memory, and unpack of the Linux tree ran 23 scavenges and about 20
  // mark-compacts for "external memory pressure" (--trace-gc), 0.59 s of this thread's GC.
  // A buffer is reused once nothing holds it: neither the reader (while it fills it) nor a batch.
  const spare: Buffer[] = [];
  const newSlab = (): Slab => ({ buf: spare.pop() ?? Buffer.from(new SharedArrayBuffer(slabBytes)), refs: 1 });
  const release = (s: Slab) => {
    if (--s.refs === 0 && s.buf.length === slabBytes) spare.push(s.buf);
  };
  let files: BatchFile[] = [];
  let slab = newSlab();
  /** Bytes of the slab in use: copied file data, or (direct) the stream read into it. */
  let used = 0;
  let current: TarFile | undefined;
  let currentLarge = false;
  let largeLeft = 0;
  /** Direct: where the current small file's data starts in the slab (-1 before it started), and what is still to come. */
  let fileAt = -1;
  let fileLeft = 0;
  let decompressed = 0;

  const inFlight = new Set<Promise<void>>();
  let failure: { e: unknown } | undefined;
  const flush = () => {
    if (files.length === 0) return;
    const s = slab;
    s.refs++;
    const p: Promise<void> = consumer.batch(files, s.buf).then(
      () => {
        inFlight.delete(p);
        release(s);
      },
      (e) => {
        inFlight.delete(p);
        failure ??= { e };
      },
    );
    inFlight.add(p);
    files = [];
    if (!direct) {
      release(slab);
      slab = newSlab();
      used = 0;
    }
  };
  /**
   * Direct: the slab is full; the reader moves on to a fresh one. A small file whose data runs past
   * the end is taken out of this slab's batch and its bytes so far copied to the start of the next.
   */
  const nextSlab = () => {
    const old = slab;
    const cut = fileLeft > 0 ? files.pop() : undefined;
    const carry = cut && fileAt >= 0 ? used - fileAt : 0;
    flush();
    slab = newSlab();
    if (carry > 0) slab.buf.fill(old.buf.subarray(fileAt, used), 0, carry);
    release(old);
    used = carry;
    if (cut) {
      cut.at = 0;
      files.push(cut);
      if (fileAt >= 0) fileAt = 0;
    }
  };

  const parser = new TarParser(
    {
      entry: (h) => {
        const e = judge.judge(h);
        if (!e) {
          sum.skipped++;
          return false;
        }
        sum.entries++;
        if (e.type === 'dir') {
          sum.dirs++;
          consumer.dir(e);
          return false;
        }
        if (e.type === 'symlink') {
          sum.symlinks++;
          consumer.symlink(e);
          return false;
        }
        if (e.type === 'hardlink') {
          sum.hardlinks++;
          consumer.hardlink(e);
          return false;
        }
        sum.files++;
        sum.bytesOut += e.size;
        current = e;
        currentLarge = e.size > largeBytes;
        if (currentLarge) {
          flush();
          largeLeft = e.size;
          consumer.largeBegin(e);
          return true;
        }
        if (direct) {
          if (files.length >= BATCH_FILES) flush();
          fileAt = -1; // set by its first data
          fileLeft = e.size;
        } else {
          if (files.length >= BATCH_FILES || used + e.size > slab.buf.length) flush();
          // A file between a batch and the large-file threshold gets an ArrayBuffer of its own, moved
          // to the worker and back, and freed by the next GC (kept shared, the worker held the Linux
          // tree's ten such files, 142 MB, until its own lazy GC: 380 MB peak RSS).
          if (e.size > slab.buf.length) {
            release(slab);
            slab = { buf: Buffer.allocUnsafeSlow(e.size), refs: 1 };
          }
        }
        files.push({ path: e.path, rawName: e.shown, perm: e.perm, mtime: e.mtime, size: e.size, at: used, uid: e.uid, gid: e.gid });
        // A file's data arrives through data(); used advances there.
        if (e.size === 0) current = undefined;
        return e.size > 0;
      },
      data: (chunk, start, end) => {
        const e = current!;
        if (currentLarge) {
          consumer.largeData(chunk.subarray(start, end));
          largeLeft -= end - start;
          if (largeLeft === 0) {
            consumer.largeEnd(e);
            current = undefined;
          }
          return;
        }
        if (direct) {
          // The data lies in the slab already, contiguous from its first piece.
          if (fileAt < 0) files[files.length - 1]!.at = fileAt = start;
          fileLeft -= end - start;
          return;
        }
        // Perf: fill, not copy: Buffer#copy into shared memory takes V8's element-wise path, 7 us per
        // 17 KB file (0.97 s of this thread for the Linux tree, --cpu-prof); fill with a value of
        // exactly the range's length is one native memcpy: 60,000 copies of 17 KB into a shared
        // buffer took 412-565 ms by copy, 21-45 ms by fill (2 runs each).
        if (end > start) slab.buf.fill(chunk.subarray(start, end), used, used + end - start);
        used += end - start;
      },
    },
    label,
  );

  try {
    // An abort also ends a wait for input (a stalled pipe must not keep the command alive): closing
    // the input ends the iteration. (Not a Promise.race against one long-lived promise per chunk:
    // each race stays attached to it, with its chunk, and unpack of node_modules held 400 MB so.)
    limits.signal?.addEventListener('abort', () => input.close(), { once: true });
    /** Bytes in; false once reading should stop (a failure, an abort, the end-of-archive marker). */
    const take = (chunk: Buffer, from: number, to: number): boolean => {
      if (failure || limits.signal?.aborted) return false;
      decompressed += to - from;
      if (input.compression !== 'none' && decompressed > 1 << 20 && decompressed > maxRatio * Math.max(1, input.bytesIn())) {
        throw new ArchiveError(`${label}: decompresses to more than ${maxRatio} times its size (past --max-ratio ${maxRatio}, after ${decompressed} bytes)`, { path: label });
      }
      parser.push(chunk, from, to);
      return !parser.ended;
    };
    // Backpressure: stop reading while the workers (or the consumer's own writes) are behind.
    const behind = (): Promise<void> | undefined => {
      if (inFlight.size < limits.parallelism) return consumer.settle?.(false);
      return (async () => {
        while (inFlight.size >= limits.parallelism && !failure) await Promise.race(inFlight);
        await consumer.settle?.(false);
      })();
    };
    if (direct) {
      await direct({
        target: () => slab.buf.subarray(used),
        got: (n) => {
          const from = used;
          used += n;
          if (!take(slab.buf, from, used)) return 'stop';
          if (used === slab.buf.length) nextSlab();
          return behind();
        },
      });
    } else {
      for await (const chunk of input.chunks) {
        if (!take(chunk, 0, chunk.length)) break;
        const wait = behind();
        if (wait) await wait;
      }
    }
    if (!failure && !limits.signal?.aborted) {
      parser.end();
      flush();
      await consumer.settle?.(true);
    }
  } catch (e) {
    if (!limits.signal?.aborted) failure ??= { e };
  } finally {
    input.close();
  }
  while (inFlight.size > 0) await Promise.race(inFlight);
  if (failure) throw failure.e;
  sum.impliedDirs = judge.kinds.implied;
  return sum;
}
