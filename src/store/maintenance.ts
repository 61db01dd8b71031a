/**
 * Store upkeep: `verify` re-hashes every blob (and executable twin) and can remove corrupt ones;
 * `gc` removes blobs no ref (and no live checkout record) reaches.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { type Digest, formatDigest } from '../core/digest.js';
import { decodeDirectory } from '../core/reapi.js';
import type { LocalStore } from './local.js';

export interface VerifyResult {
  checked: number;
  bytes: number;
  corrupt: { hash: string; path: string; actual: string }[];
  repaired: boolean;
}

function hashFile(path: string): { hash: string; size: number } {
  const h = createHash('sha256');
  const fd = fs.openSync(path, 'r');
  const buf = Buffer.allocUnsafe(1 << 20);
  let size = 0;
  try {
    let n: number;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) {
      h.update(buf.subarray(0, n));
      size += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return { hash: h.digest('hex'), size };
}

export function verifyStore(store: LocalStore, repair: boolean, onProgress?: (n: number) => void): VerifyResult {
  const res: VerifyResult = { checked: 0, bytes: 0, corrupt: [], repaired: repair };
  for (const hash of store.listHashes()) {
    for (const path of [store.blobPath(hash), store.executableBlobPath(hash)]) {
      if (!fs.existsSync(path)) continue;
      const actual = hashFile(path);
      res.checked++;
      res.bytes += actual.size;
      if (actual.hash !== hash) {
        res.corrupt.push({ hash, path, actual: formatDigest(actual) });
        if (repair) store.removeBlobSync(hash);
      }
    }
    onProgress?.(res.checked);
  }
  return res;
}

export interface GcResult {
  roots: number;
  reachable: number;
  removed: string[];
  removedBytes: number;
  dryRun: boolean;
}

/** Everything reachable from refs and from records of checkouts whose directory still exists. */
function reachableFrom(store: LocalStore): { roots: number; live: Set<string> } {
  const roots: Digest[] = store.listRefs().map((r) => r.digest);
  const recDir = join(store.root, 'checkouts');
  for (const name of fs.existsSync(recDir) ? fs.readdirSync(recDir) : []) {
    try {
      const rec = JSON.parse(fs.readFileSync(join(recDir, name), 'utf8')) as { target: string; root: string };
      if (fs.existsSync(rec.target)) roots.push({ hash: rec.root.split('/')[0]!, size: Number(rec.root.split('/')[1]) });
    } catch {
      /* unreadable record: it pins nothing */
    }
  }
  const live = new Set<string>();
  const stack = [...roots];
  while (stack.length > 0) {
    const d = stack.pop()!;
    if (live.has(d.hash)) continue;
    live.add(d.hash);
    let dir;
    try {
      dir = decodeDirectory(store.readSync(d), formatDigest(d));
    } catch {
      continue; // missing or corrupt directory: keep what we can reach
    }
    for (const f of dir.files) live.add(f.digest.hash);
    for (const s of dir.directories) stack.push(s.digest);
  }
  return { roots: roots.length, live };
}

export function gcStore(store: LocalStore, opts: { dryRun: boolean; graceSeconds: number }): GcResult {
  const { roots, live } = reachableFrom(store);
  const cutoff = Date.now() - opts.graceSeconds * 1000;
  const res: GcResult = { roots, reachable: live.size, removed: [], removedBytes: 0, dryRun: opts.dryRun };
  for (const hash of store.listHashes()) {
    if (live.has(hash)) continue;
    const st = fs.statSync(store.blobPath(hash), { throwIfNoEntry: false });
    // A blob younger than the grace period may belong to a snapshot still being written.
    if (!st || st.mtimeMs > cutoff) continue;
    res.removed.push(hash);
    res.removedBytes += st.size;
    if (!opts.dryRun) store.removeBlobSync(hash);
  }
  // Tree packs of trees no longer reachable go too (they are only a cache of reachable trees).
  const packs = join(store.root, 'trees');
  if (!opts.dryRun) for (const name of fs.existsSync(packs) ? fs.readdirSync(packs) : []) if (!live.has(name)) fs.rmSync(join(packs, name), { force: true });
  if (!opts.dryRun) for (const p of store.listTmpFiles()) {
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    // Temp files older than the grace period were left by a process that died mid-write.
    if (st && st.mtimeMs <= cutoff) fs.rmSync(p, { force: true, recursive: true });
  }
  return res;
}
