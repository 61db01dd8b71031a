/**
 * A hardlink checkout's fetched blob, written once: the verified bytes are written at the target's
 * name, and that file is then linked into the store under the blob's name. Before, the bytes went
 * to a temporary name in the store, were renamed to the blob's name, and the target was linked to
 * it: one rename more per file for the same result (one read-only inode, at both names).
 *
 * The guarantees, and what keeps each:
 * - A blob enters the store only verified and whole: the caller hashed the bytes (apply-op.ts
 *   verifiedBytes) before this is called, and the store's name is made by link() only after every
 *   byte is written, so no reader of the store ever sees a part. A link is atomic; no tmp + rename
 *   is needed.
 * - The store's name is given to the file this call wrote, not to whatever is at the target's name
 *   by then: the target's folder is the user's, and another process could put a file (or a
 *   symlink, which link() would link as itself) there between the write and the link. So the
 *   linked inode is compared with the open file's; on a difference the store's name is removed at
 *   once and the checkout fails with a TargetError naming the file (nothing is removed there: the
 *   name is no longer this checkout's).
 * - Never written through a symlink: the file is created exclusively (O_CREAT | O_EXCL, which
 *   refuses any existing name, a symlink included, and O_NOFOLLOW besides).
 * - Where the store will not take a link (another filesystem: EXDEV; no hard links: EPERM; ...;
 *   fs/link-refused.ts) the file stays as a copy with the copy's mode, and the blob is stored by
 *   its own write as before. Where the store already holds the blob (EEXIST: another process
 *   stored it meanwhile), the file stays as it is: the same verified bytes, read-only, not shared.
 * - An executable is linked into the store as the blob's executable twin (STORE/cas-exec, mode
 *   0555, local.ts), never as the plain blob, whose inode non-executable files share: its mode is
 *   set on the open descriptor (fchmod, not by name) before the link makes it the twin. The twin
 *   exists only beside its plain blob (gc and hasSync go by the plain one), so the caller stores
 *   that first, by its own write.
 */
import * as fs from 'node:fs';
import type { Digest } from '../core/digest.js';
import { TargetError, fsError } from '../errors.js';
import { linkRefused } from '../fs/link-refused.js';
import { writeVerified } from '../remote/receiver.js';
import { type LocalStore, removeQuietly } from '../store/local.js';

const CREATE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;

/** The mode of a stored blob, and so of every hardlinked checkout file. */
const BLOB_MODE = 0o444;
/** The mode of a blob's executable twin, and so of every hardlinked executable (local.ts). */
const EXEC_TWIN_MODE = 0o555;

export type WriteLinkedOutcome =
  /** The file and the store's blob are one inode. */
  | { used: 'hardlink' }
  /** A copy (mode `copyMode`): the store holds the blob from its own write, or held it already. */
  | { used: 'copy'; fellBack?: string };

/**
 * Creates `dst` holding `bytes` (already verified as `d`) and links it into `store` as blob `d`.
 *
 * Perf: the Linux tree's `checkout --remote --method hardlink` paid, per fetched file, open + write +
 * close + rename in the store, then link into the target; the two checkout workers' profiles held
 * 1.26 s of rename (of 8.0 s busy). Here it is open + write + link + fstat + lstat + close, with no
 * rename (the fstat + lstat of the check cost about a third of it in the same profiles): client CPU
 * (user + sys) 6.24-7.45 s (median 6.89) against 6.68-8.37 s (median 7.02), sys alone 2.70-3.33 s
 * (median 3.05) against 2.95-4.16 s (median 3.24), 9 interleaved pairs at load average 5-11, where
 * wall times were noise.
 */
export function writeLinked(store: LocalStore, d: Digest, bytes: Uint8Array, dst: string, copyMode: number, executable = false): WriteLinkedOutcome {
  return linkIntoStore(store, d, bytes, createWritten(dst, bytes, executable), dst, copyMode, executable);
}

/**
 * Creates `dst` read-only (exclusively) and writes `bytes` into it; the open descriptor. An
 * executable gets the twin's mode exactly (the create's mode is masked by the umask).
 */
export function createWritten(dst: string, bytes: Uint8Array, executable = false): number {
  let fd: number;
  try {
    fd = fs.openSync(dst, CREATE, BLOB_MODE);
  } catch (e) {
    // Not created here (EEXIST: the name is someone else's): nothing to remove.
    throw fsError(e, 'cannot create', dst);
  }
  try {
    for (let off = 0; off < bytes.length; ) off += fs.writeSync(fd, bytes, off, bytes.length - off);
    if (executable) fs.fchmodSync(fd, EXEC_TWIN_MODE);
    return fd;
  } catch (e) {
    fs.closeSync(fd);
    removeQuietly(dst);
    throw fsError(e, 'cannot write', dst);
  }
}

/**
 * Links the file open as `fd`, created at `dst` by createWritten, into the store as blob `d`
 * (whose bytes it holds: `bytes`), or as its executable twin (the plain blob already stored), and
 * closes `fd`. On a failure the file is removed, but not once the store's name was made: then the
 * name `dst` is left as it is, whatever the check finds there.
 */
export function linkIntoStore(store: LocalStore, d: Digest, bytes: Uint8Array, fd: number, dst: string, copyMode: number, executable = false): WriteLinkedOutcome {
  let keep = false;
  try {
    const blob = executable ? store.executablePathForLink(d.hash) : store.blobPathForLink(d.hash);
    try {
      fs.linkSync(dst, blob);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? '';
      if (code === 'EEXIST') {
        keep = true;
        return { used: 'copy' };
      }
      if (!linkRefused(e)) throw fsError(e, 'cannot store blob', blob);
      // The old path: the file is the target's own copy, and the blob is written into the store.
      try {
        fs.fchmodSync(fd, copyMode);
      } catch (err) {
        throw fsError(err, 'cannot write', dst);
      }
      if (!executable) writeVerified(store, d, bytes);
      keep = true;
      return { used: 'copy', fellBack: code };
    }
    keep = true;
    checkLinkedOwn(fd, blob, dst);
    return { used: 'hardlink' };
  } finally {
    fs.closeSync(fd);
    if (!keep) removeQuietly(dst);
  }
}

/**
 * Throws, with the store's new name removed, unless `blob` is the file open as `fd`: the name
 * `dst` was replaced between the write and the link.
 * Both stats are needed: the linked inode is known only by its name, and the written one only by
 * its descriptor (Node has no linkat(AT_EMPTY_PATH) to link the descriptor itself). The fstat's
 * link count alone (2 after linking our own file) would not do: a process that first adds two
 * names of its own to the file, then replaces it at `dst`, leaves that count at 2.
 */
function checkLinkedOwn(fd: number, blob: string, dst: string): void {
  const own = fs.fstatSync(fd);
  const linked = fs.lstatSync(blob, { throwIfNoEntry: false });
  if (linked && linked.ino === own.ino && linked.dev === own.dev) return;
  try {
    fs.unlinkSync(blob);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError(e, 'cannot remove', blob);
  }
  throw new TargetError(`${dst} was replaced while the checkout wrote it; nothing from it was stored`, {
    path: dst,
    hint: 'let nothing else write into the target while the checkout runs, then run the same command again',
  });
}
