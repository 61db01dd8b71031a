/**
 * Runs a checkout plan: removals first, then the steps in order. Directories are made on this
 * thread (plain mkdirs, parents first, no recursive mkdir per file) while the batches of files and
 * symlinks are handed out, so the workers start linking or copying before the last directory
 * exists instead of after.
 */
import * as fs from 'node:fs';
// A named import for the mkdir per directory (see import-file.ts).
import { mkdirSync } from 'node:fs';
import { TreecastError, fsError } from '../errors.js';
import { type Digest, sameDigest } from '../core/digest.js';
import { type WorkerPool, runBatches } from '../fs/worker-pool.js';
import type { LocalStore } from '../store/local.js';
import { type ApplyBatch, type ApplyCounts, type ApplySettings, type FetchedBytes, WRITTEN, addCounts, newCounts, packWrites } from './apply-op.js';
import { type FetchStream, fetchFile } from './fetch-file.js';
import { type ImportMethod, importBlob } from './import-file.js';
import type { Plan, Removal, Step, WriteFile, WriteOp } from './plan.js';
import { diskPath, displayPath } from '../fs/byte-names.js';

export interface ExecuteOptions {
  store: LocalStore;
  /** Started by the caller (so threads boot while the tree loads); closed by the caller. */
  pool: WorkerPool;
  rootAbs: string;
  method: ImportMethod;
  verify: boolean;
  signal?: AbortSignal;
  onProgress?: (p: { done: number; total: number; bytes: number }) => void;
  /** Makes sure a batch's blobs are in the local store before it is written (remote checkout). */
  ensureBlobs?: (digests: Digest[]) => Promise<void>;
  /**
   * A direct remote checkout: fetches these blobs (distinct, each at most DIRECT_MAX_BYTES) into
   * `into`, back to back in order; the workers verify and write them, and the store never sees
   * them. Larger blobs still go through ensureBlobs and the store.
   */
  fetchBytes?: (digests: Digest[], into: Uint8Array) => Promise<{ source: string }>;
  /**
   * With fetchBytes and without storeFetched (`--direct`): blobs over DIRECT_MAX_BYTES streamed
   * into their files, verified before they take their names (fetch-file.ts); without it they go
   * through ensureBlobs and the store.
   */
  fetchStream?: FetchStream;
  /** With fetchStream: the run's token, put in the names of its temporary files (leftovers.ts). */
  runToken?: string;
  /** With fetchBytes: the blobs to fetch (default: all); the others are copied from the store. */
  fetchable?: (d: Digest) => boolean;
  /** With fetchBytes: the workers also store each fetched blob, verified first, beside its file. */
  storeFetched?: boolean;
  /** With fetchBytes: batches that may hold fetched bytes at once (default DIRECT_SLABS). */
  slabs?: number;
}

/** Largest blob a direct checkout holds in memory; larger ones stream through the store. */
export const DIRECT_MAX_BYTES = 4 << 20;
/**
 * A direct checkout's batch closes before its blobs pass DIRECT_MAX_BYTES (batchesOf), so its
 * fetched bytes fit one slab of that size; at most DIRECT_SLABS batches hold one at a time.
 * Perf: with a buffer per batch, sized to it, the Linux tree's direct checkout peaked at 570-926 MB
 * (shared memory is freed only when both threads collect it); fixed slabs, reused, bound it. Slabs
 * of twice DIRECT_MAX_BYTES (batches closed after passing it) held up to 48 MB where 24 MB suffice.
 */
const SLAB_BYTES = DIRECT_MAX_BYTES;
export const DIRECT_SLABS = 6;
/**
 * The slabs of a checkout from a plain cache (one GET per blob: `slabs`). Its socket reads are a
 * native buffer each, freed only when a collection finds them, and the fewer blobs the checkout
 * has in flight, the fewer of them are held at once. Perf: the Linux tree from nginx into tmpfs,
 * `checkout DIGEST --remote`, 3 interleaved pairs at load average 13-14.5 (with runBatches asking
 * admit even with no batch in flight, worker-pool.ts): peak RSS 198, 193, 223 MB against 210, 212,
 * 233 MB before; client CPU (user + sys) 10.1-11.0 s against 10.3-11.2 s; wall 21.6-23.7 s against
 * 22.3-26.0 s. (3 slabs alone, before that fix, 3 pairs at load 10-12: 200, 219, 201 MB against
 * 241, 224, 222 MB.)
 */
