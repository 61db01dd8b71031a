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
import { LocalStore, checkRefName } from '../store/local.js';
import { writeTreePack } from '../store/tree-pack.js';
import { WorkerPool, defaultJobs, runBatches } from '../fs/worker-pool.js';
import type { IngestItem } from './ingest-op.js';
import { StatCache } from './stat-cache.js';
import { type ScannedDir, type ScannedFile, type SkippedEntry, applyStats, walk } from './walk.js';

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
  skipped: SkippedEntry[];
  seconds: number;
}

/**
 * Below this much work, hashing inline beats starting worker threads: a thread takes ~0.15 s to
 * start here, the time to hash and store a couple of thousand small files or ~64 MiB.
 */
const INLINE_MAX_FILES = 2000;
const INLINE_MAX_BYTES = 64 << 20;
const BATCH_FILES = 128;
const STAT_BATCH = 1024;
const BATCH_BYTES = 16 << 20;

export async function snapshot(dir: string, opts: SnapshotOptions): Promise<SnapshotResult> {
  const elapsed = stopwatch();
  if (opts.ref !== undefined) checkRefName(opts.ref);
  const rootAbs = resolve(dir);
  const st = fs.statSync(rootAbs, { throwIfNoEntry: false });
  if (!st) throw new TargetError(`cannot snapshot ${rootAbs}: no such directory`, { path: rootAbs });
  if (!st.isDirectory()) throw new TargetError(`cannot snapshot ${rootAbs}: not a directory`, { path: rootAbs });
  const store = opts.store;
  store.init();

  const startedMs = Date.now();
  const scan = walk(rootAbs, { exclude: opts.exclude, followSymlinks: opts.followSymlinks, strict: opts.strict, onSkip: opts.onSkip });
  const jobs = Math.max(1, opts.jobs ?? defaultJobs());
  // Threads only for large work (starting one costs ~30 ms); once started, used for everything.
  const inline = new WorkerPool(0, { storeRoot: store.root });
  let pool: WorkerPool | undefined;
  const poolFor = (large: boolean) => pool ?? (large ? (pool = new WorkerPool(jobs, { storeRoot: store.root })) : inline);
  const toHash: ScannedFile[] = [];
  let bytes = 0;
  let hashBytes = 0;
  try {
    await statFiles(scan.files, opts.followSymlinks === true, poolFor(scan.files.length > INLINE_MAX_FILES * 4));
    const cache = StatCache.load(store, rootAbs);
    for (const f of scan.files) {
      bytes += f.size;
      if (f.size === 0) f.digest = EMPTY_DIGEST;
      else if ((f.digest = cache.lookup(f)) === undefined) {
        toHash.push(f);
        hashBytes += f.size;
      }
    }
    const small = toHash.length <= INLINE_MAX_FILES && hashBytes <= INLINE_MAX_BYTES;
    await hashFiles(toHash, poolFor(!small), opts);
    const digest = storeTree(scan.root, store);
    // Nothing hashed and every cached entry used: the cache on disk is already exactly right.
    if (toHash.length > 0 || cache.hits !== cache.size) cache.save(scan.files, startedMs, store.tmpPath('cache'));
    if (opts.ref !== undefined) store.writeRef(opts.ref, digest);
    return {
      digest,
      files: scan.files.length,
      directories: scan.directories,
      symlinks: scan.symlinks,
      bytes,
      hashedFiles: toHash.length,
      hashedBytes: hashBytes,
      cachedFiles: scan.files.length - toHash.length,
      skipped: scan.skipped,
      seconds: elapsed(),
    };
  } finally {
    await (pool as WorkerPool | undefined)?.close();
  }
}

/** Fills in each file's lstat, in batches on the pool (see walk.ts for why not on this thread). */
async function statFiles(files: ScannedFile[], follow: boolean, pool: WorkerPool): Promise<void> {
  const batches: ScannedFile[][] = [];
  for (let i = 0; i < files.length; i += STAT_BATCH) batches.push(files.slice(i, i + STAT_BATCH));
  await runBatches<ScannedFile[], Float64Array>(pool, 'capture.stat', batches, (packed, batch) => applyStats(batch, packed), {
    payloadOf: (batch) => ({ paths: batch.map((f) => f.abs), follow }),
  });
}
function* batchesOf(files: ScannedFile[], follow: boolean): Generator<{ items: IngestItem[]; files: ScannedFile[] }> {
  let items: IngestItem[] = [];
  let group: ScannedFile[] = [];
  let size = 0;
  for (const f of files) {
    items.push({ abs: f.abs, ino: f.ino, size: f.size, mtimeMs: f.mtimeMs, follow });
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

/** Encodes and stores the Directory messages bottom-up, and their tree pack; returns the root's digest. */
function storeTree(root: ScannedDir, store: LocalStore): Digest {
  const messages = new Map<string, Buffer>();
  const encode = (d: ScannedDir): Digest => {
    const files: FileNode[] = d.files.map((f) => {
      if (!f.digest) throw new CaptureError(`internal: ${f.abs} was not hashed`, { path: f.abs });
      return { name: f.name, digest: f.digest, executable: f.executable };
    });
    const directories: DirectoryNode[] = d.dirs.map((s) => ({ name: s.name, digest: encode(s) }));
    const msg: Directory = { files: files.sort(byName), directories: directories.sort(byName), symlinks: d.symlinks.sort(byName) };
    const blob = directoryBlob(msg);
    store.putHashedSync(blob.bytes, blob.digest);
    messages.set(blob.digest.hash, blob.bytes);
    return blob.digest;
  };
  const digest = encode(root);
  if (!fs.existsSync(join(store.root, 'trees', digest.hash))) writeTreePack(store, digest, messages);
  return digest;
}
