/**
 * checkout: load the target tree -> plan against the last checkout and the disk -> execute ->
 * record. All Directory messages a plan depends on are decoded and validated during planning, so
 * an unsafe name anywhere in the tree is refused before anything is written.
 */
import { stopwatch } from '../core/clock.js';
import * as fs from 'node:fs';
import { resolve } from 'node:path';
import { type Digest, formatDigest, sameDigest } from '../core/digest.js';
import type { TreeLookup } from '../core/tree-diff.js';
import { BlobNotFoundError, InterruptedError, LocalChangesError, TargetError, UsageError, fsError } from '../errors.js';
import type { LocalStore } from '../store/local.js';
import { TreeReader } from '../store/tree-reader.js';
import { treePackBytes, writeTreePack } from '../store/tree-pack.js';
import { WorkerPool, defaultJobs } from '../fs/worker-pool.js';
import { guardTarget } from '../fs/target-guard.js';
import { RealDiskView } from './disk-view.js';
import { DIRECT_MAX_BYTES, executePlan, type ExecuteOptions, type ExecuteResult } from './execute.js';
import { largeFileDirs, newRunToken, removeLeftovers } from './leftovers.js';
import { verifiedBytes } from './apply-op.js';
import { type ImportMethod } from './import-file.js';
import { probeMethod } from './probe.js';
import { type Plan, planFreshPacked, planUpdate } from './plan.js';
import { type CheckoutSource, type LoadedRecord, type RunMarks, loadRecord, loadStarted, saveRecord, saveStarted } from './record.js';
import { makeDirectories } from '../fs/make-dirs.js';
import { CreatedRecord } from './created.js';

/**
 * Below this many writes, an update runs inline: starting two threads costs ~0.15-0.3 s here, the
 * time to copy a few thousand small files.
 */
const INLINE_MAX_WRITES = 4000;

/**
 * A tree whose pack is at most this size has well under INLINE_MAX_WRITES files (a file entry
 * takes 70+ bytes of its Directory message, 64 of them its hash), so a full checkout of it does
 * not boot threads early.
 */
const SMALL_TREE_PACK_BYTES = 64 * 1024;

export type CheckoutMethod = 'auto' | ImportMethod;
export const CHECKOUT_METHODS: readonly CheckoutMethod[] = ['auto', 'clone', 'hardlink', 'copy'];

export interface CheckoutOptions {
  store: LocalStore;
  method?: CheckoutMethod;
  /** Replace entries that differ from the tree (local changes included) instead of stopping; untracked entries are kept. */
  force?: boolean;
  /** Remove entries in the target that the tree does not have (untracked), listing them in the result. */
  clean?: boolean;
  /** Worker threads (default: one per core). */
  jobs?: number;
  /** Re-hash every blob before writing it. */
  verify?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: { done: number; total: number; bytes: number }) => void;
  /** Must leave every Directory message of `root` in the local store (remote checkout). */
  prepareTree?: (root: Digest) => Promise<void>;
  /** Must leave these blobs in the local store before they are written (remote checkout). */
  ensureBlobs?: (digests: Digest[]) => Promise<void>;
  /** A direct remote checkout: fetches blobs into memory to be written without the store (execute.ts). */
  fetchBytes?: ExecuteOptions['fetchBytes'];
  /** With fetchBytes: blobs too large for memory streamed into their files (execute.ts). */
  fetchStream?: ExecuteOptions['fetchStream'];
  /**
   * A remote checkout, asked once the method is known (without fetchBytes): hooks to fetch blobs
   * into memory, store each (verified) and copy it from memory or link or clone the stored blob
   * (execute.ts); undefined to go through the store (ensureBlobs).
   */
  fetchFor?: (method: ImportMethod) => Pick<ExecuteOptions, 'fetchBytes' | 'fetchable' | 'storeFetched' | 'slabs'> | undefined;
  /**
   * A named tree whose blobs the remote was not yet shown to hold (a plain cache, remote/refs.ts).
   * Into an empty or new target the checkout writes as blobs arrive and, on an error `isMiss`
   * accepts, removes what it created (created.ts) before rethrowing; an update calls `secure()`
   * first, which fetches every blob before a file is touched.
   */
  unsecured?: { secure(): Promise<void>; isMiss(e: unknown): boolean };
  /** How the tree was named and the remote it comes from, kept while the checkout runs (status names them if it does not finish). */
  source?: CheckoutSource;
}

