/**
 * Walks a directory into an in-memory scan: one readdir (with file types) per directory, nothing
 * else on this thread. Regular files still need their lstat (size, mode, times for the stat
 * cache): snapshot.ts has `statPaths` do that, on worker threads for large trees (see the capture.stat op).
 *
 * Perf (fdir's lessons): an explicit stack instead of recursion, no closure per entry, option
 * objects hoisted, and `withFileTypes` so directories and symlinks need no stat of their own.
 * Node 20 allocates a Stats object and four Dates per lstat; on the Linux tree, lstat plus the
 * GC it caused was ~0.9 s of a 1.1 s unchanged snapshot on one thread.
 */
import * as fs from 'node:fs';
import picomatch from 'picomatch';
import { CaptureError, SpecialFileError, SymlinkLoopError } from '../errors.js';
import { MAX_DEPTH } from '../core/names.js';
import { escapeControl } from '../core/display.js';
import { lossyEntryName, lossyLinkTarget } from '../fs/byte-names.js';
import type { SymlinkNode } from '../core/reapi.js';
import type { Digest } from '../core/digest.js';
import type { CachedListing, DirStat } from './stat-cache.js';

export interface ScannedFile {
  name: string;
  /** Absolute path on disk (for --follow-symlinks, the link's path; it is opened following). */
  abs: string;
  /** The absolute path of its directory (abs is `${dirAbs}/${name}`). */
  dirAbs: string;
  /** Path relative to the snapshot root, '/'-separated. */
  rel: string;
  executable: boolean;
  size: number;
  /**
   * Its lstat, STAT_FIELDS numbers from `stats[at]` (STAT_DEV, STAT_INO, STAT_MTIME, STAT_CTIME):
   * the packed result of its batch, shared, not copied.
   *
   * Perf: filling dev, ino, mtimeMs and ctimeMs into each file object cost a heap number per
   * non-small value, ~80k times two to four; with their GC the largest part of the main thread in
   * an unchanged snapshot of the Linux tree (profiled). Without: wall 0.670 s against 0.695 s,
   * peak RSS 169 MB against 179 (medians of 10 interleaved runs, load 6-9 on 2 cores).
   */
  stats: Float64Array;
  at: number;
  /** Set once hashed (or empty); a cached file's digest is in the stat cache (StatCache.entryDigest). */
  digest?: Digest;
  /** The file's stat is as the stat cache recorded it, at entry cacheIndex. */
  cached?: boolean;
  /**
   * The file's entry in the stat cache: from its directory's cached listing before the lookup,
   * the entry found by the lookup after it; else -1.
   */
  cacheIndex: number;
}

export interface ScannedDir {
  name: string;
  rel: string;
  /** Its regular files as objects; empty while (or when) they are a run of cache entries (`run`). */
  files: ScannedFile[];
  /** Its regular files as the stat pass sees them; absent when it has none. */
  run?: FileRun;
  symlinks: SymlinkNode[];
  dirs: ScannedDir[];
  /** The directory's own stat, taken before it was listed; absent when its listing must not be kept. */
  stat?: DirStat;
  /** Set when the listing came from the stat cache instead of readdir. */
  listing?: CachedListing;
  /** The Directory message digest, once known. */
  digest?: Digest;
}

export interface SkippedEntry {
  path: string;
  kind: 'socket' | 'fifo' | 'block-device' | 'character-device' | 'unknown';
}

export interface WalkOptions {
  exclude?: readonly string[];
  followSymlinks?: boolean;
  strict?: boolean;
  onSkip?: (s: SkippedEntry) => void;
  /**
   * Listings kept from the last snapshot: a directory whose stat it matches is not read again.
   * Never given with followSymlinks (what a link points to can change while its directory does not).
   */
  listings?: (rel: string, st: DirStat) => CachedListing | undefined;
  /** Called before each directory with every run of files found so far, so work on them can start early. */
  onRuns?: (runs: readonly FileRun[]) => void;
}

