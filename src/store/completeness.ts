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
 *
 * A blob counts as held only as a regular file at its name, in a shard folder (and cas/) that is a
 * real folder: a symlink (or folder, or fifo) planted at either is a StoreDamagedError naming it,
 * when a pull looks and when a record is read, so no blob behind it is ever recorded as held.
 *
 * Nothing in `complete/` is read or written through a symbolic link: the folder is looked at by
 * lstat on every read and write and a record opened with O_NOFOLLOW, so a link planted as either
 * (whose target would be trusted as a record, or written into) is a StoreDamagedError naming it;
 * `verify --repair` removes it. A write's rename replaces a link at the record's own name.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { type Digest, formatDigest } from '../core/digest.js';
import { StoreDamagedError } from '../errors.js';
import { checkStoreFolders, damagedBlobFileError, damagedBlobFolderError, entryKind, makeStoreFolders, readStoreEntry } from './local.js';

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

const FOLDER_ROLE = 'the folder of completeness records';

/** One blob shard folder's state (inode, mtime, ctime; '-' when absent), and its last change (ms). */
export interface ShardStamp {
  stamp: string;
  changedMs: number;
}

/** The state of each of the 256 blob shard folders, in shard order (00 to ff). */
export function shardStamps(storeRoot: string): ShardStamp[] {
  return SHARDS.map((s) => shardStamp(`${storeRoot}/cas/${s}`));
}

// lstat: a shard folder replaced by a symlink (even to the folder it was, moved) has another state.
function shardStamp(folder: string): ShardStamp {
  const st = fs.lstatSync(folder, { bigint: true, throwIfNoEntry: false });
  if (!st) return { stamp: '-', changedMs: 0 };
  return { stamp: `${st.ino} ${st.mtimeNs} ${st.ctimeNs}`, changedMs: Math.max(Number(st.mtimeNs / 1_000_000n), Number(st.ctimeNs / 1_000_000n)) };
}

/** The state of the blob shard folders, as a record holds it. */
export function shardState(storeRoot: string): string {
  return stateOf(shardStamps(storeRoot).map((s) => s.stamp));
}

/** One digest of the 256 folders' stamps, in shard order: what a record holds and is checked against. */
function stateOf(stamps: readonly string[]): string {
  const h = createHash('sha256');
  stamps.forEach((stamp, i) => h.update(`${SHARDS[i]} ${stamp}\n`));
  return h.digest('hex');
}

/**
 * Refuses `folder` (cas/ or one of its shard folders) when something other than a real folder is
 * there (a planted symlink): blobs behind it were never written by the store, so it must not count
 * them as held. Absent is fine (no blob there).
 */
function refuseLinkedBlobFolder(storeRoot: string, folder: string): void {
  const st = fs.lstatSync(folder, { throwIfNoEntry: false });
  if (st !== undefined && !st.isDirectory()) throw damagedBlobFolderError(storeRoot, folder, st);
}

/**
 * Whether blob `d` is held at `p`, its name in a shard folder already found real: a regular file.
 * Anything else there (a symlink planted at the name, dangling or not; a folder; a fifo) is a
 * StoreDamagedError naming it: the store never wrote a blob behind it, so it must not count it as
 * held. False when absent (or the shard folder is: ENOENT, ENOTDIR).
 */
function holdsBlobFile(storeRoot: string, p: string, d: Digest): boolean {
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(p, { throwIfNoEntry: false });
  } catch {
    return false;
  }
  if (st === undefined) return false;
  if (!st.isFile()) throw damagedBlobFileError(storeRoot, p, entryKind(st), formatDigest(d));
  return true;
}

/** The names of the regular files in `folder` (readdir's d_type: no stat per entry); none when it cannot be listed. */
function fileNames(folder: string): Set<string> {
  const names = new Set<string>();
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(folder, { withFileTypes: true });
  } catch {
    return names;
  }
  for (const e of entries) if (e.isFile()) names.add(e.name);
  return names;
}

const HEX = (c: number) => (c <= 0x39 ? c - 0x30 : c - 0x57);

