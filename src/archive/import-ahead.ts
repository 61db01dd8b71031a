/**
 * import's head start: while the main thread judges a zip's entries (entry-rules.ts), the workers
 * already read, check, hash and write the first plain files to temporary files ('archive.stage'),
 * chosen from the central directory alone. Nothing enters the store until the archive is accepted:
 * then the staged files whose judged entry is what was assumed are committed (renamed to their
 * blobs), and any others removed; a refused archive has them all removed.
 *
 * Perf: reading the central directory, judging and planning the Linux tree (83,730 entries) kept
 * this thread busy for the first ~0.45 s of the import while both workers sat idle (profiled, at
 * load 8); on a quiet machine that was about a tenth of the import (3.43 s). A refused archive
 * costs the staged batches the workers had started when it was refused (the others are cancelled).
 */
import type { CentralDirectory, RawEntry } from './central-directory.js';
import type { ArchiveEntry } from './entry-rules.js';
import type { EntryRef } from './local-data.js';
import type { IngestBatch, StagedResult } from './ingest-op.js';
import type { WorkerPool } from '../fs/worker-pool.js';
import { removeQuietly } from '../store/local.js';
import { FLAG_ENCRYPTED, FLAG_STRONG_ENCRYPTION, HOST_UNIX, LOCAL_HEADER_SIZE, METHOD_DEFLATE, METHOD_STORE, S_IFMT, S_IFREG } from './zip-format.js';

/**
 * Staged batches per worker: a little more than a worker does while the Linux tree is judged.
 * Perf: with 8, both workers were busy from 0.3 s into the import (profiled at load 9, where the
 * judge ran to 0.9 s) and ran out of staged batches 0.1-0.2 s before the judge was done; before,
 * they sat idle until the first batch at 0.45 s (load 8). With 12, they still ran out at 0.6 s
 * and waited until 0.8 s (one profile, load 5); and since they now start from the first headers
 * (aheadEntries), 50-140 ms sooner, 20. A worker stores a batch of the Linux tree in about 23 ms
 * (about 154 batches in 3.6 s of a profile).
 */
const BATCHES_PER_WORKER = 20;

/**
 * How many central headers the head start can use: its batches at most, plus the one after the
 * last, whose offset ends it. import hands the workers these as soon as they are decoded, before
 * the rest of the central directory (readCentralDirectory's prefix); a directory refused after
 * that has the staged files removed like any refused archive.
 * Perf: staged from the whole central directory, the workers of a Linux tree import, booted, sat
 * idle 9-113 ms (8 workers of 4 profiles, load 5-8) until its 83,730 headers were read; staged
 * from the first 10,241, not at all, and their first inflate came 50-140 ms sooner (mean of the
 * two workers) in each of 4 interleaved pairs (247-446 ms into the import against 163-371 ms).
 * CPU time is unchanged (7 interleaved pairs at load 6.5-7.3: user+sys median 6.90 s against
 * 6.98 s, ranges 6.40-7.86 and 6.53-7.57); wall time at that load varied 3.8-12.7 s per run,
 * far more than this moves.
 */
export function aheadEntries(workers: number, entriesPerBatch: number): number {
  return Math.max(1, workers) * BATCHES_PER_WORKER * entriesPerBatch + 1;
}

type Staged = EntryRef & { index: number };

interface StagedBatch {
  files: Staged[];
  result: Promise<StagedResult | { error: unknown }>;
  /** Whether every entry was judged as assumed (set by `accept`). */
  accepted?: boolean;
}

export interface AheadLimits {
  maxRatio: number;
  maxSize: number;
  /** Entries larger than this are streamed by the caller, never staged. */
  large: number;
  /** Most entries and archive bytes per batch (the plan's limits). */
  entries: number;
  bytes: number;
}

/**
 * A file the judge will accept as it stands, as far as its own central header tells: a Unix
 * regular file with a valid UTF-8 name not ending in '/', unencrypted, stored or deflated, not
 * large, within the ratio limit, its minimal extent before `limit`. Its name is not checked here:
 * nothing is written under it, and the judge decides before anything is committed.
 */
function plainFile(e: RawEntry, limit: number, l: AheadLimits): boolean {
  const mode = (e.externalAttr >>> 16) & 0xffff;
  return (
    e.name !== undefined &&
    !e.name.endsWith('/') &&
    (e.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)) === 0 &&
    e.madeBy >> 8 === HOST_UNIX &&
    (mode & S_IFMT) === S_IFREG &&
    (e.method === METHOD_DEFLATE || (e.method === METHOD_STORE && e.size === e.compressedSize)) &&
    e.size <= l.large &&
    limit - e.localOffset <= l.large &&
    e.size <= l.maxRatio * Math.max(e.compressedSize, 1) &&
    e.localOffset + LOCAL_HEADER_SIZE + e.nameLength + e.compressedSize <= limit
  );
}

/**
 * Batches per worker staged from the whole central directory (StagedAhead.more), beyond the first
 * BATCHES_PER_WORKER: what the workers do while the rest of the archive is judged and planned.
 * Unlike the first ones, a worker takes one only while the judge is still running: `accept` claims
 * every batch no worker has started (see CLAIM_*), and those entries are stored by the ordinary
 * batches instead. So staging more costs no worker time once the judge is done, only the posting.
 */
const MORE_BATCHES_PER_WORKER = 24;

/** A staged batch's claim slot: no worker has started it, a worker has, the caller cancelled it. */
export const CLAIM_OPEN = 0;
export const CLAIM_TAKEN = 1;
export const CLAIM_CANCELLED = 2;

/** The part of WorkerPool the head start uses (tests hand it a pool they run by hand). */
export type StagingPool = Pick<WorkerPool, 'size' | 'run'>;

