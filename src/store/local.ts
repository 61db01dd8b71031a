/**
 * The local content-addressed store on disk.
 *
 *   STORE/cas/ab/<sha256>        blobs, read-only (0444), sharded by the first two hex digits
 *   STORE/cas-exec/ab/<sha256>   read-only executable twins (0555), made on demand for hardlink
 *                                checkouts so that a shared inode is never chmod-ed
 *   STORE/refs/<name>            "<digest>\n"
 *   STORE/tmp/                   writes in progress; a blob reaches its final name only by link (or rename)
 *   STORE/stat-cache/, checkouts/  per-directory records kept by snapshot and checkout
 *
 * Methods are synchronous so worker threads can batch them (see fs/worker-pool.ts); the async
 * BlobStore methods wrap them for callers that want the common interface.
 */
import * as fs from 'node:fs';
// Named imports for the calls a checkout makes per file (see materialize/import-file.ts).
import { lstatSync, openSync } from 'node:fs';
/** lstat's options for a name that may be absent, one object for every call. */
const MAY_BE_ABSENT = { throwIfNoEntry: false } as const;
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { threadId } from 'node:worker_threads';
import { type Digest, EMPTY_DIGEST, formatDigest, isHash, parseDigest, sameDigest, sha256Hex } from '../core/digest.js';
import {
  BlobNotFoundError,
  CaptureError,
  DigestMismatchError,
  FileSystemError,
  InvalidDigestError,
  InvalidRefNameError,
  NotAStoreError,
  RefExistsError,
  RefNotFoundError,
  StoreDamagedError,
  fsError,
  notDirectoryParent,
} from '../errors.js';
import type { BlobStore } from './store.js';
import { makeDirectories } from '../fs/make-dirs.js';
import { linkRefused } from '../fs/link-refused.js';

export const SHARDS = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const SHARD_NAMES = new Set(SHARDS);
/** Files up to this size are read whole into a reused buffer; larger ones are streamed. */
const WHOLE_READ_LIMIT = 8 << 20;
const CHUNK = 1 << 20;

let tmpCounter = 0;
/** A name tmpPath makes (`<tag>-<pid>-<thread>-<n>`, a suffix allowed): the only ones gc sweeps from tmp/. */
const TMP_NAME = /^[a-z]+-\d+-\d+-\d+/;
// Perf: one growable buffer per thread for whole-file reads, instead of an allocation per file.
let scratch = Buffer.allocUnsafe(1 << 20);

/** What the walker saw of a file; ingest refuses a file that no longer matches it. */
export interface ExpectedStat {
  ino: number;
  size: number;
  mtimeMs: number;
}

/** Where the store lives: the option, then TREECAST_STORE, then $XDG_CACHE_HOME/treecast, then ~/.cache/treecast. */
export function defaultStorePath(option?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (option) return resolve(option);
  if (env.TREECAST_STORE) return resolve(env.TREECAST_STORE);
  const cache = env.XDG_CACHE_HOME && env.XDG_CACHE_HOME.startsWith('/') ? env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return join(cache, 'treecast');
}

const REF_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*(\/[A-Za-z0-9_][A-Za-z0-9._-]*)*$/;
/** Shaped like a digest (hex, '/', digits) or a long hex string: always read as a digest, never a ref. */
const DIGEST_SHAPED = /^[0-9a-fA-F]+\/[0-9]+$|^[0-9a-fA-F]{40,}/;

export function checkRefName(name: string): void {
  if (!REF_RE.test(name) || DIGEST_SHAPED.test(name) || name.length > 200 || name.split('/').some((p) => p.endsWith('.lock') || p.includes('..'))) {
    throw new InvalidRefNameError(`invalid ref name '${name}'`, {
      hint: 'ref names use letters, digits, ".", "_", "-" and "/" between parts, and may not contain ".."',
    });
  }
}

export class LocalStore implements BlobStore {
  readonly root: string;
  private readonly casDir: string;
  private readonly execDir: string;
  private readonly tmpDir: string;
  private readonly shards = new Set<string>();
  /** Shard folders ensureShardOf made or found, by slot: 0-255 under cas/, 256-511 under cas-exec/. */
  private readonly madeShards = new Uint8Array(512);
  /** Store folders (shards, cas/, cas-exec/) this process found to be real folders (checkShard, isSoundFolder). */
  private readonly soundFolders = new Set<string>();
  /** The shard folders of soundFolders by slot (shardSlot): 0-255 under cas/, 256-511 under cas-exec/. */
  private readonly soundShards = new Uint8Array(512);

  constructor(root: string) {
    this.root = resolve(root);
    this.casDir = join(this.root, 'cas');
    this.execDir = join(this.root, 'cas-exec');
    this.tmpDir = join(this.root, 'tmp');
  }

  /** Opens (creating when absent) the store at `root`. */
  static open(root: string): LocalStore {
    const s = new LocalStore(root);
    s.init();
    return s;
  }

  /**
   * Creates the top folders; safe to race with another process doing the same. Shard folders are
   * made on first use (ensureShard): making all 512 up front cost ~0.3 s on ext4 for a new store.
   */
  init(): void {
    try {
      if (fs.existsSync(this.tmpDir) && fs.existsSync(this.casDir)) return;
      refuseForeignFolder(this.root);
      for (const d of [this.root, this.casDir, this.execDir, this.tmpDir, join(this.root, 'refs')]) makeDirectories(d);
    } catch (e) {
      if (e instanceof NotAStoreError) throw e;
      throw fsError(e, 'cannot create store at', this.root);
    }
  }

  /**
   * Makes the shard folder of blob `hash` (under cas-exec/ when `exec`) exist, once per process.
   * Perf: a slot from the hash's first two characters, where ensureShard sliced the folder out of
   * the path and looked that new string up in a Set, twice per stored blob: 97-136 ms of each
   * writer thread's self time in a `checkout --remote` of the Linux tree (--cpu-prof, copy and
   * hardlink, one run each at load 6-10). blobTmpPath + blobPathForLink for each of the Linux
   * tree's 78,549 file digests (157,098 calls, 5 timed rounds per process, two processes each):
   * 40-78 ms of CPU before, 8-18 ms after. An import worker had 72-109 ms of its 5.2-5.5 s in
   * ensureShard (cpu-prof, load 6), which writeBlobSync also no longer repeats.
   */
  private ensureShardOf(hash: string, exec: boolean): void {
    const hi = hexDigit(hash.charCodeAt(0));
    const lo = hexDigit(hash.charCodeAt(1));
    if (hi < 0 || lo < 0) {
      this.ensureShard(exec ? this.executableBlobPath(hash) : this.blobPath(hash));
      return;
    }
    const slot = (exec ? 256 : 0) + hi * 16 + lo;
    if (this.madeShards[slot] === 1) return;
    this.ensureShard(exec ? this.executableBlobPath(hash) : this.blobPath(hash));
    this.madeShards[slot] = 1;
  }

