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
 */
import { type Digest, formatDigest, sameDigest } from '../core/digest.js';
import type { Directory } from '../core/reapi.js';
import { MAX_DEPTH } from '../core/names.js';
import { InvalidTreeError } from '../errors.js';

export type DiskType = 'file' | 'dir' | 'symlink' | 'other';

/** What the planner may ask of the disk. Paths are relative to the checkout root ('' is the root). */
export interface DiskView {
  /** Entries of a directory with their types (no stat), or undefined when it is absent. */
  list(rel: string): Map<string, DiskType> | undefined;
  /** True when the file at `rel` provably still holds what the last checkout wrote (stat only). */
  unchangedSinceCheckout(rel: string, expected: { digest: Digest; executable: boolean }): boolean;
  /** True when the file at `rel` holds exactly these bytes and execute bit (reads the file). */
  fileEquals(rel: string, expected: { digest: Digest; executable: boolean }): boolean;
  readlink(rel: string): string | undefined;
}

export type TreeLookup = (d: Digest) => Directory;

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

export interface Plan {
  /** Entries to delete first, in order (a directory is removed with everything under it). */
  removes: { rel: string; type: DiskType }[];
  /**
   * Directories, files and symlinks to create, in tree order: a directory comes before everything
   * in it, so the executor can create directories as it hands out batches of writes.
   */
  steps: Step[];
  /** How many of the steps are directories and how many are writes. */
  mkdirs: number;
  writes: number;
  conflicts: string[];
  unchanged: number;
}

export function emptyPlan(): Plan {
  return { removes: [], steps: [], mkdirs: 0, writes: 0, conflicts: [], unchanged: 0 };
}

function addWrite(plan: Plan, w: WriteOp): void {
  plan.steps.push(w);
  plan.writes++;
}

function addMkdir(plan: Plan, rel: string): void {
  plan.steps.push({ mkdir: rel });
  plan.mkdirs++;
}

const join = (prefix: string, name: string) => (prefix === '' ? name : `${prefix}/${name}`);

/** Everything under `dir` as new entries: the plan for an empty target. */
export function planCreate(dir: Directory, rel: string, tree: TreeLookup, plan: Plan, depth = 0): void {
  if (depth > MAX_DEPTH) throw new InvalidTreeError(`tree nests deeper than ${MAX_DEPTH} levels at '${rel}'`);
  for (const f of dir.files) addWrite(plan, { rel: join(rel, f.name), hash: f.digest.hash, size: f.digest.size, executable: f.executable });
  for (const s of dir.symlinks) addWrite(plan, { rel: join(rel, s.name), target: s.target });
  for (const d of dir.directories) {
    const sub = join(rel, d.name);
    addMkdir(plan, sub);
    planCreate(tree(d.digest), sub, tree, plan, depth + 1);
  }
}

type Entry =
  | { type: 'file'; digest: Digest; executable: boolean }
  | { type: 'symlink'; target: string }
  | { type: 'dir'; digest: Digest };

function entries(dir: Directory | undefined): Map<string, Entry> {
  const m = new Map<string, Entry>();
  if (!dir) return m;
  for (const f of dir.files) m.set(f.name, { type: 'file', digest: f.digest, executable: f.executable });
  for (const s of dir.symlinks) m.set(s.name, { type: 'symlink', target: s.target });
  for (const d of dir.directories) m.set(d.name, { type: 'dir', digest: d.digest });
  return m;
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
  disk: DiskView;
  force: boolean;
}

/** Plans a checkout into a directory that already has content. */
export function planUpdate(input: ReconcileInput): Plan {
  const plan = emptyPlan();
  if (input.previous && sameDigest(input.previous, input.target)) return plan;
  const oldRoot = input.previous ? input.tree(input.previous) : undefined;
  reconcileDir(input, plan, '', oldRoot, input.tree(input.target), input.previous !== undefined, 0);
  return plan;
}

/**
 * `old` is the Directory the last checkout wrote at `rel`, when known (`known` false means there is
 * no trusted record here, so disk entries must be proven by content).
 */
function reconcileDir(input: ReconcileInput, plan: Plan, rel: string, old: Directory | undefined, next: Directory, known: boolean, depth: number): void {
  if (depth > MAX_DEPTH) throw new InvalidTreeError(`tree nests deeper than ${MAX_DEPTH} levels at '${rel}'`, { digest: formatDigest(input.target) });
  const disk = input.disk.list(rel) ?? new Map<string, DiskType>();
  const oldEntries = entries(old);
  const newEntries = entries(next);

  for (const [name, n] of newEntries) {
    const path = join(rel, name);
    const o = oldEntries.get(name);
    const d = disk.get(name);
    if (o && known && sameEntry(o, n)) {
      // Unchanged since the last checkout: trusted as it is, not stat-ed or walked; restored if gone.
      if (d === undefined) createEntry(input, plan, path, n, depth);
      else plan.unchanged++;
      continue;
    }
    if (d === undefined) {
      createEntry(input, plan, path, n, depth);
      continue;
    }
    if (n.type === 'dir' && d === 'dir') {
      const oldSub = known && o?.type === 'dir' ? input.tree(o.digest) : undefined;
      reconcileDir(input, plan, path, oldSub, input.tree(n.digest), known && o?.type === 'dir', depth + 1);
      continue;
    }
    // Cheapest proof first: a stat that shows the file is as the last checkout left it. Only then
    // read contents: the entry may already be the target (an interrupted run) or the old content.
    const replaceable = known && o !== undefined && provenOld(input, path, o, d, depth, true);
    if (!replaceable && alreadyTarget(input, path, n, d)) {
      plan.unchanged++;
      continue;
    }
    if (!replaceable && !(known && o && provenOld(input, path, o, d, depth, false)) && !input.force) {
      plan.conflicts.push(path);
      continue;
    }
    plan.removes.push({ rel: path, type: d });
    createEntry(input, plan, path, n, depth);
  }

  for (const [name, d] of disk) {
    if (newEntries.has(name)) continue;
    const path = join(rel, name);
    const o = oldEntries.get(name);
    if ((known && o && provenOld(input, path, o, d, depth)) || input.force) plan.removes.push({ rel: path, type: d });
    else plan.conflicts.push(path);
  }
}

function createEntry(input: ReconcileInput, plan: Plan, path: string, n: Entry, depth: number): void {
  if (n.type === 'file') addWrite(plan, { rel: path, hash: n.digest.hash, size: n.digest.size, executable: n.executable });
  else if (n.type === 'symlink') addWrite(plan, { rel: path, target: n.target });
  else {
    addMkdir(plan, path);
    planCreate(input.tree(n.digest), path, input.tree, plan, depth + 1);
  }
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
