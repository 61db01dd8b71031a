/**
 * unpack of a tar stream (plain, gzip or zstd) into DIR. A stream cannot be judged whole before
 * writing, as a zip's central directory can, so everything is written into a fresh staging
 * directory inside DIR (same filesystem, so publishing is a rename) and published only once the
 * whole stream was read and judged:
 *
 *   read + decompress + parse + judge (this thread) -> batches of directories and files (worker
 *   threads write them into staging, making missing parents as they go) -> end of archive ->
 *   hardlinks, then symlinks (last: nothing is written through one), split across the workers ->
 *   publish (rename into DIR; existing files are clashes unless --force, which sets them aside
 *   until every rename succeeded) -> directory modes and times, deepest first (by subtree, across
 *   the workers).
 *
 * A refusal, an error or SIGINT/SIGTERM removes the staging directory: DIR is left as it was.
 * A staging directory left by a killed process is recognised by its name (and dead pid) and
 * removed by the next unpack into the same DIR. The existing files --force replaces are set aside
 * in a folder of their own beside it (`.treecast-replaced-*`), never inside staging: that
 * clean-up never removes one, so a file that could not be put back (or that a kill left there) is
 * never lost, and staging's top level holds only the archive's own names (any name, `.replaced`
 * too).
 */
import * as fs from 'node:fs';
import { resolve } from 'node:path';
import { TargetError, TreecastError, UsageError, fsError } from '../errors.js';
import { WorkerPool } from '../fs/worker-pool.js';
import { foldName } from './entry-rules.js';
import { tarJobs, type TarInput } from './tar-input.js';
import { BATCH_BYTES, transferOf, walkTar, type TarDir, type TarFile, type TarReadOptions, type TarSymlink } from './tar-walk.js';
import { META_FIELDS, type DataBatch, type DataBatchResult, type DirMetaBatch, type LinkBatch } from './tar-write-op.js';
import { currentUmask, directoryClash, prepareRoot, throwIfAborted, type ArchiveSummary, type UnpackOptions } from './unpack.js';

export interface TarUnpackOptions extends UnpackOptions, TarReadOptions {
  /** Restore owners from the archive (root only). */
  sameOwner?: boolean;
}

export const STAGING_PREFIX = '.treecast-unpack-';
/** Where publish sets aside the files --force replaces (see publish). */
export const ASIDE_PREFIX = '.treecast-replaced-';
const KEEP_ASIDE = 'move the files back by hand; treecast leaves that directory in place';
/** The name mkdtemp gives a staging directory: the prefix, the pid, six random characters. */
const STAGING_RE = /^\.treecast-unpack-(\d+)-[A-Za-z0-9]{6}$/;

const CREATE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;

