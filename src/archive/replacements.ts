/**
 * What `unpack --force` replaces, and how without ever losing the user's file: the new version of
 * an entry that clashes with an existing file or symlink is written beside it, in the same
 * directory, under a clearly named temporary name (`.treecast-new-<run>-<entry index>`), created
 * with O_EXCL like every other file of the run. Only once the whole archive was judged and every
 * entry extracted are the new versions renamed over the old ones (rename(2) replaces atomically
 * and never follows the link it replaces). A failure or an interruption before that removes the
 * temporary files and leaves every existing file as it was; a kill leaves, per file, either the
 * original or the original plus a `.treecast-new-*` file, never neither.
 *
 * Staging in the clashing file's own directory (rather than one staging directory) keeps the
 * rename on the same filesystem and makes a directory the run may not write into fail while
 * extracting, before anything is replaced.
 *
 * Format-neutral: it knows entries only by index and relative path, so every archive reader that
 * feeds the extraction pipeline shares it.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fsError } from '../errors.js';

export const STAGED_PREFIX = '.treecast-new-';

export interface ReplacedEntry {
  index: number;
  /** Relative '/'-separated path. */
  path: string;
}

/** Where an entry is written: its place under root, or its staged name beside it. */
export function entryDestination(root: string, path: string, stagedAs: string | undefined): string {
  if (stagedAs === undefined) return `${root}/${path}`;
  const cut = path.lastIndexOf('/');
  return cut < 0 ? `${root}/${stagedAs}` : `${root}/${path.slice(0, cut)}/${stagedAs}`;
}

export class Replacements {
  private readonly run: string;
  /** Staged name by entry index, in the order entries were added. */
  private readonly staged = new Map<number, { path: string; name: string }>();

  /** `names` holds every entry path of the archive, so a staged name never equals one of them. */
  constructor(
    private readonly root: string,
    names: ReadonlySet<string>,
  ) {
    let run: string;
    do run = `${STAGED_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}-`;
    while ([...names].some((n) => n.slice(n.lastIndexOf('/') + 1).startsWith(run)));
    this.run = run;
  }

  get size(): number {
    return this.staged.size;
  }

  /** Marks an entry as replacing an existing file: it will be written under a staged name. */
  add(e: ReplacedEntry): void {
    this.staged.set(e.index, { path: e.path, name: `${this.run}${e.index}` });
  }

  /** The staged name of an entry, or undefined when it is written in place. */
  stagedAs(index: number): string | undefined {
    return this.staged.get(index)?.name;
  }

  /** Where an entry is written by this run. */
  destination(e: ReplacedEntry): string {
    return entryDestination(this.root, e.path, this.stagedAs(e.index));
  }

  /**
   * Renames the staged versions over the originals, in archive order (with `keep`, only the
   * entries it accepts; the others are removed). Runs to the end once started: each rename is
   * atomic, and the first failure is reported after the rest were tried.
   */
  commit(keep: (index: number) => boolean = () => true): void {
    let first: unknown;
    for (const [index, s] of this.staged) {
      const from = entryDestination(this.root, s.path, s.name);
      if (!keep(index)) {
        removeIfPresent(from);
        continue;
      }
      try {
        fs.renameSync(from, `${this.root}/${s.path}`);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // never written (its batch failed)
        first ??= fsError(e, 'cannot replace', `${this.root}/${s.path}`);
        removeIfPresent(from);
      }
    }
    this.staged.clear();
    if (first) throw first;
  }

  /** Removes every staged file; the originals stay as they were. */
  discard(): void {
    for (const s of this.staged.values()) removeIfPresent(entryDestination(this.root, s.path, s.name));
    this.staged.clear();
  }
}

function removeIfPresent(p: string): void {
  try {
    fs.unlinkSync(p);
  } catch {
    /* never written, or already gone */
  }
}