  /** Makes the shard folder of `path` (a blob or temp path inside one) exist, once per process. */
  private ensureShard(path: string): void {
    const dir = path.slice(0, path.lastIndexOf('/'));
    if (this.shards.has(dir)) return;
    // Checked before it is made (a linked cas/ would have the shard made in the link's target) and
    // after (what the mkdir found may be a link): a blob is never written through a planted link.
    // Not remembered for reads (soundFolders): a read checks for itself.
    const top = dir.slice(0, dir.lastIndexOf('/'));
    if (this.checkBlobFolder(top, false)) this.checkBlobFolder(dir, false);
    makeDirectories(dir);
    this.checkBlobFolder(top, false);
    this.checkBlobFolder(dir, false);
    this.shards.add(dir);
  }

  blobPath(hash: string): string {
    return `${this.casDir}/${hash.slice(0, 2)}/${hash}`;
  }

  /** blobPath, with its shard folder made: for a caller that links a verified file there itself. */
  blobPathForLink(hash: string): string {
    this.ensureShardOf(hash, false);
    return this.blobPath(hash);
  }

  /** Where the executable twin of a blob lives (it may not exist yet; see executablePathSync). */
  executableBlobPath(hash: string): string {
    return `${this.execDir}/${hash.slice(0, 2)}/${hash}`;
  }

  /** executableBlobPath, with its shard folder made: for a caller that links a verified 0555 file there itself. */
  executablePathForLink(hash: string): string {
    this.ensureShardOf(hash, true);
    return this.executableBlobPath(hash);
  }

  /**
   * A fresh, unique path in the store's tmp folder (same filesystem as the blobs). Unique by
   * process, thread and counter: no random bytes needed (Perf: randomBytes cost 0.4 s per worker
   * on the Linux tree).
   */
  tmpPath(tag = 'w'): string {
    return `${this.tmpDir}/${tag}-${process.pid}-${threadId}-${++tmpCounter}`;
  }

  /**
   * A temp name for a blob being written, in the blob's own shard folder. Perf: the rename then
   * stays inside one directory, and parallel writers spread over 256 directory locks instead of
   * contending for one tmp folder. Names start with '.', so no listing mistakes them for blobs.
   */
  blobTmpPath(hash: string): string {
    this.ensureShardOf(hash, false);
    return `${this.casDir}/${hash.slice(0, 2)}/.tmp-${process.pid}-${threadId}-${++tmpCounter}`;
  }

  /**
   * Whether blob `d` is in the store: a regular file at its name. Anything else there (a symlink,
   * to a file holding the right bytes, to a folder or dangling; a folder; a fifo) is a
   * StoreDamagedError naming it, as is a shard folder (or cas/) that is a symlink (checkShard), as
   * for a read: the store never wrote a blob behind such an entry, and a snapshot or pull that
   * counted it present would name a blob no checkout can read.
   */
  hasSync(d: Digest): boolean {
    if (d.size === 0) return true;
    const p = this.blobPath(d.hash);
    // Perf: one lstat (no exception when absent) in place of existsSync's access(), which follows a
    // link at the name (and finds a dangling one absent): the same one call for an absent blob, a
    // Stats object more for one found. In one process, 3 rounds each, two processes per side,
    // interleaved (load 2-3): 157,098 asks of random hashes against a store of 256 blobs 475-565 ms
    // before, 478-541 ms after; 166,532 asks all found (a store of the Linux tree, every blob
    // twice) 364-406 ms before, 554-685 ms after. `treecast snapshot` of the Linux tree, CPU
    // (user+sys), 3 interleaved pairs at load 9: into an empty store 4.89-5.15 s (median 5.04)
    // before, 4.94-5.19 s (5.06) after; unchanged again 0.54-0.57 s against 0.53-0.59 s; with the
    // stat cache removed (every file hashed and found stored) 2.78-2.99 s (2.82) against
    // 2.85-3.17 s (3.00). existsSync first and an lstat only when found would cost a call more
    // per found blob, and still take a dangling link for absent.
    // The shard is looked at (checkShardOf: one lstat per shard folder and thread, then a
    // typed-array read) only for a blob found there: one that is absent is absent through a link
    // too (a write checks the shard itself). Looked at first, a shard not made yet (never remembered
    // as sound) cost a failing lstat on every ask, as when a pull into an empty store asks for every
    // blob before it writes one: 157,098 asks of random hashes against a store of 256 blobs, in one
    // process, 3 rounds each, took 703-707 ms that way and 486-514 ms this way.
    let st: fs.Stats | undefined;
    try {
      st = lstatSync(p, MAY_BE_ABSENT);
    } catch {
      return false; // as existsSync: a file in the way of the shard (ENOTDIR), or no access; a write says why
    }
    if (st === undefined) return false;
    this.checkShardOf(d.hash, false, p);
    if (!st.isFile()) throw this.notBlobFileError(d, p, entryKind(st));
    return true;
  }

  /**
   * hasSync for a caller that must answer rather than fail: an entry hasSync refuses
   * (StoreDamagedError) answers `damaged`. The server's /tree counts it not held, as its GET and
   * hasExact do; the action cache's bad-tree check counts it held (something unreadable is there).
   */
  hasSyncOr(d: Digest, damaged: boolean): boolean {
    try {
      return this.hasSync(d);
    } catch (e) {
      if (e instanceof StoreDamagedError) return damaged;
      throw e;
    }
  }

