/**
 * Worker op 'archive.extract': writes one batch of regular files. The batch's extent is read with
 * one pread into a reused buffer, each entry is checked against its local header, inflated,
 * size- and CRC-checked, and written with O_CREAT|O_EXCL|O_NOFOLLOW (so neither an existing file
 * nor a symlink already in the target is ever written through or replaced), then its mode and times
 * are set on the open descriptor. An entry that replaces an existing file (`unpack --force`) is
 * written under its staged name beside it (see replacements.ts); the op never removes a file it did
 * not write.
 *
 * On failure the op removes what it wrote in this batch (with keepPartial: what comes after the
 * bad entry in archive order, and the bad entry) and rethrows; the caller removes the rest.
 */
import * as fs from 'node:fs';
import { fsError, TargetError } from '../errors.js';
import { forEachBatchEntry, type EntryRef } from './local-data.js';
import { entryDestination } from './replacements.js';

export interface ExtractFile extends EntryRef {
  index: number;
  perm: number | undefined;
  mtime: number;
  /** Set when the entry replaces an existing file: the name it is written under until the commit. */
  stagedAs?: string;
}

export interface ExtractBatch {
  archive: string;
  /** The extraction root (absolute); every parent directory below it was already made and checked. */
  root: string;
  keepPartial: boolean;
  /** The process umask (read once by the caller; workers may not read it). */
  umask: number;
  files: ExtractFile[];
}

export interface ExtractResult {
  files: number;
  bytes: number;
}

const CREATE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
export function extractBatch(b: ExtractBatch): ExtractResult {
  const written: ExtractFile[] = [];
  let bytes = 0;
  try {
    forEachBatchEntry(b.archive, b.files, (f, data) => {
      writeFile(entryDestination(b.root, f.path, f.stagedAs), data, f, b.umask);
      written.push(f);
      bytes += data.length;
    });
  } catch (err) {
    const bad = b.files[written.length];
    for (const w of written) {
      if (!b.keepPartial || (bad && w.index > bad.index)) removeQuietly(entryDestination(b.root, w.path, w.stagedAs));
    }
    throw err;
  }
  return { files: written.length, bytes };
}

/**
 * Worker op 'archive.write': writes a batch of files whose data came with the batch (tar, read
 * sequentially on the main thread): `data[at, at + size)` for each, into a fresh staging
 * directory. Same creation rules as extractBatch; on failure the files of this batch are removed.
 */
export interface DataBatch {
  root: string;
  umask: number;
  /** Set owners from the archive (--same-owner as root). */
  sameOwner: boolean;
  /**
   * The files, packed: paths joined by NUL (which no accepted name holds), and per file
   * [perm, mtime, size, at, uid, gid] in `meta`. Perf: posting 256 objects per batch was 0.38 s of
   * postMessage on the main thread for the node_modules corpus (--cpu-prof), more than judging the
   * entries; packed, 0.24 s (one profile each, on a shared machine).
   */
  paths: string;
  meta: Float64Array;
  data: Uint8Array;
}

/** Field order of DataBatch.meta. */
export const META_FIELDS = 6;

/** What 'archive.write' returns: the counts, and the batch's buffer handed back for reuse. */
export interface DataBatchResult extends ExtractResult {
  data: Uint8Array;
}

export function writeDataBatch(b: DataBatch): DataBatchResult {
  const data = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength);
  const paths = b.paths.split('\0');
  const m = b.meta;
  const written: string[] = [];
  let bytes = 0;
  try {
    for (let i = 0; i < paths.length; i++) {
      const k = i * META_FIELDS;
      const f = { perm: m[k]!, mtime: m[k + 1]!, size: m[k + 2]!, at: m[k + 3]!, uid: m[k + 4]!, gid: m[k + 5]! };
      const dest = `${b.root}/${paths[i]}`;
      writeFile(dest, data.subarray(f.at, f.at + f.size), f, b.umask, b.sameOwner ? f : undefined);
      written.push(dest);
      bytes += f.size;
    }
  } catch (err) {
    for (const w of written) removeQuietly(w);
    throw err;
  }
  return { files: written.length, bytes, data: b.data };
}

function writeFile(dest: string, data: Buffer, f: { perm: number | undefined; mtime: number }, umask: number, owner?: { uid: number; gid: number }): void {
  const out = createExclusive(dest, f.perm);
  try {
    let off = 0;
    while (off < data.length) off += fs.writeSync(out, data, off, data.length - off);
    // Perf: open() already gave perm & ~umask; chmod only when the umask took bits away
    // (fchmod cost 0.12 s per worker on the Linux tree, profiled).
    if (owner) fs.fchownSync(out, owner.uid, owner.gid);
    // (fchown clears setuid bits, so the mode is set after it)
    if (f.perm !== undefined && ((f.perm & umask) !== 0 || owner)) fs.fchmodSync(out, f.perm);
    fs.futimesSync(out, f.mtime, f.mtime);
  } catch (e) {
    fs.closeSync(out);
    removeQuietly(dest);
    throw fsError(e, 'cannot write', dest);
  }
  fs.closeSync(out);
}

/**
 * Creates a file that must not exist yet. Existing files were found while planning (and refused, or
 * given a staged name with --force), so EEXIST here means something appeared meanwhile: refused.
 */
export function createExclusive(dest: string, perm: number | undefined): number {
  try {
    return fs.openSync(dest, CREATE, perm ?? 0o666);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new TargetError(`${dest} already exists; refusing to overwrite it`, { path: dest, hint: 'pass --force to replace existing files' });
    }
    throw fsError(e, 'cannot create', dest);
  }
}

export function removeQuietly(p: string): void {
  try {
    fs.unlinkSync(p);
  } catch {
    /* already gone */
  }
}
