/**
 * snapshot: walk -> (stat cache | hash in workers) -> store blobs -> Directory messages -> root digest.
 * Nothing is recorded as the snapshot (no ref, no cache) unless every file was captured.
 */
import { stopwatch } from '../core/clock.js';
import * as fs from 'node:fs';
import { join, resolve } from 'node:path';
import { type Digest, EMPTY_DIGEST } from '../core/digest.js';
import { type Directory, directoryBlob, type DirectoryNode, type FileNode } from '../core/reapi.js';
import { compareNames } from '../core/names.js';
import { CaptureError, InterruptedError, TargetError } from '../errors.js';
import { LocalStore } from '../store/local.js';
import { hasTreePack, readTreePack, writeTreePack } from '../store/tree-pack.js';
import { WorkerPool, defaultJobs, runBatches } from '../fs/worker-pool.js';
import { guardStoreWriter, realPathOf } from '../fs/target-guard.js';
import { type IngestItem, STAT_TAKEN, STAT_UNCLAIMED, type StatBatchPayload } from './ingest-op.js';
import { StatCache, listingKey } from './stat-cache.js';
import { type FileRun, type ScannedDir, type ScannedFile, type SkippedEntry, type StatPieces, type StatRequest, STAT_FIELDS, STAT_INO, STAT_MTIME, STAT_SIZE, fillRun, materializeRun, placeStats, statPaths, statRequest, walk } from './walk.js';

export interface SnapshotOptions {
  store: LocalStore;
  ref?: string;
  exclude?: readonly string[];
  followSymlinks?: boolean;
  strict?: boolean;
  /** Worker threads for hashing (default: one per core). */
  jobs?: number;
  onSkip?: (s: SkippedEntry) => void;
  onProgress?: (p: { done: number; total: number; bytes: number }) => void;
  signal?: AbortSignal;
}

export interface SnapshotResult {
  digest: Digest;
  files: number;
  directories: number;
  symlinks: number;
  bytes: number;
  /** Files read and hashed (the rest came from the stat cache or were empty). */
  hashedFiles: number;
  hashedBytes: number;
  cachedFiles: number;
  /** Directories listed with readdir (the rest had an unchanged stat and a cached listing). */
  readDirectories: number;
  /** Directories whose Directory message was reused unchanged instead of being rebuilt. */
  reusedDirectories: number;
  skipped: SkippedEntry[];
  seconds: number;
}

/**
 * Below this much work, hashing inline beats starting worker threads: a thread takes ~0.15 s to
 * start here, the time to hash and store a couple of thousand small files or ~64 MiB.
 */
const INLINE_MAX_FILES = 2000;
const INLINE_MAX_BYTES = 64 << 20;
/**
 * lstat is cheaper than hashing: inline up to this many files. Perf: ~4 us of CPU per lstat here,
 * while starting a thread costs 30 ms alone and 150-200 ms of CPU on a busy machine (its module
 * loading); on the node_modules corpus (26,242 files) two threads cost more CPU than all the lstats.
 */
const STAT_INLINE_MAX_FILES = 32_000;
const BATCH_FILES = 128;
const STAT_BATCH = 1024;
const BATCH_BYTES = 16 << 20;

