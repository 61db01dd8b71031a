/**
 * Builds canonical Directory messages from a flat list of entries (paths relative to the root).
 * Pure: it returns the messages and the root digest; the caller stores them. Used by archive
 * import and tests.
 *
 * Two ways to use it: add every entry, then `build` (all messages at the end); or, when the paths
 * are known before the file digests (zip import), add the files with `addPending`, `seal`, and hand
 * in each digest with `setDigest` as it comes: every directory is then encoded, and handed to
 * `seal`'s callback, as soon as its last file and subdirectory are in.
 */
import type { Digest } from './digest.js';
import { type Directory, type DirectoryNode, type FileNode, type SymlinkNode, directoryBlob } from './reapi.js';
import { compareNames, nameProblem, MAX_DEPTH } from './names.js';
import { UnsafePathError } from '../errors.js';

export type TreeEntry =
  | { type: 'file'; path: string; digest: Digest; executable: boolean }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'dir'; path: string };

/** A directory being built (internal to TreeBuilder; exported for PendingFile's type). */
export interface Node {
  files: BuildingFile[];
  symlinks: SymlinkNode[];
  dirs: Map<string, Node>;
  parent: Node | undefined;
  /** Its files still without a digest, plus (once sealed) its subdirectories not yet encoded. */
  waiting: number;
  /** Its message's digest, once encoded. */
  digest?: Digest;
}

/** A FileNode whose digest a pending file gets later. */
interface BuildingFile {
  readonly name: string;
  digest: Digest;
  readonly executable: boolean;
}

/** A file added by `addPending`, whose digest `setDigest` fills in. */
export interface PendingFile {
  readonly node: Node;
  readonly file: BuildingFile;
}

/** A Directory message: its encoding and digest. */
export type EncodedDirectory = { bytes: Buffer; digest: Digest };

export interface BuiltTree {
  root: Digest;
  /** Every Directory message, bytes by hash, children before parents. */
  messages: Map<string, EncodedDirectory>;
}

function newNode(parent: Node | undefined): Node {
  return { files: [], symlinks: [], dirs: new Map(), parent, waiting: 0 };
}

/** Stands for a digest not handed in yet (never encoded: a directory waits for all of its files). */
const NO_DIGEST: Digest = { hash: '', size: -1 };

export class TreeBuilder {
  private readonly root = newNode(undefined);
  /** Set by `seal`: where each newly encoded message goes (each distinct message once). */
  private onMessage: ((m: EncodedDirectory) => void) | undefined;
  private readonly emitted = new Set<string>();
  private readonly seen = new Map<string, TreeEntry['type']>();
  /**
   * The directory the previous entry went into, and its node. Its parts were checked and it is
   * known to be a directory, so a next entry in it checks only its own name (and is no deeper
   * than MAX_DEPTH, since the previous one was not).
   * Perf: archives list a directory's entries together; on the Linux tree's zip (83,730 entries)
   * the walk from the root for each entry (split, a name check and a prefix string per part) made
   * TreeBuilder.add the largest cost of import's main thread. Adding every entry in a fresh process
   * took 236-269 ms of CPU (median 247), 152-193 ms (169) with this (5 interleaved runs, load 10).
   */
  private lastDirPath: string | undefined;
  private lastDir: Node = this.root;

  /** Adds an entry; parents are implied. Refuses unsafe names and entries that clash with earlier ones. */
  add(entry: TreeEntry): void {
    this.place(entry);
  }

  /**
   * Adds a file whose digest is not known yet (refused as `add` refuses); `setDigest` hands it in.
   * Its directory (and those above it) is not encoded before it has.
   */
  addPending(path: string, executable: boolean): PendingFile {
    const node = this.place({ type: 'file', path, digest: NO_DIGEST, executable });
    node.waiting++;
    return { node, file: node.files[node.files.length - 1]! };
  }

  /** Hands in a pending file's digest; once sealed, encodes every directory this completes. */
  setDigest(pending: PendingFile, digest: Digest): void {
    if (pending.file.digest !== NO_DIGEST) throw new Error(`TreeBuilder: '${pending.file.name}' has its digest already`);
    pending.file.digest = digest;
    if (--pending.node.waiting === 0 && this.onMessage) this.complete(pending.node);
  }

