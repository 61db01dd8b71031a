/**
 * Action cache entries the server found whole, remembered until the store may have lost a blob:
 * a GET /ac of such an entry is answered without decoding its Tree message and looking for every
 * blob it names again.
 *
 * A memo holds the entry's bytes and the state of the store's 256 blob shard folders (see
 * store/completeness.ts) taken before the check that found every blob. Any blob removed since, by
 * gc, `verify --repair`, another process or by hand, changes its folder's mtime, so the state no
 * longer matches and the entry is checked in full again. A state is only kept when every folder's
 * last change is older than a file-system clock tick (SETTLE_MS), so a removal in the same tick
 * cannot go unseen. Any blob added also changes the state: the memo is coarse, never wrong about
 * a lost blob. (A blob file truncated in place, which changes no folder, is not seen: the full
 * check compares sizes, the memo does not.)
 *
 * Perf: answering the Linux tree's ref entry (78k blobs, a 7 MB Tree message) took 0.70 s before
 * each restore by name (curl on loopback); remembered, 6 ms: the 256 stats of the shard state. Entries naming fewer blobs than that are not remembered: checking them costs
 * less than the state, and most action cache traffic (Bazel's) is such entries.
 */
import { SETTLE_MS, shardState } from '../store/completeness.js';

/** Entries naming at least this many blobs are remembered once found whole. */
export const REMEMBER_MIN_BLOBS = 256;
/** At most this many entries are remembered; the least recently served is forgotten first. */
const MAX_ENTRIES = 256;

export class ValidatedEntries {
  private readonly memo = new Map<string, { bytes: Buffer; state: string }>();
  private hits = 0;

  constructor(private readonly storeRoot: string) {}

  /** True when `key` with exactly these bytes was found whole and no shard folder changed since. */
  holds(key: string, bytes: Buffer): boolean {
    const m = this.memo.get(key);
    if (!m) return false;
    if (!m.bytes.equals(bytes) || shardState(this.storeRoot).state !== m.state) {
      this.memo.delete(key);
      return false;
    }
    this.memo.delete(key); // most recently served last
    this.memo.set(key, m);
    this.hits++;
    return true;
  }

  /**
   * The store's state to remember an entry under, taken before its blobs are looked for; undefined
   * when a folder changed too recently for the state to be trusted.
   */
  stateBeforeCheck(): string | undefined {
    const { state, newestMs } = shardState(this.storeRoot);
    return Date.now() - newestMs >= SETTLE_MS ? state : undefined;
  }

  /** Remembers `key` (these bytes) as whole for `state`, the state taken before its check. */
  remember(key: string, bytes: Buffer, state: string): void {
    this.memo.delete(key);
    this.memo.set(key, { bytes: Buffer.from(bytes), state });
    if (this.memo.size > MAX_ENTRIES) this.memo.delete(this.memo.keys().next().value!);
  }

  forget(key: string): void {
    this.memo.delete(key);
  }

  /** How many GETs a remembered entry answered (for /status and tests). */
  get served(): number {
    return this.hits;
  }
}