  /** Reads and verifies a blob. A blob whose bytes disagree with its name is reported, never returned. */
  readSync(d: Digest): Buffer {
    if (d.size === 0) return Buffer.alloc(0);
    const p = this.blobPath(d.hash);
    let bytes: Buffer;
    try {
      // Perf: the same system calls as readFileSync(path) (open, statx, read, close): strace -c of
      // 62,000 reads of 200 B-4 KiB files on tmpfs counted 248,176 calls before, 248,177 after (the
      // one lstat of the shard); CPU 402-578 ms against 417-584 ms (8 interleaved runs each, load noisy).
      const fd = this.openBlobFile(d, p);
      try {
        bytes = fs.readFileSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    } catch (e) {
      if (e instanceof StoreDamagedError) throw e;
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new BlobNotFoundError(`blob ${formatDigest(d)} is not in the store ${this.root}`, { digest: formatDigest(d) });
      }
      throw this.damagedBlobError(e, d) ?? fsError(e, `cannot read blob ${formatDigest(d)} at`, p);
    }
    const actual = { hash: sha256Hex(bytes), size: bytes.length };
    if (!sameDigest(actual, d)) {
      throw new DigestMismatchError(`corrupt blob ${formatDigest(d)}: its bytes hash to ${formatDigest(actual)}`, {
        digest: formatDigest(d),
        path: p,
        hint: 'run `treecast verify --repair` to remove corrupt blobs, then fetch or snapshot them again',
      });
    }
    return bytes;
  }

  /**
   * Refuses a shard folder of the store that is not a real folder (a symlink planted there would
   * lead every read, link and removal of its blobs outside the store). One lstat per shard and
   * process; `path` is a blob path inside the shard.
   */
  checkShard(path: string): void {
    // Perf: a checkout asks once per file. A blob path's shard found sound is one typed-array read
    // by its two hex digits, not a slice and a Set lookup of the folder's path: String.lastIndexOf
    // alone was 14.8 M instructions of a copy checkout of the node_modules corpus (callgrind).
    const slot = this.shardSlot(path);
    if (slot >= 0 && this.soundShards[slot] === 1) return;
    const dir = path.slice(0, path.lastIndexOf('/'));
    if (this.soundFolders.has(dir)) {
      if (slot >= 0) this.soundShards[slot] = 1;
      return;
    }
    // cas/ or cas-exec/ itself first: a link there would lead to shards outside the store.
    if (!this.checkBlobFolder(dir.slice(0, dir.lastIndexOf('/'))) || !this.checkBlobFolder(dir)) return;
    if (slot >= 0) this.soundShards[slot] = 1;
  }

  /**
   * checkShard for `p`, the path of blob `hash` (blobPath, or executableBlobPath when `exec`): a
   * shard already found sound is looked up by the hash's first two hex digits, so the path (a
   * string just joined from parts) is not read character by character before the call that uses it.
   * Perf: a hardlink checkout of the node_modules corpus (26,242 files) had 31 ms of main-thread self
   * time in checkShard and shardSlot (--cpu-prof, load ~6), and joined each blob's path twice (here
   * and in the caller); with the caller's path passed in and this lookup, callgrind counted 1,376 M
   * -> 1,351 M instructions on the main thread and 485 M -> 432 M on the worker (one run each).
   * Interleaved runs, CPU (user+sys): Linux tree hardlink checkout 1.210 -> 1.180 s (medians, 14
   * pairs, lower in 12, load 3-5); node_modules hardlink 0.655 -> 0.630 s (12 pairs, lower in 9).
   */
  checkShardOf(hash: string, exec: boolean, p: string): void {
    // Its length alone tells a path laid out as the blob's (or twin's) path: no character is read.
    if (p.length === (exec ? this.execDir.length : this.casDir.length) + 68 && hash.length === 64) {
      const hi = hexDigit(hash.charCodeAt(0));
      const lo = hexDigit(hash.charCodeAt(1));
      if (hi >= 0 && lo >= 0 && this.soundShards[(exec ? 256 : 0) + hi * 16 + lo] === 1) return;
    }
    this.checkShard(p);
  }

  /**
   * True when `dir` is a real folder (remembered in soundFolders); a link or other entry there is a
   * StoreDamagedError. False when absent or a file is in its way: the caller's own call then fails
   * (ENOENT, ENOTDIR) and says so.
   */
  private checkBlobFolder(dir: string, remember = true): boolean {
    if (this.soundFolders.has(dir)) return true;
    const st = lstatSync(dir, MAY_BE_ABSENT);
    if (st === undefined || st.isFile()) return false;
    if (!st.isDirectory()) throw damagedBlobFolderError(this.root, dir, st);
    if (remember) this.soundFolders.add(dir);
    return true;
  }

  /**
   * For a path laid out as blobPath or executableBlobPath make it (the store's cas/ or cas-exec/,
   * '/', two lowercase hex digits, '/', a 64-character name), the slot of its shard folder in
   * soundShards; -1 for any other path (checkShard then goes by the folder's path alone).
   */
  private shardSlot(path: string): number {
    const n = path.length;
    const base = n - 68;
    if (base <= 0 || path.charCodeAt(base) !== 0x2f || path.charCodeAt(n - 65) !== 0x2f) return -1;
    const hi = hexDigit(path.charCodeAt(base + 1));
    const lo = hexDigit(path.charCodeAt(base + 2));
    if (hi < 0 || lo < 0) return -1;
    if (base === this.casDir.length && path.startsWith(this.casDir)) return hi * 16 + lo;
    if (base === this.execDir.length && path.startsWith(this.execDir)) return 256 + hi * 16 + lo;
    return -1;
  }

  /** isRealFolder, remembered when true (soundFolders): gc removing thousands of blobs checks each folder once. */
  private isSoundFolder(dir: string): boolean {
    if (this.soundFolders.has(dir)) return true;
    if (!isRealFolder(dir)) return false;
    this.soundFolders.add(dir);
    return true;
  }

  /**
   * A read-only descriptor of blob `d`'s file at `p` (the blob or its executable twin), never through
   * a symlink: one planted at the name (O_NOFOLLOW: ELOOP) or as its shard folder (checkShard) is a
   * StoreDamagedError naming it; any other error (ENOENT, ...) is thrown as it came, for the
   * caller to name in its own terms.
   */
  openBlobFile(d: Digest, p = this.blobPath(d.hash)): number {
    // The blob's own path or its twin's (executableBlobPath, the longer: cas-exec/ against cas/).
    this.checkShardOf(d.hash, p.length !== this.casDir.length + 68, p);
    try {
      return openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw this.notBlobFileError(d, p, 'a symbolic link');
      throw e;
    }
  }

