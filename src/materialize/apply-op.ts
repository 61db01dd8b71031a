/**
 * Worker op: create a batch of files and symlinks under a checkout root with synchronous calls.
 * Parent directories already exist (execute.ts makes them first), so no mkdir per file.
 */
// Named imports: see import-file.ts (no getter per call in the CLI bundle).
import { closeSync, openSync, symlinkSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { DigestMismatchError, fsError } from '../errors.js';
import { EMPTY_HASH, formatDigest } from '../core/digest.js';
import type { OpContext } from '../fs/worker-ops.js';
import { CREATE_EXCL, type ImportMethod, type ImportOutcome, STICKY, importBlob, writeBytes } from './import-file.js';
import type { WriteOp } from './plan.js';
import { writeVerified } from '../remote/receiver.js';
import { writeLinked } from './write-linked.js';

export interface ApplySettings {
  root: string;
  method: ImportMethod;
  fileMode: number;
  execMode: number;
  /** Re-hash every blob before it is written (catches a corrupt store). */
  verify: boolean;
}

/**
 * A batch of writes packed for postMessage: a few strings and typed arrays instead of an object
 * per write. Perf: receiving 256 small objects per batch cost a worker ~0.35 s over the Linux tree.
 */
export interface PackedWrites {
  /** Relative paths joined by NUL (which no name contains). */
  rels: string;
  /** 64 hex characters per write (empty-string padding for symlinks). */
  hashes: string;
  sizes: Float64Array;
  /** KIND_FILE, KIND_EXEC or KIND_LINK per write. */
  kinds: Uint8Array;
  /** Targets of the symlinks, in order. */
  targets: string[];
}

export interface ApplyBatch extends ApplySettings {
  /** Packed when posted to a worker; the plan's own list when run on the thread that made it. */
  writes: PackedWrites | readonly WriteOp[];
  /** Bytes fetched for this batch (a direct remote checkout): written from here, not the store. */
  fetched?: FetchedBytes;
  /** Set to how many writes, in order, are done (created.ts reads it after a failure). */
  progress?: Int32Array;
}

/**
 * Blob bytes that came over the network, unverified. Shared memory, so posting a batch to a worker
 * copies nothing. `offsets[i]` is where write i's bytes start, -1 when it is taken from the store, or WRITTEN.
 */
export interface FetchedBytes {
  data: Uint8Array;
  offsets: Float64Array;
  /** Named in errors: where the bytes came from. */
  source: string;
  /** Each blob also enters the store, after its digest matched (a plain `checkout --remote`). */
  store?: boolean;
}

/** FetchedBytes.offsets: the file was fetched straight into its place already (fetch-file.ts). */
export const WRITTEN = -2;

const KIND_FILE = 0;
const KIND_EXEC = 1;
const KIND_LINK = 2;
const NO_HASH = '0'.repeat(64);

export function packWrites(ops: readonly WriteOp[]): PackedWrites {
  const n = ops.length;
  const rels: string[] = new Array(n);
  const hashes: string[] = new Array(n);
  const sizes = new Float64Array(n);
  const kinds = new Uint8Array(n);
  const targets: string[] = [];
  for (let i = 0; i < n; i++) {
    const op = ops[i]!;
    rels[i] = op.rel;
    if ('target' in op) {
      kinds[i] = KIND_LINK;
      hashes[i] = NO_HASH;
      targets.push(op.target);
    } else {
      kinds[i] = op.executable ? KIND_EXEC : KIND_FILE;
      hashes[i] = op.hash;
      sizes[i] = op.size;
    }
  }
  return { rels: rels.join('\0'), hashes: hashes.join(''), sizes, kinds, targets };
}

function isList(writes: ApplyBatch['writes']): writes is readonly WriteOp[] {
  return Array.isArray(writes);
}

/** One write of a batch, read from either form into a reused record (no object per write). */
interface WriteAt {
  rel: string;
  kind: number;
  hash: string;
  size: number;
  target: string;
}

export interface ApplyCounts {
  cloned: number;
  hardlinked: number;
  copied: number;
  empty: number;
  symlinks: number;
  bytes: number;
  /** Files the requested method could not import, with the first reason seen. */
  fallbacks: number;
  fallbackReason?: string;
}

export function newCounts(): ApplyCounts {
  return { cloned: 0, hardlinked: 0, copied: 0, empty: 0, symlinks: 0, bytes: 0, fallbacks: 0 };
}

export function applyBatch(batch: ApplyBatch, ctx: OpContext): ApplyCounts {
  const c = newCounts();
  const { root, fileMode, execMode, verify } = batch;
  // Perf: a batch run on the thread that planned it keeps the plan's list instead of being packed
  // for postMessage and split again here. Copy checkout of the node_modules corpus (26,242 files;
  // the main thread runs about half of the batches): packWrites' self time on the main thread fell
  // from 17.8 ms to 4.4-5.5 ms (--cpu-prof, one run each, load 8-12); CPU (user+sys) 0.970 s
  // against 0.990 s, lower in 9 of 15 interleaved pairs (load 9-11, wall times noise there).
  const list = isList(batch.writes) ? batch.writes : undefined;
  const packed = list ? undefined : (batch.writes as PackedWrites);
  const rels = packed ? packed.rels.split('\0') : undefined;
  const count = list ? list.length : rels!.length;
  const w: WriteAt = { rel: '', kind: KIND_FILE, hash: '', size: 0, target: '' };
  let method = batch.method;
  let nextTarget = 0;
  /** Offsets of fetched blobs already put in the store by this batch. */
  const stored = batch.fetched?.store ? new Set<number>() : undefined;
  // Perf: one Atomics.store per write, only when counted: 78,000 of them (the Linux tree's files)
  // took 1.3 ms in a loop on this machine.
  const progress = batch.progress;
  for (let i = 0; i < count; i++) {
    if (progress) Atomics.store(progress, 0, i);
    if (list) {
      const op = list[i]!;
      w.rel = op.rel;
      if ('target' in op) {
        w.kind = KIND_LINK;
        w.target = op.target;
      } else {
        w.kind = op.executable ? KIND_EXEC : KIND_FILE;
        w.hash = op.hash;
        w.size = op.size;
      }
    } else {
      w.rel = rels![i]!;
      w.kind = packed!.kinds[i]!;
      if (w.kind === KIND_LINK) w.target = packed!.targets[nextTarget++]!;
      else {
        w.hash = packed!.hashes.slice(i * 64, i * 64 + 64);
        w.size = packed!.sizes[i]!;
      }
    }
    const dst = `${root}/${w.rel}`;
    const kind = w.kind;
    if (kind === KIND_LINK) {
      try {
        symlinkSync(w.target, dst);
      } catch (e) {
        throw fsError(e, 'cannot create symlink', dst);
      }
      c.symlinks++;
      continue;
    }
    const executable = kind === KIND_EXEC;
    const mode = executable ? execMode : fileMode;
    const size = w.size;
    if (size === 0) {
      // Zero-length files are made directly; the empty blob is never read.
      if (w.hash !== EMPTY_HASH) {
        throw new DigestMismatchError(`the tree gives ${dst} the size 0, but its hash is not that of empty content; nothing was written there`, { path: dst });
      }
      try {
        // The mode is already masked by the umask, so open() gives it exactly: no chmod.
        // Perf: flags as numbers ('wx' was the one string among numeric ones: Node's stringToFlags lost
        // its optimized code on the first empty file, --trace-deopt).
        closeSync(openSync(dst, CREATE_EXCL, mode));
      } catch (e) {
        throw fsError(e, 'cannot create', dst);
      }
      c.empty++;
      continue;
    }
    const digest = { hash: w.hash, size };
    const at = batch.fetched ? batch.fetched.offsets[i]! : -1;
    if (at === WRITTEN) {
      c.copied++;
      c.bytes += size;
      continue;
    }
    if (at >= 0) {
      const bytes = verifiedBytes(batch.fetched!.data.subarray(at, at + digest.size), digest, batch.fetched!.source, dst);
      if (stored && !stored.has(at) && method === 'hardlink') {
        // Written once, at the target's name, then linked into the store (write-linked.ts). An
        // executable becomes the blob's executable twin, so the plain blob is stored first, by its
        // own write. Perf: before, the twin was copied from the stored blob: a third write of the
        // bytes, a chmod and a rename more per executable. `strace -c -f` of the Linux tree's
        // checkout (813 executables): copy_file_range 813 to 0, chmod 813 to 0, rename 6,749 to
        // 5,936, openat 85,376 to 84,563; 558,878 syscalls to 554,759.
        if (executable) writeVerified(ctx.store, digest, bytes);
        const out = writeLinked(ctx.store, digest, bytes, dst, mode, executable);
        stored.add(at);
        method = counted(out, size, c, method);
        continue;
      }
      if (stored && !stored.has(at)) {
        // Perf: stored from the bytes in hand, the file then written from them too: no second
        // fetch, no read back from the store, no writer thread. Linux tree, 3 interleaved pairs
        // at load average 8-13: 19.5-27.7 s (median 22.1) and 262-285 MB against 21.7-29.0 s
        // (median 25.6) and 383-393 MB storing first and copying from the store; client CPU the
        // same within the noise (10.5-14.0 s against 11.2-13.9 s).
        writeVerified(ctx.store, digest, bytes);
        stored.add(at);
      }
      if (stored && method !== 'copy') {
        // A link or clone of the blob just stored. Perf: the Linux tree's `--method hardlink`
        // prefetched through the store writer thread at 9.33-10.29 s client CPU (median 9.43);
        // stored here by the workers, 8.56-9.44 s (median 8.91), 3 interleaved pairs, load 3-6.
        // No stat of the stored blob first: its bytes were verified above at this size (sizeProven).
        // Perf: Linux tree, 3 interleaved pairs at load 8-9: client CPU 7.60-7.92 s (median 7.86)
        // with the stat, 7.40-8.05 s (median 7.40) without; wall times were noise at that load.
        method = importCounted(ctx, digest, dst, method, executable, mode, c, true);
        continue;
      }
      writeBytes(dst, bytes, mode);
      c.copied++;
      c.bytes += size;
      continue;
    }
    if (verify) {
      // readSync re-hashes and throws DigestMismatchError before anything is created at dst.
      const bytes = ctx.store.readSync(digest);
      if (method === 'copy') {
        writeBytes(dst, bytes, mode);
        c.copied++;
        c.bytes += size;
        continue;
      }
    }
    method = importCounted(ctx, digest, dst, method, executable, mode, c);
  }
  if (progress) Atomics.store(progress, 0, count);
  return c;
}

/** importBlob, counted; returns the method for the files after it (copy once a fallback sticks). */
function importCounted(ctx: OpContext, d: { hash: string; size: number }, dst: string, method: ImportMethod, executable: boolean, mode: number, c: ApplyCounts, sizeProven = false): ImportMethod {
  return counted(importBlob(ctx.store, d, dst, method, executable, mode, sizeProven), d.size, c, method);
}

/** Counts one file written as `out` says; returns the method for the files after it. */
function counted(out: ImportOutcome, size: number, c: ApplyCounts, method: ImportMethod): ImportMethod {
  if (out.used === 'clone') c.cloned++;
  else if (out.used === 'hardlink') c.hardlinked++;
  else c.copied++;
  c.bytes += size;
  if (!out.fellBack) return method;
  c.fallbacks++;
  c.fallbackReason ??= out.fellBack;
  return STICKY.has(out.fellBack) ? 'copy' : method;
}

/**
 * `bytes`, fetched from `source` as blob `d`, after their SHA-256 matched: a bad blob is refused
 * before anything is created at `dst` (when the bytes are for a file). Perf: hashing here spreads
 * it over the checkout's worker threads.
 */
export function verifiedBytes(bytes: Uint8Array, d: { hash: string; size: number }, source: string, dst?: string): Uint8Array {
  const hash = createHash('sha256').update(bytes).digest('hex');
  if (hash !== d.hash || bytes.length !== d.size) {
    const unwritten = dst === undefined ? '' : `; nothing was written at ${dst}`;
    throw new DigestMismatchError(`blob ${formatDigest(d)} from ${source} refused: its bytes hash to ${hash}/${bytes.length}${unwritten}`, {
      digest: formatDigest(d),
      ...(dst === undefined ? {} : { path: dst }),
    });
  }
  return bytes;
}

export function addCounts(into: ApplyCounts, c: ApplyCounts): void {
  into.cloned += c.cloned;
  into.hardlinked += c.hardlinked;
  into.copied += c.copied;
  into.empty += c.empty;
  into.symlinks += c.symlinks;
  into.bytes += c.bytes;
  into.fallbacks += c.fallbacks;
  into.fallbackReason ??= c.fallbackReason;
}