export async function unpackTar(input: TarInput, label: string, dir: string, opts: TarUnpackOptions): Promise<ArchiveSummary> {
  const t0 = process.hrtime.bigint();
  if (opts.keepPartial) throw new UsageError('--keep-partial applies to zip archives only (a tar archive is published whole or not at all)');
  if (opts.sameOwner && process.getuid?.() !== 0) throw new UsageError('--same-owner needs root');
  const root = resolve(dir);
  const created: { rootCreated: string | undefined } = { rootCreated: undefined };
  prepareRoot(root, created);
  removeStaleStaging(root);
  let staging: string;
  try {
    staging = fs.mkdtempSync(`${root}/${STAGING_PREFIX}${process.pid}-`);
  } catch (e) {
    if (created.rootCreated) fs.rmSync(created.rootCreated, { recursive: true, force: true });
    throw fsError(e, 'cannot write into', root);
  }
  const pool = new WorkerPool(tarJobs(input, opts.jobs), {});
  const sameOwner = opts.sameOwner === true;
  const explicitDirs: TarDir[] = [];
  const symlinks: TarSymlink[] = [];
  /** Hardlink path -> the file it names (a hardlink to a hardlink names that one's file). */
  const hardlinks = new Map<string, string>();
  // Perf: directories are made by the workers, with the batch that follows them (and any parent a
  // file finds missing); made here, their 5,052 mkdirs were 0.10 s of this thread for the
  // node_modules corpus (--cpu-prof), and this thread is the one all others wait on.
  let dirsToMake: string[] = [];
  const umask = currentUmask();
  let done = 0;
  let bytes = 0;
  let large: LargeFileWriter | undefined;
  const pieces: Buffer[] = []; // shared by the large files, one after another
  const finishing = new Set<Promise<void>>();
  let largeFailure: { e: unknown } | undefined;
  let keep = false;

  try {
    const fold = foldsNames(staging) ? foldName : undefined;
    // Perf: a file larger than a batch buffer is streamed (the walk would give it a buffer of its own,
    // which the Linux tree's ten 8-24 MiB files held for 142 MB of peak RSS until a GC came).
    const largeBytes = Math.min(opts.largeEntryBytes ?? BATCH_BYTES, BATCH_BYTES);
    const walked = await walkTar(input, label, { ...opts, fold }, { parallelism: pool.parallelism, signal: opts.signal, largeBytes }, {
      dir: (e) => {
        dirsToMake.push(e.path);
        explicitDirs.push(e);
      },
      symlink: (e) => symlinks.push(e),
      // Resolved now, so the tail can make links in any order, on several threads.
      hardlink: (e) => hardlinks.set(e.path, hardlinks.get(e.target) ?? e.target),
      batch: async (files, data) => {
        const dirs = dirsToMake.join('\0');
        dirsToMake = [];
        const meta = new Float64Array(files.length * META_FIELDS);
        for (let i = 0, k = 0; i < files.length; i++, k += META_FIELDS) {
          const f = files[i]!;
          meta[k] = f.perm;
          meta[k + 1] = f.mtime;
          meta[k + 2] = f.size;
          meta[k + 3] = f.at;
          meta[k + 4] = f.uid;
          meta[k + 5] = f.gid;
        }
        const payload: DataBatch = { root: staging, umask, sameOwner, dirs, paths: files.map((f) => f.path).join('\0'), meta, data };
        // Perf: --cpu-prof charges postMessage 0.4-0.7 ms per batch (81 ms for the node_modules
        // corpus's ~110 posts), but perf, which samples only time on a CPU, found 5 ms in the same
        // run: the rest is this thread waiting for a core after waking the worker (2 cores, 4+
        // runnable threads), which V8's wall-clock sampler puts where the thread stopped.
        const r = await pool.run<DataBatchResult>('archive.write', payload, pool.size > 0 ? [meta.buffer, ...transferOf(data)] : undefined);
        done += r.files;
        bytes += r.bytes;
        opts.onProgress?.({ done, total: 0, bytes });
      },
      largeBegin: (e) => {
        const p = `${staging}/${e.path}`;
        try {
          fs.mkdirSync(p.slice(0, p.lastIndexOf('/')), { recursive: true });
          large = new LargeFileWriter(fs.openSync(p, CREATE, 0o600), p, pieces);
        } catch (err) {
          throw fsError(err, 'cannot create', p);
        }
      },
      largeData: (chunk) => large!.write(chunk),
      largeEnd: (e: TarFile) => {
        const l = large!;
        large = undefined;
        const finished = l.finish(() => {
          if (sameOwner) fs.fchownSync(l.fd, e.uid, e.gid);
          fs.fchmodSync(l.fd, e.perm);
          fs.futimesSync(l.fd, e.mtime, e.mtime);
          done++;
          bytes += e.size;
        });
        finishing.add(finished);
        finished.then(
          () => finishing.delete(finished),
          (err: unknown) => (largeFailure ??= { e: err }),
        );
      },
      settle: (all) => {
        if (all) return Promise.all(finishing).then(() => undefined);
        // A failed write of a finished file is reported at the next chunk, not only at the end.
        if (largeFailure) return Promise.reject(largeFailure.e);
        return large?.behind();
      },
    });
    throwIfAborted(opts.signal);

    // The tail, after every file was written: directories named after the last batch, hardlinks,
    // then symlinks (so nothing was written through one), split across the workers.
    // Perf: on this thread, the node_modules corpus's tail (3,625 hardlinks, 2,605 symlinks, then
    // publish and directory modes) took 0.17 s (--cpu-prof, one run) while the workers stood idle.
    await Promise.all(linkBatches(staging, sameOwner, dirsToMake, hardlinks, symlinks, Math.max(1, pool.size)).map((b) => pool.run('archive.links', b)));
    throwIfAborted(opts.signal);
    publish(staging, root, opts.force === true);

    // Directory modes and times last, deepest first, so writing into them no longer changes them.
    // Perf: split across the workers by subtree (each deepest first): on this thread, the Linux
    // tree's 5,095 directories took 32 ms of chmod and utimes (--cpu-prof, one run, shared machine)
    // while the workers stood idle.
    const dirPlan = dirMetaPlan(explicitDirs, Math.max(1, pool.size));
    await Promise.all(dirPlan.parts.map((part) => pool.run('archive.dirmeta', dirMetaBatch(root, sameOwner, part))));
    if (dirPlan.above.length > 0) await pool.run('archive.dirmeta', dirMetaBatch(root, sameOwner, dirPlan.above));
    return {
      entries: walked.entries,
      files: walked.files + walked.hardlinks,
      dirs: walked.dirs + walked.impliedDirs,
      symlinks: walked.symlinks,
      bytesIn: input.bytesIn(),
      bytesOut: walked.bytesOut,
      seconds: Number(process.hrtime.bigint() - t0) / 1e9,
    };
  } catch (err) {
    // A root this run made holds the files set aside that could not be put back: kept.
    if (err instanceof TreecastError && err.hint === KEEP_ASIDE) keep = true;
    else if (created.rootCreated) fs.rmSync(created.rootCreated, { recursive: true, force: true });
    throw err;
  } finally {
    await large?.abandon();
    await Promise.allSettled(finishing);
    await pool.close();
    fs.rmSync(staging, { recursive: true, force: true });
  }
}