  /**
   * No entry is added after this. Encodes every directory already complete, and from now on each
   * one as its last pending file comes in, children before parents, handing each distinct message
   * to `onMessage` once.
   * Perf: encoding the Linux tree's 5,096 directories in `build`, after the last file of a zip
   * import, took 110-140 ms of CPU while both workers sat idle, and storing the messages after
   * that about as long again: 538 ms from the workers' last inflate to the end of the import
   * (cpu-prof, load 7). Encoded as they complete and stored with the file batches
   * (archive/import.ts DirectoryWriter): 33-58 ms (3 profiles, load 10-12), same root digest.
   */
  seal(onMessage: (m: EncodedDirectory) => void): void {
    if (this.onMessage) throw new Error('TreeBuilder: sealed already');
    this.onMessage = onMessage;
    this.sealNode(this.root);
    if (this.root.waiting === 0) this.complete(this.root);
  }

  /** Counts each subdirectory as waiting and encodes the complete ones below `node` (not `node`). */
  private sealNode(node: Node): void {
    node.waiting += node.dirs.size;
    for (const child of node.dirs.values()) {
      this.sealNode(child);
      if (child.waiting === 0) {
        this.encode(child);
        node.waiting--;
      }
    }
  }

  /** Encodes a complete directory and every parent that completes with it (callable once sealed). */
  private complete(node: Node | undefined): void {
    while (node) {
      this.encode(node);
      node = node.parent;
      if (!node || --node.waiting > 0) return;
    }
  }

  private encode(node: Node): void {
    const directories: DirectoryNode[] = [];
    for (const [name, child] of node.dirs) directories.push({ name, digest: child.digest! });
    const dir: Directory = { files: node.files.sort(byName), directories: directories.sort(byName), symlinks: node.symlinks.sort(byName) };
    const blob = directoryBlob(dir);
    node.digest = blob.digest;
    // Its entries are in its message now; only the digest is needed, by its parent.
    node.files = [];
    node.symlinks = [];
    node.dirs.clear();
    if (this.emitted.has(blob.digest.hash)) return;
    this.emitted.add(blob.digest.hash);
    this.onMessage!(blob);
  }

  private place(entry: TreeEntry): Node {
    if (this.onMessage) throw new Error('TreeBuilder: entry added after seal');
    const path = entry.path;
    const cut = path.lastIndexOf('/');
    const dirPath = cut < 0 ? '' : path.slice(0, cut);
    const name = cut < 0 ? path : path.slice(cut + 1);
    let node: Node;
    if (dirPath === this.lastDirPath) {
      node = this.lastDir;
      const bad = nameProblem(name);
      if (bad) throw new UnsafePathError(`unsafe path '${path}': ${bad}`, { path });
    } else {
      node = this.parentOf(path);
      this.lastDirPath = dirPath;
      this.lastDir = node;
    }
    const prev = this.seen.get(path);
    if (prev !== undefined) {
      if (prev === 'dir' && entry.type === 'dir') return node;
      throw new UnsafePathError(`duplicate entry '${path}' (${prev} and ${entry.type})`, { path });
    }
    this.seen.set(path, entry.type);
    if (entry.type === 'file') node.files.push({ name, digest: entry.digest, executable: entry.executable });
    else if (entry.type === 'symlink') node.symlinks.push({ name, target: entry.target });
    else if (!node.dirs.has(name)) node.dirs.set(name, newNode(node));
    return node;
  }

  /** Checks every part of `path` and walks (making) its parent directories from the root. */
  private parentOf(path: string): Node {
    const parts = path.split('/');
    if (parts.length > MAX_DEPTH) throw new UnsafePathError(`'${path.slice(0, 200)}...' nests deeper than ${MAX_DEPTH} levels`, { path });
    for (const p of parts) {
      const bad = nameProblem(p);
      if (bad) throw new UnsafePathError(`unsafe path '${path}': ${bad}`, { path });
    }
    let node = this.root;
    let prefix = '';
    for (let i = 0; i < parts.length - 1; i++) {
      prefix = prefix ? `${prefix}/${parts[i]}` : parts[i]!;
      const kind = this.seen.get(prefix);
      if (kind !== undefined && kind !== 'dir') throw new UnsafePathError(`'${path}' lies under '${prefix}', which is a ${kind}`, { path });
      this.seen.set(prefix, 'dir');
      let child = node.dirs.get(parts[i]!);
      if (!child) node.dirs.set(parts[i]!, (child = newNode(node)));
      node = child;
    }
    return node;
  }

  /**
   * The root digest, and the messages not yet handed to `seal`'s callback (all of them when not
   * sealed), children before parents. Throws when a pending file has no digest.
   */
  build(): BuiltTree {
    const messages: BuiltTree['messages'] = new Map();
    if (!this.onMessage) this.seal((m) => messages.set(m.digest.hash, m));
    if (!this.root.digest) throw new Error('TreeBuilder: a pending file has no digest');
    return { root: this.root.digest, messages };
  }
}

const byName = (a: { name: string }, b: { name: string }) => compareNames(a.name, b.name);
