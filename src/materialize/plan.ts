/**
 * Checkout planning: (target tree, the tree last checked out, what is on disk) -> a plain list of
 * operations. The planner touches the disk only through a DiskView, so it is unit-tested with an
 * in-memory one; execute.ts runs the plan.
 *
 * Rules:
 * - A subtree whose digest equals the last checkout's is skipped without being read or walked.
 * - An entry the target changes is replaced only when the disk is proven to hold what the last
 *   checkout wrote (or already holds the target); anything else is a conflict, listed, unless force.
 * - With no record of a last checkout, every existing entry is compared with the target by content.
 * - As in git, entries that neither tree has (untracked) are kept, also with force; only `clean`
 *   removes them. A directory the target drops loses its tracked entries and is removed only if
 *   nothing untracked is left in it.
 * - With force, every entry of the target is checked on disk (one lstat, and a read only when the
 *   stat cannot prove it), so the directory ends up holding exactly the tree's entries even where
 *   the two trees do not differ.
 * - Resuming the same checkout after it stopped (`resume`: a started record, or an update's
 *   `pending`, of this very tree), a file the target writes that is on disk but differs is the
 *   stopped run's own unfinished write when its bytes are a prefix of the target's blob (possibly
 *   empty): it is replaced, and loses nothing, since every byte of it is in that blob. Anything else
 *   (longer, other bytes, another kind) is still a local change.
 */
import { type Digest, formatDigest, sameDigest } from '../core/digest.js';
import { type Directory, type EntryHead, type RawDirectory, RAW_DIR, RAW_FILE, commonPrefix, compareBytes, entryAt, entryNodeAt, type rawEntry } from '../core/reapi.js';
import { MAX_DEPTH, compareNames } from '../core/names.js';
import { InvalidTreeError } from '../errors.js';
import type { TreeLookup } from '../core/tree-diff.js';
import { P_EXEC, type PackedTree } from '../core/packed-tree.js';

export type { TreeLookup };

export type DiskType = 'file' | 'dir' | 'symlink' | 'other';

/** What the planner may ask of the disk. Paths are relative to the checkout root ('' is the root). */
export interface DiskView {
  /** Entries of a directory with their types (no stat), or undefined when it is absent. */
  list(rel: string): Map<string, DiskType> | undefined;
  /** The type of the entry at `rel` (lstat: a symlink is a symlink), or undefined when absent. */
  kind(rel: string): DiskType | undefined;
  /** True when the file at `rel` provably still holds what the last checkout wrote (stat only). */
  unchangedSinceCheckout(rel: string, expected: { digest: Digest; executable: boolean }): boolean;
  /** True when the file at `rel` holds exactly these bytes and execute bit (reads the file). */
  fileEquals(rel: string, expected: { digest: Digest; executable: boolean }): boolean;
  readlink(rel: string): string | undefined;
  /**
   * True when the entry at `rel` is a regular file whose bytes are a prefix (possibly empty, or all)
   * of the blob `expected` (its mode is not looked at: a write that was stopped may not have set it
   * yet). Reads only as far as the file's size and stops at the first differing byte. Asked only
   * when resuming (ReconcileInput.resume), for a file that is neither the target nor provably old.
   */
  partialOf(rel: string, expected: { digest: Digest }): boolean;
  /**
   * Resuming: true when the file at `rel`, already holding the target's bytes, still has the
   * read-only mode a stopped write gives a file before its own (a clone or large copy starts with
   * the blob's 0444; a fetched file for a hardlink checkout is written 0444 or 0555) and is not the
   * store's inode, and was changed after the stopped checkout started: that checkout wrote it, so
   * its mode is set (Plan.modes). A file older than that start is not the checkout's to chmod.
   */
  modeUnset?(rel: string, expected: { digest: Digest; executable: boolean }): boolean;
}


export interface WriteFile {
  rel: string;
  hash: string;
  size: number;
  executable: boolean;
}
export interface WriteSymlink {
  rel: string;
  target: string;
}
export type WriteOp = WriteFile | WriteSymlink;
export interface MakeDir {
  mkdir: string;
}
export type Step = MakeDir | WriteOp;