/**
 * A directory's regular files, by name, for the stat pass. A listed directory's files are objects
 * from the start (`files`); a cached listing's are names only, the stat cache's entries `first` on,
 * and become objects (materializeRun) only when one of them differs from its entry.
 *
 * Perf: an unchanged snapshot of the Linux tree made an object (with its abs and rel strings) for
 * each of its 78,579 files, and filled, looked up and checked each on the main thread; with its GC
 * that was most of the main thread's work. A run compares the packed stats with the cache's entries
 * in place and makes nothing per file: wall 0.530 s against 0.670 s, user+sys CPU 0.83 s against
 * 1.13 s, peak RSS 126 MB against 156 (medians of 10 interleaved runs, load 5-7 on 2 cores).
 */
export interface FileRun {
  dir: ScannedDir;
  dirAbs: string;
  names: readonly string[];
  files: ScannedFile[] | undefined;
  /** The stat cache entry of names[0] (the rest follow in order); -1 when they are not a run. */
  first: number;
  /** Where the lstats of names[start, end) are: `packed` from index `at`, STAT_FIELDS each. */
  stats: { packed: Float64Array; at: number; start: number; end: number }[];
}

export interface WalkResult {
  root: ScannedDir;
  /** The files made objects by the walk (those of listed directories), in walk order. */
  files: ScannedFile[];
  /** Every directory's files, as runs in walk order (a listed directory's run holds its `files`). */
  runs: FileRun[];
  /** Every directory, the root first, parents before children. */
  allDirs: ScannedDir[];
  directories: number;
  symlinks: number;
  skipped: SkippedEntry[];
  /** Directories listed with readdir (the rest came from cached listings). */
  readDirectories: number;
}

const READDIR_OPTS = { withFileTypes: true } as const;
const LSTAT_OPTS = { throwIfNoEntry: false } as const;

/** Compiles --exclude globs: a pattern without '/' matches a name at any depth, else the relative path. */
export function excludeMatcher(patterns: readonly string[] = []): ((rel: string, name: string) => boolean) | undefined {
  if (patterns.length === 0) return undefined;
  const byName = patterns.filter((p) => !p.includes('/'));
  const byPath = patterns.filter((p) => p.includes('/')).map((p) => p.replace(/^\/+/, ''));
  const nameM = byName.length ? picomatch(byName, { dot: true }) : undefined;
  const pathM = byPath.length ? picomatch(byPath, { dot: true }) : undefined;
  return (rel, name) => (nameM !== undefined && nameM(name)) || (pathM !== undefined && pathM(rel));
}

