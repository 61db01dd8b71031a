/**
 * What `serve` makes before it listens: the store's folders (the server counts and checks the
 * store as it is built) and the access log. A start that then fails (a port in use, an address not
 * this machine's) takes back what this run made, so a mistyped --listen leaves no empty store or
 * log behind: folders only while they are still empty, the log only while it is still empty, and
 * nothing that was there before.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { fsError } from '../errors.js';
import { makeDirectories, removeEmptyDirectories } from '../fs/make-dirs.js';
import { LocalStore, safeReaddir } from '../store/local.js';

export class ServeSetup {
  /** The first folder made for the store's root (the root or a parent), when it did not exist. */
  private madeRoot: string | undefined;
  /** What the root held before, when it existed: the folders the store adds beside them are this run's. */
  private before: Set<string> | undefined;
  private root: string | undefined;
  private log: string | undefined;

  /** Opens the store at `root`, making its folders where missing. */
  openStore(root: string): LocalStore {
    this.root = root;
    try {
      if (fs.statSync(root, { throwIfNoEntry: false })?.isDirectory()) this.before = new Set(fs.readdirSync(root));
      else this.madeRoot = makeDirectories(root);
    } catch (e) {
      throw fsError(e, 'cannot create store at', root);
    }
    return LocalStore.open(root);
  }

  /** Opens the access log for appending, made if missing. */
  openLog(path: string): number {
    const existed = fs.existsSync(path);
    try {
      const fd = fs.openSync(path, 'a');
      if (!existed) this.log = path;
      return fd;
    } catch (e) {
      throw fsError(e, 'cannot open access log', path);
    }
  }

  /** Removes what this run made and nothing was written into since. */
  abandon(): void {
    if (this.log !== undefined && fs.statSync(this.log, { throwIfNoEntry: false })?.size === 0) fs.rmSync(this.log, { force: true });
    if (this.root === undefined) return;
    if (this.madeRoot !== undefined) removeEmptyDirectories(this.madeRoot);
    else if (this.before !== undefined) {
      for (const name of safeReaddir(this.root)) if (!this.before.has(name)) removeEmptyDirectories(join(this.root, name));
    }
  }
}
