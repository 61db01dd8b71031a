/**
 * The snapshot stat cache, kept per snapshotted root:
 * - for each file, the (device, inode, size, mtime, ctime) it had when hashed, and its digest, so a
 *   second snapshot of an unchanged tree reads no file contents;
 * - for each directory (as git's untracked cache does), its own stat taken before it was listed,
 *   its listing (file names and executable bits, subdirectory names, symlinks with targets) and its
 *   Directory message digest, so a directory whose stat is unchanged is not listed again and, when
 *   nothing under it changed either, its message is not rebuilt.
 *
 * Why a directory's stat is enough for its listing: creating, removing or renaming an entry
 * changes the directory's mtime and ctime, and an entry cannot change type in place (file -> dir
 * is an unlink and a mkdir). It is not enough for the files: writing a file in place leaves its
 * directory alone, so every file is still lstat'ed (snapshot.ts), as git stats every tracked file.
 * The listing part is only used with the same --exclude patterns and without --follow-symlinks
 * (what a link points to can change without its directory changing).
 *
 * The cache is trusted only while the tree pack of the snapshot that wrote it exists: gc removes a
 * tree's pack together with its blobs, and a digest from the cache must name a blob in the store.
 *
 * Racy entries (git's "racily clean" problem): a file or directory changed within the same
 * timestamp tick as the stat recorded for it keeps an identical stat. So an entry is trusted only
 * when its mtime and ctime are safely older than the start of the snapshot that recorded it;
 * younger files are re-hashed and younger directories listed again.
 *
 * Nothing in the store's `stat-cache/` is read or written through a symbolic link: the folder is
 * looked at by lstat on every load and save and an entry opened with O_NOFOLLOW, so a link planted
 * as either (whose target would be trusted as the cache, or overwritten by it) is a
 * StoreDamagedError naming it; `verify --repair` removes it. A save's rename replaces a link at the
 * entry's own name (the link itself, never its target).
 *
 * Perf: a compact binary file (numbers in Float64Arrays, hashes as raw bytes, names joined by
 * NUL) instead of JSON: on the Linux tree, loading and saving went from ~0.5 s to a few tens of
 * ms, and an unchanged snapshot does not rewrite it at all.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { type LocalStore, checkStoreFolders, damagedEntryError, makeStoreFolders, readStoreEntry } from '../store/local.js';
import { StoreDamagedError } from '../errors.js';
import { hasTreePack } from '../store/tree-pack.js';
import { type FileRun, type ScannedDir, type ScannedFile, STAT_CTIME, STAT_DEV, STAT_FIELDS, STAT_INO, STAT_MTIME, STAT_SIZE } from './walk.js';
import { type Digest, formatDigest, parseDigest } from '../core/digest.js';
import type { SymlinkNode } from '../core/reapi.js';

/** Coarse kernel clocks can stamp a change up to a tick (<= 10 ms) before "now"; keep a margin. */
const RACY_MARGIN_MS = 50;
const MAGIC = 'treecast-stat-cache-4';
const FIELDS = 5; // dev, ino, size, mtimeMs, ctimeMs
/** dev, ino, mtimeMs, ctimeMs, digest size, files, subdirectories, symlinks, index of its first file's entry (-1: none) */
const DIR_FIELDS = 9;
/** Ends the string list, so an empty list still splits to the right length. */
const END = '\u0001end';

interface Header {
  magic: string;
  root: string;
  startedMs: number;
  count: number;
  dirCount: number;
  /** Byte length of the files' paths (NUL-joined, END last), decoded only when a path is looked up. */
  pathBytes: number;
  /** The options the listings were made with; listings are used only under the same options. */
  listingKey: string;
  /** The root digest of the snapshot that wrote this cache (its tree pack holds every message). */
  tree: string;
}

