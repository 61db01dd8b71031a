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
 *
 * Records are never read or written through a symbolic link: `checkouts/` is looked at by lstat
 * and a record opened with O_NOFOLLOW, so a link planted as either (which would have a checkout
 * trust, or overwrite, a file anywhere) is a StoreDamagedError naming it (`verify --repair`
 * removes it). A record's own name that is a link is replaced by the rename that writes it.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { type Digest, formatDigest, looksLikeDigest, parseDigest } from '../core/digest.js';
import { type LocalStore, checkStoreFolders, damagedEntryError, makeStoreFolders, readFileNoFollow, readStoreEntry } from '../store/local.js';
import { StoreDamagedError, fsError } from '../errors.js';
import { privateTempDir } from '../fs/target-guard.js';
import { isRunToken } from './leftovers.js';

export interface CheckoutRecord {
  version: 1;
  target: string;
  /** Identity of the target directory: a directory removed and made again is not the same one. */
  dev: number;
  ino: number;
  /**
   * The tree of the last finished checkout. Absent in a started record (saveStarted): a checkout
   * that trusts no earlier one (the first into a directory, say) and has not finished yet.
   */
  root?: string;
  finishedAtMs?: number;
  /** The tree of an update into the directory that started after `root` and has not finished. */
  pending?: string;
  /** How the unfinished checkout named its tree (a ref or remote name), and the remote it came from. */
  spec?: string;
  remote?: string;
  /** With `pending`: when the unfinished checkout started writing (ms since the epoch). */
  startedAtMs?: number;
  /** With `pending`: the token in the names of the temporary files that checkout makes (leftovers.ts). */
  token?: string;
}

/**
 * What an unfinished checkout left in its record about its own run, so that the same checkout run
 * again can tell what it wrote from what was there before: a file changed (ctime) before
 * `startedAtMs` was not written by it.
 */
export interface RunMarks {
  startedAtMs?: number;
  /** A direct checkout's: its temporary files' names hold it, so only those are removed (leftovers.ts). */
  token?: string;
}

/** Where an unfinished checkout came from, kept so that `status` can say how to finish it. */
export interface CheckoutSource {
  spec?: string;
  remote?: string;
}

/** A checkout into the directory that started, trusting no finished one, and did not finish. */
export interface StartedRecord extends CheckoutSource {
  pending: Digest;
  run: RunMarks;
}

export interface LoadedRecord {
  root: Digest;
  finishedAtMs: number;
  pending?: Digest;
  /** With `pending`: where that update's tree came from. */
  source?: CheckoutSource;
  /** With `pending`: what that update's run recorded about itself. */
  run?: RunMarks;
}

