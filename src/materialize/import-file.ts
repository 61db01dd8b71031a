/**
 * Puts one blob at a path by clone (reflink), hardlink or copy, with the per-file fallback that
 * pnpm and nativelink use: only errors that mean "this filesystem cannot" fall back to a copy.
 * Every create is exclusive (O_EXCL, link, symlink never follow or replace an existing name), so
 * nothing is ever written through a symlink someone placed in the target.
 */
import * as fs from 'node:fs';
// Perf: the per-file calls as named imports: the CLI bundle reaches `fs.x` through a getter
// closure per call (esbuild's namespace object for `import * as`), a named import as a plain
// property of the module (--cpu-prof: that getter took 11 ms of a copy checkout's main thread).
import { closeSync, linkSync, openSync, readSync, writeSync } from 'node:fs';
import { formatDigest, type Digest } from '../core/digest.js';
import { BlobNotFoundError, DigestMismatchError, StoreDamagedError, fsError } from '../errors.js';
import type { LocalStore } from '../store/local.js';
import { linkRefused } from '../fs/link-refused.js';

export type ImportMethod = 'clone' | 'hardlink' | 'copy';

const { COPYFILE_EXCL, COPYFILE_FICLONE_FORCE } = fs.constants;
const CLONE_FLAGS = COPYFILE_EXCL | COPYFILE_FICLONE_FORCE;
/** open()'s 'wx' as numbers: Node parses a string flag on every call. */
export const CREATE_EXCL = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL;