  /**
   * The lstat of blob `d`'s file (or of its executable twin), refusing anything but a regular file
   * in a real shard folder: a checkout links or copies it, and a symlink there is never followed.
   * Undefined when absent.
   */
  blobFileStat(d: Digest, executable = false, p = executable ? this.executableBlobPath(d.hash) : this.blobPath(d.hash)): fs.Stats | undefined {
    this.checkShardOf(d.hash, executable, p);
    const st = lstatSync(p, MAY_BE_ABSENT);
    if (st !== undefined && !st.isFile()) throw this.notBlobFileError(d, p, entryKind(st));
    return st;
  }

  /** The store holds something other than a regular file at blob `d`'s name `p`. */
  notBlobFileError(d: Digest, p: string, what: string): StoreDamagedError {
    return damagedBlobFileError(this.root, p, what, formatDigest(d));
  }

  /**
   * For an error met reading blob `d` (here, or by a checkout copying or linking it): when one of
   * the store's folders on the way is a file (ENOTDIR), or the blob's name a folder (EISDIR), the
   * error naming the blob, the store and that cause; the path's own "not a directory" told neither.
   * Undefined when the store's side is sound (the error is the caller's own path's).
   */
  damagedBlobError(e: unknown, d: Digest): FileSystemError | undefined {
    const code = (e as NodeJS.ErrnoException)?.code;
    const p = this.blobPath(d.hash);
    const inTheWay = code === 'EISDIR' ? (isDirectory(p) ? p : undefined) : notDirectoryParent(e, p);
    if (inTheWay === undefined) return undefined;
    const why = code === 'EISDIR' ? `${p} is a directory, not the blob's file` : `${inTheWay} is a file where the store needs a folder`;
    return new FileSystemError(`cannot read blob ${formatDigest(d)} in the store ${this.root}: ${why} (${code})`, {
      path: inTheWay,
      digest: formatDigest(d),
      cause: e,
      syscallCode: code,
      hint: `the store is damaged there: move ${inTheWay} away, then snapshot or pull what needs the blob again`,
    });
  }

  /** Stores bytes (checked against `expected` when given) and returns their digest. */
  putSync(bytes: Uint8Array, expected?: Digest): Digest {
    const d = { hash: sha256Hex(bytes), size: bytes.byteLength };
    if (expected && !sameDigest(d, expected)) {
      throw new DigestMismatchError(`bytes hash to ${formatDigest(d)}, not ${formatDigest(expected)}; not stored`, {
        digest: formatDigest(expected),
      });
    }
    return this.putHashedSync(bytes, d);
  }

  /** Stores bytes whose digest this process has just computed itself (no second hash). */
  putHashedSync(bytes: Uint8Array, d: Digest): Digest {
    if (d.size === 0) return EMPTY_DIGEST;
    if (this.hasSync(d)) return d;
    return this.writeBlobSync(bytes, d);
  }

  /**
   * Stores bytes without asking first whether the store has them: for a caller that found the
   * store holding no blobs when it started (hasNoBlobsSync). A blob written twice (by this caller
   * or a racing one) keeps the first copy (see commitTmp).
   */
  putNewSync(bytes: Uint8Array): Digest {
    const d = { hash: sha256Hex(bytes), size: bytes.byteLength };
    return d.size === 0 ? EMPTY_DIGEST : this.writeBlobSync(bytes, d);
  }

  /** Whether the store holds no blobs: one readdir of the blob folder and of each shard folder made. */
  hasNoBlobsSync(): boolean {
    for (const s of safeReaddir(this.casDir)) for (const n of safeReaddir(join(this.casDir, s))) if (isHash(n)) return false;
    return true;
  }

  private writeBlobSync(bytes: Uint8Array, d: Digest): Digest {
    const tmp = this.blobTmpPath(d.hash);
    try {
      fs.writeFileSync(tmp, bytes, { mode: 0o444, flag: 'wx' });
      // As commitTmp, without its shard check: blobTmpPath has just made the shard (see there).
      this.linkBlobIn(tmp, this.blobPath(d.hash), d.hash);
    } catch (e) {
      removeQuietly(tmp);
      throw fsError(e, 'cannot write blob', this.blobPath(d.hash));
    }
    return d;
  }

  /**
   * Gives a complete, verified tmp file its final name, and removes the tmp name. Racing writers of
   * one blob both succeed, and the blob, once there, is never replaced: the tmp file is linked in
   * (EEXIST: another writer stored it first, verified too, and that one stays), not renamed over
   * it. Renamed over, the first blob's inode lost its only name while a hardlink checkout that had
   * just looked it up was linking it, and link() of an inode with no name fails with ENOENT (as
   * executablePathSync met it for executable twins).
   *
   * Perf: link + unlink costs ~2 µs more per blob than one rename (50,000 4 KiB blobs on tmpfs:
   * 440-456 ms of CPU in the commit against 339-354 ms, 3 runs each), ~0.17 s over the Linux tree's
   * 78,549 blobs; ext4 showed no difference (851-901 ms both). Interleaved runs on the Linux tree
   * (two sets, 5 and 4 pairs, a shared machine at load 5-17), CPU medians against rename: snapshot
   * into an empty store 6.93 s against 6.72 and 7.71 against 7.15, checkout --remote 8.52 against
   * 8.02 and 8.41 against 8.00, each inside the other's spread (6.04-9.03 s, 7.33-10.49 s). No
   * cheaper shape is race-free: a rename "when the blob is new" still replaces a racing writer's
   * copy (both saw it absent), writing at the final name shows a half-written blob, and Node has
   * neither renameat2(RENAME_NOREPLACE) nor linkat(AT_EMPTY_PATH) to name the file in one call.
   */
  commitTmp(tmp: string, hash: string): void {
    this.ensureShardOf(hash, false);
    this.linkBlobIn(tmp, this.blobPath(hash), hash);
  }