/** A directory as the last snapshot listed it. */
export interface CachedListing {
  digest: Digest;
  files: string[];
  /** One character per file, 'x' when executable. */
  executable: string;
  dirs: string[];
  symlinks: SymlinkNode[];
  /** The entries of `files` are the cache's file entries from this index on, in order; -1 when not. */
  firstFile: number;
}

/** The identity and times of a directory, taken before it is listed. */
export interface DirStat {
  dev: number;
  ino: number;
  mtimeMs: number;
  ctimeMs: number;
}

/** The key under which listings made with these options are kept. */
export function listingKey(exclude: readonly string[] | undefined, followSymlinks: boolean | undefined): string | undefined {
  return followSymlinks ? undefined : JSON.stringify([...(exclude ?? [])]);
}

const FOLDER_ROLE = 'the folder of the stat cache';

/** The store's folder of stat caches, one file per snapshotted root. */
function cacheDir(store: LocalStore): string {
  return join(store.root, 'stat-cache');
}

export class StatCache {
  /** Path -> file entry, built on first use from `paths` (an unchanged tree never needs it). */
  private index: Map<string, number> | undefined;
  private paths: Buffer = Buffer.alloc(0);
  private count = 0;
  private nums: Float64Array = new Float64Array(0);
  private hashes: Buffer = Buffer.alloc(0);
  private dirIndex = new Map<string, number>();
  private dirNums: Float64Array = new Float64Array(0);
  private dirHashes: Buffer = Buffer.alloc(0);
  /** Per directory, where its names start in `strings`. */
  private dirStart: number[] = [];
  private strings: string[] = [];
  private trustBeforeMs = 0;
  /** The root digest of the snapshot that wrote the cache, when its listings are usable. */
  previousTree: Digest | undefined;
  /** Lookups answered from the cache in this run. */
  hits = 0;

  private constructor(
    private readonly store: LocalStore,
    private readonly file: string,
    private readonly root: string,
    private readonly key: string | undefined,
  ) {}

  /** Loads the cache of `rootAbs`; `key` (see listingKey) undefined means listings are not used. */
  static load(store: LocalStore, rootAbs: string, key: string | undefined): StatCache {
    const file = join(cacheDir(store), createHash('sha256').update(rootAbs).digest('hex'));
    const cache = new StatCache(store, file, rootAbs, key);
    try {
      // The folder looked at by lstat, the entry opened with O_NOFOLLOW: a link at either is damage, never a cache.
      if (!checkStoreFolders(store.root, cacheDir(store), cacheDir(store), FOLDER_ROLE)) throw Object.assign(new Error(`no folder ${cacheDir(store)}`), { code: 'ENOENT' });
      cache.read(readStoreEntry(store.root, file, 'a stat cache entry'));
    } catch (e) {
      if (e instanceof StoreDamagedError) throw e;
      // Absent or unreadable: start empty; the cache is only ever a shortcut.
      cache.count = 0;
      cache.index = new Map();
      cache.dirIndex = new Map();
    }
    return cache;
  }

  get size(): number {
    return this.count;
  }

  /** Whether directory listings are kept under the options of this run (not with --follow-symlinks). */
  get keepsListings(): boolean {
    return this.key !== undefined;
  }