/**
 * The shard state (as shardState), taken once every folder's last change is older than the clock
 * tick (SETTLE_MS), and only if the store holds every blob of `digests` after it; undefined when
 * one is missing. Each shard folder is looked at once its own state is settled and taken, so a
 * blob lost after its folder's look changes that folder's state.
 * With `list`, a folder is listed once and its blobs looked up in the listing (no stat per blob);
 * without, each blob is checked with one lstat (for a store much larger than the tree). A blob
 * counts only as a regular file: a symlink, folder or fifo at its name is a StoreDamagedError
 * naming it (holdsBlobFile), as a shard folder that is a symlink is.
 *
 * Perf: on a pull of the Linux tree (83k blobs) a second listing of the whole store into one Set
 * after the state, through the isHash filter of listHashes, took 0.15 s of main-thread CPU
 * (profiled at --latency 50 --concurrency 16). Here the blobs are grouped by folder and each
 * folder's names go into a small Set; folders settled before the rest are looked at while the
 * rest wait out the tick. Measured after: 0.15 s in one profile at load 5-12, most of it the
 * readdir calls themselves (0.09 s); the Set of the whole store and its isHash filter are gone.
 * Perf: the listing keeps only regular files by readdir's d_type (withFileTypes), and only a
 * blob not among them is looked at by lstat (to tell a planted entry from an absent blob): the
 * 256 shard folders of a store of the Linux tree's 83,266 blobs, listed into Sets in one process,
 * 4 rounds each after warm-up, 70-73 ms as plain names and 72-74 ms with their types.
 */
export async function settledStateHolding(storeRoot: string, digests: Iterable<Digest>, list: boolean): Promise<string | undefined> {
  const wanted: Digest[][] = SHARDS.map(() => []);
  for (const d of digests) if (d.size > 0) wanted[(HEX(d.hash.charCodeAt(0)) << 4) | HEX(d.hash.charCodeAt(1))]!.push(d);
  refuseLinkedBlobFolder(storeRoot, `${storeRoot}/cas`);
  const stamps: string[] = new Array<string>(SHARDS.length);
  let pending = SHARDS.map((_, i) => i);
  for (;;) {
    // Taken before the stats: a folder counts as settled only if it was already at that instant.
    const now = Date.now();
    const later: number[] = [];
    let wakeAt = 0;
    for (const i of pending) {
      const folder = `${storeRoot}/cas/${SHARDS[i]}`;
      const { stamp, changedMs } = shardStamp(folder);
      if (changedMs + SETTLE_MS > now) {
        later.push(i);
        wakeAt = Math.max(wakeAt, changedMs + SETTLE_MS);
        continue;
      }
      stamps[i] = stamp;
      const blobs = wanted[i]!;
      if (blobs.length === 0) continue;
      refuseLinkedBlobFolder(storeRoot, folder);
      if (list) {
        const names = fileNames(folder);
        // Not a regular file there: absent, or a planted entry (which holdsBlobFile refuses).
        for (const d of blobs) if (!names.has(d.hash) && !holdsBlobFile(storeRoot, `${folder}/${d.hash}`, d)) return undefined;
      } else {
        for (const d of blobs) if (!holdsBlobFile(storeRoot, `${folder}/${d.hash}`, d)) return undefined;
      }
    }
    if (later.length === 0) break;
    pending = later;
    await new Promise((r) => setTimeout(r, wakeAt - Date.now() + 1));
  }
  return stateOf(stamps);
}

/** Records `root` as whole for the shard state `rec.state`. Best effort: a record that cannot be
 * written only costs the next pull its speed; a link planted as the folder is a StoreDamagedError. */
export function markComplete(storeRoot: string, root: Digest, rec: CompleteRecord): void {
  const tmp = join(dir(storeRoot), `.tmp-${process.pid}-${root.hash}`);
  try {
    makeStoreFolders(storeRoot, dir(storeRoot), dir(storeRoot), FOLDER_ROLE);
    // wx: a link planted at the temp name is not written through (EEXIST; the rm below removes the link itself).
    fs.writeFileSync(tmp, JSON.stringify(rec), { flag: 'wx' });
    fs.renameSync(tmp, join(dir(storeRoot), root.hash));
  } catch (e) {
    if (e instanceof StoreDamagedError) throw e; // nothing removed through the linked folder
    fs.rmSync(tmp, { force: true });
  }
}

/** The record of `root` while it still holds (no shard folder changed since), else undefined. */
export function readComplete(storeRoot: string, root: Digest): CompleteRecord | undefined {
  const p = join(dir(storeRoot), root.hash);
  let rec: CompleteRecord;
  try {
    if (!checkStoreFolders(storeRoot, dir(storeRoot), dir(storeRoot), FOLDER_ROLE)) return undefined;
    rec = JSON.parse(readStoreEntry(storeRoot, p, 'a completeness record').toString('utf8')) as CompleteRecord;
  } catch (e) {
    if (e instanceof StoreDamagedError) throw e;
    return undefined;
  }
  if (typeof rec?.state !== 'string' || !Number.isSafeInteger(rec.directories) || !Number.isSafeInteger(rec.files)) return undefined;
  // cas/ itself a link (to the folder it was, moved): its shards' states would still match.
  refuseLinkedBlobFolder(storeRoot, `${storeRoot}/cas`);
  return rec.state === shardState(storeRoot) ? rec : undefined;
}