  /**
   * linkInOnce of `tmp` at `p`, the file of blob `hash` (or its twin). A name found taken keeps what
   * is there only when that is a regular file (another writer's copy); anything else (a symlink
   * planted there, dangling or not, a folder, a fifo) is a StoreDamagedError naming it, with `tmp`
   * removed: the blob was not stored, and the caller must not name it as stored (hasSync, which
   * the caller asked first, refuses the same entry; this is the entry planted since).
   */
  private linkBlobIn(tmp: string, p: string, hash: string): void {
    if (linkInOnce(tmp, p)) return;
    const st = lstatSync(p, MAY_BE_ABSENT);
    if (st !== undefined && !st.isFile()) {
      const size = lstatSync(tmp, MAY_BE_ABSENT)?.size;
      removeQuietly(tmp);
      throw damagedBlobFileError(this.root, p, entryKind(st), size === undefined ? hash : formatDigest({ hash, size }));
    }
    removeQuietly(tmp);
  }

  /**
   * Hashes the regular file at `path` and stores it unless present. When `expect` is given (from the
   * walker's lstat), a file whose identity or size differs, or that changes while it is read, is a
   * CaptureError naming the path: nothing partial is stored.
   */
  ingestFileSync(path: string, expect?: ExpectedStat, followSymlink = false): { digest: Digest } {
    let fd: number;
    try {
      fd = fs.openSync(path, followSymlink ? fs.constants.O_RDONLY : fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (e) {
      const blocker = notDirectoryParent(e, path);
      const why = blocker === undefined ? '' : `: ${blocker} is not a directory`;
      throw new CaptureError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? e}${why}`, { path, cause: e });
    }
    let tmp: string | undefined;
    try {
      const before = fs.fstatSync(fd);
      const stat = before;
      if (!before.isFile()) throw new CaptureError(`${path} is ${expect ? 'no longer ' : 'not '}a regular file`, { path });
      if (expect && (expect.ino !== stat.ino || expect.size !== stat.size || expect.mtimeMs !== stat.mtimeMs)) {
        throw changedError(path);
      }
      let total = 0;
      let digest: Digest;
      if (stat.size <= WHOLE_READ_LIMIT) {
        // One read of exactly the size seen; a file that grows or changes meanwhile shows in the
        // fstat after (size, mtime or ctime), so no extra read to hit EOF is needed.
        if (scratch.length < stat.size) scratch = Buffer.allocUnsafe(Math.max(stat.size, scratch.length * 2));
        let n: number;
        while (total < stat.size && (n = fs.readSync(fd, scratch, total, stat.size - total, total)) > 0) total += n;
        if (total !== stat.size) throw changedError(path);
        const data = scratch.subarray(0, total);
        // Perf: one-shot crypto.hash, no Hash object per file (~0.13 s per worker on the Linux tree).
        digest = { hash: sha256Hex(data), size: total };
        checkUnchanged(fd, before, path);
        if (total > 0 && !this.hasSync(digest)) {
          tmp = this.blobTmpPath(digest.hash);
          fs.writeFileSync(tmp, data, { mode: 0o444, flag: 'wx' });
          this.commitTmp(tmp, digest.hash);
          tmp = undefined;
        }
      } else {
        tmp = this.tmpPath();
        const hash = createHash('sha256');
        const out = fs.openSync(tmp, 'wx', 0o444);
        try {
          const buf = Buffer.allocUnsafe(CHUNK);
          let n: number;
          while ((n = fs.readSync(fd, buf, 0, CHUNK, total)) > 0) {
            hash.update(buf.subarray(0, n));
            writeAll(out, buf, n);
            total += n;
          }
        } finally {
          fs.closeSync(out);
        }
        if (total !== stat.size) throw changedError(path);
        checkUnchanged(fd, before, path);
        digest = { hash: hash.digest('hex'), size: total };
        if (this.hasSync(digest)) removeQuietly(tmp);
        else this.commitTmp(tmp, digest.hash);
        tmp = undefined;
      }
      return { digest: total === 0 ? EMPTY_DIGEST : digest };
    } catch (e) {
      if (tmp) removeQuietly(tmp);
      if (e instanceof CaptureError) throw e;
      // A failed write (disk full, read-only) is the store's; a failed read is the file's.
      const err = e as NodeJS.ErrnoException;
      if (err.syscall === 'write' || err.path?.startsWith(this.root)) throw fsError(e, `cannot store ${path} in the store at`, this.root);
      throw fsError(e, 'cannot store', path);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Path of a read-only executable twin of a blob, made on first use. Hardlink checkouts link
   * executables to it, so the mode of the shared inode is never changed.
   *
   * A twin, once there, is never replaced: the new one is linked in (EEXIST: another thread or
   * process made it first, and that one stays), not renamed over it. Renamed over, the first
   * twin's inode lost its only name while another thread that had just looked it up was linking
   * it into a checkout, and link() of an inode with no name fails with ENOENT: a hardlink
   * checkout of the node_modules corpus, whose many `.bin/semver` shims are one blob, failed so
   * on a fresh store when both threads made that twin at once.
   */
  executablePathSync(d: Digest): string {
    const p = this.executableBlobPath(d.hash);
    // lstat, and a regular file only: link() of a symlink planted here would put that link in a checkout.
    if (this.blobFileStat(d, true)) return p;
    this.blobFileStat(d); // the plain blob it is copied from, likewise
    const tmp = this.tmpPath('x');
    try {
      fs.copyFileSync(this.blobPath(d.hash), tmp, fs.constants.COPYFILE_FICLONE | fs.constants.COPYFILE_EXCL);
      fs.chmodSync(tmp, 0o555);
      this.ensureShard(p);
      this.linkBlobIn(tmp, p, d.hash);
    } catch (e) {
      removeQuietly(tmp);
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !this.hasSync(d)) {
        throw new BlobNotFoundError(`blob ${formatDigest(d)} is not in the store ${this.root}`, { digest: formatDigest(d) });
      }
      throw fsError(e, 'cannot prepare executable blob', p);
    }
    return p;
  }

  /** Every stored blob hash, shard by shard. */
  *listHashes(): Generator<string> {
    // Only shards that are real folders: one planted as a symlink is never listed (nor its blobs
    // removed by gc through it); verify reports it. One readdir of cas/ gives the types.
    if (!isRealFolder(this.casDir)) return;
    for (const s of realFolders(this.casDir)) if (SHARD_NAMES.has(s)) for (const n of safeReaddir(join(this.casDir, s))) if (isHash(n)) yield n;
  }

  /** Paths of writes in progress (or abandoned by a process that died): the tmp folder and the shards' .tmp-* files. */
  *listTmpFiles(): Generator<string> {
    // Real folders only: nothing is listed (and so removed) through a planted symlink, whether it
    // stands for tmp/, cas/ or a shard.
    // Only names tmpPath makes: a folder the user chose as the store may have held a tmp/ of theirs.
    if (isRealFolder(this.tmpDir)) for (const name of safeReaddir(this.tmpDir)) if (TMP_NAME.test(name)) yield join(this.tmpDir, name);
    if (!isRealFolder(this.casDir)) return;
    for (const s of realFolders(this.casDir)) {
      if (!SHARD_NAMES.has(s)) continue;
      for (const name of safeReaddir(join(this.casDir, s))) if (name.startsWith('.tmp-')) yield join(this.casDir, s, name);
    }
  }

  /** Removes a blob (and its executable twin); a blob that cannot be removed is an error naming it. */
  removeBlobSync(hash: string): void {
    for (const p of [this.blobPath(hash), this.executableBlobPath(hash)]) {
      // Never through a shard folder (or cas/, cas-exec/) that is not a real folder (verify reports
      // it): the unlink would remove a file wherever a planted symlink points.
      const shard = p.slice(0, p.lastIndexOf('/'));
      if (!this.isSoundFolder(shard) || !this.isSoundFolder(shard.slice(0, shard.lastIndexOf('/')))) continue;
      try {
        fs.unlinkSync(p);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError(e, 'cannot remove', p);
      }
    }
  }

  // ------------------------------------------------------------ refs
  //
  // Nothing under refs/ is read, listed or written through a symbolic link: refs/ and each folder of
  // a ref's name are looked at by lstat (checkStoreFolders, on every use: refs are few) and a ref
  // file is opened with O_NOFOLLOW, so a link planted there (which would read, or write into, any
  // file it points at) is a StoreDamagedError naming it; `verify --repair` removes it.

  private refPath(name: string): string {
    checkRefName(name);
    return join(this.root, 'refs', name);
  }

  private get refsDir(): string {
    return join(this.root, 'refs');
  }

  /**
   * Whether the folders of ref `name` (refs/ down to its parent) are real folders; a link among them
   * is refused. Looked at on every use (an lstat per level; a ref is read or written a few times per
   * command), not remembered: another process may remove a folder of refs (refs --delete) or put
   * a link in its place at any time.
   */
  private refFoldersSound(name: string): boolean {
    return checkStoreFolders(this.root, this.refsDir, join(this.refsDir, name, '..'), 'a folder of refs');
  }

  /** refFoldersSound for a write of ref `name`: each folder made or found real, never entered through a link. */
  private makeRefFolders(name: string): void {
    makeStoreFolders(this.root, this.refsDir, join(this.refsDir, name, '..'), 'a folder of refs');
  }

  /**
   * Refuses a ref name another ref is in the way of (`a` while `a/b` exists, or `a/b` while `a`
   * does), as git refuses it: asked before a command's work, so it is not lost at the last step.
   */
  checkRefWritable(name: string): void {
    const p = this.refPath(name);
    // An error other than a clash (an unreadable store) is left to the write to report.
    const lstat = (q: string) => {
      try {
        return fs.lstatSync(q, { throwIfNoEntry: false });
      } catch {
        return undefined;
      }
    };
    const clash = (why: string) => new InvalidRefNameError(`cannot write ref '${name}': ${why}`, { hint: 'choose another name, or list refs with `treecast refs`' });
    if (lstat(p)?.isDirectory()) throw clash(`refs named '${name}/…' exist`);
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      const q = join(this.refsDir, parent);
      const st = lstat(q);
      if (st === undefined) return;
      if (st.isSymbolicLink()) throw damagedEntryError(this.root, q, entryKind(st), 'a folder of refs');
      if (!st.isDirectory()) throw clash(`ref '${parent}' exists`);
    }
  }

  writeRef(name: string, d: Digest): void {
    const p = this.refPath(name);
    const tmp = this.tmpPath('ref');
    try {
      // Each folder made or found real, never entered through a link; the rename replaces a link
      // planted at the ref's own name (the link itself, never its target).
      this.makeRefFolders(name);
      fs.writeFileSync(tmp, `${formatDigest(d)}\n`, { flag: 'wx' });
      fs.renameSync(tmp, p);
    } catch (e) {
      removeQuietly(tmp);
      if (e instanceof StoreDamagedError) throw e;
      this.checkRefWritable(name); // another ref came in the way since the command began
      throw fsError(e, 'cannot write ref', p);
    }
  }

  readRef(name: string): Digest | undefined {
    const p = this.refPath(name);
    let text: string;
    try {
      if (!this.refFoldersSound(name)) return undefined;
      text = readStoreEntry(this.root, p, 'a ref').toString('utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (e instanceof StoreDamagedError) throw e;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw fsError(e, 'cannot read ref', p);
    }
    try {
      return parseDigest(text.trim());
    } catch (e) {
      // A damaged ref file (edited by hand, cut short) names itself: every command listing refs
      // (refs, gc) reads it, and the digest's own error named neither the ref nor the file.
      throw new InvalidDigestError(`ref '${name}' (${p}) holds no digest: ${(e as Error).message}`, {
        path: p,
        digest: text.trim(),
        hint: `write it again (\`treecast snapshot DIR --ref ${name}\`) or remove it (\`treecast refs --delete ${name}\`)`,
        cause: e,
      });
    }
  }