export const PLAIN_CACHE_SLABS = 3;

export interface ExecuteResult extends ApplyCounts {
  directories: number;
  /** Entries of the last checkout removed or replaced. */
  removed: number;
  /** Untracked entries removed (clean), as paths for people (byte names escaped). */
  cleaned: string[];
}

const BATCH_OPS = 256;
const BATCH_BYTES = 32 << 20;

/**
 * A batch of at least this many bytes to copy (or re-hash) is heavy (worker-pool.ts): a worker
 * runs it, never the checkout's main thread, which meanwhile keeps handing out and running the others.
 * Perf: the node_modules corpus's largest file (125 MiB, batch 11 of 115) took a copy checkout's
 * main thread ~100 ms whenever it took that batch, while the worker ran the two it held and then
 * sat idle ~70 ms with nothing handed out (--cpu-prof, 5 runs at load 7-8: worker idle 205 and
 * 211 ms in the two runs where the main thread copied it, 100-138 ms in the three where the
 * worker did). With the change the worker copied it in every run, and the two threads' idle time
 * after the first write fell from a median of ~205 ms to ~120 ms (6 runs each, load 7-10). CPU is
 * unchanged (1.030 s against 1.040 s, medians of 10 interleaved runs at load 10-14, where wall
 * times were noise: 2.085 s against 2.505 s, lower in 7 of 10 pairs).
 */
export const HEAVY_BATCH_BYTES = BATCH_BYTES / 2;

export function isHeavy(batch: readonly WriteOp[]): boolean {
  let bytes = 0;
  for (const w of batch) if ('size' in w) bytes += w.size;
  return bytes >= HEAVY_BATCH_BYTES;
}

/** The smallest batch the tail (batchesOf's `tail`) shrinks to. */
export const TAIL_MIN_OPS = 32;

/**
 * Makes directories as it reaches them and yields the writes between them in batches of at most
 * BATCH_OPS writes and `maxBytes` bytes (a larger file goes alone). With `tail` (the plan's
 * writes and the batches in flight at once), a batch holds at most an even share of what is
 * left over twice that many batches, down to TAIL_MIN_OPS: the last ones are small, so no thread
 * waits long at the end for another to finish a full batch.
 * Perf: node_modules corpus copy checkout (26,242 writes, 2 cores, run as SCHED_FIFO on a shared
 * machine at load 10-14, 12 interleaved runs, worker holding three): with the tail 0.568 s wall and
 * 1.010 s CPU against 0.578 s and 1.020 s without (medians; paired -2 ms wall and -15 ms CPU, each
 * lower in 7 of 12). Small, as it should be: without it the main thread waits at the end for at
 * most the worker's three batches of 256 small files.
 */
export function* batchesOf(
  root: string,
  steps: Iterable<Step>,
  maxBytes = BATCH_BYTES,
  tail?: { writes: number; inFlight: number },
): Generator<WriteOp[]> {
  let ops: WriteOp[] = [];
  let bytes = 0;
  let left = tail ? tail.writes : 0;
  const share = tail ? 2 * Math.max(1, tail.inFlight) : 1;
  let maxOps = BATCH_OPS;
  const next = () => {
    left -= ops.length;
    if (tail) maxOps = Math.min(BATCH_OPS, Math.max(TAIL_MIN_OPS, Math.ceil(left / share)));
    ops = [];
    bytes = 0;
  };
  next();
  for (const s of steps) {
    if ('mkdir' in s) {
      const p = `${root}/${s.mkdir}`;
      try {
        mkdirSync(p);
      } catch (e) {
        throw fsError(e, 'cannot create directory', p);
      }
      continue;
    }
    const size = 'size' in s ? s.size : 0;
    if (ops.length > 0 && bytes + size > maxBytes) {
      yield ops;
      next();
    }
    ops.push(s);
    bytes += size;
    if (ops.length >= maxOps) {
      yield ops;
      next();
    }
  }
  if (ops.length > 0) yield ops;
}