export interface CheckoutResult extends ExecuteResult {
  digest: string;
  target: string;
  /** The method asked for after probing ('auto' resolved). */
  method: ImportMethod;
  /** True when the checkout updated an earlier one rather than filling an empty directory. */
  incremental: boolean;
  unchanged: number;
  seconds: number;
}

export function validateCheckoutOptions(o: Pick<CheckoutOptions, 'method' | 'jobs'>): void {
  if (o.method !== undefined && !CHECKOUT_METHODS.includes(o.method)) {
    throw new UsageError(`--method must be one of ${CHECKOUT_METHODS.join(', ')}, not '${o.method}'`);
  }
  if (o.jobs !== undefined && (!Number.isInteger(o.jobs) || o.jobs < 1 || o.jobs > 256)) {
    throw new UsageError(`--jobs must be a whole number from 1 to 256, not '${o.jobs}'`);
  }
}

export async function checkout(root: Digest, dir: string, o: CheckoutOptions): Promise<CheckoutResult> {
  const elapsed = stopwatch();
  validateCheckoutOptions(o);
  const store = o.store;
  const rootAbs = resolve(dir);
  // The lock names the tree, so a gc running meanwhile keeps its blobs (target-guard.ts).
  const guard = guardTarget(rootAbs, store.root, 'checkout', formatDigest(root));
  try {
    return await checkoutLocked(root, rootAbs, o, elapsed);
  } finally {
    guard.release();
  }
}

async function checkoutLocked(root: Digest, rootAbs: string, o: CheckoutOptions, elapsed: () => number): Promise<CheckoutResult> {
  const store = o.store;
  const { st: targetStat, madeFrom } = prepareTarget(rootAbs);
  const jobs = o.jobs ?? defaultJobs();
  const incremental = fs.readdirSync(rootAbs).length > 0;
  const created = o.unsecured && !incremental ? new CreatedRecord(rootAbs, madeFrom) : undefined;
  // A full checkout of a large tree: boot the threads now, while the tree loads. An update, or a
  // tree whose pack shows it small, decides after planning, as small work runs faster inline than
  // it takes to start a thread. The pack size is only a hint: the plan decides either way.
  // Perf: a 10-file checkout into an empty directory went from 172 to 131 ms (30 runs, quiet).
  const knownSmall = (treePackBytes(store, root) ?? Infinity) <= SMALL_TREE_PACK_BYTES;
  let pool = incremental || knownSmall ? undefined : writerPool(jobs, store, o);
  let planned = false;
  try {
    if (o.prepareTree) await o.prepareTree(root);
    if (o.unsecured && !created) await o.unsecured.secure();
    const { plan, provenBefore, trusted } = await makePlan(root, rootAbs, targetStat, incremental, o);
    planned = true;
    if (created) plan.steps = created.track(plan.steps);
    // Fetched bytes are written as copies: there is no stored blob to clone or link.
    const method = resolveMethod(o.fetchBytes ? 'copy' : (o.method ?? 'auto'), store, rootAbs, plan);
    const runToken = o.fetchBytes && o.fetchStream ? newRunToken() : undefined;
    const through = o.fetchBytes ? undefined : o.fetchFor?.(method);
    if (plan.removes.length + plan.mkdirs + plan.writes > 0) {
      // A run that stops half way leaves a record that only this same tree trusts (record.ts).
      // Trusting none, a started record (no finished tree): `status` can then name the checkout a
      // kill left unfinished, and a checkout reads it as no record.
      // When it started writing: run again, it sets the mode of a file it wrote whole but had not
      // yet given its mode, and only of such a file changed since then (plan.ts, Plan.modes).
      // A direct checkout's token names its temporary files, so that run again it removes what a
      // kill left of them, and nothing else (leftovers.ts).
      const run: RunMarks = { startedAtMs: Date.now(), token: runToken };
      if (trusted) saveRecord(store, rootAbs, targetStat, trusted.root, trusted.finishedAtMs, root, o.source, run);
      else saveStarted(store, rootAbs, targetStat, root, o.source, run);
    }
    pool ??= plan.writes <= INLINE_MAX_WRITES && !o.ensureBlobs && !o.fetchBytes ? new WorkerPool(0, { storeRoot: store.root }) : writerPool(jobs, store, o);
    const result = await executePlan(plan, {
      store,
      pool: created ? created.recording(pool) : pool,
      rootAbs,
      method,
      verify: o.verify === true,
      signal: o.signal,
      onProgress: o.onProgress,
      ensureBlobs: o.ensureBlobs,
      fetchBytes: o.fetchBytes ?? through?.fetchBytes,
      fetchStream: o.fetchBytes ? o.fetchStream : undefined,
      runToken,
      fetchable: through?.fetchable,
      storeFetched: through?.storeFetched,
      slabs: through?.slabs,
    }).catch((e: unknown) => {
      if (created && o.unsecured!.isMiss(e)) created.undo();
      throw e;
    });
    if (o.signal?.aborted) {
      throw new InterruptedError(`checkout of ${formatDigest(root)} into ${rootAbs} interrupted; run the same command again to finish it`, {
        path: rootAbs,
      });
    }
    saveRecord(store, rootAbs, targetStat, root, provenBefore ?? Date.now());
    return {
      ...result,
      digest: formatDigest(root),
      target: rootAbs,
      method,
      incremental,
      unchanged: plan.unchanged,
      seconds: elapsed(),
    };
  } catch (e) {
    // Refused before its first write (a tree the store lacks, an invalid one, local changes): the
    // target and parents it made go again (rmdir only: one someone put a file into stays).
    if (!planned && madeFrom !== undefined) {
      try {
        new CreatedRecord(rootAbs, madeFrom).undo();
      } catch {
        /* the error that stopped the checkout is the one to report */
      }
    }
    throw e;
  } finally {
    await pool?.close();
  }
}

