/**
 * unpack: zip -> directory. Reads and judges the whole central directory (and every symlink
 * target) before writing anything, then: directories parents first on this thread, file batches in
 * worker threads (see extract-op.ts), large entries streamed here meanwhile, symlinks last,
 * directory modes and times deepest first. With `force`, entries that clash with existing files
 * are written beside them and renamed over them only once everything was extracted (see
 * replacements.ts). A failure or an interruption after writing started removes what this run wrote
 * (or, with keepPartial, what came after the bad entry), leaves every existing file as it was, and
 * rethrows.
 */
import * as fs from 'node:fs';
import { resolve } from 'node:path';
import { ArchiveError, InterruptedError, TargetError, TreecastError, UnsafePathError, UsageError, fsError } from '../errors.js';
import { ARCHIVE_YOUNG_MB, WorkerPool, runBatches } from '../fs/worker-pool.js';
import { guardTarget } from '../fs/target-guard.js';
import { defaultStorePath } from '../store/local.js';
import { readCentralDirectory, type CentralPrefix } from './central-directory.js';
import { DEFAULT_MAX_RATIO, judgeEntries, symlinkTargetRule, type ArchiveEntry, type Judged } from './entry-rules.js';
import { DEFAULT_BATCH_LIMITS, planExtraction, type ExtractPlan } from './extract-plan.js';
import { readEntry } from './local-data.js';
import { streamEntry } from './large-entry.js';
import { createExclusive, removeQuietly, type ExtractBatch, type ExtractFile, type ExtractResult } from './extract-op.js';
import { Replacements } from './replacements.js';
import { openTarSource } from './tar-input.js';
import type { TarReadOptions } from './tar-walk.js';
import { makeDirectories } from '../fs/make-dirs.js';
import { openFile } from '../fs/open-file.js';

/** What every command that reads an archive (unpack, import) takes. */
export interface ArchiveReadOptions {
  jobs: number;
  maxRatio?: number;
  maxSize?: number;
  /** Refuse symlinks whose targets are absolute or leave the extraction root (see symlinkTargetRule). */
  safeLinks?: boolean;
  onProgress?: (p: { done: number; total: number; bytes: number }) => void;
  onWarning?: (code: string, message: string) => void;
  /** Entries larger than this are streamed on the main thread (default 64 MiB; tests lower it). */
  largeEntryBytes?: number;
}

export interface UnpackOptions extends ArchiveReadOptions, TarReadOptions {
  force?: boolean;
  /** tar: restore owners from the archive (root only). */
  sameOwner?: boolean;
  keepPartial?: boolean;
  /** Aborting stops after the batches in flight and takes back what was written (as a failure does). */
  signal?: AbortSignal;
  /** The store to protect and keep the target's lock in (default: the configured default store). */
  storeRoot?: string;
}

export interface ArchiveSummary {
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  bytesIn: number;
  bytesOut: number;
  seconds: number;
}

export interface OpenedArchive {
  fd: number;
  path: string;
  judged: Judged;
  /** Symlink targets by entry index, already judged. */
  targets: Map<number, string>;
  fileSize: number;
}

/**
 * Opens, reads and judges an archive: everything that can be refused before writing is refused here.
 * `onRead`, when given, sees the central directory as read, before any entry is judged (import
 * starts work early there).
 */
