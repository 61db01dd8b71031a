/**
 * Reads Directory messages from any BlobStore, verified and decoded, with a per-run cache (a tree
 * often repeats subtrees). Every message is validated before any caller sees it, so nothing is
 * written from a tree that holds an unsafe name anywhere.
 */
import { type Digest, formatDigest } from '../core/digest.js';
import { type Directory, type RawDirectory, decodeDirectory, splitDirectory } from '../core/reapi.js';
import { MAX_DEPTH } from '../core/names.js';
import { InvalidTreeError } from '../errors.js';
import type { BlobStore } from './store.js';
import { LocalStore } from './local.js';
import { type MessagesByHash, type RawTreePack, findInPack, readTreePack } from './tree-pack.js';
import { PackedTree } from '../core/packed-tree.js';

export class TreeReader {
  private readonly cache = new Map<string, Directory>();
  /** Raw messages from tree packs (see tree-pack.ts), decoded and validated on first use. */
  private readonly packed: MessagesByHash[] = [];
  /** Raw bytes of every message read in this run, for writing a pack afterwards. */
  readonly raw = new Map<string, Buffer>();
  constructor(private readonly store: BlobStore) {}

  /**
   * Serves messages of `root` from its pack when the store has one; returns whether it did.
   * loadPackedSync(root) then loads the whole tree from that pack's buffer and index.
   */
  usePack(root: Digest): boolean {
    if (!(this.store instanceof LocalStore)) return false;
    const pack = readTreePack(this.store, root);
    if (!pack) return false;
    this.packed.push(pack);
    this.rootPacks.set(root.hash, pack.raw);
    return true;
  }

  /** The packs usePack read, by the root they were read for (loadPackedSync). */
  private readonly rootPacks = new Map<string, RawTreePack>();

  /**
   * Serves these messages (hash -> bytes, each already verified against its hash and stored)
   * instead of reading them back from the store: what a pull's /tree answer just received.
   */
  useVerified(messages: Map<string, Buffer>): void {
    this.packed.push(messages);
  }

  private bytesSync(d: Digest): Buffer {
    for (const pack of this.packed) {
      const fromPack = pack.get(d.hash);
      if (fromPack && fromPack.length === d.size) return fromPack;
    }
    return (this.store as LocalStore).readSync(d);
  }

  /** One decoded Directory. Local stores are read synchronously (no promise per directory). */
  async get(d: Digest): Promise<Directory> {
    if (this.store instanceof LocalStore) return this.getSync(d);
    return this.cache.get(d.hash) ?? this.decode(d, await this.store.get(d));
  }

  getSync(d: Digest): Directory {
    if (!(this.store instanceof LocalStore)) throw new Error('getSync needs a local store');
    return this.cache.get(d.hash) ?? this.decode(d, this.bytesSync(d));
  }

  private decode(d: Digest, bytes: Buffer): Directory {
    const dir = decodeDirectory(bytes, formatDigest(d));
    this.cache.set(d.hash, dir);
    this.raw.set(d.hash, bytes);
    return dir;
  }

  /**
   * Forgets the raw bytes (packs and `raw`) once every message needed is decoded; later reads of
   * messages not cached go to the store. Perf: the Linux tree's pack is 7.5 MB, held for the whole
   * of a checkout, whose plan reads the decoded tree as it writes.
   */
  releaseBytes(): void {
    this.packed.length = 0;
    this.rootPacks.clear();
    this.raw.clear();
  }

  /**
   * A message's bytes as read (from a pack or the store), neither decoded nor split: for a message
   * already validated once (an update's last tree, plan.ts ReconcileInput.message). Local stores only.
   */
  messageSync(d: Digest): Buffer {
    if (!(this.store instanceof LocalStore)) throw new Error('messageSync needs a local store');
    return this.bytesSync(d);
  }

  /** A message split into raw entries, without decoding (see splitDirectory). Local stores only. */
  rawSync(d: Digest): RawDirectory {
    if (!(this.store instanceof LocalStore)) throw new Error('rawSync needs a local store');
    return splitDirectory(this.bytesSync(d), formatDigest(d));
  }

