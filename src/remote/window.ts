/**
 * The fetch window: a rolling window of at most N requests in flight. As soon as one request
 * finishes the next starts, so a distant server's latency is paid once per N requests, not once
 * per request (the scheme Reprint's files-sync uses). Batches are formed at dispatch time from a
 * queue of wanted blobs, so a blob the checkout needs now can jump ahead of prefetched ones.
 *
 * Pure scheduling: what a request does is a callback, so the rules (window size, batch limits,
 * urgency, stop, first-error-wins) are unit-tested with fake requests.
 */
import type { Digest } from '../core/digest.js';
import { InterruptedError } from '../errors.js';

export interface SchedulerOptions {
  /** Requests in flight at once. */
  concurrency: number;
  /** Most blobs in one request (1: one request per blob, for plain Bazel HTTP caches). */
  maxBatchBlobs: number;
  /** A batch closes once it holds this many bytes. */
  maxBatchBytes: number;
  /** Blobs larger than this always go alone (streamed). */
  singleAbove: number;
  /** Fetches the blobs into the local store; resolves when done. May store some and then throw. */
  fetchBatch(digests: Digest[]): Promise<void>;
  /** True when the blob is in the local store (checked again after a failed batch). */
  isLocal(d: Digest): boolean;
}

interface Entry {
  d: Digest;
  state: 'queued' | 'running' | 'done';
  promise: Promise<void>;
  resolve(): void;
  reject(e: unknown): void;
}

export class FetchScheduler {
  private readonly entries = new Map<string, Entry>();
  private readonly urgent: Entry[] = [];
  private readonly background: Entry[] = [];
  private urgentPos = 0;
  private backgroundPos = 0;
  private running = 0;
  private stopped: unknown;
  inFlight = 0;
  maxInFlight = 0;
  requests = 0;

  constructor(private readonly opts: SchedulerOptions) {}

  /**
   * Resolves when every digest is in the local store. `urgent` blobs are dispatched before any
   * queued by an earlier non-urgent call. Each blob is requested at most once per scheduler.
   * `knownAbsent`: the caller just checked that these are not local (saves a stat each).
   */
  want(digests: readonly Digest[], urgent = false, knownAbsent = false): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const d of digests) {
      let e = this.entries.get(d.hash);
      if (!e) {
        if (d.size === 0 || (!knownAbsent && this.opts.isLocal(d))) continue;
        e = this.newEntry(d);
        (urgent ? this.urgent : this.background).push(e);
      } else if (urgent && e.state === 'queued') {
        this.urgent.push(e); // its old place in the background queue is skipped when reached
      }
      if (e.state !== 'done') waits.push(e.promise);
    }
    this.pump();
    return waits.length === 0 ? Promise.resolve() : Promise.all(waits).then(() => undefined);
  }

  /** Starts no new request; queued blobs fail with `reason` (in-flight ones finish). */
  stop(reason: unknown = new InterruptedError('interrupted')): void {
    if (this.stopped !== undefined) return;
    this.stopped = reason;
    for (const e of this.entries.values()) if (e.state === 'queued') this.settle(e, reason);
  }

  /** Resolves when no request is in flight. */
  async idle(): Promise<void> {
    while (this.inFlight > 0) await new Promise((r) => setTimeout(r, 5));
  }

  private newEntry(d: Digest): Entry {
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // A caller may never await a prefetched blob; its failure still surfaces through want().
    promise.catch(() => {});
    const e: Entry = { d, state: 'queued', promise, resolve, reject };
    this.entries.set(d.hash, e);
    if (this.stopped !== undefined) this.settle(e, this.stopped);
    return e;
  }

  private settle(e: Entry, err?: unknown): void {
    if (e.state === 'done') return;
    e.state = 'done';
    if (err === undefined) e.resolve();
    else e.reject(err);
  }

  private pump(): void {
    while (this.stopped === undefined && this.inFlight < this.opts.concurrency) {
      const batch = this.nextBatch();
      if (batch.length === 0) break;
      this.dispatch(batch);
    }
  }

  /** Takes queued entries, urgent first, until a batch limit is reached. */
  private nextBatch(): Entry[] {
    const batch: Entry[] = [];
    let bytes = 0;
    const take = (queue: Entry[], pos: number): number => {
      while (pos < queue.length && batch.length < this.opts.maxBatchBlobs && bytes < this.opts.maxBatchBytes) {
        const e = queue[pos]!;
        if (e.state !== 'queued') {
          pos++;
          continue;
        }
        const big = e.d.size > this.opts.singleAbove;
        if (big && batch.length > 0) break; // a big blob goes alone, in the next request
        pos++;
        e.state = 'running';
        batch.push(e);
        bytes += e.d.size;
        if (big) break;
      }
      return pos;
    };
    this.urgentPos = take(this.urgent, this.urgentPos);
    if (batch.length === 0 || (batch.length < this.opts.maxBatchBlobs && bytes < this.opts.maxBatchBytes && batch[0]!.d.size <= this.opts.singleAbove)) {
      this.backgroundPos = take(this.background, this.backgroundPos);
    }
    // Drop consumed queue heads now and then so long runs do not hold every entry twice.
    if (this.urgentPos > 4096) {
      this.urgent.splice(0, this.urgentPos);
      this.urgentPos = 0;
    }
    if (this.backgroundPos > 4096) {
      this.background.splice(0, this.backgroundPos);
      this.backgroundPos = 0;
    }
    return batch;
  }

  private dispatch(batch: Entry[]): void {
    this.inFlight++;
    this.requests++;
    if (this.inFlight > this.maxInFlight) this.maxInFlight = this.inFlight;
    this.opts
      .fetchBatch(batch.map((e) => e.d))
      .then(
        () => {
          // fetchBatch resolves only once every blob is stored: no stat per blob here (see receiver.ts).
          for (const e of batch) this.settle(e);
        },
        (err) => {
          // Blobs the batch stored before failing are done; the rest share the error.
          for (const e of batch) this.settle(e, this.opts.isLocal(e.d) ? undefined : err);
          this.stop(err);
        },
      )
      .finally(() => {
        this.inFlight--;
        this.pump();
      });
  }
}

/**
 * Runs `fn` over `items` with at most `concurrency` calls in flight, stopping at the first error
 * (calls already running finish). For push, whose work list is known up front.
 */
export async function runWindow<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>, shouldStop: () => boolean = () => false): Promise<void> {
  let next = 0;
  let firstError: unknown;
  const lane = async () => {
    while (firstError === undefined && !shouldStop() && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (e) {
        if (firstError === undefined) firstError = e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, lane));
  if (firstError !== undefined) throw firstError;
}