export function openArchive(path: string, limits: { maxRatio?: number; maxSize?: number; safeLinks?: boolean }, onPrefix?: CentralPrefix): OpenedArchive {
  const fd = openFile(path, 'r', 'cannot open archive');
  try {
    const cd = readCentralDirectory(fd, path, onPrefix);
    const judged = judgeEntries(cd.entries, cd.cdOffset, {
      maxRatio: limits.maxRatio ?? DEFAULT_MAX_RATIO,
      maxSize: limits.maxSize ?? Number.MAX_SAFE_INTEGER,
    });
    const targets = new Map<number, string>();
    for (const e of judged.entries) {
      if (e.type !== 'symlink') continue;
      const target = readEntry(fd, e, path).toString('utf8');
      const why = symlinkTargetRule(e.path, target, limits.safeLinks);
      if (why) throw new UnsafePathError(`archive entry '${e.rawName}': ${why}`, { path: e.path });
      targets.set(e.index, target);
    }
    return { fd, path, judged, targets, fileSize: cd.fileSize };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

export function checkLimitsOptions(o: { maxRatio?: number; maxSize?: number; jobs: number }): void {
  if (o.maxRatio !== undefined && !(o.maxRatio >= 1)) throw new UsageError(`--max-ratio must be a number >= 1, got ${o.maxRatio}`);
  if (o.maxSize !== undefined && !(Number.isSafeInteger(o.maxSize) && o.maxSize >= 0)) throw new UsageError(`--max-size must be a byte count, got ${o.maxSize}`);
  if (!(Number.isInteger(o.jobs) && o.jobs >= 0 && o.jobs <= 256)) throw new UsageError(`--jobs must be an integer from 0 to 256, got ${o.jobs}`);
}

/** Options that only tar reading has: refused for a zip rather than ignored. */
export function refuseTarOnlyOptions(o: TarReadOptions & { sameOwner?: boolean }): void {
  const given = [o.stripComponents ? '--strip-components' : '', o.strict ? '--strict' : '', o.sameOwner ? '--same-owner' : ''].filter(Boolean);
  if (given.length > 0) throw new UsageError(`${given.join(', ')}: for tar archives only, and this is a zip`);
}

/** What this run created or staged, so a failure can take it back. */
class Undo {
  files: ArchiveEntry[] = [];
  dirs: string[] = [];
  rootCreated: string | undefined;

  constructor(readonly replacements: Replacements) {}

  /** Takes back this run's writes; with keepBelowIndex, entries up to it are kept (and replace what they clash with). */
  run(keepBelowIndex: number | undefined): void {
    for (const f of this.files) {
      if (keepBelowIndex === undefined || f.index > keepBelowIndex) removeQuietly(this.replacements.destination(f));
    }
    if (keepBelowIndex === undefined) this.replacements.discard();
    else {
      try {
        this.replacements.commit((index) => index <= keepBelowIndex);
      } catch {
        /* that entry keeps its original; the error being reported is the first one */
      }
      return;
    }
    for (let i = this.dirs.length - 1; i >= 0; i--) {
      try {
        fs.rmdirSync(this.dirs[i]!);
      } catch {
        /* not empty (held something before) or gone */
      }
    }
    if (this.rootCreated) fs.rmSync(this.rootCreated, { recursive: true, force: true });
  }
}

export async function unpack(archivePath: string, dir: string, opts: UnpackOptions): Promise<ArchiveSummary> {
  checkLimitsOptions(opts);
  const guard = guardTarget(resolve(dir), opts.storeRoot ?? defaultStorePath(), 'unpack');
  try {
    return await unpackLocked(archivePath, dir, opts);
  } finally {
    guard.release();
  }
}

async function unpackLocked(archivePath: string, dir: string, opts: UnpackOptions): Promise<ArchiveSummary> {
  checkLimitsOptions(opts);
  // The format is chosen by content: tar (plain, gzip, zstd; also from stdin as '-') or zip.
  const tar = openTarSource(archivePath);
  if (tar) return (await import('./tar-unpack.js')).unpackTar(tar.input, tar.label, dir, opts);
  refuseTarOnlyOptions(opts);
  const t0 = process.hrtime.bigint();
  // Perf: workers take tens of ms to start (see fs/worker-pool.ts); for a large archive, start
  // them while the central directory is read and judged on this thread.
  const early = earlyPool(archivePath, opts.jobs, {});
  let ar: OpenedArchive;
  try {
    ar = openArchive(archivePath, opts);
  } catch (e) {
    await early?.close();
    throw e;
  }
  const pool = early ?? new WorkerPool(ar.judged.entries.length > 512 ? opts.jobs : 0, {}, { youngGenerationMb: ARCHIVE_YOUNG_MB });
  try {
    for (const w of ar.judged.warnings) opts.onWarning?.(w.code, w.message);
    const plan = planExtraction(ar.judged.entries, { ...DEFAULT_BATCH_LIMITS, large: opts.largeEntryBytes ?? DEFAULT_BATCH_LIMITS.large });
    const root = resolve(dir);
    const undo = new Undo(new Replacements(root, new Set(ar.judged.entries.map((e) => e.path))));
    const empty = prepareRoot(root, undo);
    if (!empty) checkExisting(root, plan, opts.force === true ? undo.replacements : undefined);
    try {
      await extract(ar, root, plan, opts, undo, pool);
      throwIfAborted(opts.signal);
    } catch (err) {
      let keepBelow: number | undefined;
      if (opts.keepPartial) {
        const p = err instanceof TreecastError ? err.path : undefined;
        const bad = ar.judged.entries.find((e) => e.path === p || undo.replacements.destination(e) === p);
        keepBelow = bad ? bad.index - 1 : -1;
      }
      undo.run(keepBelow);
      throw err;
    }
    // Everything is extracted: only now are existing files replaced (each by one atomic rename;
    // not interruptible, and never undone, as the originals are gone once replaced).
    undo.replacements.commit();
    finishDirectories(root, plan);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    return {
      entries: ar.judged.entries.length,
      files: plan.fileCount,
      dirs: plan.dirs.length,
      symlinks: plan.symlinks.length,
      bytesIn: ar.fileSize,
      bytesOut: plan.totalSize,
      seconds,
    };
  } finally {
    fs.closeSync(ar.fd);
    await pool.close();
  }
}

/** A pool started before the archive is read, when the archive is big enough to need one. */
export function earlyPool(archivePath: string, jobs: number, init: { storeRoot?: string }): WorkerPool | undefined {
  const size = fs.statSync(archivePath, { throwIfNoEntry: false })?.size ?? 0;
  return size > 8 << 20 && jobs > 0 ? new WorkerPool(jobs, init, { youngGenerationMb: ARCHIVE_YOUNG_MB }) : undefined;
}

/** Creates the root when missing; returns whether it is empty (then no entry can clash). */
export function prepareRoot(root: string, undo: { rootCreated: string | undefined }): boolean {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(root, { throwIfNoEntry: false });
  } catch (e) {
    throw fsError(e, 'cannot use target', root);
  }
  if (st && !st.isDirectory()) throw new TargetError(`${root} exists and is not a directory`, { path: root });
  if (!st) {
    try {
      undo.rootCreated = makeDirectories(root);
    } catch (e) {
      throw fsError(e, 'cannot create', root);
    }
    return true;
  }
  try {
    return fs.readdirSync(root).length === 0;
  } catch (e) {
    throw fsError(e, 'cannot read target', root);
  }
}

/**
 * The error for an archive directory where the target has something else: a symlink is refused as
 * unsafe (exit 6: never written through), a file is in the way (exit 7, as a file where the target
 * has a directory is, for tar and zip alike).
 */
export function directoryClash(rel: string, dst: string, st: fs.Stats): TreecastError {
  if (st.isSymbolicLink()) return new UnsafePathError(`archive directory '${rel}' is a symlink in the target; refusing to write through it`, { path: dst });
  return new TargetError(`archive directory '${rel}' would replace an existing file`, { path: dst, hint: 'move the file away; --force replaces files, never with a directory' });
}

/**
 * Refuses, before writing, entries that would replace something in a non-empty target; with
 * `replacements` (--force), files and symlinks they clash with are marked to be replaced instead.
 */
function checkExisting(root: string, plan: ExtractPlan, replacements: Replacements | undefined): void {
  const clashes: string[] = [];
  for (const d of plan.dirs) {
    const st = fs.lstatSync(`${root}/${d.path}`, { throwIfNoEntry: false });
    if (st && !st.isDirectory()) throw directoryClash(d.path, `${root}/${d.path}`, st);
  }
  const check = (e: ArchiveEntry) => {
    const st = fs.lstatSync(`${root}/${e.path}`, { throwIfNoEntry: false });
    if (!st) return;
    if (st.isDirectory()) throw new TargetError(`archive ${e.type} '${e.path}' would replace an existing directory`, { path: `${root}/${e.path}` });
    if (replacements) replacements.add(e);
    else clashes.push(e.path);
  };
  for (const b of plan.batches) b.forEach(check);
  plan.large.forEach(check);
  plan.symlinks.forEach(check);
  if (clashes.length > 0) {
    const shown = clashes.slice(0, 10).join(', ');
    throw new TargetError(`${clashes.length} archive entr${clashes.length === 1 ? 'y' : 'ies'} would overwrite existing files: ${shown}${clashes.length > 10 ? ', ...' : ''}`, {
      path: root,
      hint: 'pass --force to replace them, or unpack into an empty directory',
    });
  }
}

function toExtractFile(e: ArchiveEntry, stagedAs: string | undefined): ExtractFile {
  return {
    stagedAs,
    index: e.index,
    path: e.path,
    rawName: e.rawName,
    method: e.method,
    crc: e.crc,
    compressedSize: e.compressedSize,
    size: e.size,
    localOffset: e.localOffset,
    limit: e.limit,
    perm: e.perm,
    mtime: e.mtime,
  };
}

async function extract(ar: OpenedArchive, root: string, plan: ExtractPlan, opts: UnpackOptions, undo: Undo, pool: WorkerPool): Promise<void> {
  // Directories, parents first: one mkdir each; an existing one must be a real directory.
  for (const d of plan.dirs) {
    const p = `${root}/${d.path}`;
    try {
      fs.mkdirSync(p);
      undo.dirs.push(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError(e, 'cannot create directory', p);
      if (!fs.lstatSync(p).isDirectory()) throw new UnsafePathError(`${p} is not a directory (a symlink or file appeared); refusing to write through it`, { path: p });
    }
  }

  const total = plan.fileCount + plan.symlinks.length;
  let done = 0;
  let bytes = 0;
  const progress = () => opts.onProgress?.({ done, total, bytes });
  const keepPartial = opts.keepPartial === true;
  const umask = currentUmask();
  let failed = false;
  {
    const payloads = plan.batches.map((b): ExtractBatch => ({ archive: ar.path, root, keepPartial, umask, files: b.map((e) => toExtractFile(e, undo.replacements.stagedAs(e.index))) }));
    const batchOf = new Map(payloads.map((p, i) => [p, plan.batches[i]!]));
    const small = runBatches<ExtractBatch, ExtractResult>(
      pool,
      'archive.extract',
      payloads,
      (r, p) => {
        for (const e of batchOf.get(p)!) undo.files.push(e);
        done += r.files;
        bytes += r.bytes;
        progress();
      },
      { shouldStop: () => failed || opts.signal?.aborted === true },
    ).catch((e) => {
      failed = true;
      throw e;
    });
    const large = (async () => {
      for (const e of plan.large) {
        if (failed || opts.signal?.aborted) return;
        await extractLarge(ar, e, undo);
        done++;
        bytes += e.size;
        progress();
      }
    })().catch((e) => {
      failed = true;
      throw e;
    });
    const results = await Promise.allSettled([small, large]);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }
  throwIfAborted(opts.signal);

  // Symlinks after every file, so nothing was written through one.
  for (const e of plan.symlinks) {
    const p = undo.replacements.destination(e);
    const target = ar.targets.get(e.index)!;
    try {
      fs.symlinkSync(target, p);
      undo.files.push(e);
      fs.lutimesSync(p, e.mtime, e.mtime);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new TargetError(`${p} already exists; refusing to overwrite it`, { path: p, hint: 'pass --force to replace existing files' });
      throw fsError(err, 'cannot create symlink', p);
    }
    done++;
  }
  progress();
}

/** Directory modes and times last, deepest first, so writing into them (or replacing in them) no longer changes them. */
function finishDirectories(root: string, plan: ExtractPlan): void {
  for (const e of plan.finishDirs) {
    const p = `${root}/${e.path}`;
    try {
      if (e.perm !== undefined) fs.chmodSync(p, e.perm);
      fs.utimesSync(p, e.mtime, e.mtime);
    } catch (err) {
      throw fsError(err, 'cannot set mode or time of', p);
    }
  }
}

async function extractLarge(ar: OpenedArchive, e: ArchiveEntry, undo: Undo): Promise<void> {
  const p = undo.replacements.destination(e);
  const out = createExclusive(p, e.perm);
  undo.files.push(e);
  try {
    await streamEntry(ar.path, ar.fd, e, (chunk) => {
      let off = 0;
      while (off < chunk.length) off += fs.writeSync(out, chunk, off, chunk.length - off);
    });
    if (e.perm !== undefined) fs.fchmodSync(out, e.perm);
    fs.futimesSync(out, e.mtime, e.mtime);
  } catch (err) {
    if (err instanceof ArchiveError || err instanceof TreecastError) throw err;
    throw fsError(err, 'cannot write', p);
  } finally {
    fs.closeSync(out);
  }
}

/** The umask, read without changing it for long (process.umask() without an argument is deprecated). */
export function currentUmask(): number {
  const m = process.umask(0o022);
  process.umask(m);
  return m;
}

export function throwIfAborted(signal: AbortSignal | undefined, what = 'interrupted; what this run wrote was removed'): void {
  if (signal?.aborted) throw new InterruptedError(what, { hint: 'run the same command again' });
}
