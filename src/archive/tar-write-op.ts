/**
 * Worker ops of tar unpack, which write into a fresh staging directory that only this unpack
 * writes to (so an existing name there was made by this unpack, never by someone else):
 *
 * - 'archive.write': a batch of directories and small files whose data came with the batch (tar is
 *   read sequentially on the main thread): the directories first, then each file `data[at, at +
 *   size)` created with O_CREAT|O_EXCL|O_NOFOLLOW, mode and times set on the open descriptor.
 * - 'archive.links': the tail, once every file is written: directories named after the last
 *   batch, hardlinks (a copy where the filesystem refuses a link), then symlinks, so nothing is
 *   ever written through a symlink of the archive.
 * - 'archive.dirmeta': after publish, the modes and times of the directories the archive names,
 *   deepest first (in DIR itself, not in staging).
 *
 * Directories are made where they are first needed: a missing parent (ENOENT) is made with its
 * own parents, and a directory another worker made first (EEXIST, a directory) is fine. Staging
 * holds no symlink until the tail, and the walk refuses any entry under a symlink of the archive,
 * so no mkdir here can pass through one.
 *
 * On failure the op removes the files of its batch it wrote and rethrows; the caller removes the
 * staging directory.
 */
import * as fs from 'node:fs';
import { fsError, TargetError } from '../errors.js';
import { linkRefused } from '../fs/link-refused.js';

export interface DataBatch {
  root: string;
  umask: number;
  /** Set owners from the archive (--same-owner as root). */
  sameOwner: boolean;
  /** Directories to make first, joined by NUL ('' for none). */
  dirs: string;
  /**
   * The files, packed: paths joined by NUL (which no accepted name holds), and per file
   * [perm, mtime, size, at, uid, gid] in `meta`. Perf: posting 256 objects per batch was 0.38 s of
   * postMessage on the main thread for the node_modules corpus (--cpu-prof), more than judging the
   * entries; packed, 0.24 s (one profile each, on a shared machine).
   */
  paths: string;
  meta: Float64Array;
  /** A view of a SharedArrayBuffer the main thread reuses once this batch is done. */
  data: Uint8Array;
}

/** Field order of DataBatch.meta. */
export const META_FIELDS = 6;

/** What 'archive.write' returns; `data` only when the batch had a buffer of its own (see handBack). */
export interface DataBatchResult {
  files: number;
  bytes: number;
  data?: Uint8Array;
}

export interface LinkBatch {
  root: string;
  sameOwner: boolean;
  dirs: string[];
  /** Hardlinks: `hardlinks[i]` becomes another name of `linkTargets[i]` (a file, never another hardlink). */
  hardlinks: string[];
  linkTargets: string[];
  symlinks: string[];
  symlinkTargets: string[];
  /** Per symlink [mtime, uid, gid]. */
  symlinkMeta: Float64Array;
}

const CREATE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;

/**
 * A batch's data to hand back: a buffer of its own (one file larger than a batch) moves back to the
 * main thread (worker.ts transfers a result's `data`), where the next GC frees it, rather than
 * waiting for this thread's lazier one; a shared buffer stays where it is.
 */
export function handBack(data: Uint8Array): Uint8Array | undefined {
  return data.buffer instanceof ArrayBuffer ? data : undefined;
}

const code = (e: unknown) => (e as NodeJS.ErrnoException).code;

export function writeDataBatch(b: DataBatch): DataBatchResult {
  if (b.dirs !== '') for (const d of b.dirs.split('\0')) makeDir(`${b.root}/${d}`);
  const data = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength);
  const paths = b.paths.split('\0');
  const m = b.meta;
  const written: string[] = [];
  let bytes = 0;
  try {
    for (let i = 0, k = 0; i < paths.length; i++, k += META_FIELDS) {
      const dest = `${b.root}/${paths[i]}`;
      const perm = m[k]!;
      const size = m[k + 2]!;
      const at = m[k + 3]!;
      writeFile(dest, data, at, at + size, perm, m[k + 1]!, b.umask, b.sameOwner ? { uid: m[k + 4]!, gid: m[k + 5]! } : undefined);
      written.push(dest);
      bytes += size;
    }
  } catch (err) {
    for (const w of written) removeQuietly(w);
    throw err;
  }
  return { files: written.length, bytes, data: handBack(b.data) };
}