export function walk(rootAbs: string, opts: WalkOptions = {}): WalkResult {
  const excluded = excludeMatcher(opts.exclude);
  const follow = opts.followSymlinks === true;
  const root: ScannedDir = { name: '', rel: '', files: [], symlinks: [], dirs: [] };
  const files: ScannedFile[] = [];
  const runs: FileRun[] = [];
  const skipped: SkippedEntry[] = [];
  const allDirs: ScannedDir[] = [root];
  const listings = follow ? undefined : opts.listings;
  let directories = 0;
  let symlinks = 0;
  let readDirectories = 0;

  const rootStat = fs.statSync(rootAbs);
  // Stack of [dir, abs path, depth, ancestor identities for --follow-symlinks loop detection].
  const stack: [ScannedDir, string, number, string[]][] = [[root, rootAbs, 0, [`${rootStat.dev}:${rootStat.ino}`]]];
  while (stack.length > 0) {
    opts.onRuns?.(runs);
    const [dir, abs, depth, ancestors] = stack.pop()!;
    if (depth > MAX_DEPTH) throw new CaptureError(`${abs} nests deeper than ${MAX_DEPTH} levels`, { path: abs });
    if (listings !== undefined) {
      // Perf: on the Linux tree (5,096 directories) an unchanged snapshot spent ~0.1 s in readdir
      // and its Dirent objects; one lstat per directory instead lets it list none of them.
      const st = dir === root ? rootStat : fs.lstatSync(abs, LSTAT_OPTS);
      if (st === undefined || !st.isDirectory()) throw new CaptureError(`${abs} disappeared or changed type while the snapshot ran`, { path: abs });
      dir.stat = { dev: st.dev, ino: st.ino, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
      const hit = listings(dir.rel, dir.stat);
      if (hit !== undefined) {
        dir.listing = hit;
        const prefix = dir.rel === '' ? '' : `${dir.rel}/`;
        if (hit.files.length > 0) {
          dir.run = { dir, dirAbs: abs, names: hit.files, files: undefined, first: hit.firstFile, stats: [] };
          runs.push(dir.run);
        }
        for (const l of hit.symlinks) dir.symlinks.push(l);
        symlinks += hit.symlinks.length;
        for (const name of hit.dirs) {
          const sub: ScannedDir = { name, rel: prefix + name, files: [], symlinks: [], dirs: [] };
          dir.dirs.push(sub);
          allDirs.push(sub);
          stack.push([sub, `${abs}/${name}`, depth + 1, ancestors]);
        }
        directories += hit.dirs.length;
        continue;
      }
    }
    readDirectories++;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(abs, READDIR_OPTS);
    } catch (e) {
      throw new CaptureError(`cannot read directory ${abs}: ${(e as NodeJS.ErrnoException).code ?? e}`, { path: abs, cause: e });
    }
    for (let i = 0; i < entries.length; i++) {
      const ent = entries[i]!;
      const name = ent.name;
      const rel = dir.rel === '' ? name : `${dir.rel}/${name}`;
      if (excluded !== undefined && excluded(rel, name)) continue;
      // After the excludes: the error's hint is to leave such a name out with --exclude.
      if (name.includes('\ufffd')) checkUtf8Name(abs, name);
      const path = `${abs}/${name}`;
      let isFile = ent.isFile();
      let isDir = ent.isDirectory();
      let isLink = ent.isSymbolicLink();
      let st: fs.Stats | undefined;
      if (!isFile && !isDir && !isLink) {
        // DT_UNKNOWN on some filesystems, or a special file: ask lstat.
        st = fs.lstatSync(path, LSTAT_OPTS);
        if (!st) continue;
        isFile = st.isFile();
        isDir = st.isDirectory();
        isLink = st.isSymbolicLink();
        if (!isFile && !isDir && !isLink) {
          const s: SkippedEntry = { path, kind: specialKind(st) };
          if (opts.strict) throw new SpecialFileError(`${path} is a ${s.kind}; treecast stores only files, directories and symlinks`, { path });
          // Listed again next time, so the warning (or --strict's error) is given every time.
          dir.stat = undefined;
          skipped.push(s);
          opts.onSkip?.(s);
          continue;
        }
      }
      if (isLink && follow) {
        st = fs.statSync(path, LSTAT_OPTS);
        if (!st) throw new CaptureError(`symlink ${path} points to nothing (with --follow-symlinks every link must resolve)`, { path });
        isFile = st.isFile();
        isDir = st.isDirectory();
        isLink = false;
        if (!isFile && !isDir) {
          const s: SkippedEntry = { path, kind: specialKind(st) };
          if (opts.strict) throw new SpecialFileError(`${path} leads to a ${s.kind}`, { path });
          skipped.push(s);
          opts.onSkip?.(s);
          continue;
        }
      }
      if (isDir) {
        const sub: ScannedDir = { name, rel, files: [], symlinks: [], dirs: [] };
        dir.dirs.push(sub);
        allDirs.push(sub);
        directories++;
        let chain = ancestors;
        if (follow) {
          st ??= fs.statSync(path);
          const id = `${st.dev}:${st.ino}`;
          if (ancestors.includes(id)) throw new SymlinkLoopError(`symlink loop: ${path} leads back to one of its own parents`, { path });
          chain = [...ancestors, id];
        }
        stack.push([sub, path, depth + 1, chain]);
      } else if (isFile) {
        // Stat fields are filled by statPaths (or here, when a stat was needed anyway).
        const f: ScannedFile = { name, abs: path, dirAbs: abs, rel, executable: false, size: -1, stats: NO_STATS, at: 0, digest: undefined, cached: false, cacheIndex: -1 };
        if (st) fillStat(f, Float64Array.of(st.mode, st.dev, st.ino, st.size, st.mtimeMs, st.ctimeMs), 0);
        dir.files.push(f);
        files.push(f);
      } else {
        let target: string;
        try {
          target = fs.readlinkSync(path);
        } catch (e) {
          throw new CaptureError(`cannot read symlink ${path}: ${(e as NodeJS.ErrnoException).code ?? e}`, { path, cause: e });
        }
        if (target.includes('\ufffd')) checkUtf8Target(path, target);
        dir.symlinks.push({ name, target });
        symlinks++;
      }
    }
    if (dir.files.length > 0) {
      dir.run = { dir, dirAbs: abs, names: dir.files.map((f) => f.name), files: dir.files, first: -1, stats: [] };
      runs.push(dir.run);
    }
  }
  return { root, files, runs, allDirs, directories, symlinks, skipped, readDirectories };
}