// Perf: a file too large to batch (over 8 MiB) is written by the libuv pool in 4 MiB pieces,
// off this thread, while the parser goes on: written here with writeSync, the one 100+ MB file of
// the node_modules corpus was 0.43 s of this thread's time (--cpu-prof), more than judging all
// 33,900 entries.
const LARGE_PIECE = 4 << 20;
const LARGE_AHEAD = 16 << 20;

/** Writes one large file in order: pieces copied from the input (whose buffers are reused), written asynchronously. */
class LargeFileWriter {
  private piece: Buffer | undefined;
  private used = 0;
  private queued = 0;
  private chain: Promise<void> = Promise.resolve();
  private failed = false;

  constructor(
    readonly fd: number,
    readonly path: string,
    /** Pieces written and free again, reused by the next large file too. */
    private readonly spare: Buffer[],
  ) {}

  write(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      this.piece ??= this.spare.pop() ?? Buffer.allocUnsafeSlow(LARGE_PIECE);
      // Perf: fill, one native memcpy (the chunk is a view of a shared batch buffer, which
      // Buffer#copy reads element by element: see the walk's copy).
      const n = Math.min(this.piece.length - this.used, chunk.length - off);
      this.piece.fill(chunk.subarray(off, off + n), this.used, this.used + n);
      this.used += n;
      off += n;
      if (this.used === this.piece.length) this.flush();
    }
  }

  /** A promise while more than LARGE_AHEAD bytes wait to be written (or a write failed). */
  behind(): Promise<void> | undefined {
    return this.queued > LARGE_AHEAD || this.failed ? this.chain : undefined;
  }

  /** Writes what is left, runs `then` (mode, times), closes; rejects with the first error. */
  finish(then: () => void): Promise<void> {
    this.flush();
    const fd = this.fd;
    const done = this.chain.then(then).then(
      () => fs.closeSync(fd),
      (err) => {
        fs.closeSync(fd);
        throw err instanceof TreecastError ? err : fsError(err, 'cannot set mode or time of', this.path);
      },
    );
    done.catch(() => {});
    return done;
  }

  /** After a failure elsewhere: waits for writes under way, then closes. */
  async abandon(): Promise<void> {
    await this.chain.catch(() => {});
    fs.closeSync(this.fd);
  }

  private flush(): void {
    const piece = this.piece;
    const n = this.used;
    if (!piece || n === 0) return;
    this.piece = undefined;
    this.used = 0;
    this.queued += n;
    this.chain = this.chain.then(async () => {
      let off = 0;
      try {
        while (off < n) off += await new Promise<number>((res, rej) => fs.write(this.fd, piece, off, n - off, null, (e, k) => (e ? rej(e) : res(k))));
      } catch (e) {
        this.failed = true;
        throw fsError(e, 'cannot write', this.path);
      }
      this.queued -= n;
      this.spare.push(piece);
    });
    this.chain.catch(() => {});
  }
}

