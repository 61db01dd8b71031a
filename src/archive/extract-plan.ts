/**
 * Turns judged entries into the steps of an extraction (pure: no I/O): directories parents first
 * (so each is made with one plain mkdir, no recursive mkdir per file), files in batches by archive
 * offset (each batch is one sequential read in a worker), large files on their own (streamed),
 * symlinks last (so no file is ever written through one), and directory modes and times deepest
 * first at the very end (so a read-only or re-timed directory is finished after its contents).
 */
import type { ArchiveEntry } from './entry-rules.js';
import { LARGE_ENTRY_BYTES } from './local-data.js';

export interface PlannedDir {
  path: string;
  /** The archive entry that named it, when one did (else it is only implied by its contents). */
  entry?: ArchiveEntry;
}

export interface ExtractPlan {
  dirs: PlannedDir[];
  batches: ArchiveEntry[][];
  large: ArchiveEntry[];
  symlinks: ArchiveEntry[];
  /** Explicit directories, deepest first, whose mode and time are set last. */
  finishDirs: ArchiveEntry[];
  fileCount: number;
  totalSize: number;
}

export interface BatchLimits {
  /** Most entries per batch. */
  entries: number;
  /** Most archive bytes (headers + compressed data) per batch. */
  bytes: number;
  /** Entries whose extent is larger than this are streamed one by one. */
  large: number;
}

// Perf: batches of ~256 files / 8 MiB keep two workers busy with one message each way per batch;
// smaller batches cost more in message overhead, larger ones leave a worker idle at the end.
export const DEFAULT_BATCH_LIMITS: BatchLimits = { entries: 256, bytes: 8 << 20, large: LARGE_ENTRY_BYTES };

/** Whether a file entry is streamed on its own (its extent or its size over `large`) rather than batched. */
export function isLargeEntry(e: ArchiveEntry, large: number): boolean {
  return e.limit - e.localOffset > large || e.size > large;
}

export function planExtraction(entries: readonly ArchiveEntry[], limits: BatchLimits = DEFAULT_BATCH_LIMITS): ExtractPlan {
  const dirMap = new Map<string, PlannedDir>();
  let lastParent = '';
  const addParents = (path: string) => {
    // Perf: skip the prefix walk when the parent is the previous entry's (entries come grouped).
    const lastCut = path.lastIndexOf('/');
    const parent = lastCut < 0 ? '' : path.slice(0, lastCut);
    if (parent === lastParent) return;
    lastParent = parent;
    let cut = path.indexOf('/');
    while (cut >= 0) {
      const parent = path.slice(0, cut);
      if (!dirMap.has(parent)) dirMap.set(parent, { path: parent });
      cut = path.indexOf('/', cut + 1);
    }
  };
  const files: ArchiveEntry[] = [];
  const large: ArchiveEntry[] = [];
  const symlinks: ArchiveEntry[] = [];
  const explicitDirs: ArchiveEntry[] = [];
  let totalSize = 0;
  for (const e of entries) {
    addParents(e.path);
    totalSize += e.size;
    if (e.type === 'dir') {
      const d = dirMap.get(e.path);
      if (d) d.entry = e;
      else dirMap.set(e.path, { path: e.path, entry: e });
      explicitDirs.push(e);
    } else if (e.type === 'symlink') symlinks.push(e);
    else if (isLargeEntry(e, limits.large)) large.push(e);
    else files.push(e);
  }
  files.sort((a, b) => a.localOffset - b.localOffset);
  const batches: ArchiveEntry[][] = [];
  let cur: ArchiveEntry[] = [];
  let curOut = 0;
  for (const f of files) {
    // A batch is read as one range, so it also stops where that range would grow too long
    // (e.g. around a large entry that is streamed separately).
    if (cur.length > 0 && (cur.length >= limits.entries || f.limit - cur[0]!.localOffset > limits.bytes || curOut + f.size > limits.bytes)) {
      batches.push(cur);
      cur = [];
      curOut = 0;
    }
    cur.push(f);
    curOut += f.size;
  }
  if (cur.length > 0) batches.push(cur);
  const depth = new Map<ArchiveEntry, number>();
  for (const d of explicitDirs) {
    let n = 0;
    for (let i = d.path.indexOf('/'); i >= 0; i = d.path.indexOf('/', i + 1)) n++;
    depth.set(d, n);
  }
  const finishDirs = explicitDirs.sort((a, b) => depth.get(b)! - depth.get(a)!);
  return { dirs: [...dirMap.values()], batches, large, symlinks, finishDirs, fileCount: files.length + large.length, totalSize };
}