/**
 * Makes the files of a cached listing's run objects (one of them differs from its cache entry, or
 * they are not a run of entries), each knowing its entry; their stats are then filled by fillRun.
 */
export function materializeRun(run: FileRun): ScannedFile[] {
  const dir = run.dir;
  const prefix = dir.rel === '' ? '' : `${dir.rel}/`;
  const files = run.names.map((name, k): ScannedFile => ({
    name,
    abs: `${run.dirAbs}/${name}`,
    dirAbs: run.dirAbs,
    rel: prefix + name,
    executable: false,
    size: -1,
    stats: NO_STATS,
    at: 0,
    digest: undefined,
    cached: false,
    cacheIndex: run.first < 0 ? -1 : run.first + k,
  }));
  run.files = files;
  dir.files = files;
  return files;
}

/** Fills each of the run's file objects with its lstat; a file gone or no longer regular is a CaptureError. */
export function fillRun(run: FileRun): void {
  const files = run.files!;
  for (const s of run.stats) {
    for (let k = s.start, o = s.at; k < s.end; k++, o += STAT_FIELDS) {
      const f = files[k]!;
      if (Number.isNaN(s.packed[o]!)) throw new CaptureError(`${f.abs} disappeared or changed type while the snapshot ran`, { path: f.abs });
      fillStat(f, s.packed, o);
    }
  }
}

function fillStat(f: ScannedFile, packed: Float64Array, at: number): void {
  f.executable = (packed[at]! & 0o100) !== 0;
  f.size = packed[at + STAT_SIZE]!;
  f.stats = packed;
  f.at = at;
}

/** Numbers per file in a packed stat result: mode, dev, ino, size, mtimeMs, ctimeMs. */
export const STAT_FIELDS = 6;
export const STAT_DEV = 1;
export const STAT_INO = 2;
export const STAT_SIZE = 3;
export const STAT_MTIME = 4;
export const STAT_CTIME = 5;
/** The stats of a file not statted yet. */
const NO_STATS = new Float64Array(STAT_FIELDS);

/**
 * Files to stat, as runs of names sharing a directory: `counts[k]` names of `names` are in
 * directory `dirs[k]`, in order.
 *
 * Perf: an unchanged snapshot of the Linux tree posted 78,579 paths of ~60 characters to the
 * threads, each first flattened from the `${dir}/${name}` it was built as, then copied into the
 * message (~15% of the main thread's profile). The names are already flat and a fifth of that;
 * each thread builds the paths itself. Wall 1.03 s against 1.15 s (medians of 10 interleaved
 * runs, load 7-8 on 2 cores).
 */