export interface Removal {
  rel: string;
  type: DiskType;
  /** A directory the target drops: removed only when empty (it may still hold untracked entries). */
  ifEmpty?: boolean;
  /** An entry neither tree has, removed because `clean` asked for it. */
  untracked?: boolean;
}

export interface Plan {
  /** Entries to delete first, in order (a directory is removed with everything under it unless ifEmpty). */
  removes: Removal[];
  /**
   * Directories, files and symlinks to create, in tree order: a directory comes before everything
   * in it, so the executor can create directories as it hands out batches of writes.
   */
  steps: Iterable<Step>;
  /** How many of the steps are directories and how many are writes. */
  mkdirs: number;
  writes: number;
  /** A non-empty file the plan writes, for probing the import method. */
  sample?: { hash: string; size: number };
  conflicts: string[];
  /**
   * With force and without clean: entries the tree does not have inside a directory where the tree
   * has a file or symlink. Force replaces what differs from the tree, never what it does not have,
   * so these stop the checkout as conflicts do (clean removes them).
   */
  untrackedInWay?: string[];
  /**
   * Resuming: files already whole that the stopped run wrote but had not yet given their mode
   * (DiskView.modeUnset); the executor sets the mode the method gives a new file, and for a
   * hardlink checkout makes each the link to the stored blob a new file is.
   */
  modes?: { rel: string; executable: boolean; digest: Digest }[];
  unchanged: number;
}

export function emptyPlan(): Plan {
  return { removes: [], steps: [], mkdirs: 0, writes: 0, conflicts: [], unchanged: 0 };
}

function addWrite(plan: Plan, w: WriteOp): void {
  (plan.steps as Step[]).push(w);
  plan.writes++;
  if (!plan.sample && 'size' in w && w.size > 0) plan.sample = { hash: w.hash, size: w.size };
}

function addMkdir(plan: Plan, rel: string): void {
  (plan.steps as Step[]).push({ mkdir: rel });
  plan.mkdirs++;
}

const join = (prefix: string, name: string) => (prefix === '' ? name : `${prefix}/${name}`);

/** Everything under `dir` as new steps, appended to `plan` (a subtree an update creates). */
export function planCreate(dir: Directory, rel: string, tree: TreeLookup, plan: Plan, depth = 0): void {
  for (const step of createSteps(dir, rel, tree, depth)) {
    if ('mkdir' in step) addMkdir(plan, step.mkdir);
    else addWrite(plan, step);
  }
}

/**
 * The plan for an empty target. Its steps are produced lazily, in tree order, as the executor
 * asks for batches. Perf: the workers start linking while the rest of the plan is being made,
 * instead of after a 78,000-entry list is built (~0.1 s of a 1 s hardlink checkout of the Linux
 * tree). The tree must be loaded and validated first; this only walks it.
 */
export function planFresh(root: Digest, tree: TreeLookup): Plan {
  const plan = emptyPlan();
  const counts = countSteps(root, tree, new Map());
  plan.mkdirs = counts.mkdirs;
  plan.writes = counts.writes;
  plan.sample = firstBlob(root, tree, new Set());
  plan.steps = { [Symbol.iterator]: () => createSteps(tree(root), '', tree, 0) };
  return plan;
}

/**
 * The steps below `dir`, depth first: its files and symlinks, then each subdirectory's mkdir and
 * everything in it. Perf: one generator over an explicit stack. Nested `yield*` passes every step
 * through each level above it: 138 ms of the main thread's self time in a hardlink checkout of the
 * node_modules corpus (26,242 files, up to ~20 levels deep), on the critical path at the start.
 */
function* createSteps(dir: Directory, rel: string, tree: TreeLookup, depth: number): Generator<Step> {
  const stack: { dir: Directory; rel: string; depth: number; next: number }[] = [];
  let top: (typeof stack)[number] | undefined = { dir, rel, depth, next: -1 };
  while (top) {
    if (top.next < 0) {
      if (top.depth > MAX_DEPTH) throw new InvalidTreeError(`tree nests deeper than ${MAX_DEPTH} levels at '${top.rel}'`);
      for (const f of top.dir.files) yield { rel: join(top.rel, f.name), hash: f.digest.hash, size: f.digest.size, executable: f.executable };
      for (const s of top.dir.symlinks) yield { rel: join(top.rel, s.name), target: s.target };
      top.next = 0;
    }
    const d = top.dir.directories[top.next++];
    if (d === undefined) {
      top = stack.pop();
      continue;
    }
    const sub = join(top.rel, d.name);
    yield { mkdir: sub };
    stack.push(top);
    top = { dir: tree(d.digest), rel: sub, depth: top.depth + 1, next: -1 };
  }
}