  /**
   * Every ref, sorted by name. A symbolic link in refs/ (for refs/ itself, a folder of refs or a
   * ref) is a StoreDamagedError naming it, as a ref holding no digest is an error: gc lists refs to
   * know what to keep, and must not go on without one of them (nor read one through a link).
   */
  listRefs(): { name: string; digest: Digest }[] {
    const out: { name: string; digest: Digest }[] = [];
    const base = this.refsDir;
    const top = fs.lstatSync(base, { throwIfNoEntry: false });
    if (top === undefined) return out;
    if (!top.isDirectory()) throw damagedEntryError(this.root, base, entryKind(top), 'the folder of refs');
    const walk = (dir: string, prefix: string) => {
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const name = prefix + e.name;
        // The entry's own type (readdir's d_type, as lstat): a link to a folder is not descended into.
        if (e.isDirectory()) walk(join(dir, e.name), `${name}/`);
        else if (e.isSymbolicLink()) throw damagedEntryError(this.root, join(dir, e.name), 'a symbolic link', 'a ref');
        else if (e.isFile()) {
          const d = this.readRef(name);
          if (d) out.push({ name, digest: d });
        }
      }
    };
    walk(base, '');
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * The lstat of ref `name`'s file, refusing a link in its way (at its name or among its folders);
   * a missing ref (or a folder of refs at its name) is a RefNotFoundError.
   */
  private existingRef(name: string): { path: string; digest?: Digest } {
    const p = this.refPath(name);
    const missing = () => new RefNotFoundError(`no ref '${name}' in the store ${this.root}`, { path: p, hint: 'list refs with `treecast refs`' });
    if (!this.refFoldersSound(name)) throw missing();
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    if (st === undefined || st.isDirectory()) throw missing();
    if (!st.isFile()) throw damagedEntryError(this.root, p, entryKind(st), 'a ref');
    let digest: Digest | undefined;
    try {
      digest = this.readRef(name);
    } catch (e) {
      if (!(e instanceof InvalidDigestError)) throw e; // a ref holding no digest may still be deleted or renamed
    }
    return { path: p, digest };
  }