export async function snapshot(dir: string, opts: SnapshotOptions): Promise<SnapshotResult> {
  const elapsed = stopwatch();
  if (opts.ref !== undefined) opts.store.checkRefWritable(opts.ref);
  const rootAbs = resolve(dir);
  const st = fs.statSync(rootAbs, { throwIfNoEntry: false });
  if (!st) throw new TargetError(`cannot snapshot ${rootAbs}: no such directory`, { path: rootAbs });
  if (!st.isDirectory()) throw new TargetError(`cannot snapshot ${rootAbs}: not a directory`, { path: rootAbs });
  const store = opts.store;
  const exclude = withStoreLeftOut(rootAbs, store.root, opts.exclude);
  store.init();
  // Before the stat cache is trusted: it vouches for blobs a gc running meanwhile could remove.
  const writer = guardStoreWriter(store.root, 'snapshot');

  const startedMs = Date.now();
  const cache = StatCache.load(store, rootAbs, listingKey(exclude, opts.followSymlinks));
  const jobs = Math.max(1, opts.jobs ?? defaultJobs());
  // Threads only for large work (starting one costs ~30 ms); once started, used for everything.
  const inline = new WorkerPool(0, { storeRoot: store.root });
  const started: WorkerPool[] = [];
  const start = (size: number) => {
    const p = new WorkerPool(size, { storeRoot: store.root });
    started.push(p);
    return p;
  };
  let pool: WorkerPool | undefined;
  const poolFor = (large: boolean) => pool ?? (large ? (pool = start(jobs)) : inline);
  // Perf: a tree the cache knows as large gets its stat threads now, so they start while this
  // thread walks (on the Linux tree the walk is ~0.2 s of CPU, thread start-up ~30 ms each). One
  // fewer than the cores, as the walk keeps one busy: an unchanged snapshot of the Linux tree on
  // 2 cores took 0.68 s of user+sys CPU with one stat thread against 0.735-0.78 s with two, wall
  // 1.27 s against 1.32-1.44 s, peak RSS 115 MB against 128 (medians of 8-10 interleaved runs,
  // load 7-9). Hashing much still gets a thread per core (poolFor).
  const statPool = cache.size > STAT_INLINE_MAX_FILES ? start(Math.max(1, jobs - 1)) : undefined;
  if (statPool?.size === jobs) pool = statPool;
  const stats = new StatBatches(statPool, opts.followSymlinks === true);
  const toHash: ScannedFile[] = [];
  let bytes = 0;
  let hashBytes = 0;
  try {
    const scan = walk(rootAbs, {
      exclude,
      followSymlinks: opts.followSymlinks,
      strict: opts.strict,
      onSkip: opts.onSkip,
      listings: (rel, dirStat) => cache.listing(rel, dirStat),
      onRuns: (runs) => stats.early(runs),
    });
    await stats.finish(scan.runs, statPool ?? poolFor(stats.names > STAT_INLINE_MAX_FILES));
    // A cached listing's run whose files all match their entries stays names only (see FileRun).
    const files = scan.files;
    let fileCount = files.length;
    for (const run of scan.runs) {
      if (run.files === undefined) {
        if (cache.runUnchanged(run, run.dir.listing!.executable)) {
          fileCount += run.names.length;
          bytes += runBytes(run);
          continue;
        }
        for (const f of materializeRun(run)) files.push(f);
        fileCount += run.names.length;
      }
      fillRun(run);
    }
    for (const f of files) {
      bytes += f.size;
      // Empty files have entries too (one run of entries per directory), so every entry is looked up.
      if (cache.lookup(f)) f.cached = true;
      else if (f.size === 0) f.digest = EMPTY_DIGEST;
      else {
        toHash.push(f);
        hashBytes += f.size;
      }
    }
    const small = toHash.length <= INLINE_MAX_FILES && hashBytes <= INLINE_MAX_BYTES;
    await hashFiles(toHash, small ? (statPool ?? poolFor(false)) : poolFor(true), opts);
    const { digest, reused } = storeTree(scan.root, store, cache, true);
    // Nothing hashed, every cached entry used, every message reused: the cache on disk is exactly right.
    if (toHash.length > 0 || cache.hits !== cache.size || (cache.keepsListings && reused !== scan.allDirs.length)) {
      cache.save(scan.allDirs, digest, startedMs, store.tmpPath('cache'));
    }
    if (opts.ref !== undefined) store.writeRef(opts.ref, digest);
    return {
      digest,
      files: fileCount,
      directories: scan.directories,
      symlinks: scan.symlinks,
      bytes,
      hashedFiles: toHash.length,
      hashedBytes: hashBytes,
      cachedFiles: fileCount - toHash.length,
      readDirectories: scan.readDirectories,
      reusedDirectories: reused,
      skipped: scan.skipped,
      seconds: elapsed(),
    };
  } finally {
    writer.release();
    await Promise.all(started.map((p) => p.close()));
  }
}

/**
 * `--exclude` plus the store when it lies inside DIR (a store kept in the project's folder), as git
 * leaves out `.git`: captured, each snapshot would hold the blobs of the one before and the store
 * would grow without end. DIR that is the store itself is refused.
 */
function withStoreLeftOut(rootAbs: string, storeRoot: string, exclude: readonly string[] | undefined): readonly string[] | undefined {
  const realRoot = realPathOf(rootAbs);
  const realStore = realPathOf(storeRoot);
  if (realStore === realRoot) throw new TargetError(`cannot snapshot ${rootAbs}: it is the store`, { path: rootAbs, hint: 'snapshot a directory outside the store' });
  const prefix = realRoot.endsWith('/') ? realRoot : `${realRoot}/`;
  if (!realStore.startsWith(prefix)) return exclude;
  // A path pattern (it has a '/'), its glob characters escaped: it matches the store's folder only.
  return [...(exclude ?? []), `/${realStore.slice(prefix.length).replace(/[\\*?[\]{}()!+@|^$]/g, '\\$&')}`];
}

/**
 * Fills in each file's lstat (FileRun.stats), in batches on the pool (see walk.ts for why not on
 * this thread while it walks).
 *
 * Perf: with threads already started, batches go out while the walk is still listing, so the
 * lstat of 78,579 files (~0.3 s of CPU on the Linux tree) runs beside the walk (~0.2 s) instead
 * of after it. Once the walk is done, this thread takes batches still waiting in a worker's queue
 * (from the last one back, while the worker goes forward; a claim in shared memory says who runs
 * each), instead of waiting idle for the worker to get through them: see finish().
 */
