/**
 * Store upkeep: `verify` re-hashes every blob (and executable twin) and can remove corrupt ones;
 * `gc` removes blobs no ref, live checkout record, checkout still running or action cache entry
 * reaches, and with a maximum age first drops the action cache entries not used within it.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { type Digest, formatDigest, isHash, parseDigest } from '../core/digest.js';
import { fsError } from '../errors.js';
import { decodeDirectory } from '../core/reapi.js';
import { decodeActionResult } from '../core/action-result.js';
import { ActionCache, actionResultReferences } from './action-cache.js';
import { lockStoreForGc } from '../fs/target-guard.js';
import { type LocalStore, SHARDS, entryKind, isRealFolder, readFileNoFollow, safeReaddir } from './local.js';

export interface VerifyResult {
  checked: number;
  bytes: number;
  /**
   * Blobs whose bytes disagree with their name (`actual`: what they hash to), and store entries
   * that are not what the store made (`actual`: "a symbolic link", ...; `hash` empty for a shard
   * folder): those are never read, followed or descended into.
   */
  corrupt: { hash: string; path: string; actual: string }[];
  repaired: boolean;
}

/** The name of a tree pack (its root's hash): the only names gc removes from trees/. */
const PACK_NAME = /^[0-9a-f]{64}$/;

function hashFile(path: string): { hash: string; size: number } {
  const h = createHash('sha256');
  // O_NOFOLLOW: a symlink swapped in after the lstat is still not read through (ELOOP).
  const fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  const buf = Buffer.allocUnsafe(1 << 20);
  let size = 0;
  try {
    let n: number;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) {
      h.update(buf.subarray(0, n));
      size += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return { hash: h.digest('hex'), size };
}

/**
 * Removes the store entry `path` itself (a corrupt blob, or a symlink or file planted where the store
 * keeps a blob or a shard folder): unlink never follows a symlink, so its target is left alone. A
 * planted directory is not emptied: it may hold anything, and is reported for the user to move.
 */
function removeEntry(path: string): void {
  try {
    fs.unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError(e, 'cannot remove', path);
  }
}

export function verifyStore(store: LocalStore, repair: boolean, onProgress?: (n: number) => void): VerifyResult {
  const res: VerifyResult = { checked: 0, bytes: 0, corrupt: [], repaired: repair };
  let unrepaired = false;
  const damaged = (hash: string, path: string, st: fs.Stats) => {
    const kind = entryKind(st);
    res.corrupt.push({ hash, path, actual: st.isDirectory() ? kind : `${kind} (not followed)` });
    if (!repair) return;
    if (st.isDirectory()) unrepaired = true;
    else removeEntry(path);
  };
  for (const top of ['cas', 'cas-exec']) {
    const base = join(store.root, top);
    const baseSt = fs.lstatSync(base, { throwIfNoEntry: false });
    if (baseSt === undefined) continue;
    if (!baseSt.isDirectory()) {
      damaged('', base, baseSt);
      continue;
    }
    for (const shard of SHARDS) {
      const dir = join(base, shard);
      const st = fs.lstatSync(dir, { throwIfNoEntry: false });
      if (st === undefined) continue;
      if (!st.isDirectory()) {
        damaged('', dir, st);
        continue;
      }
      for (const hash of safeReaddir(dir)) {
        if (!isHash(hash)) continue;
        const path = join(dir, hash);
        const entry = fs.lstatSync(path, { throwIfNoEntry: false });
        if (entry === undefined) continue;
        if (!entry.isFile()) {
          damaged(hash, path, entry);
          continue;
        }
        let actual;
        try {
          actual = hashFile(path);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed meanwhile (gc)
          if ((e as NodeJS.ErrnoException).code === 'ELOOP') {
            damaged(hash, path, fs.lstatSync(path));
            continue;
          }
          throw fsError(e, 'cannot read blob', path);
        }
        res.checked++;
        res.bytes += actual.size;
        if (actual.hash !== hash) {
          res.corrupt.push({ hash, path, actual: formatDigest(actual) });
          // The plain blob goes with its executable twin (made from it); a twin alone, by itself.
          if (repair) top === 'cas' ? store.removeBlobSync(hash) : removeEntry(path);
        }
        onProgress?.(res.checked);
      }
    }
  }
  // refs/, ac/, checkouts/, locks/, stat-cache/ and complete/: a link anywhere in them (the folder
  // itself, a folder in it, an entry) is reported and, with --repair, unlinked (its target
  // untouched); nothing is descended into through one. Their files are not checked further here
  // (a ref holding no digest names itself).
  const walkLinks = (dir: string, depth: number) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isSymbolicLink()) {
        const st = fs.lstatSync(path, { throwIfNoEntry: false });
        if (st !== undefined) damaged('', path, st);
      } else if (e.isDirectory() && depth > 0) walkLinks(path, depth - 1);
    }
  };
  for (const [top, depth] of [['refs', 200], ['ac', 1], ['checkouts', 0], ['locks', 0], ['stat-cache', 0], ['complete', 0]] as const) {
    const base = join(store.root, top);
    const st = fs.lstatSync(base, { throwIfNoEntry: false });
    if (st === undefined) continue;
    if (st.isSymbolicLink()) damaged('', base, st);
    else if (st.isDirectory()) walkLinks(base, depth);
  }
  if (unrepaired) res.repaired = false;
  return res;
}

export interface GcOptions {
  dryRun: boolean;
  /** Unreachable blobs younger than this are kept (a snapshot or upload may still be writing them). */
  graceSeconds: number;
  /** Action cache entries neither written nor read within this are dropped first. */
  maxAgeSeconds?: number;
}