function depth(p: string): number {
  let n = 0;
  for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) n++;
  return n;
}

/**
 * How the directories whose mode and time the archive names are split: `parts`, to run at once,
 * each a set of whole subtrees (deepest first), then `above`, the directories over subtrees that
 * were split (deepest first), once every part is done. No part holds an ancestor of a directory in
 * another part, so no part takes the search permission from a directory another still has to
 * enter (which matters when not root), and the parts run in any order.
 *
 * The subtrees start as the top-level ones; while the largest holds more than a part's share (and
 * has directories below its top), it is split into the subtrees one level down, its top waiting
 * in `above`. So an archive under one top-level directory (`package/`, `linux-6.1/`, the
 * node_modules corpus's `.pnpm`) is split below it.
 * Perf: split by top-level directory alone, the node_modules corpus's 5,052 directories (all but
 * two under `.pnpm`) went to one worker, 31 ms of its CPU while the other stood idle; split below
 * `.pnpm`, 17 and 16 ms (perf, one run each, load about 10 on 2 cores).
 */
export function dirMetaPlan<D extends { path: string }>(dirs: readonly D[], n: number): { parts: D[][]; above: D[] } {
  /** Subtree top -> the directories in it (the top itself too, when the archive names it). */
  const trees = new Map<string, D[]>();
  const add = (key: string, d: D) => {
    const t = trees.get(key);
    if (t) t.push(d);
    else trees.set(key, [d]);
  };
  for (const d of dirs) {
    const slash = d.path.indexOf('/');
    add(slash < 0 ? d.path : d.path.slice(0, slash), d);
  }
  const above: D[] = [];
  for (let splits = 0; splits < MAX_SPLITS && n > 1; splits++) {
    let key = '';
    let largest: D[] = [];
    for (const [k, t] of trees) if (t.length > largest.length) [key, largest] = [k, t];
    if (largest.length * n <= dirs.length || largest.every((d) => d.path === key)) break;
    trees.delete(key);
    for (const d of largest) {
      if (d.path === key) {
        above.push(d);
        continue;
      }
      const slash = d.path.indexOf('/', key.length + 1);
      add(slash < 0 ? d.path : d.path.slice(0, slash), d);
    }
  }
  // The largest subtrees first, each to the part with the fewest directories so far.
  const parts: D[][] = Array.from({ length: n }, () => []);
  for (const t of [...trees.values()].sort((a, b) => b.length - a.length)) parts.reduce((min, p) => (p.length < min.length ? p : min)).push(...t);
  return { parts: parts.filter((p) => p.length > 0).map(deepestFirst), above: deepestFirst(above) };
}