/**
 * The threads that write a large checkout. From the local store with `jobs` of 2 or more, the main
 * thread is one of them (it has no network to wait on, and one thread fewer boots): `jobs - 1`
 * workers, and the main thread runs a batch whenever both of every worker's slots are taken
 * (worker-pool.ts). `--jobs 1` keeps its one worker.
 * Perf: copy checkout of the node_modules corpus (26,242 files) into an empty directory, tmpfs, 2
 * cores, interleaved with two workers and no caller: CPU (user+sys) 1.080 s against 1.220 s (medians
 * of 10, load 4-5; wall 0.745 s against 0.865 s), and 9 of 10 pairs lower by a median of 80 ms at
 * load 8-9, where wall times were noise. A worker's boot, and a postMessage per batch, cost more
 * than the main thread's turns: its own work (mkdirs, packing batches) is small beside the writes.
 * A remote checkout keeps `jobs` workers: its main thread receives the blobs.
 */
export function writerPool(jobs: number, store: LocalStore, o: CheckoutOptions): WorkerPool {
  const local = !o.prepareTree && !o.ensureBlobs && !o.fetchBytes && !o.fetchFor && !o.unsecured;
  if (local && jobs > 1) return new WorkerPool(jobs - 1, { storeRoot: store.root }, { callerRuns: true, workerDepth: LOCAL_WORKER_DEPTH });
  return new WorkerPool(jobs, { storeRoot: store.root }, local ? {} : { youngGenerationMb: REMOTE_WRITER_YOUNG_MB });
}

/**
 * Batches a local checkout's worker holds (running and queued) before the main thread runs one
 * itself (WorkerPool's workerDepth), with the last batches made small (execute.ts batchesOf).
 * Perf: copy checkout of the node_modules corpus (26,242 files) into an empty directory on tmpfs, 2
 * cores; the machine was shared (load 11-13), so each checkout ran as SCHED_FIFO (`chrt -f 10`),
 * which kept the other load off its threads. With two, the worker slept 125 and 139 ms between
 * its first and last run (sched_switch, two runs) while the main thread, running a batch of its
 * own, had not yet handed it the next; with three, 45 and 59 ms (most of it waiting for the plan).
 * Wall 0.570 s against 0.580 s, CPU 1.045 s against 1.060 s (medians of 10 interleaved runs, paired
 * differences -20 ms each, lower in 6 and 8 of 10); four and six measured no better.
 */
export const LOCAL_WORKER_DEPTH = 3;

/**
 * Young generation cap (MB) of a remote checkout's writer threads, which verify, store and write
 * blobs that arrive while the main thread receives the next (see ARCHIVE_YOUNG_MB for why a
 * smaller one frees dropped buffers sooner). Perf: peak RSS, Linux tree from nginx into tmpfs, with
 * the plain cache's held young generation (remote/young-generation.ts) and without this cap /
 * with it, runs interleaved at load average 7-20: `checkout DIGEST --remote` 262, 268, 227, 235,
 * 242 MB / 264, 227, 252, 264 MB; `checkout NAME --remote` 263, 282, 270, 254, 259 MB / 256, 245,
 * 252, 254 MB; client CPU (user + sys) 9.2-11.3 s / 9.1-11.9 s (the highest of both at load 19).
 * The treecast server's rows were not measured with it.
 */
export const REMOTE_WRITER_YOUNG_MB = 2;

