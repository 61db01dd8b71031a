/**
 * A pool of worker threads that run batches of synchronous file-system calls.
 *
 * Perf: DESIGN.md measured one promise per file costing more than the syscall itself (hardlinking
 * the Linux tree: 3.1 s with fs.promises, 0.74 s with sync calls in 2 workers). So callers group
 * work into batches of a few hundred entries; each worker runs a batch with sync calls and posts
 * one message back. With `size: 0` the same operations run inline on the calling thread, which is
 * cheaper for small jobs than starting workers (~30 ms each).
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { reviveError, type SerializedError } from '../errors.js';
import { runOp, type OpName, type OpContextInit } from './worker-ops.js';

interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

interface Slot {
  worker: Worker;
  inFlight: number;
}

export interface WorkerPoolOptions {
  /**
   * Cap on each worker's V8 young generation (MB). Buffers an op drops are freed only when V8
   * collects their wrappers; a smaller young generation collects them sooner (see ARCHIVE_YOUNG_MB).
   */
  youngGenerationMb?: number;
  /**
   * The calling thread runs a batch itself whenever every worker already has a batch running and
   * one waiting (see `run`). Only for callers whose thread has nothing else to wait on (no network).
   */
  callerRuns?: boolean;
  /**
   * With callerRuns: how many batches each worker holds (running and queued) before the calling
   * thread runs one itself. Default 2.
   */
  workerDepth?: number;
}

/**
 * Perf: the archive ops drop one buffer per entry (zlib's output), freed only at the next scavenge
 * or after 64 MB of such garbage. Peak RSS on the Linux tree (2 workers, one run each, load ~7):
 * | young generation cap | unpack | import | pack --level store |
 * | none (V8's default)  | 363 MB | 317 MB | 308 MB |
 * | 16 MB                | 334 MB | 338 MB | 267 MB |
 * | 4 MB                 | 292 MB | 304 MB | 235 MB |
 * | 2 MB                 | 264 MB | 276 MB | 251 MB |
 * | 1 MB                 | 290 MB | 290 MB | 245 MB |
 * User CPU time was the same within the noise (3.2-3.4 s unpack, 4.5-4.7 s import).
 */
export const ARCHIVE_YOUNG_MB = 2;

export function defaultJobs(): number {
  return availableParallelism();
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending & { slot: Slot }>();
  private nextId = 1;
  private closed = false;
  private readonly callerRuns: boolean;
  private readonly depth: number;
  /** Batches the calling thread ran itself (callerRuns). */
  ranHere = 0;

  /** `size` workers (0: run inline). `init` is handed to every worker's op context. */
  constructor(
    readonly size: number,
    private readonly init: OpContextInit,
    options: WorkerPoolOptions = {},
  ) {
    this.callerRuns = options.callerRuns === true && size > 0;
    this.depth = this.callerRuns ? Math.max(2, options.workerDepth ?? 2) : 2;
    const resourceLimits = options.youngGenerationMb ? { maxYoungGenerationSizeMb: options.youngGenerationMb } : undefined;
    for (let i = 0; i < size; i++) {
      const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: init, resourceLimits });
      const slot: Slot = { worker, inFlight: 0 };
      worker.on('message', (m: { id: number; ok: boolean; value?: unknown; error?: SerializedError }) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        slot.inFlight--;
        if (m.ok) p.resolve(m.value);
        else p.reject(reviveError(m.error!));
      });
      worker.on('error', (err) => this.failSlot(slot, err));
      worker.on('exit', (code) => {
        if (!this.closed) this.failSlot(slot, new Error(`worker thread exited with code ${code}`));
      });
      this.slots.push(slot);
    }
  }

  /** Each worker's young generation cap in MB: the one asked for (-1: none) until its thread is up, then the thread's own. */
  youngGenerationLimits(): (number | undefined)[] {
    return this.slots.map((s) => s.worker.resourceLimits?.maxYoungGenerationSizeMb);
  }

  /**
   * Runs one batch on the least busy worker (or inline) and resolves with its result. `transfer`
   * lists buffers handed to the worker instead of copied (the caller must not use them after).
   * `heavy`: never run on the calling thread (see runsHere).
   */
  run<T>(op: OpName, payload: unknown, transfer?: ArrayBuffer[], heavy = false): Promise<T> {
    if (this.size === 0) return runOp(op, payload, this.init) as Promise<T>;
    const slot = this.leastBusy();
    if (!heavy && this.runsHereWith(slot)) return this.runHere<T>(op, payload);
    const id = this.nextId++;
    slot.inFlight++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, slot });
      slot.worker.postMessage({ id, op, payload }, transfer);
    });
  }

  /**
   * True when a `run` called now (with no await between) with this `heavy` runs on the calling
   * thread: inline, or callerRuns with every worker holding two batches. Its payload is then never
   * posted, so it need not be packed for postMessage (runBatches' payloadOf). A heavy batch goes
   * to a worker even when every worker holds two: the calling thread takes no batch that would
   * keep it from handing out the next ones for much longer than a worker takes to run the two it holds.
   */
  runsHere(heavy: boolean): boolean {
    return this.size === 0 || (!heavy && this.runsHereWith(this.leastBusy()));
  }

  private runsHereWith(slot: Slot): boolean {
    return this.callerRuns && slot.inFlight >= this.depth;
  }

  private leastBusy(): Slot {
    let slot = this.slots[0]!;
    for (const s of this.slots) if (s.inFlight < slot.inFlight) slot = s;
    return slot;
  }

  /**
   * A batch run on the calling thread. It first lets the event loop take the workers' finished
   * batches (their lanes hand them the next), as a synchronous batch holds up those messages.
   */
  private async runHere<T>(op: OpName, payload: unknown): Promise<T> {
    await new Promise<void>((r) => setImmediate(r));
    this.ranHere++;
    return (await runOp(op, payload, this.init)) as T;
  }

  /** Batches that can usefully be in flight at once: two per worker (or workerDepth) keeps each one busy. */
  get parallelism(): number {
    return Math.max(1, this.size * this.depth + (this.callerRuns ? 1 : 0));
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private failSlot(slot: Slot, err: unknown): void {
    for (const [id, p] of this.pending) {
      if (p.slot !== slot) continue;
      this.pending.delete(id);
      p.reject(err);
    }
  }
}