/**
 * planFresh over a PackedTree (TreeReader.loadPackedSync; directory 0 is the root, every message
 * already validated): the same steps in the same order, each name, hash and target made a string
 * only when its step is handed out.
 * Perf: walking every step of the node_modules corpus's fresh plan took 31-60 ms of CPU (median
 * 41) in a fresh process against 42-75 ms (median 47) from decoded Directories (6 runs each, load
 * ~5). The whole copy
 * checkout of that corpus, tmpfs to tmpfs, 18 interleaved pairs at load 5-8: user CPU 0.435 s
 * (0.40-0.55) against 0.475 s (0.40-0.61), lower in 11 pairs (median pair difference -15 ms),
 * user+sys 1.030 s against 1.085 s, peak RSS 85 MB against 103 MB; the Linux tree's hardlink
 * checkout, 12 pairs at load 6-9: user 0.695 s (0.52-0.81) against 0.685 s (0.56-0.85), lower in
 * 7 (median pair difference -45 ms), no difference within that noise; peak RSS 102 MB against 131 MB.
 */
export function planFreshPacked(tree: PackedTree): Plan {
  const plan = emptyPlan();
  const n = tree.directories;
  const mkdirs = new Float64Array(n).fill(-1);
  const writes = new Float64Array(n);
  const count = (d: number): void => {
    let m = tree.dirEnd[d]! - tree.fileEnd[d]!;
    let w = tree.fileEnd[d]! - tree.first[d]! + (tree.first[d + 1]! - tree.dirEnd[d]!);
    for (let e = tree.fileEnd[d]!; e < tree.dirEnd[d]!; e++) {
      const sub = tree.children[e]!;
      if (mkdirs[sub]! < 0) count(sub);
      m += mkdirs[sub]!;
      w += writes[sub]!;
    }
    mkdirs[d] = m;
    writes[d] = w;
  };
  count(0);
  plan.mkdirs = mkdirs[0]!;
  plan.writes = writes[0]!;
  plan.sample = firstPackedBlob(tree, 0, new Uint8Array(n));
  plan.steps = { [Symbol.iterator]: () => createPackedSteps(tree) };
  return plan;
}

function firstPackedBlob(tree: PackedTree, d: number, seen: Uint8Array): { hash: string; size: number } | undefined {
  if (seen[d]) return undefined;
  seen[d] = 1;
  for (let e = tree.first[d]!; e < tree.fileEnd[d]!; e++) if (tree.values[e]! > 0) return { hash: tree.hash(d, e), size: tree.values[e]! };
  for (let e = tree.fileEnd[d]!; e < tree.dirEnd[d]!; e++) {
    const found = firstPackedBlob(tree, tree.children[e]!, seen);
    if (found) return found;
  }
  return undefined;
}

/** createSteps over a PackedTree. */
function* createPackedSteps(tree: PackedTree): Generator<Step> {
  const stack: { dir: number; rel: string; depth: number; next: number }[] = [];
  let top: (typeof stack)[number] | undefined = { dir: 0, rel: '', depth: 0, next: -1 };
  const kinds = tree.kinds;
  while (top) {
    const d = top.dir;
    if (top.next < 0) {
      if (top.depth > MAX_DEPTH) throw new InvalidTreeError(`tree nests deeper than ${MAX_DEPTH} levels at '${top.rel}'`);
      for (let e = tree.first[d]!, end = tree.fileEnd[d]!; e < end; e++) {
        const k = kinds[e]!;
        yield { rel: join(top.rel, tree.name(d, e)), hash: tree.hash(d, e), size: tree.values[e]!, executable: k === P_EXEC };
      }
      for (let e = tree.dirEnd[d]!, end = tree.first[d + 1]!; e < end; e++) yield { rel: join(top.rel, tree.name(d, e)), target: tree.target(d, e) };
      top.next = tree.fileEnd[d]!;
    }
    const e = top.next++;
    if (e >= tree.dirEnd[d]!) {
      top = stack.pop();
      continue;
    }
    const sub = join(top.rel, tree.name(d, e));
    yield { mkdir: sub };
    stack.push(top);
    top = { dir: tree.children[e]!, rel: sub, depth: top.depth + 1, next: -1 };
  }
}

