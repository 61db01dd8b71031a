/**
 * Action cache entries the server found whole, remembered until the store may have lost one of
 * their blobs: a GET /ac of such an entry is answered without decoding its Tree message and
 * looking for every blob it names again.
 *
 * A memo holds the entry's bytes, its blobs grouped by the store's 256 shard folders, and each
 * folder's state (store/completeness.ts) taken before the check that found every blob. A blob
 * removed since, by gc, `verify --repair`, another process or by hand, changes its folder's mtime:
 * the entry's blobs in each changed folder are looked for again (a push elsewhere in the store
 * costs a look at those few, not at all of them), and one absent makes the entry a miss. A
 * folder's state is only trusted when its last change is older than a file-system clock tick
 * (SETTLE_MS), so a removal in the same tick cannot go unseen. (A blob file truncated in place,
 * which changes no folder, is not seen: the full check compares sizes, the memo does not.)
 *
 * Perf: answering the Linux tree's ref entry (78k blobs, a 7 MB Tree message) took 0.70 s before
 * each restore by name (curl on loopback); remembered, 6 ms. In process, for 78k blobs: remembering
 * costs 36 ms, a GET with no folder changed 2 ms (256 stats), with one folder changed 4 ms.
 * Entries naming fewer blobs than REMEMBER_MIN_BLOBS are not remembered: checking them costs less
 * than the states, and most action cache traffic (Bazel's) is such entries. Blobs are held as 32
 * binary bytes and a size each (3 MB for the Linux tree), at most MAX_BLOBS for all entries.
 */
import type { Digest } from '../core/digest.js';
import { SETTLE_MS, type ShardStamp, shardStamps } from '../store/completeness.js';

/** Entries naming at least this many blobs are remembered once found whole. */
export const REMEMBER_MIN_BLOBS = 256;
/** Blobs held for all remembered entries; the least recently served entries go first. */
const MAX_BLOBS = 2_000_000;
/** A folder state never matched: its blobs are looked for at every GET until it settles. */
const UNSETTLED = '';

/** An entry's blobs in one shard folder: 32-byte SHA-256s back to back, and their sizes. */
interface ShardBlobs {
  hashes: Buffer;
  sizes: Float64Array;
}

interface Memo {
  bytes: Buffer;
  stamps: string[];
  shards: ShardBlobs[];
  blobs: number;
}

export class ValidatedEntries {
  private readonly memo = new Map<string, Memo>();
  private held = 0;
  private hits = 0;

  constructor(
    private readonly storeRoot: string,
    /** Present with exactly this size. */
    private readonly has: (d: Digest) => boolean,
  ) {}

  /**
   * The store's folder states, to take before an entry's blobs are looked for (see remember); a
   * folder changed less than SETTLE_MS before is UNSETTLED.
   */
  stampsBeforeCheck(): string[] {
    const limit = Date.now() - SETTLE_MS;
    return shardStamps(this.storeRoot).map((s) => settled(s, limit));
  }

  /**
   * True when `key` with exactly these bytes was found whole and every blob of it in a folder
   * changed since is still there; an entry that lost one is forgotten.
   */
  holds(key: string, bytes: Buffer): boolean {
    const m = this.memo.get(key);
    if (!m) return false;
    if (!m.bytes.equals(bytes)) {
      this.forget(key);
      return false;
    }
    const limit = Date.now() - SETTLE_MS;
    const now = shardStamps(this.storeRoot);
    for (let s = 0; s < 256; s++) {
      if (now[s]!.stamp === m.stamps[s]) continue;
      const { hashes, sizes } = m.shards[s]!;
      for (let i = 0; i < sizes.length; i++) {
        if (!this.has({ hash: hashes.toString('hex', i * 32, i * 32 + 32), size: sizes[i]! })) {
          this.forget(key);
          return false;
        }
      }
      m.stamps[s] = settled(now[s]!, limit);
    }
    this.memo.delete(key); // most recently served last
    this.memo.set(key, m);
    this.hits++;
    return true;
  }

  /**
   * Remembers `key` (these bytes) as whole: `needed` are the blobs it names, all found present
   * after `stamps` (stampsBeforeCheck) were taken. Entries naming fewer than REMEMBER_MIN_BLOBS blobs are not kept.
   */
  remember(key: string, bytes: Buffer, needed: readonly Digest[], stamps: string[]): void {
    this.forget(key);
    if (needed.length < REMEMBER_MIN_BLOBS || needed.length > MAX_BLOBS) return;
    const counts = new Array<number>(256).fill(0);
    for (const d of needed) counts[shardOf(d)]!++;
    const shards: ShardBlobs[] = counts.map((n) => ({ hashes: Buffer.allocUnsafe(n * 32), sizes: new Float64Array(n) }));
    const filled = new Array<number>(256).fill(0);
    for (const d of needed) {
      const s = shardOf(d);
      const i = filled[s]!++;
      shards[s]!.hashes.write(d.hash, i * 32, 32, 'hex');
      shards[s]!.sizes[i] = d.size;
    }
    this.memo.set(key, { bytes: Buffer.from(bytes), stamps, shards, blobs: needed.length });
    this.held += needed.length;
    while (this.held > MAX_BLOBS) this.forget(this.memo.keys().next().value!);
  }

  forget(key: string): void {
    const m = this.memo.get(key);
    if (!m) return;
    this.held -= m.blobs;
    this.memo.delete(key);
  }

  /** How many GETs a remembered entry answered (for /status and tests). */
  get served(): number {
    return this.hits;
  }
}

/** A folder's state, or UNSETTLED when it changed after `limit` (ms since the epoch). */
function settled(s: ShardStamp, limit: number): string {
  return s.changedMs <= limit ? s.stamp : UNSETTLED;
}

function shardOf(d: Digest): number {
  return parseInt(d.hash.slice(0, 2), 16);
}