  /**
   * Every Directory reachable from `root` (each distinct one once), breadth first, each validated
   * as `get` does, decoded into a PackedTree (no object per entry); directory 0 is the root. Local
   * stores only. The PackedTree keeps the messages' bytes (`releaseBytes` may run after).
   * Perf: synchronous, as `get` made a promise per directory: its awaits took ~35 ms of the main
   * thread's self time before the first write of a copy checkout of the node_modules corpus
   * (4,894 distinct directories). For the packed form see PackedTree (core/packed-tree.ts) and
   * planFreshPacked (materialize/plan.ts).
   */
  loadPackedSync(root: Digest): PackedTree {
    const pack = this.rootPacks.get(root.hash);
    if (pack) return this.loadFromRawPack(root, pack);
    const t = new PackedTree();
    const index = new Map<string, number>();
    // Perf: the loop's body is a function of its own: compiled on stack replacement with the
    // decoder inlined into it, this loop took Turbofan ~75 ms (--trace-opt).
    let level: Wanted[] = [{ hash: root.hash, size: root.size, entries: [] }];
    for (let depth = 0; level.length > 0; depth++) {
      if (depth > MAX_DEPTH) throw new InvalidTreeError(`tree ${formatDigest(root)} nests deeper than ${MAX_DEPTH} levels`, { digest: formatDigest(root) });
      const pending = new Map<string, Wanted>();
      for (const w of level) pending.set(w.hash, w);
      const next: Wanted[] = [];
      for (let i = 0; i < level.length; i++) this.loadPackedOne(t, level[i]!, index, pending, next);
      level = next;
    }
    return t;
  }

  /** Decodes one wanted message into `t`, and queues the subdirectories not loaded or wanted yet. */
  private loadPackedOne(t: PackedTree, w: Wanted, index: Map<string, number>, pending: Map<string, Wanted>, next: Wanted[]): void {
    const d: Digest = { hash: w.hash, size: w.size };
    const bytes = this.bytesSync(d);
    const dir = t.add(bytes, formatDigest(d));
    index.set(w.hash, dir);
    this.raw.set(w.hash, bytes);
    for (const e of w.entries) t.children[e] = dir;
    // Perf: the keyed store and the push run for every entry, not in branches that only a
    // directory met again (or wanted twice in one level) takes: Turbofan compiled this function
    // before any such entry came, and the first one threw the optimized code away ("insufficient
    // type feedback", --trace-deopt) for a second compile, 65 ms and 29 ms of a background
    // thread's time on the node_modules corpus while the worker thread was booting on the other core.
    for (let e = t.fileEnd[dir]!, end = t.dirEnd[dir]!; e < end; e++) {
      const sub = t.hash(dir, e);
      const known = index.get(sub);
      t.children[e] = known ?? -1;
      if (known !== undefined) continue;
      let wanted = pending.get(sub);
      if (wanted === undefined) {
        wanted = { hash: sub, size: t.values[e]!, entries: [] };
        pending.set(sub, wanted);
        next.push(wanted);
      }
      wanted.entries.push(e);
    }
  }