export interface StatRequest {
  dirs: string[];
  counts: number[];
  names: string[];
}

/** Where each part of a stat request's names comes from: names [start, end) of `run`. */
export type StatPieces = { run: FileRun; start: number; end: number }[];

/**
 * Takes the next names of `runs` (from run `cursor.run`, name `cursor.pos` on) up to `limit` names,
 * advancing the cursor; returns the request and where each piece's stats will land.
 */
export function statRequest(runs: readonly FileRun[], cursor: { run: number; pos: number }, limit: number): { req: StatRequest; pieces: StatPieces } {
  const req: StatRequest = { dirs: [], counts: [], names: [] };
  const pieces: StatPieces = [];
  while (req.names.length < limit && cursor.run < runs.length) {
    const run = runs[cursor.run]!;
    const start = cursor.pos;
    const end = Math.min(run.names.length, start + limit - req.names.length);
    req.dirs.push(run.dirAbs);
    req.counts.push(end - start);
    for (let k = start; k < end; k++) req.names.push(run.names[k]!);
    pieces.push({ run, start, end });
    if (end === run.names.length) {
      cursor.run++;
      cursor.pos = 0;
    } else cursor.pos = end;
  }
  return { req, pieces };
}

/** Records where each piece's stats are in `packed`, the result of the request the pieces made. */
export function placeStats(pieces: StatPieces, packed: Float64Array): void {
  let at = 0;
  for (const p of pieces) {
    p.run.stats.push({ packed, at, start: p.start, end: p.end });
    at += (p.end - p.start) * STAT_FIELDS;
  }
}

/**
 * lstat (stat with `follow`) of each file of the request, packed into one Float64Array; NaN mode
 * for a path that vanished or is no longer a regular file. Runs on worker threads (op
 * capture.stat) or inline.
 */
export function statPaths(req: StatRequest, follow: boolean): Float64Array {
  const out = new Float64Array(req.names.length * STAT_FIELDS);
  const opts = { throwIfNoEntry: false } as const;
  let i = 0;
  for (let k = 0; k < req.dirs.length; k++) {
    const prefix = `${req.dirs[k]!}/`;
    for (const end = i + req.counts[k]!; i < end; i++) {
      const path = prefix + req.names[i]!;
      const st = follow ? fs.statSync(path, opts) : fs.lstatSync(path, opts);
      const o = i * STAT_FIELDS;
      if (!st || !st.isFile()) {
        out[o] = NaN;
        continue;
      }
      out[o] = st.mode;
      out[o + STAT_DEV] = st.dev;
      out[o + STAT_INO] = st.ino;
      out[o + STAT_SIZE] = st.size;
      out[o + STAT_MTIME] = st.mtimeMs;
      out[o + STAT_CTIME] = st.ctimeMs;
    }
  }
  return out;
}

function specialKind(st: fs.Stats): SkippedEntry['kind'] {
  if (st.isSocket()) return 'socket';
  if (st.isFIFO()) return 'fifo';
  if (st.isBlockDevice()) return 'block-device';
  if (st.isCharacterDevice()) return 'character-device';
  return 'unknown';
}

/** Node decodes invalid UTF-8 names lossily; the raw bytes tell a real U+FFFD from one. */
function checkUtf8Name(dirAbs: string, name: string): void {
  const raw = lossyEntryName(dirAbs, name);
  if (raw === undefined) return;
  throw new CaptureError(`${dirAbs}/${escapeControl(raw)} has a name that is not valid UTF-8; REAPI trees hold UTF-8 names only`, {
    path: `${dirAbs}/${name}`,
    hint: 'rename it (for example with convmv) or leave it out with --exclude',
  });
}

function checkUtf8Target(path: string, target: string): void {
  if (lossyLinkTarget(path) !== undefined) throw new CaptureError(`symlink ${path} has a target that is not valid UTF-8 ('${target}')`, { path });
}
