/**
 * import: zip -> store, without writing the tree to disk. The archive is judged exactly as for
 * unpack (same rules, same refusals), file entries are stored by worker threads (ingest-op.ts),
 * large ones streamed here, and the tree is built with TreeBuilder, so importing and checking out
 * gives the same tree (and root digest) as unpacking and snapshotting.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { type Digest, EMPTY_DIGEST } from '../core/digest.js';
import { TreeBuilder } from '../core/tree-builder.js';
import { LocalStore, removeQuietly } from '../store/local.js';
import { fsError } from '../errors.js';
import { ARCHIVE_YOUNG_MB, WorkerPool, runBatches } from '../fs/worker-pool.js';
import { checkLimitsOptions, earlyPool, refuseTarOnlyOptions, openArchive, throwIfAborted, type ArchiveReadOptions, type ArchiveSummary } from './unpack.js';
import { DEFAULT_BATCH_LIMITS, planExtraction } from './extract-plan.js';
import { streamEntry } from './large-entry.js';
import type { IngestBatch, IngestResult } from './ingest-op.js';
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
}

export async function importArchive(archivePath: string, store: LocalStore, opts: ImportOptions): Promise<ImportSummary> {
  checkLimitsOptions(opts);
  const tar = openTarSource(archivePath);
  if (tar) return (await import('./tar-import.js')).importTar(tar.input, tar.label, store, opts);
  refuseTarOnlyOptions(opts);
  const t0 = process.hrtime.bigint();
  let pool = earlyPool(archivePath, opts.jobs, { storeRoot: store.root });
  let ar;
  try {
    ar = openArchive(archivePath, opts);
  } catch (e) {
    await pool?.close();
    throw e;
  }
  try {
    for (const w of ar.judged.warnings) opts.onWarning?.(w.code, w.message);
    const plan = planExtraction(ar.judged.entries, { ...DEFAULT_BATCH_LIMITS, large: opts.largeEntryBytes ?? DEFAULT_BATCH_LIMITS.large });
    // Perf: the tree is built while workers store file data (this thread is otherwise idle then):
    // directories and symlinks first, each file as its batch returns. Any order is fine for
    // TreeBuilder once entry-rules has accepted the archive. On the Linux tree TreeBuilder.add
    // took 0.38 s of this thread (profiled), which now overlaps the workers.
    const tb = new TreeBuilder();
    const executable = (e: ArchiveEntry) => e.perm !== undefined && (e.perm & 0o100) !== 0;
    for (const e of ar.judged.entries) {
      if (e.type === 'dir') tb.add({ type: 'dir', path: e.path });
      else if (e.type === 'symlink') tb.add({ type: 'symlink', path: e.path, target: ar.targets.get(e.index)! });
    }
    const total = plan.fileCount;
    let done = 0;
    let bytes = 0;
    pool ??= new WorkerPool(ar.judged.entries.length > 512 ? opts.jobs : 0, { storeRoot: store.root }, { youngGenerationMb: ARCHIVE_YOUNG_MB });
    const storeWasEmpty = store.hasNoBlobsSync();
    try {
      // Payloads are made as batches are sent (Perf: made up front, 78,579 entry copies stayed
      // alive for the whole import of the Linux tree).
      const payloadOf = (n: number): IngestBatch => ({
        archive: ar.path,
        storeWasEmpty,
        files: plan.batches[n]!.map((e) => ({ path: e.path, rawName: e.rawName, method: e.method, crc: e.crc, compressedSize: e.compressedSize, size: e.size, localOffset: e.localOffset, limit: e.limit })),
      });
      await runBatches<number, IngestResult>(pool, 'archive.ingest', plan.batches.keys(), (hashes, n) => {
        const batch = plan.batches[n]!;
        for (let i = 0; i < batch.length; i++) {
          const e = batch[i]!;
          tb.add({ type: 'file', path: e.path, digest: e.size === 0 ? EMPTY_DIGEST : { hash: hashes[i]!, size: e.size }, executable: executable(e) });
          bytes += e.size;
        }
        done += batch.length;
        opts.onProgress?.({ done, total, bytes });
      }, { shouldStop: () => opts.signal?.aborted === true, payloadOf });
    } finally {
      await pool.close();
      pool = undefined;
    }
    for (const e of plan.large) {
      throwIfAborted(opts.signal, 'interrupted; blobs stored so far stay in the store, no tree was recorded');
      tb.add({ type: 'file', path: e.path, digest: await ingestLarge(ar.path, ar.fd, e, store), executable: executable(e) });
      done++;
      bytes += e.size;
      opts.onProgress?.({ done, total, bytes });
    }
    throwIfAborted(opts.signal, 'interrupted; blobs stored so far stay in the store, no tree was recorded');
    const built = tb.build();
    for (const m of built.messages.values()) {
      if (storeWasEmpty) store.putNewSync(m.bytes);
      else store.putSync(m.bytes, m.digest);
    }
    if (opts.ref) store.writeRef(opts.ref, built.root);
    return {
      root: built.root,
      entries: ar.judged.entries.length,
      files: plan.fileCount,
      dirs: plan.dirs.length,
      symlinks: plan.symlinks.length,
      bytesIn: ar.fileSize,
      bytesOut: plan.totalSize,
      seconds: Number(process.hrtime.bigint() - t0) / 1e9,
    };
  } finally {
    fs.closeSync(ar.fd);
    await pool?.close();
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
