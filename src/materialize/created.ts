/**
 * What a checkout into an empty or new target created, so that one stopped by a blob the remote
 * lacks can remove exactly that and leave the target as it was before (checkout.ts, on a miss).
 *
 * Only what this checkout is known to have made is recorded: a directory once its mkdir returned
 * (the executor asks for the next step only after making it), a file or symlink once the worker
 * batch that wrote it came back. A batch makes its names in order and counts them in a shared
 * `progress` cell as it goes (apply-op.ts), so after a batch failed, for whatever reason, even one
 * whose error names no path of its own (a store blob it could not read, a worker that died), the
 * names before the count are the ones it made. The name it failed at is not recorded: a failed
 * create removes what it left itself, and EEXIST means the name was someone else's. Every create
 * of a checkout is exclusive (O_EXCL, link, symlink: import-file.ts), so a recorded name was made
 * by this checkout, not found; a name the batch never reached may hold a user's file and is never
 * recorded. Directories are removed with rmdir, never recursively: one a user put something into
 * while the checkout ran keeps that, and stays.
 */
import * as fs from 'node:fs';
import { dirname } from 'node:path';
import { fsError } from '../errors.js';
import type { WorkerPool } from '../fs/worker-pool.js';
import type { ApplyBatch } from './apply-op.js';
import type { Step } from './plan.js';

export class CreatedRecord {
  private readonly dirs: string[] = [];
  /**
   * Files and symlinks made, per batch: the first `made` of the batch's names under `root`, as the
   * batch carried them (NUL-joined when packed for a worker, else the plan's own names).
   * Perf: split and joined to `root` only by undo(). The absolute path of each name, 78k of them
   * on the Linux tree, stayed live to the end of a restore by name from a plain cache, the end
   * being that checkout's peak: 10.7 MB of heap held for the Linux tree's 78,579 files under a
   * target path of 48 characters, 2.3 MB as joined strings (measured after gc()).
   */
  private readonly files: { root: string; rels: string | string[]; made: number }[] = [];

  /**
   * @param rootAbs the target
   * @param madeFrom the outermost directory of `rootAbs` this checkout created (when it made the
   * target and missing parents), removed level by level up to it; undefined when the target existed
   */
  constructor(
    private readonly rootAbs: string,
    private readonly madeFrom: string | undefined,
  ) {}

  /** The plan's steps, passed through; records each directory once the executor has made it. */
  *track(steps: Iterable<Step>): Generator<Step> {
    for (const s of steps) {
      yield s;
      if ('mkdir' in s) this.dirs.push(s.mkdir);
    }
  }

  /** `pool`, recording the names each 'materialize.apply' batch made (see above). */
  recording(pool: WorkerPool): WorkerPool {
    const wrapped = Object.create(pool) as WorkerPool;
    wrapped.run = async <T>(op: Parameters<WorkerPool['run']>[0], payload: unknown, transfer?: ArrayBuffer[]): Promise<T> => {
      if (op !== 'materialize.apply') return pool.run<T>(op, payload, transfer);
      const b = payload as ApplyBatch;
      const progress = new Int32Array(new SharedArrayBuffer(4));
      try {
        return await pool.run<T>(op, { ...b, progress }, transfer);
      } finally {
        const made = Atomics.load(progress, 0);
        if (made > 0) this.files.push({ root: b.root, rels: 'rels' in b.writes ? b.writes.rels : b.writes.slice(0, made).map((w) => w.rel), made });
      }
    };
    return wrapped;
  }

  /**
   * Removes what was recorded: files and symlinks, then directories deepest first (rmdir; one
   * that is not empty stays, with its parents: left there, not lost), then the target and the
   * parents this checkout made.
   */
  undo(): void {
    let kept = false;
    const remove = (p: string, dir: boolean) => {
      try {
        if (dir) fs.rmdirSync(p);
        else fs.unlinkSync(p);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return;
        if (dir && (code === 'ENOTEMPTY' || code === 'EEXIST')) kept = true;
        else throw fsError(e, 'cannot remove', p);
      }
    };
    for (const { root, rels, made } of this.files) for (const rel of typeof rels === 'string' ? rels.split('\0', made) : rels) remove(`${root}/${rel}`, false);
    for (let i = this.dirs.length - 1; i >= 0; i--) remove(`${this.rootAbs}/${this.dirs[i]}`, true);
    if (this.madeFrom !== undefined) {
      for (let p = this.rootAbs; ; p = dirname(p)) {
        remove(p, true);
        if (p === this.madeFrom || kept || dirname(p) === p) break;
      }
    }
  }
}