export function writeLinks(b: LinkBatch): { links: number } {
  for (const d of b.dirs) makeDir(`${b.root}/${d}`);
  for (let i = 0; i < b.hardlinks.length; i++) linkOrCopy(`${b.root}/${b.linkTargets[i]}`, `${b.root}/${b.hardlinks[i]}`);
  for (let i = 0, k = 0; i < b.symlinks.length; i++, k += 3) {
    const p = `${b.root}/${b.symlinks[i]}`;
    try {
      withParent(p, () => fs.symlinkSync(b.symlinkTargets[i]!, p));
      if (b.sameOwner) fs.lchownSync(p, b.symlinkMeta[k + 1]!, b.symlinkMeta[k + 2]!);
      const t = b.symlinkMeta[k]!;
      fs.lutimesSync(p, t, t);
    } catch (err) {
      throw fsError(err, 'cannot create symlink', p);
    }
  }
  return { links: b.hardlinks.length + b.symlinks.length };
}

/** The directories whose mode and time to set, after publish, in this order (deepest first). */
export interface DirMetaBatch {
  root: string;
  sameOwner: boolean;
  paths: string[];
  /** Per directory [perm, mtime, uid, gid]. */
  meta: Float64Array;
}

export function setDirMeta(b: DirMetaBatch): { dirs: number } {
  for (let i = 0, k = 0; i < b.paths.length; i++, k += 4) {
    const p = `${b.root}/${b.paths[i]}`;
    try {
      if (b.sameOwner) fs.chownSync(p, b.meta[k + 2]!, b.meta[k + 3]!);
      fs.chmodSync(p, b.meta[k]!);
      fs.utimesSync(p, b.meta[k + 1]!, b.meta[k + 1]!);
    } catch (err) {
      throw fsError(err, 'cannot set mode or time of', p);
    }
  }
  return { dirs: b.paths.length };
}

/** Runs `make` (which creates `p`); when p's parent is missing, makes it (with its parents) and runs `make` again. */
function withParent<T>(p: string, make: () => T): T {
  try {
    return make();
  } catch (e) {
    if (code(e) !== 'ENOENT') throw e;
  }
  const parent = p.slice(0, p.lastIndexOf('/'));
  try {
    fs.mkdirSync(parent, { recursive: true }); // implied directories get 0777 less the umask, as tar gives them
  } catch (e) {
    throw fsError(e, 'cannot create directory', parent);
  }
  return make();
}

/** Makes directory `p` (and missing parents); one made already, by another batch, is fine. */
function makeDir(p: string): void {
  try {
    withParent(p, () => fs.mkdirSync(p));
  } catch (e) {
    if (code(e) === 'EEXIST' && fs.lstatSync(p).isDirectory()) return;
    throw fsError(e, 'cannot create directory', p);
  }
}

function writeFile(dest: string, data: Buffer, start: number, end: number, perm: number, mtime: number, umask: number, owner?: { uid: number; gid: number }): void {
  let out: number;
  try {
    out = withParent(dest, () => fs.openSync(dest, CREATE, perm));
  } catch (e) {
    // Staging is fresh and every name was judged unique, so EEXIST means something appeared meanwhile.
    if (code(e) === 'EEXIST') throw new TargetError(`${dest} already exists; refusing to overwrite it`, { path: dest });
    throw fsError(e, 'cannot create', dest);
  }
  try {
    let off = start;
    while (off < end) off += fs.writeSync(out, data, off, end - off);
    // Perf: open() already gave perm & ~umask; chmod only when the umask took bits away
    // (fchmod cost 0.12 s per worker on the Linux tree, profiled).
    if (owner) fs.fchownSync(out, owner.uid, owner.gid);
    // (fchown clears setuid bits, so the mode is set after it)
    if ((perm & umask) !== 0 || owner) fs.fchmodSync(out, perm);
    fs.futimesSync(out, mtime, mtime);
  } catch (e) {
    fs.closeSync(out);
    removeQuietly(dest);
    throw fsError(e, 'cannot write', dest);
  }
  fs.closeSync(out);
}

function linkOrCopy(from: string, to: string): void {
  try {
    withParent(to, () => fs.linkSync(from, to));
  } catch (e) {
    if (!linkRefused(e)) throw fsError(e, 'cannot create hardlink', to);
    try {
      fs.copyFileSync(from, to, fs.constants.COPYFILE_EXCL);
      const st = fs.statSync(from);
      fs.chmodSync(to, st.mode & 0o7777);
      fs.utimesSync(to, st.atime, st.mtime);
    } catch (e2) {
      throw fsError(e2, 'cannot copy', to);
    }
  }
}

function removeQuietly(p: string): void {
  try {
    fs.unlinkSync(p);
  } catch {
    /* already gone */
  }
}