/**
 * Plans the checkout; refuses (LocalChangesError) before anything is touched when it would lose
 * local changes. `provenBefore` is the time the new record must keep: an update that looked only
 * at what the trees change did not check the other files, so a file edited before now but after
 * the last record must not pass for unchanged. Only a plan that checked every entry (force, or no
 * record) may move it, to when it started looking; a fresh checkout, to when it finished writing.
 */
async function makePlan(
  root: Digest,
  rootAbs: string,
  targetStat: fs.Stats,
  incremental: boolean,
  o: CheckoutOptions,
): Promise<{ plan: Plan; provenBefore?: number; trusted?: LoadedRecord }> {
  const store = o.store;
  const reader = new TreeReader(store);
  const tree = (d: Digest) => reader.getSync(d);
  let plan: Plan;
  let provenBefore: number | undefined;
  let trusted: LoadedRecord | undefined;
  if (!incremental) {
    // Every Directory message is decoded and validated before the first write.
    // Perf: from the pack as one buffer and an index (usePack), not a Map per message: hardlink
    // checkout of the Linux tree into an empty tmpfs directory, SCHED_FIFO, 12 interleaved rounds:
    // wall 0.625 s (0.599-0.663) against 0.651 s (0.624-0.686), lower in 12 of 12 pairs (median
    // -23.5 ms); CPU 1.130 s against 1.150 s; `cp -al` 0.647 s in the same rounds.
    const packed = reader.usePack(root);
    const loaded = reader.loadPackedSync(root);
    if (!packed) writeTreePack(store, root, reader.raw);
    reader.releaseBytes();
    plan = planFreshPacked(loaded);
  } else {
    const loaded = loadRecord(store, rootAbs, targetStat);
    // The record of an update that did not finish speaks only for that update's own tree.
    const record = loaded?.pending && !sameDigest(loaded.pending, root) ? undefined : loaded;
    let previous = record?.root;
    // An update reads only the directories that differ, but those can be thousands: packs save a
    // read per directory.
    reader.usePack(root);
    if (previous) reader.usePack(previous);
    if (previous) {
      try {
        tree(previous);
      } catch {
        // The last tree is gone from the store (gc): fall back to comparing with the disk.
        previous = undefined;
      }
    }
    // A checkout into this target that did not finish (killed, failed): its tree and what it recorded of itself.
    const unfinished = unfinishedRun(store, rootAbs, targetStat, loaded);
    // The same checkout again after it stopped: a file it was writing is finished (plan.ts,
    // resume). Any other checkout finds such a file a local change.
    const stopped = unfinished !== undefined && sameDigest(unfinished.tree, root) ? unfinished.run : undefined;
    const resume = stopped !== undefined;
    // Its temporary files, which a kill leaves beside the large files it was fetching (--direct):
    // removed before planning, by the exact names its token gives (leftovers.ts), whichever tree
    // this checkout writes: this one's record will no longer name that token.
    if (unfinished?.run.token !== undefined) removeStoppedRunTemps(rootAbs, unfinished.tree, tree, unfinished.run.token);
    const planStart = Date.now();
    const finishedAtMs = previous && record ? record.finishedAtMs : 0;
    const planWith = (disk: RealDiskView) =>
      planUpdate({ target: root, previous, tree, raw: (d) => reader.rawSync(d), message: (d) => reader.messageSync(d), disk, force: o.force === true, clean: o.clean === true, resume });
    const disk = new RealDiskView(rootAbs, store, finishedAtMs, undefined, stopped?.startedAtMs);
    plan = planWith(disk);
    if (resume && plan.conflicts.length > 0 && disk.unavailable.length > 0) {
      // A remote checkout writes some files straight from fetched bytes (--direct; a hardlink's
      // write-linked.ts), so the blob a stopped write was a prefix of may be missing here: fetched
      // now, verified, and the plan made again. Only on this path: a conflict while resuming.
      const fetched = await fetchForResume(disk.unavailable, o);
      if (fetched) plan = planWith(new RealDiskView(rootAbs, store, finishedAtMs, fetched, stopped?.startedAtMs));
    }
    // A plan that checked every entry proves the disk as it was when it started looking.
    provenBefore = previous && record && o.force !== true ? record.finishedAtMs : planStart;
    // Without force the plan touches only paths where the two trees differ, which a run again of
    // the same tree looks at anyway; force also rewrites paths they agree on, which it would skip.
    if (previous && record && o.force !== true) trusted = record;
  }
  if (plan.conflicts.length > 0) throw new LocalChangesError(plan.conflicts, { path: rootAbs, digest: formatDigest(root) });
  if (plan.untrackedInWay?.length) throw new LocalChangesError(plan.untrackedInWay, { path: rootAbs, digest: formatDigest(root) }, true);
  return { plan, provenBefore, trusted };
}

