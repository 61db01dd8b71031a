/**
 * The action cache of a local store: values (REAPI `ActionResult` messages, or any bytes a client
 * such as ccache keeps there) under 64-hex keys, in `STORE/ac/<2 hex>/<key>`.
 *
 * Unlike blobs, entries are not content addressed: a key's value can be replaced. Every write goes
 * to a temp file in the store first and is renamed over the entry, so a reader sees the old value
 * or the new one, never a mix. An entry's mtime is its last use (written, or read by `touch`), so
 * `gc --max-age` can drop entries nobody asked for in a while.
 *
 * Nothing here is read, served, listed, touched, written or removed through a symbolic link: ac/
 * and its shard folders are looked at by lstat (on every use) and entries opened
 * with O_NOFOLLOW, so a link planted there (which `treecast serve` would otherwise send: any file
 * the server can read) is a StoreDamagedError naming it, a miss to the server, skipped by gc.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { type ActionResult, actionResultBlobs, decodeTree } from '../core/action-result.js';
import { type Digest, isHash } from '../core/digest.js';
import { StoreDamagedError, fsError } from '../errors.js';
import { type LocalStore, checkStoreFolders, damagedEntryError, makeStoreFolders, entryKind, isRealFolder, readStoreEntry, realFolders, removeQuietly } from './local.js';

export interface ActionCacheEntry {
  key: string;
  path: string;
  size: number;
  /** Last written or read (the file's mtime). */
  lastUsedMs: number;
}

export class ActionCache {
  readonly dir: string;

  constructor(private readonly store: LocalStore) {
    this.dir = join(store.root, 'ac');
  }

  path(key: string): string {
    return `${this.shardDir(key)}/${key}`;
  }

  private shardDir(key: string): string {
    return `${this.dir}/${key.slice(0, 2)}`;
  }

  /**
   * Whether ac/ and the key's shard are real folders; a link is refused. Looked at again on every use (two lstats), not once per process as blob shards are:
   * a server runs for days, and a shard folder swapped for a link after a first look would have
   * every later GET read, and PUT write, through it.
   */
  private foldersSound(key: string): boolean {
    return checkStoreFolders(this.store.root, this.dir, this.shardDir(key), 'a folder of the action cache');
  }

  /** The entry's size, or undefined when there is none; a link at its name or folder is a StoreDamagedError. */
  size(key: string): number | undefined {
    if (!this.foldersSound(key)) return undefined;
    const p = this.path(key);
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    if (st === undefined || st.isDirectory()) return undefined;
    if (!st.isFile()) throw damagedEntryError(this.store.root, p, entryKind(st), 'an action cache entry');
    return st.size;
  }

  /** The entry's bytes, or undefined when there is none; never read through a link (StoreDamagedError). */
  read(key: string): Buffer | undefined {
    const p = this.path(key);
    try {
      if (!this.foldersSound(key)) return undefined;
      return readStoreEntry(this.store.root, p, 'an action cache entry');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw fsError(e, 'cannot read action cache entry', p); // a StoreDamagedError passes through
    }
  }

  /** Marks the entry used now (its mtime), so gc --max-age keeps it. Quiet when it just vanished. */
  touch(key: string): void {
    const now = new Date();
    try {
      // lutimes: a link swapped in since the read has its own time set, never its target's.
      if (this.foldersSound(key)) fs.lutimesSync(this.path(key), now, now);
    } catch {
      /* removed by gc meanwhile: the read already happened */
    }
  }

  /** A temp path in the store for a new value; hand it to `commit` once complete. */
  tmpPath(): string {
    return this.store.tmpPath('ac');
  }

  /**
   * Moves a complete temp file over the entry (atomic replace; a link planted at the entry's name is
   * replaced itself). A shard folder that is a link is refused, never written into.
   */
  commit(tmp: string, key: string): void {
    const p = this.path(key);
    try {
      makeStoreFolders(this.store.root, this.dir, this.shardDir(key), 'a folder of the action cache');
      fs.renameSync(tmp, p);
    } catch (e) {
      removeQuietly(tmp);
      throw fsError(e, 'cannot write action cache entry', p);
    }
  }

  /** Writes a whole value (temp file, then rename). */
  write(key: string, bytes: Uint8Array): void {
    const tmp = this.tmpPath();
    try {
      fs.writeFileSync(tmp, bytes, { flag: 'wx', mode: 0o644 });
    } catch (e) {
      removeQuietly(tmp);
      throw fsError(e, 'cannot write action cache entry', tmp);
    }
    this.commit(tmp, key);
  }

  /** Removes the entry; never through a shard folder that is not a real folder. */
  remove(key: string): void {
    if (isRealFolder(this.dir) && isRealFolder(this.shardDir(key))) removeQuietly(this.path(key));
  }

  /** Every entry, shard by shard: regular files in real folders only (verify reports a link). */
  *list(): Generator<ActionCacheEntry> {
    if (!isRealFolder(this.dir)) return;
    for (const shard of realFolders(this.dir)) {
      if (!/^[0-9a-f]{2}$/.test(shard)) continue;
      for (const key of readdirQuiet(join(this.dir, shard))) {
        if (!isHash(key)) continue;
        const path = join(this.dir, shard, key);
        const st = fs.lstatSync(path, { throwIfNoEntry: false });
        if (st?.isFile()) yield { key, path, size: st.size, lastUsedMs: st.mtimeMs };
      }
    }
  }
}

function readdirQuiet(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw fsError(e, 'cannot list', dir);
  }
}

/** What an ActionResult references in a store. */
export interface ActionResultReferences {
  /**
   * Blobs a client restoring the result needs: output files, stdout and stderr, each output
   * directory's Tree message (and root Directory when set), and every file in those trees.
   */
  needed: Digest[];
  /** Directory messages named by the trees, kept when the store holds them (a client may fetch them one by one). */
  directories: Digest[];
  /** Output directories' root Directory digests, for walking the trees as the store holds them. */
  roots: Digest[];
  /** Why a Tree message held in the store could not be read, if one could not. */
  badTree?: string;
}

/**
 * The blobs `ar` references, reading each output directory's Tree message from `store`. A Tree
 * that is absent contributes only its own digest (which a completeness check then finds missing);
 * one that is held but corrupt or malformed is reported in `badTree`.
 */
export function actionResultReferences(store: LocalStore, ar: ActionResult, where: string): ActionResultReferences {
  const needed = actionResultBlobs(ar);
  const directories: Digest[] = [];
  const roots: Digest[] = [];
  let badTree: string | undefined;
  for (const out of ar.outputDirectories) {
    if (out.rootDirectoryDigest) roots.push(out.rootDirectoryDigest);
    let tree;
    try {
      tree = decodeTree(store.readSync(out.treeDigest), `the tree of '${out.path}' in ${where}`);
    } catch (e) {
      // Held but unreadable; a link planted as its shard folder or at its own name, or a folder
      // there (StoreDamagedError, from the read or from hasSync), is such a tree too, reported,
      // never followed.
      if (e instanceof StoreDamagedError || store.hasSyncOr(out.treeDigest, true)) badTree ??= (e as Error).message;
      continue;
    }
    for (const dir of [tree.root, ...tree.children]) {
      directories.push(dir.digest);
      for (const f of dir.directory.files) needed.push(f.digest);
    }
  }
  return { needed, directories, roots, ...(badTree ? { badTree } : {}) };
}