  /**
   * loadPackedSync from a RawTreePack (usePack): the same directories in the same order (breadth
   * first, each distinct message once, numbered as first named), each validated by PackedTree.add
   * before any entry of it is read; a subdirectory is found in the pack by the hex in its entry's
   * bytes, with no string made. One the pack lacks, or holds with a length other than its digest's
   * size, is read from the store as bytesSync reads it. Raw bytes are not kept (`raw` stays empty:
   * the pack is there).
   * Perf: the Linux tree (5,092 distinct directories, 83,713 entries), a fresh process importing
   * the modules, reading the pack and loading the tree, run as SCHED_FIFO, 10 interleaved runs:
   * pack + load 83.1 ms (median; load alone 65.9) with the Map and loadPackedOne, 64.0 ms (48.9)
   * with this; 48.0 ms (33.3) with PackedTree's table for the hex check as well.
   */
  private loadFromRawPack(root: Digest, pack: RawTreePack): PackedTree {
    const t = new PackedTree(pack.buf.length >>> 6);
    // Per message of the pack: the directory it became (-1: not named yet).
    const dirOf = new Int32Array(pack.starts.length).fill(-1);
    // Per directory named so far (its number): the message (-1: not in the pack), its digest's size,
    // its depth, and for one not in the pack its hash.
    let msg = new Int32Array(1024);
    let sizes = new Float64Array(1024);
    let depths = new Uint16Array(1024);
    const apart = new Map<string, number>();
    const hexOf = new Map<number, string>();
    let named = 1;
    const rootKey = Buffer.from(root.hash, 'hex');
    const rootMsg = findInPack(pack, rootKey, 0, false);
    msg[0] = rootMsg;
    sizes[0] = root.size;
    if (rootMsg >= 0) dirOf[rootMsg] = 0;
    else {
      apart.set(root.hash, 0);
      hexOf.set(0, root.hash);
    }
    for (let d = 0; d < named; d++) {
      if (depths[d]! > MAX_DEPTH) throw new InvalidTreeError(`tree ${formatDigest(root)} nests deeper than ${MAX_DEPTH} levels`, { digest: formatDigest(root) });
      const m = msg[d]!;
      const size = sizes[d]!;
      let bytes: Buffer;
      if (m >= 0 && pack.ends[m]! - pack.starts[m]! === size) bytes = pack.buf.subarray(pack.starts[m]!, pack.ends[m]!);
      else bytes = this.bytesSync({ hash: hexOf.get(d) ?? pack.buf.toString('hex', pack.starts[m]! - 36, pack.starts[m]! - 4), size });
      t.add(bytes, () => formatDigest({ hash: hexOf.get(d) ?? pack.buf.toString('hex', pack.starts[m]! - 36, pack.starts[m]! - 4), size }));
      const src = t.bytes[d]!;
      for (let e = t.fileEnd[d]!, end = t.dirEnd[d]!; e < end; e++) {
        const found = findInPack(pack, src, t.valueStarts[e]!, true);
        let sub = found >= 0 ? dirOf[found]! : -1;
        let hash: string | undefined;
        if (found < 0) {
          hash = t.hash(d, e);
          sub = apart.get(hash) ?? -1;
        }
        if (sub < 0) {
          sub = named++;
          if (sub === msg.length) {
            msg = grown(msg, Int32Array);
            sizes = grown(sizes, Float64Array);
            depths = grown(depths, Uint16Array);
          }
          msg[sub] = found;
          sizes[sub] = t.values[e]!;
          depths[sub] = depths[d]! + 1;
          if (found >= 0) dirOf[found] = sub;
          else {
            apart.set(hash!, sub);
            hexOf.set(sub, hash!);
          }
        }
        t.children[e] = sub;
      }
    }
    return t;
  }

  /** Yields every entry below `root` with its relative path, depth first, in canonical order. */
  async *walk(root: Digest, prefix = ''): AsyncGenerator<WalkedEntry> {
    yield* this.walkDir(await this.get(root), prefix, 0);
  }

  private async *walkDir(dir: Directory, prefix: string, depth: number): AsyncGenerator<WalkedEntry> {
    if (depth > MAX_DEPTH) throw new InvalidTreeError(`tree nests deeper than ${MAX_DEPTH} levels at '${prefix}'`);
    for (const f of dir.files) yield { type: 'file', path: prefix + f.name, digest: f.digest, executable: f.executable };
    for (const s of dir.symlinks) yield { type: 'symlink', path: prefix + s.name, target: s.target };
    for (const d of dir.directories) {
      yield { type: 'dir', path: prefix + d.name, digest: d.digest };
      yield* this.walkDir(await this.get(d.digest), `${prefix}${d.name}/`, depth + 1);
    }
  }
}

function grown<T extends Int32Array | Float64Array | Uint16Array>(a: T, make: new (n: number) => T): T {
  const b = new make(a.length * 2);
  b.set(a);
  return b;
}

/** A directory message to load, and the directory entries that name it. */
interface Wanted {
  hash: string;
  size: number;
  entries: number[];
}

export type WalkedEntry =
  | { type: 'file'; path: string; digest: Digest; executable: boolean }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'dir'; path: string; digest: Digest };