export function umaskModes(): { fileMode: number; execMode: number } {
  const mask = process.umask();
  return { fileMode: 0o666 & ~mask, execMode: 0o777 & ~mask };
}

export async function executePlan(plan: Plan, o: ExecuteOptions): Promise<ExecuteResult> {
  const root = o.rootAbs;
  let removed = 0;
  const cleaned: string[] = [];
  for (const r of plan.removes) {
    if (!removeEntry(root, r)) continue;
    if (r.untracked) cleaned.push(displayPath(r.rel) + (r.type === 'dir' ? '/' : ''));
    else removed++;
  }
  const counts = newCounts();
  const total = plan.writes;
  let done = 0;
  const pauseFile = process.env.TREECAST_TEST_PAUSE_FILE;
  let started = 0;
  let paused: Promise<void> | undefined;
  const settings: ApplySettings = { root, method: o.method, verify: o.verify, ...umaskModes() };
  const fetched = new Map<WriteOp[], FetchedBytes>();
  let slabsInUse = 0;
  const buffers = new SharedBuffers();
  // Storing fetched blobs: each is fetched by one batch; a later batch that needs it while that
  // batch is in flight waits for it to settle, then copies it from the store.
  const through: WriteThrough | undefined = o.storeFetched && o.fetchable ? { storing: new Map(), settle: new Map() } : undefined;
  await runBatches<WriteOp[], ApplyCounts>(
    o.pool,
    'materialize.apply',
    batchesOf(root, plan.steps, o.fetchBytes ? DIRECT_MAX_BYTES : BATCH_BYTES, { writes: total, inFlight: o.pool.parallelism }),
    (c, batch) => {
      const f = fetched.get(batch);
      if (f) {
        // The worker is done with these bytes: the next batch reuses the memory.
        buffers.give(f.data.buffer as SharedArrayBuffer);
        fetched.delete(batch);
        slabsInUse--;
      }
      addCounts(counts, c);
      done += batch.length;
      o.onProgress?.({ done, total, bytes: counts.bytes });
    },
    {
      shouldStop: () => o.signal?.aborted === true,
      before: o.ensureBlobs || o.fetchBytes || pauseFile
        ? async (batch) => {
            if (pauseFile && ++started >= 2) await (paused ??= pauseForTest(pauseFile, o.signal));
            const blobs = batch.flatMap((w) => ('size' in w && w.size > 0 ? [{ hash: w.hash, size: w.size }] : []));
            if (!o.fetchBytes) return o.ensureBlobs?.(blobs);
            if (o.fetchStream && !through) {
              const [direct] = await Promise.all([fetchDirect(batch, o.fetchBytes, buffers, o.fetchable, through), fetchLarge(batch, settings, o.fetchStream, o.runToken)]);
              fetched.set(batch, direct);
              markLarge(batch, direct);
              return;
            }
            const direct = await fetchDirect(batch, o.fetchBytes, buffers, o.fetchable, through);
            fetched.set(batch, direct);
            await o.ensureBlobs?.(blobs.filter((d) => d.size > DIRECT_MAX_BYTES));
          }
        : undefined,
      settled: through ? (batch) => through.settle.get(batch)?.() : undefined,
      // Bounds the fetched bytes held in memory to DIRECT_SLABS slabs.
      admit: o.fetchBytes
        ? () => {
            if (slabsInUse >= (o.slabs ?? DIRECT_SLABS)) return false;
            slabsInUse++;
            return true;
          }
        : undefined,
      // A link or a clone takes as long whatever the size; copying and re-hashing do not.
      heavy: o.method === 'copy' || o.verify ? isHeavy : undefined,
      payloadOf: (batch, here): ApplyBatch => ({ ...settings, writes: here ? batch : packWrites(batch), fetched: fetched.get(batch) }),
    },
  );
  for (const m of plan.modes ?? []) {
    if (o.method === 'hardlink') relink(o.store, root, m, settings);
    else setMode(root, m, settings);
  }
  return { ...counts, directories: plan.mkdirs, removed, cleaned };
}