/**
 * The checkout into the target that did not finish, of any tree: an update's `pending` (with the
 * finished record `loaded`), else a started record (a first checkout that did not finish).
 */
function unfinishedRun(store: LocalStore, rootAbs: string, targetStat: fs.Stats, loaded: LoadedRecord | undefined): { tree: Digest; run: RunMarks } | undefined {
  if (loaded) return loaded.pending !== undefined ? { tree: loaded.pending, run: loaded.run ?? {} } : undefined;
  const started = loadStarted(store, rootAbs, targetStat);
  return started !== undefined ? { tree: started.pending, run: started.run } : undefined;
}

/**
 * Removes the temporary files a stopped direct checkout of `stopped` left (leftovers.ts): in the
 * folders where that tree has a file large enough to be streamed, the names with its token only.
 * Safe for any checkout holding the target's lock, whatever tree it writes: the lock shows the
 * stopped run is gone, and the 64-bit token, recorded for this target by that run, is in no name
 * but the ones it made. A stopped tree no longer in the store (it cannot be walked) leaves them.
 */
function removeStoppedRunTemps(rootAbs: string, stopped: Digest, tree: TreeLookup, token: string): void {
  let dirs: string[];
  try {
    dirs = largeFileDirs(stopped, tree, DIRECT_MAX_BYTES);
  } catch (e) {
    if (e instanceof BlobNotFoundError) return;
    throw e;
  }
  removeLeftovers(rootAbs, dirs, token);
}

/** At most this many bytes of blobs are held in memory for a resumed --direct checkout's prefix checks. */
const RESUME_FETCH_BYTES = 64 << 20;

/**
 * Blobs a resumed remote checkout needs to tell whether a file is its stopped write's prefix
 * (RealDiskView.unavailable): into the store as the checkout would store them (ensureBlobs), or,
 * for --direct, which keeps file blobs out of the store, into memory (up to RESUME_FETCH_BYTES;
 * a file whose blob is not fetched stays a local change). Each one verified: a file is replaced
 * only for bytes that truly are its blob's. Undefined when there is no remote to fetch from.
 */
async function fetchForResume(wanted: readonly Digest[], o: CheckoutOptions): Promise<ReadonlyMap<string, Uint8Array> | undefined> {
  const distinct = new Map<string, Digest>();
  for (const d of wanted) distinct.set(d.hash, d);
  if (o.fetchBytes) {
    const take: Digest[] = [];
    let total = 0;
    for (const d of distinct.values()) {
      if (total + d.size > RESUME_FETCH_BYTES) continue;
      take.push(d);
      total += d.size;
    }
    if (take.length === 0) return undefined;
    const data = new Uint8Array(total);
    const { source } = await o.fetchBytes(take, data);
    const held = new Map<string, Uint8Array>();
    let at = 0;
    for (const d of take) held.set(d.hash, verifiedBytes(data.subarray(at, (at += d.size)), d, source));
    return held;
  }
  if (!o.ensureBlobs) return undefined;
  await o.ensureBlobs([...distinct.values()]);
  return new Map();
}

/**
 * Creates the target when absent; refuses one that is not a directory. `madeFrom`: the outermost
 * directory it created (the target or a missing parent), undefined when the target existed.
 */
function prepareTarget(rootAbs: string): { st: fs.Stats; madeFrom: string | undefined } {
  let st = fs.statSync(rootAbs, { throwIfNoEntry: false });
  let madeFrom: string | undefined;
  if (st && !st.isDirectory()) throw new TargetError(`cannot check out into ${rootAbs}: it exists and is not a directory`, { path: rootAbs });
  if (!st) {
    try {
      madeFrom = makeDirectories(rootAbs);
    } catch (e) {
      throw fsError(e, 'cannot create target directory', rootAbs);
    }
    st = fs.statSync(rootAbs);
  }
  try {
    fs.accessSync(rootAbs, fs.constants.W_OK | fs.constants.X_OK);
  } catch (e) {
    throw new TargetError(`cannot check out into ${rootAbs}: not writable`, { path: rootAbs, cause: e });
  }
  return { st, madeFrom };
}

function resolveMethod(method: CheckoutMethod, store: LocalStore, rootAbs: string, plan: Plan): ImportMethod {
  if (method !== 'auto') return method;
  if (!plan.sample) return 'copy';
  return probeMethod(store, plan.sample, rootAbs);
}
