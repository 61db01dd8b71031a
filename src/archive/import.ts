/**
 * import: zip -> store, without writing the tree to disk. The archive is judged exactly as for
 * unpack (same rules, same refusals), file entries are stored by worker threads (ingest-op.ts),
 * large ones streamed here, and the tree is built with TreeBuilder, so importing and checking out
 * gives the same tree (and root digest) as unpacking and snapshotting. The workers start on the
 * first files while the archive is judged (import-ahead.ts); nothing is committed before it passes.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { type Digest, EMPTY_DIGEST } from '../core/digest.js';
import { type EncodedDirectory, type PendingFile, TreeBuilder } from '../core/tree-builder.js';
import { LocalStore, removeQuietly } from '../store/local.js';
import { fsError } from '../errors.js';
import { ARCHIVE_YOUNG_MB, WorkerPool, runBatches } from '../fs/worker-pool.js';
import { guardStoreWriter } from '../fs/target-guard.js';
import { checkLimitsOptions, earlyPool, refuseTarOnlyOptions, openArchive, throwIfAborted, type ArchiveReadOptions, type ArchiveSummary } from './unpack.js';
import { DEFAULT_BATCH_LIMITS, isLargeEntry, planExtraction } from './extract-plan.js';
import { streamEntry } from './large-entry.js';
import { StagedAhead, aheadEntries } from './import-ahead.js';
import type { CentralDirectory } from './central-directory.js';
import { DEFAULT_MAX_RATIO } from './entry-rules.js';
import type { IngestBatch, IngestResult, StoreDataBatch, StoreDataResult } from './ingest-op.js';
import type { ArchiveEntry } from './entry-rules.js';
import { openTarSource } from './tar-input.js';
import type { TarReadOptions } from './tar-walk.js';

export interface ImportOptions extends ArchiveReadOptions, TarReadOptions {
  ref?: string;
  /** Aborting stops after the batches in flight (blobs stored so far stay: the store is content-addressed). */
  signal?: AbortSignal;
}

export interface ImportSummary extends ArchiveSummary {
  root: Digest;
  /** Files of a zip stored by the head start while the archive was judged (import-ahead.ts). */
  stagedAhead?: number;
}

export async function importArchive(archivePath: string, store: LocalStore, opts: ImportOptions): Promise<ImportSummary> {
  checkLimitsOptions(opts);
  if (opts.ref !== undefined) store.checkRefWritable(opts.ref);
  // As snapshot: a blob found stored is kept, not written again, and named only when the tree and
  // ref are written at the end, so gc must not run meanwhile (target-guard.ts guardStoreWriter).
  const writer = guardStoreWriter(store.root, 'import');
  try {
    return await importUnguarded(archivePath, store, opts);
  } finally {
    writer.release();
  }
}

