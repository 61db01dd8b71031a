/**
 * Puts one blob at a path by clone (reflink), hardlink or copy, with the per-file fallback that
 * pnpm and nativelink use: only errors that mean "this filesystem cannot" fall back to a copy.
 * Every create is exclusive (O_EXCL, link, symlink never follow or replace an existing name), so
 * nothing is ever written through a symlink someone placed in the target.
 */
import * as fs from 'node:fs';
import { formatDigest, type Digest } from '../core/digest.js';
import { BlobNotFoundError, DigestMismatchError, fsError } from '../errors.js';
import type { LocalStore } from '../store/local.js';

export type ImportMethod = 'clone' | 'hardlink' | 'copy';

const { COPYFILE_EXCL, COPYFILE_FICLONE_FORCE } = fs.constants;
const CLONE_FLAGS = COPYFILE_EXCL | COPYFILE_FICLONE_FORCE;

/** Errors that mean the filesystem cannot do this method (as opposed to a real failure). */
const CANNOT = new Set(['EXDEV', 'ENOTSUP', 'EOPNOTSUPP', 'EPERM', 'EMLINK', 'ENOSYS', 'EINVAL']);
/** Of those, the ones that will repeat for every file on this device: stop trying the method. */
export const STICKY = new Set(['EXDEV', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EINVAL']);

export interface ImportOutcome {
  /** The method that did the work. */
  used: ImportMethod;
  /** When the requested method could not, the error code that made it fall back. */
  fellBack?: string;
}

/**
 * Creates `dst` (which must not exist) holding blob `d`. `mode` applies to clones and copies;
 * hardlinks keep the store's read-only mode and link the executable twin for executables.
 */
export function importBlob(store: LocalStore, d: Digest, dst: string, method: ImportMethod, executable: boolean, mode: number): ImportOutcome {
  const src = store.blobPath(d.hash);
  checkStoredSize(store, src, d, dst);
  let fellBack: string | undefined;
  try {
    if (method === 'hardlink') {
      fs.linkSync(executable ? store.executablePathSync(d) : src, dst);
      return { used: 'hardlink' };
    }
    if (method === 'clone') {
      fs.copyFileSync(src, dst, CLONE_FLAGS);
      fs.chmodSync(dst, mode);
      return { used: 'clone' };
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    if (!CANNOT.has(code)) throw importError(e, store, d, dst);
    fellBack = code;
    removeIfPartial(dst, method);
  }
  try {
    fs.copyFileSync(src, dst, COPYFILE_EXCL);
    fs.chmodSync(dst, mode);
  } catch (e) {
    removeIfPartial(dst, 'copy');
    throw importError(e, store, d, dst);
  }
  return { used: 'copy', fellBack };
}

/**
 * The tree's size must be the stored blob's (blobs are stored under their SHA-256 only, so a tree
 * can name the right hash with a wrong size). One stat, no re-hash: the store verified the bytes.
 */
function checkStoredSize(store: LocalStore, src: string, d: Digest, dst: string): void {
  const st = fs.statSync(src, { throwIfNoEntry: false });
  if (st === undefined) throw importError(Object.assign(new Error('no such blob'), { code: 'ENOENT' }), store, d, dst);
  if (st.size !== d.size) {
    throw new DigestMismatchError(`the tree gives ${dst} the size ${d.size}, but blob ${d.hash} is ${st.size} bytes; nothing was written there`, {
      digest: formatDigest(d),
      path: dst,
    });
  }
}

/** Writes verified bytes (from --verify or a fetch) to a new file. */
export function writeBytes(dst: string, bytes: Uint8Array, mode: number): void {
  try {
    fs.writeFileSync(dst, bytes, { flag: 'wx', mode });
    fs.chmodSync(dst, mode);
  } catch (e) {
    removeIfPartial(dst, 'copy');
    throw fsError(e, 'cannot write', dst);
  }
}

function removeIfPartial(dst: string, method: ImportMethod): void {
  // A hardlink either exists whole or not at all; a failed copy or clone may leave a partial file.
  if (method === 'hardlink') return;
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
  return fsError(e, 'cannot write', dst);
}
