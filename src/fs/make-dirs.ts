/**
 * `mkdir -p` that reports the real error. Node 20's `mkdirSync(p, { recursive: true })` throws
 * ENOENT where the system said EROFS or EACCES for a missing level, so a user writing to a
 * read-only file system would be told a directory does not exist; and it loops forever where
 * mkdir says ENOENT under a parent that exists (`/proc/x`). So each level is made with a plain
 * mkdir, parents first only when the system says one is missing, and its own error is thrown.
 */
import * as fs from 'node:fs';
import { dirname } from 'node:path';

/** Creates `path` and its missing parents; returns the first directory created, as mkdirSync does. */
export function makeDirectories(path: string): string | undefined {
  try {
    fs.mkdirSync(path);
    return path;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && fs.statSync(path, { throwIfNoEntry: false })?.isDirectory()) return undefined;
    if (code !== 'ENOENT' || dirname(path) === path || fs.existsSync(dirname(path))) throw e;
  }
  const first = makeDirectories(dirname(path));
  fs.mkdirSync(path);
  return first ?? path;
}

/**
 * Removes `path` and every directory under it that is (or, its empty subdirectories gone, becomes)
 * empty, deepest first; anything else is left where it is. Only rmdir is used, which never removes
 * a file and fails on a directory that is not empty, so nothing written meanwhile can be lost.
 * Symlinks are not followed. Returns whether `path` itself was removed.
 */
export function removeEmptyDirectories(path: string): boolean {
  let names: fs.Dirent[];
  try {
    names = fs.readdirSync(path, { withFileTypes: true });
  } catch {
    return false; // gone, not a directory, or unreadable: nothing to remove here
  }
  for (const d of names) if (d.isDirectory()) removeEmptyDirectories(`${path}/${d.name}`);
  try {
    fs.rmdirSync(path);
    return true;
  } catch {
    return false;
  }
}