export class StatBatches {
  /** The next name to send: run index and position in it. */
  private readonly cursor = { run: 0, pos: 0 };
  /** Names found (in the runs seen so far) and names sent. */
  names = 0;
  private sent = 0;
  private seenRuns = 0;
  private readonly pending: Promise<void>[] = [];
  /** Batches posted to a worker, each with its claim slot (STAT_UNCLAIMED until a thread takes it). */
  private readonly posted: { req: StatRequest; pieces: StatPieces; claims: Int32Array<ArrayBufferLike>; slot: number }[] = [];
  private claims: Int32Array<ArrayBufferLike> = new Int32Array(0);
  private nextSlot = 0;
  /** Batches this thread took back from a worker's queue (for tests and the Perf figures). */
  stolen = 0;

  constructor(
    private readonly earlyPool: WorkerPool | undefined,
    private readonly follow: boolean,
  ) {}

  private count(runs: readonly FileRun[]): void {
    for (; this.seenRuns < runs.length; this.seenRuns++) this.names += runs[this.seenRuns]!.names.length;
  }

  /** Sends every whole batch of the files found so far, when threads are running. */
  early(runs: readonly FileRun[]): void {
    if (this.earlyPool === undefined) return;
    this.count(runs);
    while (this.names - this.sent >= STAT_BATCH) this.send(runs, this.earlyPool);
  }

  /**
   * Sends the rest, then (with workers) runs here every posted batch no worker has started, from
   * the last one back, and waits for the others.
   *
   * Perf: in an unchanged snapshot of the Linux tree on 2 cores this thread sat idle 335-534 ms
   * (--cpu-prof, 3 runs at load 9-11) while its one stat thread worked through the batches the walk
   * had queued; taking them back, it idles 0-30 ms and runs 10-39 of the 77 batches itself. CPU is
   * the same within the noise (user+sys medians 0.835 s before, 0.805 s after, 34 interleaved runs
   * at load 9-15), peak RSS 131 MB against 115 (the lstats this thread runs leave their garbage in
   * its heap); the main thread's own CPU went from 190-300 ms to 330-430 ms (6 runs each), the
   * stat thread's down by about as much.
   */
  async finish(runs: readonly FileRun[], pool: WorkerPool): Promise<void> {
    this.count(runs);
    while (this.sent < this.names) this.send(runs, pool);
    for (let k = this.posted.length - 1; k >= 0; k--) {
      const b = this.posted[k]!;
      if (Atomics.compareExchange(b.claims, b.slot, STAT_UNCLAIMED, STAT_TAKEN) !== STAT_UNCLAIMED) continue;
      placeStats(b.pieces, statPaths(b.req, this.follow));
      this.stolen++;
    }
    await Promise.all(this.pending);
  }

  private send(runs: readonly FileRun[], pool: WorkerPool): void {
    const { req, pieces } = statRequest(runs, this.cursor, STAT_BATCH);
    this.sent += req.names.length;
    let payload: StatBatchPayload = { files: req, follow: this.follow };
    if (pool.size > 0) {
      if (this.nextSlot === this.claims.length) {
        this.claims = new Int32Array(new SharedArrayBuffer(CLAIM_SLOTS * 4));
        this.nextSlot = 0;
      }
      const slot = this.nextSlot++;
      payload = { ...payload, claims: this.claims, slot };
      this.posted.push({ req, pieces, claims: this.claims, slot });
    }
    // A batch this thread took back comes back empty from the worker: its stats are placed already.
    const done = pool.run<Float64Array>('capture.stat', payload).then((packed) => {
      if (packed.length > 0) placeStats(pieces, packed);
    });
    // Handled here so a walk that fails first leaves no unhandled rejection; finish() still sees it.
    done.catch(() => {});
    this.pending.push(done);
  }
}

/** Claim slots per shared block (a block serves 256 batches, 262,144 files). */
const CLAIM_SLOTS = 256;

function runBytes(run: FileRun): number {
  let bytes = 0;
  for (const s of run.stats) for (let k = s.start, o = s.at; k < s.end; k++, o += STAT_FIELDS) bytes += s.packed[o + STAT_SIZE]!;
  return bytes;
}

function* batchesOf(files: ScannedFile[], follow: boolean): Generator<{ items: IngestItem[]; files: ScannedFile[] }> {
  let items: IngestItem[] = [];
  let group: ScannedFile[] = [];
  let size = 0;
  for (const f of files) {
    items.push({ abs: f.abs, ino: f.stats[f.at + STAT_INO]!, size: f.size, mtimeMs: f.stats[f.at + STAT_MTIME]!, follow });
    group.push(f);
    size += f.size;
    if (items.length >= BATCH_FILES || size >= BATCH_BYTES) {
      yield { items, files: group };
      items = [];
      group = [];
      size = 0;
    }
  }
  if (items.length > 0) yield { items, files: group };
}

