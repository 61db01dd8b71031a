/**
 * The snapshot stat cache: for each file of a snapshotted directory, the (device, inode, size,
 * mtime, ctime) it had when hashed, and its digest. A second snapshot of an unchanged tree reads
 * no file contents.
 *
 * Racy entries (git's "racily clean" problem): a file changed within the same timestamp tick as
 * the stat recorded for it keeps an identical stat. So an entry is trusted only when its ctime is
 * safely older than the start of the snapshot that recorded it; younger entries are re-hashed.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { LocalStore } from '../store/local.js';
import type { ScannedFile } from './walk.js';
import type { Digest } from '../core/digest.js';

/** Coarse kernel clocks can stamp a change up to a tick (<= 10 ms) before "now"; keep a margin. */
const RACY_MARGIN_MS = 50;

type Entry = [dev: number, ino: number, size: number, mtimeMs: number, ctimeMs: number, hash: string];

interface CacheFile {
  version: 1;
  root: string;
  startedMs: number;
  entries: Record<string, Entry>;
}

export class StatCache {
  private readonly entries: Map<string, Entry>;
  private readonly trustBeforeMs: number;

  private constructor(
    private readonly file: string,
    private readonly root: string,
    loaded: CacheFile | undefined,
  ) {
    this.entries = new Map(loaded ? Object.entries(loaded.entries) : []);
    this.trustBeforeMs = loaded ? loaded.startedMs - RACY_MARGIN_MS : 0;
  }

  static load(store: LocalStore, rootAbs: string): StatCache {
    const file = join(store.root, 'stat-cache', `${createHash('sha256').update(rootAbs).digest('hex')}.json`);
    let loaded: CacheFile | undefined;
    try {
      const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as CacheFile;
      if (parsed.version === 1 && parsed.root === rootAbs) loaded = parsed;
    } catch {
      // Absent or unreadable: start empty; the cache is only ever a shortcut.
    }
    return new StatCache(file, rootAbs, loaded);
  }

  /** The digest recorded for `f` when its stat is unchanged and the entry is not racy. */
  lookup(f: ScannedFile): Digest | undefined {
    const e = this.entries.get(f.rel);
    if (e === undefined) return undefined;
    if (e[0] !== f.dev || e[1] !== f.ino || e[2] !== f.size || e[3] !== f.mtimeMs || e[4] !== f.ctimeMs) return undefined;
    if (e[4] >= this.trustBeforeMs || e[3] >= this.trustBeforeMs) return undefined;
    return { hash: e[5], size: e[2] };
  }

  /** Replaces the cache with the files of this snapshot (started at `startedMs`), atomically. */
  save(files: readonly ScannedFile[], startedMs: number, tmpPath: string): void {
    const entries: Record<string, Entry> = {};
    for (const f of files) if (f.digest && f.size > 0) entries[f.rel] = [f.dev, f.ino, f.size, f.mtimeMs, f.ctimeMs, f.digest.hash];
    const body: CacheFile = { version: 1, root: this.root, startedMs, entries };
    try {
      fs.mkdirSync(join(this.file, '..'), { recursive: true });
      fs.writeFileSync(tmpPath, JSON.stringify(body));
      fs.renameSync(tmpPath, this.file);
    } catch {
      // A cache that cannot be written costs speed next time, never correctness.
      try {
        fs.unlinkSync(tmpPath);
      } catch {
        /* nothing to remove */
      }
    }
  }
}