export class StagedAhead {
  private readonly batches: StagedBatch[] = [];
  private discarded = false;
  /** One slot per batch that can be staged (shared with the workers). */
  private readonly claims: Int32Array;
  /** Batches of the first wave (always run; the rest only when a worker takes them in time). */
  private firstWave = 0;
  /** Where the next wave goes on scanning the central directory, and its sizes so far. */
  private next = 0;
  private total = 0;
  private ended = false;

  /** Picks the first plain files of `cd` (in archive order) and posts them to the workers. */
  constructor(
    private readonly pool: StagingPool,
    private readonly archive: string,
    cd: CentralDirectory,
    private readonly limits: AheadLimits,
  ) {
    const workers = Math.max(1, pool.size);
    this.claims = new Int32Array(new SharedArrayBuffer(4 * workers * (BATCHES_PER_WORKER + MORE_BATCHES_PER_WORKER)));
    this.stage(cd.entries, workers * BATCHES_PER_WORKER);
    this.firstWave = this.batches.length;
  }

  /**
   * With the whole central directory read: posts up to MORE_BATCHES_PER_WORKER more batches per
   * worker from where the first ones ended, which workers take only until `accept`.
   * Perf: the first 20 batches per worker could run out well before the judge of the Linux tree was
   * done (one profile at load 6: workers idle 0.39 and 0.15 s until the first ordinary batch).
   * Idle time of both workers over a whole import (cpu-prof, load 6-10, the end included): median
   * 196 ms, range 5-1388 ms, over 10 runs before; 113 ms, range 16-221 ms, over 12 runs after.
   */
  more(cd: CentralDirectory): void {
    this.stage(cd.entries, this.claims.length);
  }

  private stage(raw: readonly RawEntry[], most: number): void {
    if (this.ended || this.batches.length >= most) return;
    const limits = this.limits;
    let cur: Staged[] = [];
    let curOut = 0;
    const post = () => {
      const files = cur;
      const slot = this.batches.length;
      const payload: IngestBatch = { archive: this.archive, files, claims: this.claims, slot };
      this.batches.push({ files, result: this.pool.run<StagedResult>('archive.stage', payload).catch((error: unknown) => ({ error })) });
      cur = [];
      curOut = 0;
    };
    // Offsets must rise entry by entry: then the next entry's offset is where this one must end
    // (the judge's limit, unless a later entry lies in between, which `accept` finds).
    let i = this.next;
    for (; i + 1 < raw.length; i++) {
      const e = raw[i]!;
      const limit = raw[i + 1]!.localOffset;
      if (limit <= e.localOffset || this.total + e.size > limits.maxSize) {
        this.ended = true;
        break;
      }
      if (plainFile(e, limit, limits)) {
        if (cur.length > 0 && (cur.length >= limits.entries || limit - cur[0]!.localOffset > limits.bytes || curOut + e.size > limits.bytes)) {
          post();
          if (this.batches.length >= most) break;
        }
        cur.push({ index: i, path: e.name!, rawName: e.name!, method: e.method, crc: e.crc >>> 0, compressedSize: e.compressedSize, size: e.size, localOffset: e.localOffset, limit });
        curOut += e.size;
      }
      this.total += e.size;
    }
    this.next = i;
    if (cur.length > 0) post();
  }

  /**
   * After the judge accepted the archive: the indexes of the staged entries the caller must not
   * store again. A batch counts only when each of its entries was judged a file with the extent
   * that was assumed; the files of any other batch are left for `discard`.
   */
  accept(judged: readonly ArchiveEntry[], isLarge: (e: ArchiveEntry) => boolean): Set<number> {
    const taken = new Set<number>();
    for (const [n, b] of this.batches.entries()) {
      // A later-wave batch no worker has started is cancelled: the ordinary batches store it.
      if (n >= this.firstWave && Atomics.compareExchange(this.claims, n, CLAIM_OPEN, CLAIM_CANCELLED) === CLAIM_OPEN) {
        b.accepted = false;
        continue;
      }
      b.accepted = b.files.every((f) => {
        const j = judged[f.index];
        return j !== undefined && j.index === f.index && j.type === 'file' && j.limit === f.limit && j.path === f.path && !isLarge(j);
      });
      if (b.accepted) for (const f of b.files) taken.add(f.index);
    }
    return taken;
  }

  /**
   * Hands each accepted entry, with its hash and temporary file ('' when empty), to `commit` in
   * archive order as the workers finish them; a file `commit` returned from is no longer removed by
   * `discard`. Throws the first error a worker met in an accepted batch (the same check would have
   * failed without the head start). Lets the event loop turn after each batch, so the caller's
   * other batches go on being handed out meanwhile.
   */
  async commit(commit: (entry: Staged, hash: string, tmp: string) => void): Promise<void> {
    for (const b of this.batches) {
      if (!b.accepted) continue;
      const r = await b.result;
      if ('error' in r) throw r.error;
      for (let i = 0; i < b.files.length; i++) {
        commit(b.files[i]!, r.hashes[i]!, r.tmps[i]!);
        r.tmps[i] = '';
      }
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /** Waits for every staged batch and removes the temporary files not committed. */
  async discard(): Promise<void> {
    if (this.discarded) return;
    this.discarded = true;
    // Batches no worker has started are skipped (a refused archive waits only for those running).
    for (let n = 0; n < this.batches.length; n++) Atomics.compareExchange(this.claims, n, CLAIM_OPEN, CLAIM_CANCELLED);
    for (const b of this.batches) removeFiles(await b.result);
  }
}

function removeFiles(r: StagedResult | { error: unknown }): void {
  if ('error' in r) return;
  for (const t of r.tmps) if (t) removeQuietly(t);
}