async function importUnguarded(archivePath: string, store: LocalStore, opts: ImportOptions): Promise<ImportSummary> {
  const tar = openTarSource(archivePath);
  if (tar) return (await import('./tar-import.js')).importTar(tar.input, tar.label, store, opts);
  refuseTarOnlyOptions(opts);
  const t0 = process.hrtime.bigint();
  // Perf: asked before the head start stages files into the shard folders, so it reads one empty
  // folder rather than every shard the workers made (readdir took ~60 ms of this thread, profiled).
  const storeWasEmpty = store.hasNoBlobsSync();
  let pool = earlyPool(archivePath, opts.jobs, { storeRoot: store.root });
  const limits = { ...DEFAULT_BATCH_LIMITS, large: opts.largeEntryBytes ?? DEFAULT_BATCH_LIMITS.large };
  let ahead: StagedAhead | undefined;
  const startAhead = (cd: CentralDirectory) => {
    ahead = new StagedAhead(pool!, archivePath, cd, { ...limits, maxRatio: opts.maxRatio ?? DEFAULT_MAX_RATIO, maxSize: opts.maxSize ?? Number.MAX_SAFE_INTEGER });
  };
  let ar;
  try {
    ar = openArchive(archivePath, opts, pool ? { entries: aheadEntries(pool.size, limits.entries), use: startAhead, whole: (cd) => ahead?.more(cd) } : undefined);
  } catch (e) {
    await ahead?.discard();
    await pool?.close();
    throw e;
  }
  try {
    for (const w of ar.judged.warnings) opts.onWarning?.(w.code, w.message);
    const plan = planExtraction(ar.judged.entries, limits);
    // Files the workers staged while the archive was judged are committed below, not stored again.
    const staged = ahead?.accept(ar.judged.entries, (e) => isLargeEntry(e, limits.large)) ?? new Set<number>();
    const batches = staged.size === 0 ? plan.batches : plan.batches.map((b) => b.filter((e) => !staged.has(e.index))).filter((b) => b.length > 0);
    // Perf: the tree is built while workers store file data (this thread is otherwise idle then):
    // directories and symlinks first, then the files, each batch's pending before it is posted
    // (its digests come with its result), and each directory is encoded and stored as soon as its
    // last file is in (TreeBuilder.seal). Any order is fine for TreeBuilder once entry-rules has
    // accepted the archive. On the Linux tree TreeBuilder.add took 0.38 s of this thread
    // (profiled), which overlaps the workers.
    // Dropped once built, so its 83,730 entries are not alive to the end.
    let tb: TreeBuilder | undefined = new TreeBuilder();
    const pending: PendingFile[] = new Array(ar.judged.entries.length);
    const executable = (e: ArchiveEntry) => e.perm !== undefined && (e.perm & 0o100) !== 0;
    for (const e of ar.judged.entries) {
      if (e.type === 'dir') tb!.add({ type: 'dir', path: e.path });
      else if (e.type === 'symlink') tb!.add({ type: 'symlink', path: e.path, target: ar.targets.get(e.index)! });
    }
    const total = plan.fileCount;
    let done = 0;
    let bytes = 0;
    pool ??= new WorkerPool(ar.judged.entries.length > 512 ? opts.jobs : 0, { storeRoot: store.root }, { youngGenerationMb: ARCHIVE_YOUNG_MB });
    const directories = new DirectoryWriter(pool, storeWasEmpty);
    let root: Digest;
    try {
      // Payloads are made as batches are sent (Perf: made up front, 78,579 entry copies stayed
      // alive for the whole import of the Linux tree).
      // Perf: each entry has the fields of a staged one (import-ahead.ts), `index` first, so a
      // worker meets one object shape in both ops: with two, localDataStart and decodeEntry were
      // deoptimized ("wrong map") and optimized again in the workers (--trace-opt --trace-deopt,
      // Linux tree zip: 3 such deopts and 200 optimizations in the process before, none and 189 after).
      const payloadOf = (n: number): IngestBatch => {
        addPendingUpTo(n + 1);
        return {
          archive: ar.path,
          storeWasEmpty,
          files: batches[n]!.map((e) => ({ index: e.index, path: e.path, rawName: e.rawName, method: e.method, crc: e.crc, compressedSize: e.compressedSize, size: e.size, localOffset: e.localOffset, limit: e.limit })),
        };
      };
      let added = 0; // batches whose files are pending in tb
      const addPendingUpTo = (end: number) => {
        for (; added < end; added++) for (const e of batches[added]!) pending[e.index] = tb!.addPending(e.path, executable(e));
      };
      let stop = false;
      const running = runBatches<number, IngestResult>(pool, 'archive.ingest', batches.keys(), (hashes, n) => {
        const batch = batches[n]!;
        for (let i = 0; i < batch.length; i++) {
          const e = batch[i]!;
          tb!.setDigest(pending[e.index]!, e.size === 0 ? EMPTY_DIGEST : { hash: hashes[i]!, size: e.size });
          bytes += e.size;
        }
        done += batch.length;
        opts.onProgress?.({ done, total, bytes });
      }, { shouldStop: () => stop || opts.signal?.aborted === true, payloadOf });
      running.catch(() => {}); // handled where it is awaited below; this keeps an early failure from counting as unhandled
      // The first batches are posted; meanwhile this thread commits what was staged and adds the
      // other files. Perf: it lets the workers' results in between (a staged batch, or a few
      // batches' files, at a time), so the lanes post the next batches: done in one go, the
      // renames and adds (about 0.3 s of this thread on the Linux tree) left both workers idle
      // for 0.1-0.25 s once the two batches each held were done (profiled, load 10).
      try {
        await ahead?.commit((e, hash, tmp) => {
          if (tmp !== '') {
            if (!storeWasEmpty && store.hasSync({ hash, size: e.size })) removeQuietly(tmp);
            else store.commitTmp(tmp, hash);
          }
          const j = ar.judged.entries[e.index]!;
          tb!.add({ type: 'file', path: j.path, digest: e.size === 0 ? EMPTY_DIGEST : { hash, size: e.size }, executable: executable(j) });
          bytes += e.size;
          done++;
        });
        if (staged.size > 0) opts.onProgress?.({ done, total, bytes });
        while (added < batches.length) {
          addPendingUpTo(Math.min(added + PENDING_BATCHES_AT_ONCE, batches.length));
          await nextTurn();
        }
        for (const e of plan.large) pending[e.index] = tb!.addPending(e.path, executable(e));
        tb!.seal((m) => directories.add(m));
      } catch (e) {
        stop = true;
        await running.catch(() => {});
        throw e;
      }
      await running;
      for (const e of plan.large) {
        throwIfAborted(opts.signal, 'interrupted; blobs stored so far stay in the store, no tree was recorded');
        tb!.setDigest(pending[e.index]!, await ingestLarge(ar.path, ar.fd, e, store));
        done++;
        bytes += e.size;
        opts.onProgress?.({ done, total, bytes });
      }
      throwIfAborted(opts.signal, 'interrupted; blobs stored so far stay in the store, no tree was recorded');
      root = tb!.build().root; // every message went to `directories` (sealed)
      tb = undefined;
      await directories.finish();
    } finally {
      await directories.settled();
      await ahead?.discard();
      await pool.close();
      pool = undefined;
    }
    if (opts.ref) store.writeRef(opts.ref, root);
    return {
      root,
      entries: ar.judged.entries.length,
      files: plan.fileCount,
      dirs: plan.dirs.length,
      symlinks: plan.symlinks.length,
      bytesIn: ar.fileSize,
      bytesOut: plan.totalSize,
      seconds: Number(process.hrtime.bigint() - t0) / 1e9,
      stagedAhead: staged.size,
    };
  } finally {
    fs.closeSync(ar.fd);
    await ahead?.discard();
    await pool?.close();
  }
}