  /**
   * Deletes refs (as `git update-ref -d`): every name is checked first (valid, an existing ref, no
   * link in its way), so a missing one deletes none; then each file is unlinked and the folders of
   * refs left empty are removed. Blobs stay: gc removes what no ref reaches any more. gc may run
   * meanwhile: a ref it listed keeps its tree for that run, and one it did not was already gone.
   */
  deleteRefs(names: readonly string[]): { name: string; digest?: Digest }[] {
    const found = names.map((name) => ({ name, ...this.existingRef(name) }));
    for (const f of found) {
      try {
        fs.unlinkSync(f.path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // named twice, or deleted by another process meanwhile
        throw fsError(e, 'cannot delete ref', f.path);
      }
      this.pruneRefFolders(f.name);
    }
    return found.map((f) => (f.digest ? { name: f.name, digest: f.digest } : { name: f.name }));
  }

  /**
   * Renames ref `from` to `to` with no moment where neither name exists: link(from, to), then unlink
   * `from` (link never replaces, so a `to` made meanwhile is a RefExistsError, nothing changed); with
   * `force`, one rename(2) that replaces `to` atomically. The caller holds the store's writer lock
   * (guardStoreWriter), so gc never lists refs while the tree is between two names.
   */
  renameRef(from: string, to: string, force = false): { digest?: Digest; replaced?: Digest } {
    const src = this.existingRef(from);
    const dst = this.refPath(to);
    if (from === to) return src.digest ? { digest: src.digest } : {};
    this.checkRefWritable(to);
    const exists = () =>
      new RefExistsError(`cannot rename ref '${from}' to '${to}': ref '${to}' exists`, {
        path: dst,
        hint: `pass --force to replace it, or delete it first (\`treecast refs --delete ${to}\`)`,
      });
    let replaced: Digest | undefined;
    const there = this.refFoldersSound(to) ? fs.lstatSync(dst, { throwIfNoEntry: false }) : undefined;
    if (there !== undefined) {
      if (!there.isFile()) throw damagedEntryError(this.root, dst, entryKind(there), 'a ref');
      if (!force) throw exists();
      try {
        replaced = this.readRef(to);
      } catch (e) {
        if (!(e instanceof InvalidDigestError)) throw e;
      }
    }
    try {
      this.makeRefFolders(to);
      if (force) fs.renameSync(src.path, dst);
      else {
        try {
          fs.linkSync(src.path, dst);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw exists();
          if (!linkRefused(e)) throw e;
          // A filesystem without hard links: the rename, after the look above.
          fs.renameSync(src.path, dst);
        }
        removeQuietly(src.path);
      }
    } catch (e) {
      if (e instanceof StoreDamagedError || e instanceof RefExistsError) throw e;
      this.checkRefWritable(to);
      throw fsError(e, `cannot rename ref '${from}' to`, dst);
    }
    this.pruneRefFolders(from);
    return { ...(src.digest ? { digest: src.digest } : {}), ...(replaced ? { replaced } : {}) };
  }

  /** Removes the folders of ref `name` left empty (rmdir only: never a folder holding anything). */
  private pruneRefFolders(name: string): void {
    const parts = name.split('/');
    for (let i = parts.length - 1; i >= 1; i--) {
      const dir = join(this.refsDir, ...parts.slice(0, i));
      try {
        fs.rmdirSync(dir);
      } catch {
        return; // not empty (another ref), or already gone
      }
    }
  }

  /** A digest string or a ref name, as accepted wherever the CLI takes a DIGEST. */
  resolve(spec: string): Digest {
    // Anything shaped like a digest is taken as one, so a typo gets the digest's error.
    if (DIGEST_SHAPED.test(spec)) return parseDigest(spec);
    const d = this.readRef(spec);
    if (!d) throw new RefNotFoundError(`no ref or digest '${spec}' in the store ${this.root}`, { hint: 'list refs with `treecast refs`' });
    return d;
  }

  // ------------------------------------------------------------ BlobStore

  async has(d: Digest): Promise<boolean> {
    return this.hasSync(d);
  }
  async get(d: Digest): Promise<Buffer> {
    return this.readSync(d);
  }
  async put(bytes: Uint8Array, expected?: Digest): Promise<Digest> {
    return this.putSync(bytes, expected);
  }
}

function changedError(path: string): CaptureError {
  return new CaptureError(`${path} changed while it was being read`, { path, hint: 'run the snapshot again once it is stable' });
}

function checkUnchanged(fd: number, before: fs.Stats, path: string): void {
  const after = fs.fstatSync(fd);
  if (after.size !== before.size || after.mtimeMs !== before.mtimeMs || after.ctimeMs !== before.ctimeMs) throw changedError(path);
}

function writeAll(fd: number, buf: Buffer, n: number): void {
  let off = 0;
  while (off < n) off += fs.writeSync(fd, buf, off, n - off);
}

/** The names in `dir`, or none when it cannot be listed. */
export function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Gives the file `tmp` the name `final` unless that name exists (the first one stays): true when
 * it did, with the name `tmp` removed; false when `final` was taken, with `tmp` left for the
 * caller (LocalStore.linkBlobIn) to remove once it has looked at what is there. A store file, once
 * named, is never replaced under a thread linking it.
 */
function linkInOnce(tmp: string, final: string): boolean {
  try {
    fs.linkSync(tmp, final);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    if (!linkRefused(e)) throw e;
    // A filesystem without hard links (where hardlink checkouts copy, so nothing races) gets the rename.
    fs.renameSync(tmp, final);
    return true;
  }
  removeQuietly(tmp);
  return true;
}

/** The names of the real folders (not symlinks to folders) in `dir`, sorted; none when it cannot be listed. */
export function realFolders(dir: string): string[] {
  try {
    return fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name)
      .sort();
  } catch {
    return [];
  }
}