async function hashFiles(files: ScannedFile[], pool: WorkerPool, opts: SnapshotOptions): Promise<void> {
  if (files.length === 0) return;
  let done = 0;
  let doneBytes = 0;
  await runBatches<{ items: IngestItem[]; files: ScannedFile[] }, string[]>(
      pool,
      'capture.ingest',
      batchesOf(files, opts.followSymlinks === true),
      (hashes, batch) => {
        for (let i = 0; i < hashes.length; i++) {
          const f = batch.files[i]!;
          f.digest = { hash: hashes[i]!, size: f.size };
          doneBytes += f.size;
        }
        done += hashes.length;
        opts.onProgress?.({ done, total: files.length, bytes: doneBytes });
      },
    { shouldStop: () => opts.signal?.aborted === true, payloadOf: (b) => b.items },
  );
  if (opts.signal?.aborted) throw new InterruptedError('snapshot interrupted; nothing was recorded (blobs already stored are kept and reused)');
}

const byName = (a: { name: string }, b: { name: string }) => compareNames(a.name, b.name);

/**
 * Whether `d`'s message is the one recorded in the cache: its listing came from the cache, every
 * file has the stat (so the digest) and executable bit recorded, and every subdirectory the
 * digest the recorded message names.
 */
function unchanged(d: ScannedDir, cache: StatCache): boolean {
  const l = d.listing;
  if (l === undefined) return false;
  // A run left names only matched its entries, executable bits included (StatCache.runUnchanged).
  for (let i = 0; d.run?.files !== undefined && i < d.files.length; i++) {
    const f = d.files[i]!;
    if (!(f.cached === true || f.size === 0) || f.executable !== (l.executable.charCodeAt(i) === 120 /* x */)) return false;
  }
  for (const s of d.dirs) if (s.digest?.hash !== cache.recordedDigest(s.rel)?.hash) return false;
  return true;
}

/**
 * Encodes and stores the Directory messages bottom-up, reusing the recorded digest of every
 * directory found unchanged, and writes the tree pack; returns the root's digest.
 *
 * Perf: encoding and storing the 5,096 messages of the Linux tree took ~0.45 s of a 2.2 s
 * unchanged snapshot (profiled); an unchanged tree now encodes none and reads no pack.
 */
function storeTree(root: ScannedDir, store: LocalStore, cache: StatCache, reuse: boolean): { digest: Digest; reused: number } {
  const messages = new Map<string, Buffer>();
  const reusedDirs: ScannedDir[] = [];
  const encode = (d: ScannedDir): Digest => {
    for (const s of d.dirs) s.digest = encode(s);
    if (reuse && unchanged(d, cache)) {
      reusedDirs.push(d);
      return d.listing!.digest;
    }
    const run = d.run;
    const files: FileNode[] =
      run !== undefined && run.files === undefined
        ? run.names.map((name, k) => ({ name, digest: cache.entryDigest(run.first + k), executable: d.listing!.executable.charCodeAt(k) === 120 /* x */ }))
        : d.files.map((f) => {
            const digest = f.digest ?? (f.cached === true ? cache.entryDigest(f.cacheIndex) : undefined);
            if (!digest) throw new CaptureError(`internal: ${f.abs} was not hashed`, { path: f.abs });
            return { name: f.name, digest, executable: f.executable };
          });
    const directories: DirectoryNode[] = d.dirs.map((s) => ({ name: s.name, digest: s.digest! }));
    const msg: Directory = { files: files.sort(byName), directories: directories.sort(byName), symlinks: d.symlinks.sort(byName) };
    const blob = directoryBlob(msg);
    store.putHashedSync(blob.bytes, blob.digest);
    messages.set(blob.digest.hash, blob.bytes);
    return blob.digest;
  };
  const digest = (root.digest = encode(root));
  if (hasTreePack(store, digest)) return { digest, reused: reusedDirs.length };
  if (reusedDirs.length > 0) {
    // The reused messages are in the last snapshot's tree pack (and, as gc keeps or removes a pack
    // with its messages, in the store). Without that pack, build every message again.
    const previous = cache.previousTree && readTreePack(store, cache.previousTree);
    for (const d of reusedDirs) {
      const bytes = previous?.get(d.digest!.hash);
      if (bytes === undefined) return storeTree(root, store, cache, false);
      messages.set(d.digest!.hash, bytes);
    }
  }
  writeTreePack(store, digest, messages);
  return { digest, reused: reusedDirs.length };
}