/** Of the errors that make a link or clone fall back to a copy (fs/link-refused.ts), the ones that will repeat for every file on this device: stop trying the method. */
export const STICKY = new Set(['EXDEV', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EINVAL']);

export interface ImportOutcome {
  /** The method that did the work. */
  readonly used: ImportMethod;
  /** When the requested method could not, the error code that made it fall back. */
  readonly fellBack?: string;
}

/** The outcomes without a fallback, shared: no object per file. */
const LINKED: ImportOutcome = Object.freeze({ used: 'hardlink' });
const CLONED: ImportOutcome = Object.freeze({ used: 'clone' });
const COPIED: ImportOutcome = Object.freeze({ used: 'copy' });

/**
 * Creates `dst` (which must not exist) holding blob `d`. `mode` applies to clones and copies;
 * `sizeProven`: the caller just stored `d` from verified bytes, so no stat proves its size again.
 * hardlinks keep the store's read-only mode and link the executable twin for executables.
 */
export function importBlob(store: LocalStore, d: Digest, dst: string, method: ImportMethod, executable: boolean, mode: number, sizeProven = false): ImportOutcome {
  const src = store.blobPath(d.hash);
  let fellBack: string | undefined;
  // A copy proves the size as it reads (copyBlob); a link or clone, by a stat first, unless the
  // caller stored the blob itself from verified bytes of that size (sizeProven).
  if (method !== 'copy' && !sizeProven) checkStoredSize(store, src, d, dst);
  try {
    if (method === 'hardlink') {
      linkSync(executable ? store.executablePathSync(d) : src, dst);
      return LINKED;
    }
    if (method === 'clone') {
      fs.copyFileSync(src, dst, CLONE_FLAGS);
      fs.chmodSync(dst, mode);
      return CLONED;
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    if (!linkRefused(e)) throw importError(e, store, d, dst);
    fellBack = code;
    removeIfPartial(dst, method, e);
  }
  copyBlob(store, src, d, dst, mode, method !== 'copy' || sizeProven);
  return fellBack === undefined ? COPIED : { used: 'copy', fellBack };
}

/**
 * Copies of blobs up to this size go through one read and one write with a per-thread buffer;
 * larger ones through copyFileSync (copy_file_range), which never pulls the bytes into the process.
 */
const SMALL_COPY_MAX = 256 << 10;
let scratch: Buffer | undefined;

/**
 * Creates `dst` (exclusive, so never through a symlink) holding a copy of blob `d` from `src`, with
 * exactly `mode` (already masked by the umask, so open() gives it and no chmod follows).
 *
 * Perf: copyFileSync after a statSync cost 9 calls per file (statx, two opens, fstat,
 * copy_file_range, fchmod, chmod, two closes); a copy checkout of the node_modules corpus (26,117
 * files, median 8 KiB) spent 0.74 s in the kernel and 0.48 s in JS. A small blob is now open, read,
 * open, write, close, close, and its size is proven by the read itself: asking for one byte more
 * than the tree's size returns exactly that size only when the blob has it (a regular file's read
 * is short only at its end). Measured after, 5 runs interleaved with the old code (load ~4): kernel
 * 0.74 -> 0.57 s, JS 0.48 -> 0.52 s, wall 1.31 -> 1.17 s (medians).
 */
function copyBlob(store: LocalStore, src: string, d: Digest, dst: string, mode: number, checked: boolean): void {
  if (d.size > SMALL_COPY_MAX) {
    if (!checked) checkStoredSize(store, src, d, dst);
    try {
      fs.copyFileSync(src, dst, COPYFILE_EXCL);
      fs.chmodSync(dst, mode);
    } catch (e) {
      removeIfPartial(dst, 'copy', e);
      throw importError(e, store, d, dst);
    }
    return;
  }
  let input: number;
  try {
    input = store.openBlobFile(d, src);
  } catch (e) {
    if (e instanceof StoreDamagedError) throw e;
    throw importError(e, store, d, dst);
  }
  try {
    const buf = (scratch ??= Buffer.allocUnsafe(SMALL_COPY_MAX + 1));
    let got = 0;
    try {
      for (;;) {
        const want = d.size + 1 - got;
        const n = readSync(input, buf, got, want, got);
        got += n;
        // A short read of a regular file is its end: no second read to see 0 (26,117 calls).
        if (n === 0 || n < want) break;
      }
    } catch (e) {
      throw fsError(e, 'cannot read blob', src);
    }
    if (got !== d.size) throw sizeMismatch(d, dst, fs.fstatSync(input).size);
    let out: number;
    try {
      out = openSync(dst, CREATE_EXCL, mode);
    } catch (e) {
      throw fsError(e, 'cannot write', dst);
    }
    try {
      for (let off = 0; off < got; ) off += writeSync(out, buf, off, got - off);
    } catch (e) {
      closeSync(out);
      removeIfPartial(dst, 'copy', e);
      throw fsError(e, 'cannot write', dst);
    }
    closeSync(out);
  } finally {
    closeSync(input);
  }
}

/**
 * The tree's size must be the stored blob's (blobs are stored under their SHA-256 only, so a tree
 * can name the right hash with a wrong size). One stat, no re-hash: the store verified the bytes.
 */
function checkStoredSize(store: LocalStore, src: string, d: Digest, dst: string): void {
  let st: fs.Stats | undefined;
  try {
    // lstat, refusing anything but a regular file in a real shard folder: a symlink planted in the
    // store is never linked into a checkout nor copied through (same one call as the stat was).
    st = store.blobFileStat(d, false, src);
  } catch (e) {
    if (e instanceof StoreDamagedError) throw e;
    throw importError(e, store, d, dst); // a store folder that is a file (ENOTDIR): named, not raw
  }
  if (st === undefined) throw importError(Object.assign(new Error('no such blob'), { code: 'ENOENT' }), store, d, dst);
  if (st.size !== d.size) throw sizeMismatch(d, dst, st.size);
}

function sizeMismatch(d: Digest, dst: string, actual: number): DigestMismatchError {
  return new DigestMismatchError(`the tree gives ${dst} the size ${d.size}, but blob ${d.hash} is ${actual} bytes; nothing was written there`, {
    digest: formatDigest(d),
    path: dst,
  });
}

/**
 * Creates `dst` (exclusive: never through an existing name) holding verified bytes (from --verify
 * or a fetch), with exactly `mode` (already masked by the umask, so open() gives it; no chmod).
 * Perf: the chmod this once added took 0.33 and 0.19 s of the two workers' time in a profile of
 * the Linux tree's direct checkout (6.1 s each).
 */
export function writeBytes(dst: string, bytes: Uint8Array, mode: number): void {
  let fd: number;
  try {
    fd = openSync(dst, CREATE_EXCL, mode);
  } catch (e) {
    // Not created here (EEXIST: the name is someone else's): nothing to remove.
    throw fsError(e, 'cannot create', dst);
  }
  try {
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
    closeSync(fd);
  } catch (e) {
    // This file was created here: a partial one is not left behind (disk full, say).
    try {
      closeSync(fd);
    } catch {
      /* closed already, or failing as the write did */
    }
    removeIfPartial(dst, 'copy', e);
    throw fsError(e, 'cannot write', dst);
  }
}

/**
 * After a failed clone or copy into `dst`, removes what it may have left. Never after EEXIST: the
 * exclusive create failed because the name already belonged to something else, which is not ours
 * to remove. A hardlink either exists whole or not at all.
 */
export function removeIfPartial(dst: string, method: ImportMethod, e: unknown): void {
  if (method === 'hardlink' || (e as NodeJS.ErrnoException).code === 'EEXIST') return;
  try {
    fs.unlinkSync(dst);
  } catch {
    /* not created */
  }
}

function importError(e: unknown, store: LocalStore, d: Digest, dst: string): Error {
  if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !store.hasSync(d)) {
    return new BlobNotFoundError(`blob ${formatDigest(d)} for ${dst} is not in the store ${store.root}`, {
      digest: formatDigest(d),
      path: dst,
      hint: 'fetch it with `treecast pull` or check out with --remote',
    });
  }
  return store.damagedBlobError(e, d) ?? fsError(e, 'cannot write', dst);
}
