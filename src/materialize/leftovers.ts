/**
 * Temporary files a stopped `--direct` checkout left in its target. Such a checkout streams each
 * blob too large for memory into a temporary name beside its file (fetch-file.ts), removed once
 * the file has its name; a kill meanwhile leaves it. Its name holds the run's token, which the
 * record of the unfinished checkout keeps (record.ts RunMarks.token): `.treecast-TOKEN-RANDOM.tmp`.
 * So the next checkout into that target (the same one run again, or one of another tree, which
 * reads the same record: checkout.ts) removes exactly the names its stopped run could have made,
 * in the folders where the stopped run's tree has a file that large, and `status` names them as that checkout's;
 * a file of the user's, whatever it is called, is never matched by a pattern alone.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Digest } from '../core/digest.js';
import type { TreeLookup } from '../core/tree-diff.js';
import { MAX_DEPTH } from '../core/names.js';
import { fsError } from '../errors.js';

const TOKEN_RE = /^[0-9a-f]{16}$/;

/** A new run's token: 16 hex digits. */
export function newRunToken(): string {
  return randomBytes(8).toString('hex');
}

export function isRunToken(v: unknown): v is string {
  return typeof v === 'string' && TOKEN_RE.test(v);
}

/** A new temporary name in `dir` for a run with `token`. */
export function tempPath(dir: string, token: string | undefined): string {
  const random = randomBytes(6).toString('hex');
  return token === undefined ? `${dir}/.treecast-${random}.tmp` : `${dir}/.treecast-${token}-${random}.tmp`;
}

/** Whether `name` is a temporary name tempPath gives a run with `token`. */
export function isTempOf(name: string, token: string): boolean {
  const prefix = `.treecast-${token}-`;
  return name.length === prefix.length + 12 + 4 && name.startsWith(prefix) && name.endsWith('.tmp') && /^[0-9a-f]{12}$/.test(name.slice(prefix.length, -4));
}

/**
 * The folders (relative to the target; '' is the root) where the tree `root` has a file over
 * `minSize` bytes: the only ones a direct checkout of it makes temporary files in. Each distinct
 * subtree is looked into once for such a file (memo by digest).
 */
export function largeFileDirs(root: Digest, tree: TreeLookup, minSize: number): string[] {
  const holds = new Map<string, boolean>();
  const out: string[] = [];
  const walk = (d: Digest, rel: string, depth: number): boolean => {
    const known = holds.get(d.hash);
    if (known === false || depth > MAX_DEPTH) return false;
    const dir = tree(d);
    let any = false;
    if (dir.files.some((f) => f.digest.size > minSize)) {
      out.push(rel);
      any = true;
    }
    for (const sub of dir.directories) if (walk(sub.digest, rel === '' ? sub.name : `${rel}/${sub.name}`, depth + 1)) any = true;
    holds.set(d.hash, any);
    return any;
  };
  walk(root, '', 0);
  return out;
}

/** The temporary files of the run with `token` in these folders of `rootAbs` (relative paths). */
export function findLeftovers(rootAbs: string, dirs: readonly string[], token: string): string[] {
  const found: string[] = [];
  for (const rel of dirs) {
    let names: string[];
    try {
      names = fs.readdirSync(rel === '' ? rootAbs : `${rootAbs}/${rel}`);
    } catch {
      continue; // not made yet, or not a folder now: nothing of the run's in it
    }
    for (const name of names) if (isTempOf(name, token)) found.push(rel === '' ? name : `${rel}/${name}`);
  }
  return found.sort();
}

/** Removes the temporary files of the run with `token` in these folders (only regular files); the ones removed. */
export function removeLeftovers(rootAbs: string, dirs: readonly string[], token: string): string[] {
  const removed: string[] = [];
  for (const rel of findLeftovers(rootAbs, dirs, token)) {
    const p = `${rootAbs}/${rel}`;
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    if (!st?.isFile()) continue;
    try {
      fs.unlinkSync(p);
      removed.push(rel);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError(e, 'cannot remove the stopped checkout\'s temporary file', p);
    }
  }
  return removed;
}