/**
 * `dirs` sorted deepest first. Perf: each depth counted once, not twice per comparison: sorting
 * the node_modules corpus's 5,052 directories in two halves took 8.3-8.8 ms by depth() in the
 * comparator, 5.7-6.3 ms so (3 runs each), in the tail where the workers wait for it.
 */
function deepestFirst<D extends { path: string }>(dirs: D[]): D[] {
  const withDepth = dirs.map((d) => ({ d, depth: depth(d.path) }));
  withDepth.sort((a, b) => b.depth - a.depth);
  return withDepth.map((x) => x.d);
}

/** Splits dirMetaPlan makes at most (each a level down one subtree). */
const MAX_SPLITS = 16;

function dirMetaBatch(root: string, sameOwner: boolean, dirs: TarDir[]): DirMetaBatch {
  const meta = new Float64Array(dirs.length * 4);
  for (let i = 0, k = 0; i < dirs.length; i++, k += 4) {
    const d = dirs[i]!;
    meta[k] = d.perm;
    meta[k + 1] = d.mtime;
    meta[k + 2] = d.uid;
    meta[k + 3] = d.gid;
  }
  return { root, sameOwner, paths: dirs.map((d) => d.path), meta };
}

/** Splits the tail into `n` link batches of about equal size (the directories go with the first). */
function linkBatches(root: string, sameOwner: boolean, dirs: string[], hardlinks: Map<string, string>, symlinks: TarSymlink[], n: number): LinkBatch[] {
  const out: LinkBatch[] = [];
  for (let i = 0; i < n; i++) {
    out.push({ root, sameOwner, dirs: i === 0 ? dirs : [], hardlinks: [], linkTargets: [], symlinks: [], symlinkTargets: [], symlinkMeta: new Float64Array(0) });
  }
  let i = 0;
  for (const [path, target] of hardlinks) {
    const b = out[i++ % n]!;
    b.hardlinks.push(path);
    b.linkTargets.push(target);
  }
  const meta = out.map((_, k) => new Float64Array(Math.max(0, Math.ceil((symlinks.length - k) / n)) * 3));
  symlinks.forEach((s, j) => {
    const b = out[j % n]!;
    const k = b.symlinks.length * 3;
    b.symlinks.push(s.path);
    b.symlinkTargets.push(s.target);
    const m = meta[j % n]!;
    m[k] = s.mtime;
    m[k + 1] = s.uid;
    m[k + 2] = s.gid;
  });
  out.forEach((b, k) => (b.symlinkMeta = meta[k]!));
  return out;
}

/** Whether names that differ in case (or Unicode normalization) are one name in `dir`. */
function foldsNames(dir: string): boolean {
  const probe = `${dir}/.Fold-\u00c9`;
  try {
    fs.writeFileSync(probe, '');
    return fs.existsSync(`${dir}/.fold-\u00e9`) || fs.existsSync(`${dir}/.Fold-E\u0301`);
  } catch {
    return false;
  } finally {
    fs.rmSync(probe, { force: true });
  }
}

