/**
 * The record of the last checkout into a directory, kept in the store (not in the directory, so
 * checkouts stay exactly the tree). It names the tree and when the checkout finished; a file whose
 * ctime is older than that is provably as the checkout left it. The record is only ever a
 * shortcut: without it, checkout compares what is on disk.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { type Digest, formatDigest, looksLikeDigest, parseDigest } from '../core/digest.js';
import type { LocalStore } from '../store/local.js';

export interface CheckoutRecord {
  version: 1;
  target: string;
  /** Identity of the target directory: a directory removed and made again is not the same one. */
  dev: number;
  ino: number;
  root: string;
  finishedAtMs: number;
}

function recordPath(store: LocalStore, targetAbs: string): string {
  return join(store.root, 'checkouts', `${createHash('sha256').update(targetAbs).digest('hex')}.json`);
}

/** The record for `targetAbs` when it exists and still describes that same directory. */
export function loadRecord(store: LocalStore, targetAbs: string, targetStat: fs.Stats): { root: Digest; finishedAtMs: number } | undefined {
  let r: CheckoutRecord;
  try {
    r = JSON.parse(fs.readFileSync(recordPath(store, targetAbs), 'utf8')) as CheckoutRecord;
  } catch {
    return undefined;
  }
  if (r.version !== 1 || r.target !== targetAbs || r.dev !== targetStat.dev || r.ino !== targetStat.ino) return undefined;
  if (typeof r.root !== 'string' || !looksLikeDigest(r.root) || typeof r.finishedAtMs !== 'number') return undefined;
  return { root: parseDigest(r.root), finishedAtMs: r.finishedAtMs };
}

export function saveRecord(store: LocalStore, targetAbs: string, targetStat: fs.Stats, root: Digest, finishedAtMs: number): void {
  const p = recordPath(store, targetAbs);
  const body: CheckoutRecord = { version: 1, target: targetAbs, dev: targetStat.dev, ino: targetStat.ino, root: formatDigest(root), finishedAtMs };
  const tmp = store.tmpPath('rec');
  fs.mkdirSync(join(p, '..'), { recursive: true });
  fs.writeFileSync(tmp, JSON.stringify(body));
  fs.renameSync(tmp, p);
}

/** Forgets the record (before a checkout changes the directory, so a crash leaves no stale claim). */
export function dropRecord(store: LocalStore, targetAbs: string): void {
  try {
    fs.unlinkSync(recordPath(store, targetAbs));
  } catch {
    /* none */
  }
}