/** Directories and writes below a tree, each distinct subtree counted once (memo by digest). */
function countSteps(d: Digest, tree: TreeLookup, memo: Map<string, { mkdirs: number; writes: number }>): { mkdirs: number; writes: number } {
  const hit = memo.get(d.hash);
  if (hit) return hit;
  const dir = tree(d);
  const out = { mkdirs: dir.directories.length, writes: dir.files.length + dir.symlinks.length };
  for (const sub of dir.directories) {
    const c = countSteps(sub.digest, tree, memo);
    out.mkdirs += c.mkdirs;
    out.writes += c.writes;
  }
  memo.set(d.hash, out);
  return out;
}

function firstBlob(d: Digest, tree: TreeLookup, seen: Set<string>): { hash: string; size: number } | undefined {
  if (seen.has(d.hash)) return undefined;
  seen.add(d.hash);
  const dir = tree(d);
  const f = dir.files.find((x) => x.digest.size > 0);
  if (f) return { hash: f.digest.hash, size: f.digest.size };
  for (const sub of dir.directories) {
    const found = firstBlob(sub.digest, tree, seen);
    if (found) return found;
  }
  return undefined;
}

type Entry =
  | { type: 'file'; digest: Digest; executable: boolean }
  | { type: 'symlink'; target: string }
  | { type: 'dir'; digest: Digest };

/** The entries of a Directory in name order (its three lists merged), each with its type. */
function sortedEntries(dir: Directory): { name: string; entry: Entry }[] {
  const out: { name: string; entry: Entry }[] = [];
  for (const f of dir.files) out.push({ name: f.name, entry: { type: 'file', digest: f.digest, executable: f.executable } });
  for (const d of dir.directories) out.push({ name: d.name, entry: { type: 'dir', digest: d.digest } });
  for (const s of dir.symlinks) out.push({ name: s.name, entry: { type: 'symlink', target: s.target } });
  if (dir.directories.length > 0 || dir.symlinks.length > 0) out.sort((x, y) => compareNames(x.name, y.name));
  return out;
}

function entries(dir: Directory): Map<string, Entry> {
  return new Map(sortedEntries(dir).map((e) => [e.name, e.entry]));
}

function sameEntry(a: Entry, b: Entry): boolean {
  if (a.type !== b.type) return false;
  if (a.type === 'file') return b.type === 'file' && sameDigest(a.digest, b.digest) && a.executable === b.executable;
  if (a.type === 'symlink') return b.type === 'symlink' && a.target === b.target;
  return b.type === 'dir' && sameDigest(a.digest, b.digest);
}

export interface ReconcileInput {
  target: Digest;
  /** The tree the last checkout left, when its record is trusted. */
  previous?: Digest;
  tree: TreeLookup;
  /** The same messages, split but not decoded (see splitDirectory). */
  raw: (d: Digest) => RawDirectory;
  /**
   * The bytes of a message of `previous`, neither split nor checked again: every message of the
   * last checkout's tree was validated when that checkout planned it (a fresh checkout all of them,
   * an update those it changed; the rest are the tree before it's). Default: `raw(d).bytes`.
   */
  message?: (d: Digest) => Buffer;
  disk: DiskView;
  /** Replace entries that differ from the target (local changes included) instead of listing conflicts. */
  force: boolean;
  /** Remove entries neither tree has. */
  clean?: boolean;
  /**
   * This is the same checkout again after it stopped (its started record, or an update's pending
   * tree, names `target`): a file that is a prefix of the blob the target puts there is the stopped
   * run's unfinished write, and is replaced (DiskView.partialOf).
   */
  resume?: boolean;
}

