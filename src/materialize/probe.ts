/**
 * Chooses the import method once per checkout (pnpm's approach): try a reflink of one real blob
 * into the target's filesystem; keep clone when it works, copy otherwise. Per-file fallback in
 * import-file.ts still covers a tree that spans filesystems.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Digest } from '../core/digest.js';
import type { LocalStore } from '../store/local.js';
import type { ImportMethod } from './import-file.js';

const cache = new Map<string, ImportMethod>();

export function probeMethod(store: LocalStore, sample: Digest, rootAbs: string): ImportMethod {
  const dev = `${fs.statSync(rootAbs).dev}:${store.root}`;
  const known = cache.get(dev);
  if (known) return known;
  const probe = `${rootAbs}/.treecast-probe-${process.pid}-${randomBytes(4).toString('hex')}`;
  let method: ImportMethod = 'copy';
  try {
    fs.copyFileSync(store.blobPath(sample.hash), probe, fs.constants.COPYFILE_FICLONE_FORCE | fs.constants.COPYFILE_EXCL);
    method = 'clone';
  } catch {
    method = 'copy';
  } finally {
    try {
      fs.unlinkSync(probe);
    } catch {
      /* not created */
    }
  }
  cache.set(dev, method);
  return method;
}
