/**
 * `mkdir -p` that reports the real error. Node 20's `mkdirSync(p, { recursive: true })` throws
 * ENOENT where the system said EROFS or EACCES for a missing level, so a user writing to a
 * read-only file system would be told a directory does not exist. On ENOENT, the missing levels
 * are made one by one, which throws what the system really said.
 */
import * as fs from 'node:fs';
import { dirname } from 'node:path';

/** Creates `path` and its missing parents; returns the first directory created, as mkdirSync does. */
export function makeDirectories(path: string): string | undefined {
  try {
    return fs.mkdirSync(path, { recursive: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    const missing: string[] = [];
    for (let p = path; !fs.existsSync(p) && dirname(p) !== p; p = dirname(p)) missing.push(p);
    for (const p of missing.reverse()) fs.mkdirSync(p);
    throw e;
  }
}