/** Plans a checkout into a directory that already has content. */
export function planUpdate(input: ReconcileInput): Plan {
  const plan = emptyPlan();
  if (input.previous && sameDigest(input.previous, input.target)) {
    if (input.force || input.clean) verifyDir(input, plan, '', input.target, 0);
    return plan;
  }
  if (input.previous) reconcileKnown(input, plan, '', input.previous, input.target, 0);
  else reconcileUnknown(input, plan, '', input.tree(input.target), 0);
  return plan;
}

/**
 * An update below a directory whose last checkout is known (`old`): only the entries that differ
 * between the two versions are decoded and looked at on disk (one lstat each). Entries are matched
 * in the messages' own order (kind, then name); a run of entries with identical bytes (the same
 * kind, name and content in both) is passed over by one comparison of bytes (commonPrefix) and a
 * walk over their lengths. As with git, files that neither tree has are left alone.
 *
 * What is checked of the new version: every entry that is not byte for byte one of the old
 * version's is decoded and validated (name, digest, fields). The old version is valid, as every
 * message of the last checkout's tree was validated when a checkout planned it
 * (ReconcileInput.message). So when each entry of the new version is either the same as an old
 * one or has an old one's kind and name, its entries are in canonical order, grouped, and no name
 * is in two groups: its kinds and names are the old version's, met in the old version's order.
 * Only a new version that adds a kind and name is split and checked whole (splitDirectory).
 *
 * Perf: the Linux tree's 1% update (786 files changed) compares 970 directories holding ~47,800
 * entries in each version. Splitting both versions and comparing entry by entry took 41.5-55.0 ms
 * (median 49.7) in a fresh process; this takes 22.4-24.7 ms (median 23.9): the plan alone, against
 * a DiskView that answers without the disk, 7 interleaved runs each as SCHED_FIFO (chrt -f 10).
 */
function reconcileKnown(input: ReconcileInput, plan: Plan, rel: string, old: Digest, next: Digest, depth: number): void {
  if (depth > MAX_DEPTH) throw new InvalidTreeError(`tree nests deeper than ${MAX_DEPTH} levels at '${rel}'`, { digest: formatDigest(input.target) });
  const message = input.message ?? ((d: Digest) => input.raw(d).bytes);
  const a = message(old);
  const b = message(next);
  const whereA = formatDigest(old);
  const whereB = formatDigest(next);
  const removed = new Map<string, Entry>();
  const changed: { name: string; o?: Entry; n: Entry }[] = [];
  const na = a.length;
  const nb = b.length;
  const ha: EntryHead = { kind: 0, start: 0, end: 0, nameStart: 0, nameEnd: 0 };
  const hb: EntryHead = { kind: 0, start: 0, end: 0, nameStart: 0, nameEnd: 0 };
  let checked = false;
  let pa = 0;
  let pb = 0;
  while (pa < na || pb < nb) {
    if (pa < na && pb < nb) {
      const limit = pb + commonPrefix(a, pa, b, pb, Math.min(na - pa, nb - pb));
      // Whole entries inside the shared bytes are the same in both versions. Their bytes are the
      // old version's, so their tags and lengths are well formed: read here without the checks of
      // entryAt (an entry that ends past `limit` is not shared, and is read by entryAt below).
      const e = sharedEnd(b, pb, limit);
      if (e > pb) {
        if (input.force || input.clean) {
          // The trees agree here; force and clean still look at the disk (verifyEntry).
          for (let p = pb; p < e; p = hb.end) {
            const n = entryNodeAt(b, whereB, entryAt(b, whereB, p, hb));
            const path = join(rel, n.node.name);
            verifyEntry(input, plan, path, toEntry(n), input.disk.kind(path), depth);
          }
        } else plan.unchanged += sharedCount;
        pa += e - pb;
        pb = e;
        continue;
      }
    }
    if (pa < na) entryAt(a, whereA, pa, ha);
    if (pb < nb) entryAt(b, whereB, pb, hb);
    const order = pa >= na ? 1 : pb >= nb ? -1 : ha.kind - hb.kind || compareBytes(a, ha.nameStart, ha.nameEnd, b, hb.nameStart, hb.nameEnd);
    if (order === 0) {
      const n = entryNodeAt(b, whereB, hb);
      changed.push({ name: n.node.name, o: toEntry(entryNodeAt(a, whereA, ha)), n: toEntry(n) });
      pa = ha.end;
      pb = hb.end;
    } else if (order < 0) {
      const o = entryNodeAt(a, whereA, ha);
      removed.set(o.node.name, toEntry(o));
      pa = ha.end;
    } else {
      // A kind and name the old version lacks: the new version's order and groups are checked whole.
      if (!checked) input.raw(next);
      checked = true;
      const n = entryNodeAt(b, whereB, hb);
      changed.push({ name: n.node.name, n: toEntry(n) });
      pb = hb.end;
    }
  }
  for (const c of changed) {
    // A name that moved between kinds (file -> dir, ...) is a change of that path, not two.
    const o = c.o ?? removed.get(c.name);
    if (!c.o && o) removed.delete(c.name);
    const path = join(rel, c.name);
    changeEntry(input, plan, path, o, c.n, input.disk.kind(path), true, depth);
  }
  for (const [name, o] of removed) {
    const path = join(rel, name);
    removeOld(input, plan, path, o, input.disk.kind(path), depth);
  }
  if (input.clean) {
    const known = new Set<string>();
    for (let p = 0; p < na; p = ha.end) known.add(entryNodeAt(a, whereA, entryAt(a, whereA, p, ha)).node.name);
    for (let p = 0; p < nb; p = hb.end) known.add(entryNodeAt(b, whereB, entryAt(b, whereB, p, hb)).node.name);
    for (const [name, d] of input.disk.list(rel) ?? []) if (!known.has(name)) untracked(input, plan, join(rel, name), d);
  }
}

