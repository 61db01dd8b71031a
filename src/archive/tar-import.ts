/**
 * import of a tar stream (plain, gzip or zstd) into the store, without writing the tree anywhere:
 * the same read and judgement as unpack (tar-walk.ts), file batches stored by worker threads
 * (ingest-op.ts 'archive.store'), large files hashed and stored here as they stream, hardlinks
 * given their target's digest. The tree is built with TreeBuilder, so it equals `snapshot` of the
 * unpacked directory. Nothing is recorded (no tree, no ref) unless the whole stream was accepted.
 */
import * as fs from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import { type Digest, EMPTY_DIGEST } from '../core/digest.js';
import { TreeBuilder } from '../core/tree-builder.js';
import { removeQuietly, type LocalStore } from '../store/local.js';
import { fsError } from '../errors.js';
import { WorkerPool } from '../fs/worker-pool.js';
import type { StoreDataBatch, StoreDataResult } from './ingest-op.js';
import { tarJobs, type TarInput } from './tar-input.js';
import { transferOf, walkTar, type TarHardlink, type TarReadOptions } from './tar-walk.js';
import { throwIfAborted } from './unpack.js';
import type { ImportOptions, ImportSummary } from './import.js';

export async function importTar(input: TarInput, label: string, store: LocalStore, opts: ImportOptions & TarReadOptions): Promise<ImportSummary> {
  const t0 = process.hrtime.bigint();
  const tb = new TreeBuilder();
  const digests = new Map<string, { digest: Digest; executable: boolean }>();
  const hardlinks: TarHardlink[] = [];
  const pool = new WorkerPool(tarJobs(input, opts.jobs), { storeRoot: store.root });
  let large: { fd: number; tmp: string; hash: Hash; size: number; executable: boolean; path: string } | undefined;
  let done = 0;
  let bytes = 0;
  const addFile = (path: string, digest: Digest, executable: boolean) => {
    tb.add({ type: 'file', path, digest, executable });
    digests.set(path, { digest, executable });
  };
  try {
    const walked = await walkTar(input, label, opts, { parallelism: pool.parallelism, signal: opts.signal, largeBytes: opts.largeEntryBytes }, {
      dir: (e) => tb.add({ type: 'dir', path: e.path }),
      symlink: (e) => tb.add({ type: 'symlink', path: e.path, target: e.target }),
      hardlink: (e) => hardlinks.push(e),
      batch: async (files, data) => {
        const payload: StoreDataBatch = { files: files.map((f) => ({ at: f.at, size: f.size })), data };
        const { hashes } = await pool.run<StoreDataResult>('archive.store', payload, pool.size > 0 ? transferOf(data) : undefined);
        files.forEach((f, i) => addFile(f.path, f.size === 0 ? EMPTY_DIGEST : { hash: hashes[i]!, size: f.size }, (f.perm & 0o100) !== 0));
        done += files.length;
        for (const f of files) bytes += f.size;
        opts.onProgress?.({ done, total: 0, bytes });
      },
      largeBegin: (e) => {
        const tmp = store.tmpPath('tar');
        try {
          large = { fd: fs.openSync(tmp, 'wx', 0o444), tmp, hash: createHash('sha256'), size: e.size, executable: (e.perm & 0o100) !== 0, path: e.path };
        } catch (err) {
          throw fsError(err, 'cannot write blob', tmp);
        }
      },
      largeData: (chunk) => {
        large!.hash.update(chunk);
        try {
          let off = 0;
          while (off < chunk.length) off += fs.writeSync(large!.fd, chunk, off, chunk.length - off);
        } catch (err) {
          throw fsError(err, 'cannot write blob', large!.tmp);
        }
      },
      largeEnd: () => {
        const l = large!;
        large = undefined;
        fs.closeSync(l.fd);
        const d = { hash: l.hash.digest('hex'), size: l.size };
        if (store.hasSync(d)) removeQuietly(l.tmp);
        else store.commitTmp(l.tmp, d.hash);
        addFile(l.path, d, l.executable);
        done++;
        bytes += l.size;
      },
    });
    throwIfAborted(opts.signal, 'interrupted; blobs stored so far stay in the store, no tree was recorded');
    for (const h of hardlinks) {
      const t = digests.get(h.target)!;
      addFile(h.path, t.digest, t.executable);
    }
    const built = tb.build();
    for (const m of built.messages.values()) store.putSync(m.bytes, m.digest);
    if (opts.ref) store.writeRef(opts.ref, built.root);
    return {
      root: built.root,
      entries: walked.entries,
      files: walked.files + walked.hardlinks,
      dirs: walked.dirs,
      symlinks: walked.symlinks,
      bytesIn: input.bytesIn(),
      bytesOut: walked.bytesOut,
      seconds: Number(process.hrtime.bigint() - t0) / 1e9,
    };
  } finally {
    if (large) {
      fs.closeSync(large.fd);
      removeQuietly(large.tmp);
    }
    await pool.close();
  }
}