/** Whether `p` is a folder itself, not a symlink to one (nor absent). */
export function isRealFolder(p: string): boolean {
  try {
    return fs.lstatSync(p, { throwIfNoEntry: false })?.isDirectory() === true;
  } catch {
    return false;
  }
}

/** What a store entry that should be a file or folder is instead, for messages. */
export function entryKind(st: fs.Stats): string {
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isDirectory()) return 'a directory';
  if (st.isFile()) return 'a regular file';
  return 'a special file';
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() === true;
  } catch {
    return false;
  }
}

/**
 * The error for a store entry at `path` that is `what` ("a symbolic link", ...) where the store keeps
 * `role` ("a ref", "a folder of refs", ...): it was not followed. `more.then` says what to do after
 * the repair (for a blob: fetch or snapshot it again); `more.digest` names the blob.
 */
export function damagedEntryError(root: string, path: string, what: string, role: string, more: { digest?: string; then?: string } = {}): StoreDamagedError {
  return new StoreDamagedError(`the store ${root} is damaged: ${path} is ${what}, not ${role}; it was not followed`, {
    path,
    ...(more.digest === undefined ? {} : { digest: more.digest }),
    hint: `run \`treecast verify --repair\` to remove it (only the entry in the store goes, never what it points to)${more.then === undefined ? '' : `, then ${more.then}`}`,
  });
}

/** The error for `dir`, cas/ (or cas-exec/) or a shard folder, found to be `st` and not a real folder (a planted link). */
export function damagedBlobFolderError(root: string, dir: string, st: fs.Stats): StoreDamagedError {
  return damagedEntryError(root, dir, entryKind(st), 'a folder of blobs', { then: 'fetch or snapshot what needs its blobs again' });
}

/**
 * The error for `path`, the name of blob `digest` (`<hash>/<size>`, or the hash alone) in the store
 * at `root` (or of its executable twin), found to be `what` ("a symbolic link", ...) and not a
 * regular file: it was not followed, and the blob does not count as held.
 */
export function damagedBlobFileError(root: string, path: string, what: string, digest: string): StoreDamagedError {
  return damagedEntryError(root, path, what, `the file of blob ${digest}`, { digest, then: 'fetch or snapshot the blob again' });
}

/**
 * Looks, by lstat, at each folder from `top` down to `dir` (both included; `dir` is `top` or inside
 * it): true when every one is a real folder; false when one is absent, or a file is in its way (the
 * caller's own open or write then fails, or finds nothing, as it would have); a symbolic link or
 * special file among them is a StoreDamagedError naming it, so nothing is read or written through
 * it. With `make`, an absent folder is made (one mkdir per level, never through a link) and true
 * returned. Nothing is remembered: refs, action cache entries and records are few per command, and
 * another process may remove a folder or put a link in its place at any time.
 */
export function checkStoreFolders(root: string, top: string, dir: string, role: string, make = false): boolean {
  const levels = [top];
  if (dir !== top) for (const part of dir.slice(top.length + 1).split('/')) levels.push(`${levels[levels.length - 1]}/${part}`);
  for (const level of levels) {
    let st = fs.lstatSync(level, { throwIfNoEntry: false });
    if (st === undefined && make) {
      try {
        fs.mkdirSync(level);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      st = fs.lstatSync(level, { throwIfNoEntry: false });
    }
    if (st === undefined || st.isFile()) return false;
    if (!st.isDirectory()) throw damagedEntryError(root, level, entryKind(st), role);
  }
  return true;
}

/**
 * checkStoreFolders with `make`, for a write into `dir`: a file in the way of one of its folders is
 * an ENOTDIR error, which the writer's fsError reports with its own path.
 */
export function makeStoreFolders(root: string, top: string, dir: string, role: string): void {
  if (!checkStoreFolders(root, top, dir, role, true)) throw Object.assign(new Error(`not a directory: ${dir}`), { code: 'ENOTDIR' });
}

/**
 * readFileNoFollow for an entry the store keeps at `p` as `role` ("a ref", ...): a symbolic link
 * there is a StoreDamagedError naming it; any other error is thrown as it came.
 */
export function readStoreEntry(root: string, p: string, role: string): Buffer {
  try {
    return readFileNoFollow(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw damagedEntryError(root, p, 'a symbolic link', role);
    throw e;
  }
}

/** The bytes of the file at `p`, opened with O_NOFOLLOW (a symbolic link there fails with ELOOP). */
export function readFileNoFollow(p: string): Buffer {
  const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Refuses to make a store in `root` when it holds anything but a store's own folders: gc and
 * `verify --repair` remove files under a store's folders, so a store is made only in a new or empty
 * folder (a volume's `lost+found` allowed), or one a store was being made in (it has `cas/`, the
 * first folder init makes).
 */
function refuseForeignFolder(root: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (names.includes('cas') || names.every((n) => n === 'lost+found')) return;
  throw new NotAStoreError(`${root} is not a treecast store and is not empty: a store is made only in a new or empty folder`, {
    path: root,
    hint: 'choose a new or empty folder for the store (--store or TREECAST_STORE); treecast writes folders of its own there, and gc removes files in them',
  });
}

export function removeQuietly(p: string): void {
  try {
    fs.unlinkSync(p);
  } catch {
    /* already gone */
  }
}

/** The value of a lowercase hex digit's character code; -1 for any other. */
function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}