/** How many entries the last sharedEnd passed over. */
let sharedCount = 0;

/**
 * The end of the last whole entry of message `b` that starts at `from` or after and ends by
 * `limit`, for bytes [from, limit) that are shared with the old version (reconcileKnown): they
 * are the old version's bytes, so their tags and lengths are well formed and are read here without
 * entryAt's checks; an entry that ends past `limit` is not shared (entryAt reads it). Sets
 * sharedCount. Perf: a function of its own, so the loop is optimized after a few of the thousand
 * calls of an update instead of waiting for on-stack replacement inside reconcileKnown: the plan
 * above took 18.8-28.4 ms (median 21.4) against 31.1-35.2 ms (median 32.1) with the loop inline
 * (5 runs each, chrt -f 10).
 */
function sharedEnd(b: Buffer, from: number, limit: number): number {
  let e = from;
  let count = 0;
  while (e < limit) {
    let q = e + 1;
    let len = 0;
    let mul = 1;
    let byte: number;
    do {
      byte = b[q++]!;
      len += (byte & 0x7f) * mul;
      mul *= 0x80;
    } while (byte >= 0x80 && q < limit);
    if (byte >= 0x80 || q + len > limit) break;
    e = q + len;
    count++;
  }
  sharedCount = count;
  return e;
}

/** An entry neither tree has: kept, or removed when `clean` asks for it. */
function untracked(input: ReconcileInput, plan: Plan, path: string, d: DiskType): void {
  if (input.clean) plan.removes.push({ rel: path, type: d, untracked: true });
}

/**
 * Removes what the last checkout put at `path` (entry `o`) and the target no longer has. Inside a
 * dropped directory, tracked entries go and untracked ones stay (and with them the directory).
 * Something of another kind than `o` at the path is the user's own: untracked.
 */
function removeOld(input: ReconcileInput, plan: Plan, path: string, o: Entry, d: DiskType | undefined, depth: number): void {
  if (d === undefined) return;
  if (d !== o.type) {
    untracked(input, plan, path, d);
    return;
  }
  if (o.type === 'dir') {
    if (depth > MAX_DEPTH) throw new InvalidTreeError(`tree nests deeper than ${MAX_DEPTH} levels at '${path}'`, { digest: formatDigest(input.target) });
    const want = entries(input.tree(o.digest));
    for (const [name, dt] of input.disk.list(path) ?? []) {
      const e = want.get(name);
      if (e) removeOld(input, plan, join(path, name), e, dt, depth + 1);
      else untracked(input, plan, join(path, name), dt);
    }
    plan.removes.push({ rel: path, type: 'dir', ifEmpty: true });
    return;
  }
  if (input.force || provenOld(input, path, o, d, depth)) plan.removes.push({ rel: path, type: d });
  else plan.conflicts.push(path);
}