export interface GcResult {
  roots: number;
  reachable: number;
  removed: string[];
  removedBytes: number;
  /** Action cache entries kept (each pins what it references). */
  actions: number;
  /** Keys of the action cache entries dropped (or that would be) for being older than the maximum age. */
  removedActions: string[];
  dryRun: boolean;
}

/**
 * Everything reachable from refs, from records of checkouts whose directory still exists, from the
 * trees of checkouts still running (`running`, read from their locks), and
 * from `actions` (action cache entries): their output files, stdout and stderr, each output
 * directory's Tree message with every Directory and file in it, and its root Directory's tree.
 * An entry that is not an ActionResult (ccache keeps its own format there) pins nothing.
 */
function reachableFrom(store: LocalStore, refs: Digest[], ac: ActionCache, actions: { key: string; path: string }[], running: string[]): { roots: number; live: Set<string> } {
  const live = new Set<string>();
  const roots: Digest[] = [...refs];
  for (const r of running) {
    try {
      roots.push(parseDigest(r));
    } catch {
      /* a lock naming no valid tree pins nothing */
    }
  }
  for (const a of actions) {
    let refs;
    try {
      const where = `action ${a.key}`;
      // Read by O_NOFOLLOW (ActionCache.read): a link swapped in since the listing is not followed and pins nothing.
      const bytes = ac.read(a.key);
      if (bytes === undefined) continue;
      refs = actionResultReferences(store, decodeActionResult(bytes, where), where);
    } catch {
      continue;
    }
    for (const d of refs.needed) live.add(d.hash);
    for (const d of refs.directories) live.add(d.hash);
    roots.push(...refs.roots);
  }
  const recDir = join(store.root, 'checkouts');
  // Never through a link planted as checkouts/ or as a record (verify reports it): it pins nothing,
  // as an unreadable record pins nothing, and a checkout refuses to read it too.
  for (const name of isRealFolder(recDir) ? fs.readdirSync(recDir) : []) {
    try {
      const rec = JSON.parse(readFileNoFollow(join(recDir, name)).toString('utf8')) as { target: string; root?: string; pending?: string };
      if (!fs.existsSync(rec.target)) continue;
      // The tree of a checkout that did not finish is pinned too: running it again finishes it.
      for (const d of [rec.root, rec.pending]) if (typeof d === 'string') roots.push({ hash: d.split('/')[0]!, size: Number(d.split('/')[1]) });
    } catch {
      /* unreadable record: it pins nothing */
    }
  }
  // Walked apart from `live`: an entry's root Directory is already live, and its tree must still be walked.
  const walked = new Set<string>();
  const stack = [...roots];
  while (stack.length > 0) {
    const d = stack.pop()!;
    if (walked.has(d.hash)) continue;
    walked.add(d.hash);
    live.add(d.hash);
    let dir;
    try {
      dir = decodeDirectory(store.readSync(d), formatDigest(d));
    } catch {
      continue; // missing or corrupt directory: keep what we can reach
    }
    for (const f of dir.files) live.add(f.digest.hash);
    for (const s of dir.directories) stack.push(s.digest);
  }
  return { roots: roots.length, live };
}

export function gcStore(store: LocalStore, opts: GcOptions): GcResult {
  const guard = lockStoreForGc(store.root);
  try {
    return collect(store, opts, guard.pinned);
  } finally {
    guard.release();
  }
}

function collect(store: LocalStore, opts: GcOptions, running: string[]): GcResult {
  // Refs first: one that cannot be read (a planted link, no digest) stops gc before it drops
  // anything, action cache entries included.
  const refs = store.listRefs().map((r) => r.digest);
  const ac = new ActionCache(store);
  const kept: { key: string; path: string }[] = [];
  const removedActions: string[] = [];
  const usedSince = opts.maxAgeSeconds === undefined ? -Infinity : Date.now() - opts.maxAgeSeconds * 1000;
  for (const entry of ac.list()) {
    if (entry.lastUsedMs >= usedSince) {
      kept.push(entry);
      continue;
    }
    removedActions.push(entry.key);
    if (!opts.dryRun) ac.remove(entry.key);
  }
  const { roots, live } = reachableFrom(store, refs, ac, kept, running);
  const cutoff = Date.now() - opts.graceSeconds * 1000;
  const res: GcResult = { roots, reachable: live.size, removed: [], removedBytes: 0, actions: kept.length, removedActions, dryRun: opts.dryRun };
  for (const hash of store.listHashes()) {
    if (live.has(hash)) continue;
    // lstat: a symlink planted at a blob's name is judged (and removed) itself, never its target.
    const st = fs.lstatSync(store.blobPath(hash), { throwIfNoEntry: false });
    // A blob younger than the grace period may belong to a snapshot still being written.
    if (!st || st.mtimeMs > cutoff) continue;
    res.removed.push(hash);
    res.removedBytes += st.size;
    if (!opts.dryRun) store.removeBlobSync(hash);
  }
  // Tree packs of trees no longer reachable go too (they are only a cache of reachable trees).
  const packs = join(store.root, 'trees');
  // Never through a symlink planted as trees/ (it would remove every file where it points).
  // Only names a pack takes (a root's hash): a folder the user chose as the store may have held a trees/ of theirs.
  if (!opts.dryRun && isRealFolder(packs)) for (const name of fs.readdirSync(packs)) if (PACK_NAME.test(name) && !live.has(name)) fs.rmSync(join(packs, name), { force: true });
  if (!opts.dryRun) for (const p of store.listTmpFiles()) {
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    // Temp files older than the grace period were left by a process that died mid-write.
    if (st && st.mtimeMs <= cutoff) fs.rmSync(p, { force: true, recursive: true });
  }
  return res;
}
