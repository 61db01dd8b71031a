/**
 * `treecast status DIR`: what changed in DIR since the last checkout. It is the plan a
 * `checkout --force --clean` of the recorded tree would make, read back without running it: a
 * replaced entry was modified, a created one was removed, an untracked one removed by clean was
 * added. So status and checkout can never disagree about what "changed" means.
 */
import * as fs from 'node:fs';
import { resolve } from 'node:path';
import { type Digest, formatDigest } from '../core/digest.js';
import { TargetError, fsError } from '../errors.js';
import type { LocalStore } from '../store/local.js';
import { TreeReader } from '../store/tree-reader.js';
import { displayPath } from '../fs/byte-names.js';
import { RealDiskView } from './disk-view.js';
import { planUpdate } from './plan.js';
import { type CheckoutSource, type RunMarks, loadRecord, loadStarted } from './record.js';
import { findLeftovers, largeFileDirs } from './leftovers.js';
import { DIRECT_MAX_BYTES } from './execute.js';

export interface StatusResult {
  target: string;
  /** The tree of the last checkout. */
  digest: string;
  /** Tracked entries whose contents, kind, mode or link target differ (directories end in '/'). */
  modified: string[];
  /** Entries the tree does not have (a whole untracked directory is one entry ending in '/'). */
  added: string[];
  /** Tracked entries missing from the disk. */
  removed: string[];
}

export function status(dir: string, store: LocalStore): StatusResult {
  const rootAbs = resolve(dir);
  let st: fs.Stats;
  try {
    st = fs.statSync(rootAbs);
  } catch (e) {
    throw fsError(e, 'cannot read', rootAbs);
  }
  if (!st.isDirectory()) {
    throw new TargetError(`cannot show the status of ${rootAbs}: not a directory`, { path: rootAbs, hint: 'status takes a directory treecast checked out into' });
  }
  const record = loadRecord(store, rootAbs, st);
  if (!record) {
    const started = loadStarted(store, rootAbs, st);
    if (started) {
      // The same command again also finishes a file it was writing when stopped (its bytes a
      // prefix of the blob: plan.ts, resume); only a real local change stops it, listed.
      throw unfinished(rootAbs, started.pending, started, 'no checkout into it has finished', leftoversOf(rootAbs, store, started.pending, started.run));
    }
    throw new TargetError(`no checkout into ${rootAbs} is recorded in the store ${store.root}`, {
      path: rootAbs,
      hint: 'status compares a directory with the tree last checked out into it; `treecast checkout` records one',
    });
  }
  if (record.pending) {
    throw unfinished(rootAbs, record.pending, record.source ?? {}, `the last finished one was of ${formatDigest(record.root)}`, leftoversOf(rootAbs, store, record.pending, record.run));
  }
  const reader = new TreeReader(store);
  reader.usePack(record.root);
  const plan = planUpdate({
    target: record.root,
    previous: record.root,
    tree: (d) => reader.getSync(d),
    raw: (d) => reader.rawSync(d),
    disk: new RealDiskView(rootAbs, store, record.finishedAtMs),
    force: true,
    clean: true,
  });
  const replaced = new Set<string>();
  const added: string[] = [];
  for (const r of plan.removes) {
    if (r.untracked) added.push(displayPath(r.rel) + (r.type === 'dir' ? '/' : ''));
    else replaced.add(r.rel);
  }
  const modified: string[] = [];
  const removed: string[] = [];
  const emptyDirs = new Set<string>();
  for (const s of plan.steps) {
    if ('mkdir' in s) {
      if (replaced.has(s.mkdir)) modified.push(`${s.mkdir}/`);
      else emptyDirs.add(s.mkdir);
      continue;
    }
    let underReplaced = false;
    for (let p = s.rel; p.includes('/'); ) {
      p = p.slice(0, p.lastIndexOf('/'));
      emptyDirs.delete(p);
      underReplaced ||= replaced.has(p);
    }
    // Entries under a directory that replaced something else are part of that one modification.
    if (replaced.has(s.rel)) modified.push(s.rel);
    else if (!underReplaced) removed.push(s.rel);
  }
  // A missing directory is reported through the files it held; one that held nothing, by itself.
  for (const d of emptyDirs) removed.push(`${d}/`);
  return { target: rootAbs, digest: formatDigest(record.root), modified: modified.sort(), added: added.sort(), removed: removed.sort() };
}

/**
 * A checkout into `rootAbs` started and did not finish (killed, interrupted or failed): which tree,
 * how it was named, from which remote, and the command that finishes it.
 */
function unfinished(rootAbs: string, pending: Digest, source: CheckoutSource, before: string, leftovers: string[]): TargetError {
  const tree = formatDigest(pending);
  const named = source.spec !== undefined && source.spec !== tree ? ` ('${source.spec}')` : '';
  const from = source.remote !== undefined ? ` from ${source.remote}` : '';
  const again = `treecast checkout ${shellWord(source.remote !== undefined && source.spec !== undefined ? source.spec : tree)} ${shellWord(rootAbs)}${source.remote !== undefined ? ` --remote ${shellWord(source.remote)}` : ''}`;
  const shown = leftovers.slice(0, 5).map(displayPath).join(', ') + (leftovers.length > 5 ? `, and ${leftovers.length - 5} more` : '');
  const left =
    leftovers.length === 0 ? '' : `; it left ${leftovers.length === 1 ? 'a temporary file' : `${leftovers.length} temporary files`} of its own (${shown}), which running it again removes`;
  return new TargetError(`the checkout of ${tree}${named}${from} into ${rootAbs} did not finish: it was interrupted or failed (${before})${left}`, {
    path: rootAbs,
    digest: tree,
    hint: `run the checkout again to finish it (\`${again}\`, with the options it had): it also finishes a file it was writing when stopped; status then compares with its tree`,
  });
}

/**
 * The temporary files an unfinished direct checkout left (named with its run's token: leftovers.ts),
 * found where its tree has a large file; none when the record has no token or the tree is not here.
 */
function leftoversOf(rootAbs: string, store: LocalStore, pending: Digest, run: RunMarks | undefined): string[] {
  if (run?.token === undefined) return [];
  const reader = new TreeReader(store);
  reader.usePack(pending);
  let dirs: string[];
  try {
    dirs = largeFileDirs(pending, (d) => reader.getSync(d), DIRECT_MAX_BYTES);
  } catch {
    return [];
  }
  return findLeftovers(rootAbs, dirs, run.token);
}

/** `s` quoted for a shell when it holds anything but plain path characters. */
function shellWord(s: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}