/**
 * Checks a subtree the two trees agree on against the disk. With force, an entry that is missing,
 * of another kind or with other contents is put back (a stat proves most files unchanged; only
 * files changed since the checkout are read). With clean, entries the tree lacks are removed.
 */
function verifyDir(input: ReconcileInput, plan: Plan, rel: string, digest: Digest, depth: number): void {
  if (depth > MAX_DEPTH) throw new InvalidTreeError(`tree nests deeper than ${MAX_DEPTH} levels at '${rel}'`, { digest: formatDigest(input.target) });
  // One readdir gives every entry's kind: cheaper than an lstat per entry.
  const disk = input.disk.list(rel) ?? new Map<string, DiskType>();
  const want = sortedEntries(input.tree(digest));
  for (const { name, entry } of want) verifyEntry(input, plan, join(rel, name), entry, disk.get(name), depth);
  if (input.clean) {
    const names = new Set(want.map((e) => e.name));
    for (const [name, d] of disk) if (!names.has(name)) untracked(input, plan, join(rel, name), d);
  }
}

function verifyEntry(input: ReconcileInput, plan: Plan, path: string, n: Entry, d: DiskType | undefined, depth: number): void {
  if (n.type === 'dir' && d === 'dir') {
    verifyDir(input, plan, path, n.digest, depth + 1);
    return;
  }
  if (!input.force) {
    // clean alone keeps local changes to tracked entries, as a checkout without force does.
    plan.unchanged++;
    return;
  }
  if (d === undefined) {
    createEntry(input, plan, path, n, depth);
    return;
  }
  const same =
    n.type === 'file'
      ? d === 'file' && (input.disk.unchangedSinceCheckout(path, n) || input.disk.fileEquals(path, n))
      : n.type === 'symlink' && d === 'symlink' && input.disk.readlink(path) === n.target;
  if (same) {
    plan.unchanged++;
    return;
  }
  if (d === 'dir' && untrackedInWay(input, plan, path, undefined, depth)) return;
  plan.removes.push({ rel: path, type: d });
  createEntry(input, plan, path, n, depth);
}

function toEntry(e: ReturnType<typeof rawEntry>): Entry {
  if (e.kind === RAW_FILE) return { type: 'file', digest: e.node.digest, executable: e.node.executable };
  if (e.kind === RAW_DIR) return { type: 'dir', digest: e.node.digest };
  return { type: 'symlink', target: e.node.target };
}

/** An update below a directory with no trusted record: everything on disk is compared by content. */
function reconcileUnknown(input: ReconcileInput, plan: Plan, rel: string, next: Directory, depth: number): void {
  if (depth > MAX_DEPTH) throw new InvalidTreeError(`tree nests deeper than ${MAX_DEPTH} levels at '${rel}'`, { digest: formatDigest(input.target) });
  const disk = input.disk.list(rel) ?? new Map<string, DiskType>();
  const wanted = new Set<string>();
  for (const { name, entry } of sortedEntries(next)) {
    wanted.add(name);
    changeEntry(input, plan, join(rel, name), undefined, entry, disk.get(name), false, depth);
  }
  for (const [name, d] of disk) if (!wanted.has(name)) untracked(input, plan, join(rel, name), d);
}

/** Brings one path from what is on disk (`d`) to the target entry `n`; `o` is the old entry when known. */
function changeEntry(input: ReconcileInput, plan: Plan, path: string, o: Entry | undefined, n: Entry, d: DiskType | undefined, known: boolean, depth: number): void {
  if (d === undefined) {
    createEntry(input, plan, path, n, depth);
    return;
  }
  if (n.type === 'dir' && d === 'dir') {
    if (known && o?.type === 'dir') reconcileKnown(input, plan, path, o.digest, n.digest, depth + 1);
    else reconcileUnknown(input, plan, path, input.tree(n.digest), depth + 1);
    return;
  }
  // Cheapest proof first: a stat that shows the file is as the last checkout left it. Only then
  // read contents: the entry may already be the target (an interrupted run) or the old content.
  const replaceable = known && o !== undefined && provenOld(input, path, o, d, depth, true);
  if (!replaceable && alreadyTarget(input, path, n, d)) {
    if (input.resume === true && n.type === 'file' && input.disk.modeUnset?.(path, n)) (plan.modes ??= []).push({ rel: path, executable: n.executable, digest: n.digest });
    plan.unchanged++;
    return;
  }
  if (!replaceable && !(known && o && provenOld(input, path, o, d, depth, false)) && !input.force && !unfinishedWrite(input, path, n, d)) {
    plan.conflicts.push(path);
    return;
  }
  if (!replaceable && d === 'dir' && untrackedInWay(input, plan, path, known ? o : undefined, depth)) return;
  plan.removes.push({ rel: path, type: d });
  createEntry(input, plan, path, n, depth);
}

