/**
 * The record of the last checkout into a directory, kept in the store (not in the directory, so
 * checkouts stay exactly the tree). It names the tree and when the checkout finished; a file whose
 * ctime is older than that is provably as the checkout left it. The record is only ever a
 * shortcut: without it, checkout compares what is on disk.
 *
 * An update that starts keeps the record of the last finished checkout and adds the tree it brings
 * in (`pending`) until it finishes. Only that same tree may then trust the record (running the same
 * command again after a failure or a signal): every path the failed run touched is one where the two
 * trees differ, and there the planner accepts either the old entry, proven by the record, or the
 * target's, read back. Another tree compares with the disk, as the record no longer tells it which
 * paths hold what.
 *
 * A store the user cannot write (another user's, a read-only mount) keeps no records: they go to a
 * private folder of the user's in the temp dir instead (`treecast-checkouts-UID`), as locks do, so
 * checkouts from a shared store still update and show status.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { type Digest, formatDigest, looksLikeDigest, parseDigest } from '../core/digest.js';
import type { LocalStore } from '../store/local.js';
import { fsError } from '../errors.js';
import { privateTempDir } from '../fs/target-guard.js';

export interface CheckoutRecord {
  version: 1;
  target: string;
  /** Identity of the target directory: a directory removed and made again is not the same one. */
  dev: number;
  ino: number;
  root: string;
  finishedAtMs: number;
  /** The tree of an update into the directory that started after `root` and has not finished. */
  pending?: string;
}

export interface LoadedRecord {
  root: Digest;
  finishedAtMs: number;
  pending?: Digest;
}

function recordPath(store: LocalStore, targetAbs: string): string {
  return join(store.root, 'checkouts', `${createHash('sha256').update(targetAbs).digest('hex')}.json`);
}

/**
 * The record's place when the store cannot be written; undefined when the private folder is absent
 * (and not to be made) or is not private: a record there decides what checkout may overwrite.
 */
function privateRecordPath(store: LocalStore, targetAbs: string, create = false): string | undefined {
  let dir: string | undefined;
  try {
    dir = privateTempDir('treecast-checkouts', 'checkout record', create);
  } catch {
    return undefined;
  }
  return dir && join(dir, `${createHash('sha256').update(`${store.root}\0${targetAbs}`).digest('hex')}.json`);
}

function readRecord(p: string | undefined): CheckoutRecord | undefined {
  if (p === undefined) return undefined;
  try {
    return JSON.parse(fs.readFileSync(p, 'utf8')) as CheckoutRecord;
  } catch {
    return undefined;
  }
}

function writeRecord(p: string, tmp: string, body: CheckoutRecord): void {
  fs.mkdirSync(join(p, '..'), { recursive: true });
  fs.writeFileSync(tmp, JSON.stringify(body));
  fs.renameSync(tmp, p);
}

function unlinkQuietly(p: string | undefined): void {
  if (p === undefined) return;
  try {
    fs.unlinkSync(p);
  } catch {
    /* none */
  }
}

/** The record for `targetAbs` when it exists and still describes that same directory. */
export function loadRecord(store: LocalStore, targetAbs: string, targetStat: fs.Stats): LoadedRecord | undefined {
  const r = readRecord(recordPath(store, targetAbs)) ?? readRecord(privateRecordPath(store, targetAbs));
  if (!r) return undefined;
  if (r.version !== 1 || r.target !== targetAbs || r.dev !== targetStat.dev || r.ino !== targetStat.ino) return undefined;
  if (typeof r.root !== 'string' || !looksLikeDigest(r.root) || typeof r.finishedAtMs !== 'number') return undefined;
  if (r.pending !== undefined && (typeof r.pending !== 'string' || !looksLikeDigest(r.pending))) return undefined;
  return { root: parseDigest(r.root), finishedAtMs: r.finishedAtMs, pending: r.pending === undefined ? undefined : parseDigest(r.pending) };
}

export function saveRecord(store: LocalStore, targetAbs: string, targetStat: fs.Stats, root: Digest, finishedAtMs: number, pending?: Digest): void {
  const p = recordPath(store, targetAbs);
  const body: CheckoutRecord = { version: 1, target: targetAbs, dev: targetStat.dev, ino: targetStat.ino, root: formatDigest(root), finishedAtMs };
  if (pending) body.pending = formatDigest(pending);
  try {
    writeRecord(p, store.tmpPath('rec'), body);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const mine = code === 'EACCES' || code === 'EROFS' || code === 'EPERM' ? privateRecordPath(store, targetAbs, true) : undefined;
    if (!mine) throw fsError(e, 'cannot record the checkout in the store at', store.root);
    try {
      writeRecord(mine, `${mine}.tmp-${process.pid}`, body);
    } catch (e2) {
      throw fsError(e2, 'cannot record the checkout in', mine);
    }
    return;
  }
  unlinkQuietly(privateRecordPath(store, targetAbs));
}

/** Forgets the record (before a checkout changes the directory, so a crash leaves no stale claim). */
export function dropRecord(store: LocalStore, targetAbs: string): void {
  unlinkQuietly(recordPath(store, targetAbs));
  unlinkQuietly(privateRecordPath(store, targetAbs));
}