/** Batches whose files are added to the tree between two turns of the event loop. */
const PENDING_BATCHES_AT_ONCE = 8;

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Most bytes of Directory messages posted to a worker at once. */
const MESSAGE_SHARE_BYTES = 1 << 20;

/**
 * Stores the tree's Directory messages through the workers as TreeBuilder encodes them, in shares
 * of about a MiB moved (not copied) to a worker, beside the file batches.
 * Perf: written by the main thread after the last batch, the Linux tree's 5,096 messages (four
 * system calls each) were the serial tail of the import while both workers sat idle (profiled:
 * about 0.3 s, load 8). Encoded all at once by TreeBuilder.build and then written by the workers,
 * the import still ended 538 ms after the workers' last inflate (cpu-prof, load 7); encoded as
 * each directory completes (TreeBuilder.seal) and written beside the file batches, 33-58 ms
 * after it (3 profiles, load 10-12).
 */
class DirectoryWriter {
  private part: Buffer[] = [];
  private size = 0;
  private readonly posted: Promise<unknown>[] = [];

  constructor(
    private readonly pool: WorkerPool,
    private readonly storeWasEmpty: boolean,
  ) {}

  add(m: EncodedDirectory): void {
    this.part.push(m.bytes);
    this.size += m.bytes.length;
    if (this.size >= MESSAGE_SHARE_BYTES) this.post();
  }

  /** Posts what is left and waits until every message is stored (throws a worker's error). */
  async finish(): Promise<void> {
    if (this.part.length > 0) this.post();
    await Promise.all(this.posted);
  }

  /** Waits for every share posted, whatever its outcome (before the workers are stopped). */
  async settled(): Promise<void> {
    await Promise.allSettled(this.posted);
  }

  private post(): void {
    const data = new Uint8Array(this.size); // its own ArrayBuffer, so it can be transferred
    const files: StoreDataBatch['files'] = [];
    let at = 0;
    for (const m of this.part) {
      data.set(m, at);
      files.push({ at, size: m.length });
      at += m.length;
    }
    this.part = [];
    this.size = 0;
    const batch: StoreDataBatch = { files, data, storeWasEmpty: this.storeWasEmpty };
    const stored = this.pool.run<StoreDataResult>('archive.store', batch, this.pool.size > 0 ? [data.buffer as ArrayBuffer] : []);
    stored.catch(() => {}); // awaited in finish or settled; this keeps an early failure from counting as unhandled
    this.posted.push(stored);
  }
}

async function ingestLarge(archive: string, fd: number, e: ArchiveEntry, store: LocalStore): Promise<Digest> {
  const tmp = store.tmpPath('zip');
  let out: number;
  try {
    out = fs.openSync(tmp, 'wx', 0o444);
  } catch (err) {
    throw fsError(err, 'cannot write blob', tmp);
  }
  const hash = createHash('sha256');
  try {
    await streamEntry(archive, fd, e, (chunk) => {
      hash.update(chunk);
      let off = 0;
      while (off < chunk.length) off += fs.writeSync(out, chunk, off, chunk.length - off);
    });
    fs.closeSync(out);
    const d = { hash: hash.digest('hex'), size: e.size };
    if (store.hasSync(d)) removeQuietly(tmp);
    else store.commitTmp(tmp, d.hash);
    return d;
  } catch (err) {
    try {
      fs.closeSync(out);
    } catch {
      /* closed */
    }
    removeQuietly(tmp);
    throw err;
  }
}