/**
 * Force is about to remove the directory at `path` (the tree has a file or symlink there): lists
 * in `plan.untrackedInWay` what under it the old entry `o` (when known) does not have, and says
 * whether there was any. With clean, those go too, so nothing is listed.
 */
function untrackedInWay(input: ReconcileInput, plan: Plan, path: string, o: Entry | undefined, depth: number): boolean {
  if (input.clean) return false;
  const found: string[] = [];
  const walk = (rel: string, dir: Entry | undefined, level: number): void => {
    const want = dir?.type === 'dir' && level <= MAX_DEPTH ? entries(input.tree(dir.digest)) : undefined;
    for (const [name, dt] of input.disk.list(rel) ?? []) {
      const e = want?.get(name);
      if (!e || (dt === 'dir' && e.type !== 'dir')) found.push(join(rel, name));
      else if (dt === 'dir') walk(join(rel, name), e, level + 1);
    }
  };
  walk(path, o, depth + 1);
  if (found.length === 0) return false;
  (plan.untrackedInWay ??= []).push(...found);
  return true;
}

function createEntry(input: ReconcileInput, plan: Plan, path: string, n: Entry, depth: number): void {
  if (n.type === 'file') addWrite(plan, { rel: path, hash: n.digest.hash, size: n.digest.size, executable: n.executable });
  else if (n.type === 'symlink') addWrite(plan, { rel: path, target: n.target });
  else {
    addMkdir(plan, path);
    planCreate(input.tree(n.digest), path, input.tree, plan, depth + 1);
  }
}

/**
 * Resuming a stopped checkout of this target (`resume`): the disk file is a prefix of the blob the
 * target puts at `path`, as a write the stopped run did not finish leaves it (every write path
 * creates the file exclusively and writes from offset 0 up, or links or renames a whole file into
 * place: import-file.ts, write-linked.ts, fetch-file.ts). Replacing it loses no byte: all of them
 * are in that blob. Only a file for a file; the file's mode is not looked at (a clone or large copy
 * sets it after its bytes).
 */
function unfinishedWrite(input: ReconcileInput, path: string, n: Entry, d: DiskType): boolean {
  return input.resume === true && n.type === 'file' && d === 'file' && input.disk.partialOf(path, n);
}

/** The disk entry already is the target entry (e.g. written by an interrupted run). */
function alreadyTarget(input: ReconcileInput, path: string, n: Entry, d: DiskType): boolean {
  if (n.type === 'file') return d === 'file' && input.disk.fileEquals(path, n);
  if (n.type === 'symlink') return d === 'symlink' && input.disk.readlink(path) === n.target;
  return false;
}

/**
 * The disk entry is provably what the last checkout wrote there, so replacing it loses nothing.
 * With `statOnly`, file contents are not read (a file that fails the stat test is not proven).
 */
function provenOld(input: ReconcileInput, path: string, o: Entry, d: DiskType, depth: number, statOnly = false): boolean {
  if (o.type === 'file') return d === 'file' && (input.disk.unchangedSinceCheckout(path, o) || (!statOnly && input.disk.fileEquals(path, o)));
  if (o.type === 'symlink') return d === 'symlink' && input.disk.readlink(path) === o.target;
  if (d !== 'dir') return false;
  if (depth > MAX_DEPTH) return false;
  const disk = input.disk.list(path) ?? new Map<string, DiskType>();
  const want = entries(input.tree(o.digest));
  for (const [name, dt] of disk) {
    const e = want.get(name);
    if (!e || !provenOld(input, join(path, name), e, dt, depth + 1, statOnly)) return false;
  }
  return true;
}
