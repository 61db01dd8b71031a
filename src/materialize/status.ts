/**
 * `treecast status DIR`: what changed in DIR since the last checkout. It is the plan a
 * `checkout --force --clean` of the recorded tree would make, read back without running it: a
 * replaced entry was modified, a created one was removed, an untracked one removed by clean was
 * added. So status and checkout can never disagree about what "changed" means.
 */
import * as fs from 'node:fs';
import { resolve } from 'node:path';
import { formatDigest } from '../core/digest.js';
import { TargetError, fsError } from '../errors.js';
import type { LocalStore } from '../store/local.js';
import { TreeReader } from '../store/tree-reader.js';
import { displayPath } from '../fs/byte-names.js';
import { RealDiskView } from './disk-view.js';
import { planUpdate } from './plan.js';
import { loadRecord } from './record.js';

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
    throw new TargetError(`no checkout into ${rootAbs} is recorded in the store ${store.root}`, {
      path: rootAbs,
      hint: 'status compares a directory with the tree last checked out into it; `treecast checkout` records one',
    });
  }
  if (record.pending) {
    throw new TargetError(`the last checkout into ${rootAbs} (of ${formatDigest(record.pending)}) did not finish`, {
      path: rootAbs,
      digest: formatDigest(record.pending),
      hint: 'run that checkout again to finish it; status then compares with its tree',
    });
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