/** Removes staging directories of unpacks whose process is gone (killed before it could clean up). */
function removeStaleStaging(root: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch (e) {
    throw fsError(e, 'cannot read target', root);
  }
  const uid = process.getuid?.();
  for (const n of names) {
    const m = STAGING_RE.exec(n);
    if (!m || alive(Number(m[1]))) continue;
    // Only a directory as mkdtemp made it (0700, owned by this user): a folder of the user's that
    // merely has the name (mkdir gives 0755 under the usual umask) is theirs, and stays. A 0700
    // folder of that name cannot come from an archive unpack extracted: entryPath refuses every
    // entry with a part named like unpack's work folders (entry-rules.ts says why no marker inside
    // the folder could tell the two apart instead).
    const st = fs.lstatSync(`${root}/${n}`, { throwIfNoEntry: false });
    if (!st?.isDirectory() || (st.mode & 0o777) !== 0o700 || (uid !== undefined && st.uid !== uid)) continue;
    fs.rmSync(`${root}/${n}`, { recursive: true, force: true });
  }
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Moves what staging holds into root. Paths absent from root are renamed in whole (a directory
 * with everything under it in one rename); directories present in both are merged. Existing files
 * and symlinks are clashes (refused, listed) unless `force`; then each is first set aside inside
 * a folder of their own in root (`.treecast-replaced-<pid>-*`, not inside staging, whose top level
 * is the archive's and is removed by a later unpack once this process is gone), and put back if any
 * later rename fails, so a failed publish loses nothing that was in root; one that cannot be put
 * back stays in that folder, which the error names. Existing directories are never replaced and
 * existing symlinks never written through.
 */
export function publish(staging: string, root: string, force: boolean): void {
  const moves: [string, string][] = [];
  const replaces: [string, string][] = [];
  const clashes: string[] = [];
  const plan = (rel: string) => {
    const src = `${staging}/${rel}`;
    const dst = `${root}/${rel}`;
    let st: fs.Stats | undefined;
    try {
      st = fs.lstatSync(dst, { throwIfNoEntry: false });
    } catch (e) {
      throw fsError(e, 'cannot stat', dst);
    }
    if (!st) {
      moves.push([src, dst]);
      return;
    }
    const srcIsDir = fs.lstatSync(src).isDirectory();
    if (st.isDirectory()) {
      if (!srcIsDir) throw new TargetError(`archive entry '${rel}' would replace an existing directory`, { path: dst });
      for (const n of fs.readdirSync(src)) plan(`${rel}/${n}`);
      return;
    }
    if (srcIsDir) throw directoryClash(rel, dst, st);
    if (!force) clashes.push(rel);
    else replaces.push([src, dst]);
  };
  for (const n of fs.readdirSync(staging)) plan(n);
  if (clashes.length > 0) {
    const shown = clashes.slice(0, 10).join(', ');
    throw new TargetError(`${clashes.length} archive entr${clashes.length === 1 ? 'y' : 'ies'} would overwrite existing files: ${shown}${clashes.length > 10 ? ', ...' : ''}`, {
      path: root,
      hint: 'pass --force to replace them, or unpack into an empty directory',
    });
  }
  let aside: string | undefined;
  const undo: [string, string][] = [];
  try {
    if (replaces.length > 0) aside = fs.mkdtempSync(`${root}/${ASIDE_PREFIX}${process.pid}-`);
    replaces.forEach(([src, dst], i) => {
      const old = `${aside}/${i}`;
      fs.renameSync(dst, old);
      undo.push([old, dst]);
      fs.renameSync(src, dst);
      undo.push([dst, src]);
    });
    for (const [src, dst] of moves) {
      fs.renameSync(src, dst);
      undo.push([dst, src]);
    }
  } catch (e) {
    let stuck = false;
    for (let i = undo.length - 1; i >= 0; i--) {
      const [from, to] = undo[i]!;
      try {
        fs.renameSync(from, to);
      } catch {
        stuck = true;
      }
    }
    const err = e instanceof TreecastError ? e : fsError(e, 'cannot move into place', root);
    // A replaced file that could not be put back stays where it was set aside.
    if (stuck && aside !== undefined) {
      throw new TargetError(`${err.message}; some replaced files could not be put back and are kept in ${aside}`, { path: aside, cause: err, hint: KEEP_ASIDE });
    }
    // Empty now: every file went back (rmdir, so nothing of the user's could ever go with it).
    if (aside !== undefined) {
      try {
        fs.rmdirSync(aside);
      } catch {
        /* the error being reported is the first one */
      }
    }
    throw err;
  }
  // Every rename succeeded: what was set aside is what the archive replaced.
  if (aside !== undefined) fs.rmSync(aside, { recursive: true, force: true });
}