function recordPath(store: LocalStore, targetAbs: string): string {
  return join(recordsDir(store), `${createHash('sha256').update(targetAbs).digest('hex')}.json`);
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

/**
 * Whether the store's `checkouts/` is a real folder; a link there is a StoreDamagedError. One lstat on every read and write of a record (a few per checkout), not
 * remembered: the folder may be removed meanwhile (as by hand, or a test). Undefined `store`: the
 * private folder, checked when it is taken.
 */
function recordFolderSound(store: LocalStore | undefined): boolean {
  if (store === undefined) return true;
  const dir = recordsDir(store);
  return checkStoreFolders(store.root, dir, dir, 'the folder of checkout records');
}

/** The store's folder of checkout records. */
function recordsDir(store: LocalStore): string {
  return join(store.root, 'checkouts');
}

/** The record at `p` (the store's when `store` is given), or undefined when absent or unreadable. */
function readRecord(p: string | undefined, store?: LocalStore): CheckoutRecord | undefined {
  if (p === undefined) return undefined;
  let text: string;
  try {
    if (!recordFolderSound(store)) return undefined;
    text = (store !== undefined ? readStoreEntry(store.root, p, 'a checkout record') : readFileNoFollow(p)).toString('utf8');
  } catch (e) {
    if (e instanceof StoreDamagedError) throw e;
    return undefined;
  }
  try {
    return JSON.parse(text) as CheckoutRecord;
  } catch {
    return undefined;
  }
}

function writeRecord(p: string, tmp: string, body: CheckoutRecord, store?: LocalStore): void {
  if (store === undefined) fs.mkdirSync(join(p, '..'), { recursive: true });
  else makeStoreFolders(store.root, recordsDir(store), recordsDir(store), 'the folder of checkout records');
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
  const r = readRecord(recordPath(store, targetAbs), store) ?? readRecord(privateRecordPath(store, targetAbs));
  if (!r) return undefined;
  if (r.version !== 1 || r.target !== targetAbs || r.dev !== targetStat.dev || r.ino !== targetStat.ino) return undefined;
  if (typeof r.root !== 'string' || !looksLikeDigest(r.root) || typeof r.finishedAtMs !== 'number') return undefined;
  if (r.pending !== undefined && (typeof r.pending !== 'string' || !looksLikeDigest(r.pending))) return undefined;
  if (r.pending === undefined) return { root: parseDigest(r.root), finishedAtMs: r.finishedAtMs };
  return { root: parseDigest(r.root), finishedAtMs: r.finishedAtMs, pending: parseDigest(r.pending), source: sourceOf(r), run: runOf(r) };
}

function runOf(r: CheckoutRecord): RunMarks {
  const run: RunMarks = {};
  if (typeof r.startedAtMs === 'number' && Number.isFinite(r.startedAtMs)) run.startedAtMs = r.startedAtMs;
  if (isRunToken(r.token)) run.token = r.token;
  return run;
}

function markRun(body: CheckoutRecord, run: RunMarks): void {
  if (run.startedAtMs !== undefined) body.startedAtMs = run.startedAtMs;
  if (run.token !== undefined) body.token = run.token;
}

function sourceOf(r: CheckoutRecord): CheckoutSource {
  const text = (v: unknown) => (typeof v === 'string' && v.length > 0 && v.length <= 4096 ? v : undefined);
  return { spec: text(r.spec), remote: text(r.remote) };
}

/**
 * A started record for `targetAbs`, when its last checkout trusted no finished one (the first into
 * the directory, say) and did not finish (killed, interrupted, failed): what it was checking out,
 * and from where. loadRecord never returns one, so a checkout treats it as no record.
 */
export function loadStarted(store: LocalStore, targetAbs: string, targetStat: fs.Stats): StartedRecord | undefined {
  const r = readRecord(recordPath(store, targetAbs), store) ?? readRecord(privateRecordPath(store, targetAbs));
  if (!r || r.version !== 1 || r.target !== targetAbs || r.dev !== targetStat.dev || r.ino !== targetStat.ino || r.root !== undefined) return undefined;
  if (typeof r.pending !== 'string' || !looksLikeDigest(r.pending)) return undefined;
  return { pending: parseDigest(r.pending), ...sourceOf(r), run: runOf(r) };
}

/**
 * Records a checkout of `pending` that trusts no finished checkout as started (replacing any
 * record): a checkout killed before it finishes then leaves a record saying so, which `status`
 * reports, where dropping the record left none ("no checkout is recorded").
 */
export function saveStarted(store: LocalStore, targetAbs: string, targetStat: fs.Stats, pending: Digest, source: CheckoutSource = {}, run: RunMarks = {}): void {
  const body: CheckoutRecord = { version: 1, target: targetAbs, dev: targetStat.dev, ino: targetStat.ino, pending: formatDigest(pending) };
  if (source.spec !== undefined) body.spec = source.spec;
  if (source.remote !== undefined) body.remote = source.remote;
  markRun(body, run);
  save(store, targetAbs, body);
}

export function saveRecord(
  store: LocalStore,
  targetAbs: string,
  targetStat: fs.Stats,
  root: Digest,
  finishedAtMs: number,
  pending?: Digest,
  source: CheckoutSource = {},
  run: RunMarks = {},
): void {
  const body: CheckoutRecord = { version: 1, target: targetAbs, dev: targetStat.dev, ino: targetStat.ino, root: formatDigest(root), finishedAtMs };
  if (pending) {
    body.pending = formatDigest(pending);
    if (source.spec !== undefined) body.spec = source.spec;
    if (source.remote !== undefined) body.remote = source.remote;
    markRun(body, run);
  }
  save(store, targetAbs, body);
}

function save(store: LocalStore, targetAbs: string, body: CheckoutRecord): void {
  const p = recordPath(store, targetAbs);
  try {
    writeRecord(p, store.tmpPath('rec'), body, store);
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
