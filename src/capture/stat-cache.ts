/**
 * The snapshot stat cache: for each file of a snapshotted directory, the (device, inode, size,
 * mtime, ctime) it had when hashed, and its digest. A second snapshot of an unchanged tree reads
 * no file contents.
 *
 * Racy entries (git's "racily clean" problem): a file changed within the same timestamp tick as
 * the stat recorded for it keeps an identical stat. So an entry is trusted only when its ctime is
 * safely older than the start of the snapshot that recorded it; younger entries are re-hashed.
 *
 * Perf: a compact binary file (numbers in one Float64Array, hashes as raw bytes, paths joined by
 * NUL) instead of JSON: on the Linux tree, loading and saving went from ~0.5 s to a few tens of
 * ms, and an unchanged snapshot does not rewrite it at all.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { LocalStore } from '../store/local.js';
import type { ScannedFile } from './walk.js';
import type { Digest } from '../core/digest.js';

/** Coarse kernel clocks can stamp a change up to a tick (<= 10 ms) before "now"; keep a margin. */
const RACY_MARGIN_MS = 50;
const MAGIC = 'treecast-stat-cache-2';
const FIELDS = 5; // dev, ino, size, mtimeMs, ctimeMs

interface Header {
  magic: string;
  root: string;
  startedMs: number;
  count: number;
}

export class StatCache {
  private index = new Map<string, number>();
  private nums: Float64Array = new Float64Array(0);
  private hashes: Buffer = Buffer.alloc(0);
  private trustBeforeMs = 0;
  /** Lookups answered from the cache in this run. */
  hits = 0;

  private constructor(
    private readonly file: string,
    private readonly root: string,
  ) {}

  static load(store: LocalStore, rootAbs: string): StatCache {
    const file = join(store.root, 'stat-cache', createHash('sha256').update(rootAbs).digest('hex'));
    const cache = new StatCache(file, rootAbs);
    try {
      cache.read(fs.readFileSync(file));
    } catch {
      // Absent or unreadable: start empty; the cache is only ever a shortcut.
      cache.index = new Map();
    }
    return cache;
  }

  get size(): number {
    return this.index.size;
  }

  private read(buf: Buffer): void {
    const headerLen = buf.readUInt32LE(0);
    const header = JSON.parse(buf.toString('utf8', 4, 4 + headerLen)) as Header;
    if (header.magic !== MAGIC || header.root !== this.root) return;
    const n = header.count;
    let off = 4 + headerLen;
    this.nums = new Float64Array(buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + off + n * FIELDS * 8));
    off += n * FIELDS * 8;
    this.hashes = buf.subarray(off, off + n * 32);
    off += n * 32;
    const paths = buf.toString('utf8', off).split('\0');
    if (paths.length !== n || this.nums.length !== n * FIELDS || this.hashes.length !== n * 32) return;
    for (let i = 0; i < n; i++) this.index.set(paths[i]!, i);
    this.trustBeforeMs = header.startedMs - RACY_MARGIN_MS;
  }

  /** The digest recorded for `f` when its stat is unchanged and the entry is not racy. */
  lookup(f: ScannedFile): Digest | undefined {
    const i = this.index.get(f.rel);
    if (i === undefined) return undefined;
    const o = i * FIELDS;
    const v = this.nums;
    if (v[o] !== f.dev || v[o + 1] !== f.ino || v[o + 2] !== f.size || v[o + 3] !== f.mtimeMs || v[o + 4] !== f.ctimeMs) return undefined;
    if (f.ctimeMs >= this.trustBeforeMs || f.mtimeMs >= this.trustBeforeMs) return undefined;
    this.hits++;
    return { hash: this.hashes.toString('hex', i * 32, i * 32 + 32), size: f.size };
  }

  /** Replaces the cache with the files of this snapshot (started at `startedMs`), atomically. */
  save(files: readonly ScannedFile[], startedMs: number, tmpPath: string): void {
    const kept = files.filter((f) => f.digest !== undefined && f.size > 0);
    const n = kept.length;
    const nums = new Float64Array(n * FIELDS);
    const hashes = Buffer.allocUnsafe(n * 32);
    for (let i = 0; i < n; i++) {
      const f = kept[i]!;
      const o = i * FIELDS;
      nums[o] = f.dev;
      nums[o + 1] = f.ino;
      nums[o + 2] = f.size;
      nums[o + 3] = f.mtimeMs;
      nums[o + 4] = f.ctimeMs;
      hashes.write(f.digest!.hash, i * 32, 32, 'hex');
    }
    const header = Buffer.from(JSON.stringify({ magic: MAGIC, root: this.root, startedMs, count: n } satisfies Header));
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32LE(header.length, 0);
    const body = Buffer.concat([len, header, Buffer.from(nums.buffer), hashes, Buffer.from(kept.map((f) => f.rel).join('\0'))]);
    try {
      fs.mkdirSync(join(this.file, '..'), { recursive: true });
      fs.writeFileSync(tmpPath, body);
      fs.renameSync(tmpPath, this.file);
    } catch {
      // A cache that cannot be written costs speed next time, never correctness.
      fs.rmSync(tmpPath, { force: true });
    }
  }
}