/**
 * Gives a file a stopped run wrote whole (Plan.modes) the mode the method gives a new one (the
 * umask's, for a copy or clone). Through a descriptor opened without following a link, and only
 * when it is still a regular file.
 */
function setMode(root: string, m: { rel: string; executable: boolean }, modes: { fileMode: number; execMode: number }): void {
  const p = diskPath(root, m.rel);
  let fd: number;
  try {
    fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw fsError(e, 'cannot set the mode of', `${root}/${displayPath(m.rel)}`);
  }
  try {
    const want = m.executable ? modes.execMode : modes.fileMode;
    const st = fs.fstatSync(fd);
    if (st.isFile() && (st.mode & 0o7777) !== want) fs.fchmodSync(fd, want);
  } catch (e) {
    throw fsError(e, 'cannot set the mode of', `${root}/${displayPath(m.rel)}`);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A hardlink checkout's file a stopped run wrote whole but never linked (Plan.modes): a fetched
 * file of `checkout --remote --method hardlink` killed between its last byte and its link into the
 * store (write-linked.ts), so the store may lack the blob, or a copy the method fell back to, killed
 * before its chmod. It is made what a fresh hardlink checkout makes: the blob is stored from the
 * file's bytes when the store lacks it (hashed as they are stored: other bytes leave it as it is), then
 * the file is replaced by importBlob's link to the stored blob (its executable twin for an
 * executable), or by a copy with the copy's mode where the store's filesystem refuses a link. The
 * file is the planner's (the bytes of the target, read-only, written after the stopped run started,
 * not the store's inode: DiskView.modeUnset), and is unlinked only while it is still that inode.
 * Killed between the unlink and the link, the name is absent, and the same command writes it.
 */
function relink(store: LocalStore, root: string, m: { rel: string; executable: boolean; digest: Digest }, modes: { fileMode: number; execMode: number }): void {
  // A tree's names are UTF-8 (as apply-op.ts writes them): no byte path needed.
  const p = `${root}/${m.rel}`;
  let fd: number;
  try {
    fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw fsError(e, 'cannot link', p);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.size !== m.digest.size) return; // no longer the file the plan saw: left as it is
    // Stored as a snapshot stores a file (streamed and hashed; that inode, unchanged while read).
    if (!store.hasSync(m.digest) && !sameDigest(store.ingestFileSync(p, { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs }).digest, m.digest)) return;
    const now = fs.lstatSync(p, { throwIfNoEntry: false });
    if (now === undefined || now.ino !== st.ino || now.dev !== st.dev) return;
    fs.unlinkSync(p);
  } catch (e) {
    if (e instanceof TreecastError) throw e;
    throw fsError(e, 'cannot link', p);
  } finally {
    fs.closeSync(fd);
  }
  importBlob(store, m.digest, p, 'hardlink', m.executable, m.executable ? modes.execMode : modes.fileMode);
}

/** A plain remote checkout's copy: fetched blobs are stored too (CheckoutOptions.fetchFor). */
interface WriteThrough {
  /** Blobs fetched by a batch in flight, with the promise that resolves when that batch settles. */
  storing: Map<string, Promise<void>>;
  /** Per batch in flight that fetched blobs: forgets them as storing and wakes its waiters. */
  settle: Map<WriteOp[], () => void>;
}

/**
 * The bytes of a batch's small blobs, fetched once each; where each write finds its own. With
 * `through`, a blob another batch in flight fetched is waited for and copied from the store.
 */