export interface RunBatchesOptions<P> {
  /** Checked before each dispatch; when true, no new batch starts and running ones finish. */
  shouldStop?: () => boolean;
  /** Awaited before a batch is dispatched (e.g. fetch its blobs), overlapping other batches' work. */
  before?: (payload: P) => Promise<void>;
  /**
   * What is posted to the worker for a batch, when not the whole batch (keep main-thread state
   * home). `here`: the batch runs on the calling thread (pool.runsHere), so it is not posted.
   */
  payloadOf?: (batch: P, here: boolean) => unknown;
  /**
   * Checked before a batch is dispatched: while false, its lane waits until another batch finishes
   * (a batch is always admitted when none is in flight). Bounds results waiting to be used.
   */
  admit?: (payload: P) => boolean;
  /** Called once for each batch that started, when it has succeeded or failed. */
  settled?: (payload: P) => void;
  /** Buffers of the posted payload (what payloadOf made) to move to the worker instead of copying. */
  transferOf?: (posted: unknown) => ArrayBuffer[];
  /** A batch that takes much longer than most: posted to a worker, never run on the calling thread (WorkerPool.runsHere). */
  heavy?: (payload: P) => boolean;
}

/**
 * Runs `batches` through `pool` with at most `pool.parallelism` in flight, calling `onResult` in
 * completion order. On the first error no new batch starts; running ones finish, then it throws.
 */
export async function runBatches<P, R>(
  pool: WorkerPool,
  op: OpName,
  batches: Iterable<P>,
  onResult: (result: R, payload: P) => void,
  opts: RunBatchesOptions<P> = {},
): Promise<void> {
  const it = batches[Symbol.iterator]();
  let firstError: unknown;
  let inFlight = 0;
  let waiters: (() => void)[] = [];
  const finished = () => {
    inFlight--;
    const w = waiters;
    waiters = [];
    for (const wake of w) wake();
  };
  const lane = async () => {
    for (;;) {
      if (firstError !== undefined || opts.shouldStop?.()) return;
      const next = it.next();
      if (next.done) return;
      // admit is asked even with none in flight (a batch then goes whatever it says), so a caller
      // that counts what it admitted counts every batch it later sees finish: asked only with
      // batches in flight, a checkout's slab count fell by one each time its batches ran dry, and
      // more batches than its slabs held fetched bytes at once.
      while (opts.admit && firstError === undefined && !opts.admit(next.value)) {
        if (inFlight === 0) break;
        await new Promise<void>((r) => waiters.push(r));
      }
      if (firstError !== undefined) return;
      inFlight++;
      try {
        if (opts.before) await opts.before(next.value);
        // No await from here to pool.run, so the thread payloadOf was told of is the one that runs it.
        const heavy = opts.heavy?.(next.value) === true;
        const posted = opts.payloadOf ? opts.payloadOf(next.value, pool.runsHere(heavy)) : next.value;
        onResult(await pool.run<R>(op, posted, opts.transferOf?.(posted), heavy), next.value);
      } catch (e) {
        if (firstError === undefined) firstError = e;
      } finally {
        opts.settled?.(next.value);
        finished();
      }
    }
  };
  // With `before`, more lanes than workers so fetching overlaps writing.
  const lanes = opts.before ? pool.parallelism * 4 : pool.parallelism;
  await Promise.all(Array.from({ length: lanes }, lane));
  if (firstError !== undefined) throw firstError;
}
