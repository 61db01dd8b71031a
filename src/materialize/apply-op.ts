/**
 * Worker op: create a batch of files and symlinks under a checkout root with synchronous calls.
 * Parent directories already exist (execute.ts makes them first), so no mkdir per file.
 */
import * as fs from 'node:fs';
import { fsError } from '../errors.js';
import type { OpContext } from '../fs/worker-ops.js';
import { type ImportMethod, STICKY, importBlob, writeBytes } from './import-file.js';
import type { WriteOp } from './plan.js';

export interface ApplyBatch {
  root: string;
  method: ImportMethod;
  fileMode: number;
  execMode: number;
  /** Re-hash every blob before it is written (catches a corrupt store). */
  verify: boolean;
  ops: WriteOp[];
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
  const { root, fileMode, execMode, verify, ops } = batch;
  let method = batch.method;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    const dst = `${root}/${op.rel}`;
    if ('target' in op) {
      try {
        fs.symlinkSync(op.target, dst);
      } catch (e) {
        throw fsError(e, 'cannot create symlink', dst);
      }
      c.symlinks++;
      continue;
    }
    const mode = op.executable ? execMode : fileMode;
    if (op.size === 0) {
      // Zero-length files are made directly; the empty blob is never read.
      try {
        fs.closeSync(fs.openSync(dst, 'wx', mode));
        if (op.executable) fs.chmodSync(dst, mode);
      } catch (e) {
        throw fsError(e, 'cannot create', dst);
      }
      c.empty++;
      continue;
    }
    const digest = { hash: op.hash, size: op.size };
    if (verify) {
      // readSync re-hashes and throws DigestMismatchError before anything is created at dst.
      const bytes = ctx.store.readSync(digest);
      if (method === 'copy') {
        writeBytes(dst, bytes, mode);
        c.copied++;
        c.bytes += op.size;
        continue;
      }
    }
    const out = importBlob(ctx.store, digest, dst, method, op.executable, mode);
    if (out.used === 'clone') c.cloned++;
    else if (out.used === 'hardlink') c.hardlinked++;
    else c.copied++;
    if (out.fellBack) {
      c.fallbacks++;
      c.fallbackReason ??= out.fellBack;
      if (STICKY.has(out.fellBack)) method = 'copy';
    }
    c.bytes += op.size;
  }
  return c;
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