async function fetchDirect(
  batch: WriteOp[],
  fetchBytes: NonNullable<ExecuteOptions['fetchBytes']>,
  buffers: SharedBuffers,
  fetchable: ExecuteOptions['fetchable'],
  through: WriteThrough | undefined,
): Promise<FetchedBytes> {
  const at = new Map<string, number>();
  const distinct: Digest[] = [];
  const waits = new Set<Promise<void>>();
  let end = 0;
  const offsets = new Float64Array(batch.length).fill(-1);
  batch.forEach((w, i) => {
    if (!('size' in w) || w.size === 0 || w.size > DIRECT_MAX_BYTES) return;
    let pos = at.get(w.hash);
    if (pos === undefined) {
      const earlier = through?.storing.get(w.hash);
      if (earlier) {
        waits.add(earlier);
        return;
      }
      if (fetchable && !fetchable(w)) return;
      at.set(w.hash, (pos = end));
      distinct.push({ hash: w.hash, size: w.size });
      end += w.size;
    }
    offsets[i] = pos;
  });
  if (through && distinct.length > 0) {
    let wake!: () => void;
    const settled = new Promise<void>((r) => (wake = r));
    for (const d of distinct) through.storing.set(d.hash, settled);
    through.settle.set(batch, () => {
      for (const d of distinct) through.storing.delete(d.hash);
      through.settle.delete(batch);
      wake();
    });
  }
  const data = buffers.take(end);
  const store = through !== undefined;
  if (distinct.length > 0) {
    const { source } = await fetchBytes(distinct, data);
    await Promise.all(waits);
    return { data, offsets, source, store };
  }
  await Promise.all(waits);
  return { data, offsets, source: '', store };
}

/** A direct checkout batch's files over DIRECT_MAX_BYTES, each fetched straight into its place. */
async function fetchLarge(batch: WriteOp[], s: ApplySettings, fetch: FetchStream, token: string | undefined): Promise<void> {
  const large = batch.filter((w): w is WriteFile => 'size' in w && w.size > DIRECT_MAX_BYTES);
  await Promise.all(large.map((w) => fetchFile(`${s.root}/${w.rel}`, { hash: w.hash, size: w.size }, w.executable ? s.execMode : s.fileMode, fetch, token)));
}

/** Tells the worker which of the batch's files fetchLarge wrote. */
function markLarge(batch: WriteOp[], f: FetchedBytes): void {
  batch.forEach((w, i) => {
    if ('size' in w && w.size > DIRECT_MAX_BYTES) f.offsets[i] = WRITTEN;
  });
}

/** Shared memory for fetched batches (posting it to a worker copies nothing): fixed slabs, reused. */
class SharedBuffers {
  private readonly free: SharedArrayBuffer[] = [];

  take(n: number): Uint8Array {
    return new Uint8Array(this.free.pop() ?? new SharedArrayBuffer(SLAB_BYTES), 0, n);
  }

  give(sab: SharedArrayBuffer): void {
    this.free.push(sab);
  }
}

/** Removes one planned entry; false when there was nothing to remove (or a kept directory not empty). */
function removeEntry(root: string, r: Removal): boolean {
  const p = diskPath(root, r.rel);
  try {
    // rmSync never follows symlinks: a link is removed, not what it points to.
    if (r.ifEmpty) fs.rmdirSync(p);
    else if (r.type === 'dir') fs.rmSync(p, { recursive: true });
    else fs.unlinkSync(p);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || (r.ifEmpty && (code === 'ENOTEMPTY' || code === 'EEXIST'))) return false;
    throw fsError(e, 'cannot remove', `${root}/${displayPath(r.rel)}`);
  }
}

/**
 * Test hook (TREECAST_TEST_PAUSE_FILE, read only here): before the second batch of writes (and every
 * later one), create that file and wait until it is removed or the checkout is interrupted, so a test can act while
 * a checkout is provably half done (signals, a second process on the same target). With
 * TREECAST_TEST_HOLD_STOP=1 an interruption does not end the wait: the orderly stop is held until
 * the file is removed, so a test can signal again while that stop is under way.
 */
async function pauseForTest(file: string, signal: AbortSignal | undefined): Promise<void> {
  fs.writeFileSync(file, String(process.pid));
  const holdStop = process.env.TREECAST_TEST_HOLD_STOP === '1';
  while (fs.existsSync(file) && (holdStop || !signal?.aborted)) await new Promise((r) => setTimeout(r, 10));
}