  private read(buf: Buffer): void {
    const headerLen = buf.readUInt32LE(0);
    const header = JSON.parse(buf.toString('utf8', 4, 4 + headerLen)) as Header;
    if (header.magic !== MAGIC || header.root !== this.root) return;
    const tree = parseDigest(header.tree);
    if (!hasTreePack(this.store, tree)) return;
    const n = header.count;
    const nd = header.dirCount;
    let off = 4 + headerLen;
    const f64 = (count: number) => {
      const a = new Float64Array(buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + off + count * 8));
      off += count * 8;
      return a;
    };
    const raw = (len: number) => {
      const b = buf.subarray(off, off + len);
      off += len;
      return b;
    };
    const nums = f64(n * FIELDS);
    const hashes = raw(n * 32);
    const dirNums = f64(nd * DIR_FIELDS);
    const dirHashes = raw(nd * 32);
    const paths = raw(header.pathBytes);
    const strings = buf.toString('utf8', off).split('\0');
    if (nums.length !== n * FIELDS || hashes.length !== n * 32 || dirNums.length !== nd * DIR_FIELDS || dirHashes.length !== nd * 32) return;
    if (paths.length !== header.pathBytes || strings[strings.length - 1] !== END) return;
    // Where each directory's names start, checked against the length before anything is trusted;
    // and each directory's run of file entries inside the file entries.
    const dirStart: number[] = new Array(nd);
    let s = 0;
    for (let i = 0; i < nd; i++) {
      dirStart[i] = s;
      const o = i * DIR_FIELDS;
      s += 2 + dirNums[o + 5]! + dirNums[o + 6]! + 2 * dirNums[o + 7]!;
      const first = dirNums[o + 8]!;
      if (first !== -1 && !(Number.isInteger(first) && first >= 0 && first + dirNums[o + 5]! <= n)) return;
    }
    if (s !== strings.length - 1) return;
    this.count = n;
    this.paths = paths;
    this.nums = nums;
    this.hashes = hashes;
    this.trustBeforeMs = header.startedMs - RACY_MARGIN_MS;
    if (this.key === undefined || header.listingKey !== this.key) return;
    for (let i = 0; i < nd; i++) this.dirIndex.set(strings[dirStart[i]!]!, i);
    this.dirNums = dirNums;
    this.dirHashes = dirHashes;
    this.dirStart = dirStart;
    this.strings = strings;
    this.previousTree = tree;
  }

  /**
   * Whether `f`'s stat is as recorded and the entry is not racy; on a hit f.cacheIndex names the
   * entry, whose digest entryDigest gives. A file of a cached listing knows its entry already
   * (f.cacheIndex); any other is found by its path.
   *
   * Perf: on the Linux tree (78,579 files) an unchanged snapshot built the path -> entry map on
   * every load and looked each file up by path (a split of the paths, 78,579 map inserts, hashing
   * each lookup's path): without that, 0.650 s of user CPU against 0.705 s (medians of 10 runs
   * each, interleaved, load 7-9 on 2 cores).
   */
  lookup(f: ScannedFile): boolean {
    const i = f.cacheIndex >= 0 ? f.cacheIndex : this.entryOf(f.rel);
    if (i === undefined || !this.matches(i, f.stats, f.at)) return false;
    this.hits++;
    f.cacheIndex = i;
    return true;
  }

  /**
   * Whether every file of a cached listing's run has the stat (and executable bit) recorded in its
   * entry, none racy; counts them as hits then. Makes nothing per file (see FileRun).
   */
  runUnchanged(run: FileRun, executable: string): boolean {
    if (run.first < 0) return false;
    for (const s of run.stats) {
      for (let k = s.start, o = s.at; k < s.end; k++, o += STAT_FIELDS) {
        const mode = s.packed[o]!;
        if (Number.isNaN(mode) || (((mode & 0o100) !== 0) !== (executable.charCodeAt(k) === 120 /* x */)) || !this.matches(run.first + k, s.packed, o)) return false;
      }
    }
    this.hits += run.names.length;
    return true;
  }

  /** Whether entry i records the packed lstat at `at`, and is not racy. */
  private matches(i: number, st: Float64Array, at: number): boolean {
    const o = i * FIELDS;
    const v = this.nums;
    const mtimeMs = st[at + STAT_MTIME]!;
    const ctimeMs = st[at + STAT_CTIME]!;
    if (v[o] !== st[at + STAT_DEV] || v[o + 1] !== st[at + STAT_INO] || v[o + 2] !== st[at + STAT_SIZE] || v[o + 3] !== mtimeMs || v[o + 4] !== ctimeMs) return false;
    return ctimeMs < this.trustBeforeMs && mtimeMs < this.trustBeforeMs;
  }

  /**
   * The recorded digest of entry i (a file lookup() or runUnchanged() found unchanged).
   *
   * Perf: made only for files whose directory's message is built again; an unchanged snapshot of
   * the Linux tree made a hex string and a Digest for each of its 78,579 files, and used none.
   * Peak RSS 160 MB against 169; CPU the same within the noise (0.97 s, medians of 10 interleaved
   * runs at load 9 on 2 cores).
   */
  entryDigest(i: number): Digest {
    return { hash: this.hashes.toString('hex', i * 32, i * 32 + 32), size: this.nums[i * FIELDS + 2]! };
  }

  private entryOf(rel: string): number | undefined {
    if (this.index === undefined) {
      this.index = new Map();
      const paths = this.paths.toString('utf8').split('\0');
      if (paths.length !== this.count + 1 || paths[this.count] !== END) return undefined;
      for (let i = 0; i < this.count; i++) this.index.set(paths[i]!, i);
    }
    return this.index.get(rel);
  }

  /** The listing recorded for directory `rel` when its stat is unchanged and the entry is not racy. */
  listing(rel: string, st: DirStat): CachedListing | undefined {
    const i = this.dirIndex.get(rel);
    if (i === undefined) return undefined;
    const o = i * DIR_FIELDS;
    const v = this.dirNums;
    if (v[o] !== st.dev || v[o + 1] !== st.ino || v[o + 2] !== st.mtimeMs || v[o + 3] !== st.ctimeMs) return undefined;
    if (st.ctimeMs >= this.trustBeforeMs || st.mtimeMs >= this.trustBeforeMs) return undefined;
    const strings = this.strings;
    let s = this.dirStart[i]! + 1;
    const executable = strings[s++]!;
    const files = strings.slice(s, (s += v[o + 5]!));
    const dirs = strings.slice(s, (s += v[o + 6]!));
    const symlinks: SymlinkNode[] = new Array(v[o + 7]!);
    for (let k = 0; k < symlinks.length; k++, s += 2) symlinks[k] = { name: strings[s]!, target: strings[s + 1]! };
    return { digest: this.dirDigest(i), files, executable, dirs, symlinks, firstFile: v[o + 8]! };
  }

  /** The message digest recorded for directory `rel` (whatever its stat now), if any. */
  recordedDigest(rel: string): Digest | undefined {
    const i = this.dirIndex.get(rel);
    return i === undefined ? undefined : this.dirDigest(i);
  }

  private dirDigest(i: number): Digest {
    return { hash: this.dirHashes.toString('hex', i * 32, i * 32 + 32), size: this.dirNums[i * DIR_FIELDS + 4]! };
  }

  /**
   * Replaces the cache with this snapshot (started at `startedMs`, root digest `tree`), atomically.
   * `dirs` are every directory of the snapshot; the listings of those with a stat and a digest are
   * kept. Files are those hashed (digest set) or found unchanged (cached, or a run of entries left
   * unmaterialized: their hash is copied from this cache). Sets each file object's cacheIndex to
   * its entry in the new cache (-1 for files not kept); a directory's kept files are one run.
   */
  save(dirs: readonly ScannedDir[], tree: Digest, startedMs: number, tmpPath: string): void {
    let n = 0;
    for (const d of dirs) n += d.run?.files === undefined ? (d.run?.names.length ?? 0) : d.files.length;
    const nums = new Float64Array(n * FIELDS);
    const hashes = Buffer.allocUnsafe(n * 32);
    const paths: string[] = new Array(n + 1);
    const firstOf = new Map<ScannedDir, number>();
    let i = 0;
    for (const d of dirs) {
      const run = d.run;
      if (run === undefined) continue;
      const prefix = d.rel === '' ? '' : `${d.rel}/`;
      firstOf.set(d, i);
      if (run.files === undefined) {
        // Unchanged: the entries as they were, their stats equal to those recorded.
        const count = run.names.length;
        nums.set(this.nums.subarray(run.first * FIELDS, (run.first + count) * FIELDS), i * FIELDS);
        this.hashes.copy(hashes, i * 32, run.first * 32, (run.first + count) * 32);
        for (let k = 0; k < count; k++) paths[i + k] = prefix + run.names[k]!;
        i += count;
        continue;
      }
      for (const f of d.files) {
        // Empty files are kept too, so a directory's files stay one run of entries (see firstFile).
        if (f.digest === undefined && f.cached !== true) {
          firstOf.set(d, -1);
          f.cacheIndex = -1;
          continue;
        }
        if (f.digest !== undefined) hashes.write(f.digest.hash, i * 32, 32, 'hex');
        else this.hashes.copy(hashes, i * 32, f.cacheIndex * 32, f.cacheIndex * 32 + 32);
        // Its old entry is read: it names the new one from here on.
        f.cacheIndex = i;
        const o = i * FIELDS;
        nums[o] = f.stats[f.at + STAT_DEV]!;
        nums[o + 1] = f.stats[f.at + STAT_INO]!;
        nums[o + 2] = f.size;
        nums[o + 3] = f.stats[f.at + STAT_MTIME]!;
        nums[o + 4] = f.stats[f.at + STAT_CTIME]!;
        paths[i] = f.rel;
        i++;
      }
    }
    n = i;
    paths.length = n + 1;
    paths[n] = END;
    const pathBytes = Buffer.from(paths.join('\0'));
    const strings: string[] = [];
    const listed = this.key === undefined ? [] : dirs.filter((d) => d.stat !== undefined && d.digest !== undefined);
    const dirNums = new Float64Array(listed.length * DIR_FIELDS);
    const dirHashes = Buffer.allocUnsafe(listed.length * 32);
    for (let i = 0; i < listed.length; i++) {
      const d = listed[i]!;
      const o = i * DIR_FIELDS;
      const names = d.run?.names ?? [];
      const first = names.length === 0 ? 0 : (firstOf.get(d) ?? -1);
      dirNums.set([d.stat!.dev, d.stat!.ino, d.stat!.mtimeMs, d.stat!.ctimeMs, d.digest!.size, names.length, d.dirs.length, d.symlinks.length, first], o);
      dirHashes.write(d.digest!.hash, i * 32, 32, 'hex');
      let exec = '';
      if (d.run?.files === undefined) exec = d.listing?.executable ?? '';
      else for (const f of d.files) exec += f.executable ? 'x' : '-';
      strings.push(d.rel, exec);
      for (const name of names) strings.push(name);
      for (const s of d.dirs) strings.push(s.name);
      for (const l of d.symlinks) strings.push(l.name, l.target);
    }
    strings.push(END);
    const header = Buffer.from(
      JSON.stringify({
        magic: MAGIC,
        root: this.root,
        startedMs,
        count: n,
        dirCount: listed.length,
        pathBytes: pathBytes.length,
        listingKey: this.key ?? '',
        tree: formatDigest(tree),
      } satisfies Header),
    );
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32LE(header.length, 0);
    const body = Buffer.concat([len, header, Buffer.from(nums.buffer, 0, n * FIELDS * 8), hashes.subarray(0, n * 32), Buffer.from(dirNums.buffer), dirHashes, pathBytes, Buffer.from(strings.join('\0'))]);
    try {
      makeStoreFolders(this.store.root, cacheDir(this.store), cacheDir(this.store), FOLDER_ROLE);
      fs.writeFileSync(tmpPath, body, { flag: 'wx' });
      fs.renameSync(tmpPath, this.file);
    } catch (e) {
      // A cache that cannot be written costs speed next time, never correctness; a link planted as
      // its folder (since the load) is damage, reported.
      fs.rmSync(tmpPath, { force: true });
      if (e instanceof StoreDamagedError) throw e;
    }
  }
}
