/**
 * Records of trees known to be whole in the store: STORE/complete/<root hash>, written by a pull
 * once every Directory message was validated and every blob of the tree was seen in the store. A
 * later pull of that tree with a valid record has nothing to do: no request, no read of the tree.
 *
 * Perf: pulling the Linux tree again after a complete pull took 1.06 s to fetch nothing, most of
 * it decoding 5,092 Directory messages from the tree pack, checking 5,092 directories and listing
 * the store's 78k blobs (profiled); checking a record is 256 stat calls.
 *
 * A record holds the state (inode, mtime, ctime) of the store's 256 blob shard folders, taken
 * before the pull's last look at its blobs. Any blob added or removed since, by treecast (gc,
 * verify --repair, another snapshot or pull) or by hand, changes its folder's mtime, and the
 * record no longer matches: the next pull checks the tree in full again (and records it again).
 * A state is only taken once every folder's mtime is older than the clock tick (see SETTLE_MS), so
 * a change in the same tick cannot go unseen, as git does for racy index entries.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { Digest } from '../core/digest.js';

export interface CompleteRecord {
  /** Digest of the shard folders' state when the tree was last seen whole. */
  state: string;
  directories: number;
  files: number;
}

/** How old every shard folder's mtime must be for a state to count: well over a file-system
 * timestamp tick (jiffy-grained, 1-10 ms on Linux). */
export const SETTLE_MS = 50;

const SHARDS = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

function dir(storeRoot: string): string {
  return join(storeRoot, 'complete');
}

/** One blob shard folder's state (inode, mtime, ctime; '-' when absent), and its last change (ms). */
export interface ShardStamp {
  stamp: string;
  changedMs: number;
}

/** The state of each of the 256 blob shard folders, in shard order (00 to ff). */
export function shardStamps(storeRoot: string): ShardStamp[] {
  return SHARDS.map((s) => {
    const st = fs.statSync(`${storeRoot}/cas/${s}`, { bigint: true, throwIfNoEntry: false });
    if (!st) return { stamp: '-', changedMs: 0 };
    return { stamp: `${st.ino} ${st.mtimeNs} ${st.ctimeNs}`, changedMs: Math.max(Number(st.mtimeNs / 1_000_000n), Number(st.ctimeNs / 1_000_000n)) };
  });
}

/** The state of the blob shard folders, and the newest mtime among them (ms since the epoch). */
export function shardState(storeRoot: string): { state: string; newestMs: number } {
  const h = createHash('sha256');
  let newestMs = 0;
  shardStamps(storeRoot).forEach((s, i) => {
    h.update(`${SHARDS[i]} ${s.stamp}\n`);
    newestMs = Math.max(newestMs, s.changedMs);
  });
  return { state: h.digest('hex'), newestMs };
}

/** A shard state no later change can share: waits until the newest folder change is SETTLE_MS old. */
export async function settledShardState(storeRoot: string): Promise<string> {
  for (;;) {
    const { state, newestMs } = shardState(storeRoot);
    const wait = newestMs + SETTLE_MS - Date.now();
    if (wait <= 0) return state;
    await new Promise((r) => setTimeout(r, wait + 1));
  }
}

/** Records `root` as whole for the shard state `rec.state`. Best effort: a record that cannot be
 * written only costs the next pull its speed. */
export function markComplete(storeRoot: string, root: Digest, rec: CompleteRecord): void {
  const tmp = join(dir(storeRoot), `.tmp-${process.pid}-${root.hash}`);
  try {
    fs.mkdirSync(dir(storeRoot), { recursive: true });
    fs.writeFileSync(tmp, JSON.stringify(rec));
    fs.renameSync(tmp, join(dir(storeRoot), root.hash));
  } catch {
    fs.rmSync(tmp, { force: true });
  }
}

/** The record of `root` while it still holds (no shard folder changed since), else undefined. */
export function readComplete(storeRoot: string, root: Digest): CompleteRecord | undefined {
  let rec: CompleteRecord;
  try {
    rec = JSON.parse(fs.readFileSync(join(dir(storeRoot), root.hash), 'utf8')) as CompleteRecord;
  } catch {
    return undefined;
  }
  if (typeof rec?.state !== 'string' || !Number.isSafeInteger(rec.directories) || !Number.isSafeInteger(rec.files)) return undefined;
  return rec.state === shardState(storeRoot).state ? rec : undefined;
}
