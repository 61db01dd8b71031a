/**
 * Builds canonical Directory messages from a flat list of entries (paths relative to the root).
 * Pure: it returns the messages and the root digest; the caller stores them. Used by snapshot,
 * archive import and tests.
 */
import type { Digest } from './digest.js';
import { type Directory, type DirectoryNode, type FileNode, type SymlinkNode, directoryBlob } from './reapi.js';
import { compareNames, nameProblem, MAX_DEPTH } from './names.js';
import { UnsafePathError } from '../errors.js';

export type TreeEntry =
  | { type: 'file'; path: string; digest: Digest; executable: boolean }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'dir'; path: string };

interface Node {
  files: FileNode[];
  symlinks: SymlinkNode[];
  dirs: Map<string, Node>;
}

export interface BuiltTree {
  root: Digest;
  /** Every Directory message, bytes by hash, children before parents. */
  messages: Map<string, { bytes: Buffer; digest: Digest }>;
}

function newNode(): Node {
  return { files: [], symlinks: [], dirs: new Map() };
}

export class TreeBuilder {
  private readonly root = newNode();
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
      if (prev === 'dir' && entry.type === 'dir') return;
      throw new UnsafePathError(`duplicate entry '${path}' (${prev} and ${entry.type})`, { path });
    }
    this.seen.set(path, entry.type);
    if (entry.type === 'file') node.files.push({ name, digest: entry.digest, executable: entry.executable });
    else if (entry.type === 'symlink') node.symlinks.push({ name, target: entry.target });
    else if (!node.dirs.has(name)) node.dirs.set(name, newNode());
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
      if (!child) node.dirs.set(parts[i]!, (child = newNode()));
      node = child;
    }
    return node;
  }

  build(): BuiltTree {
    const messages = new Map<string, { bytes: Buffer; digest: Digest }>();
    const root = encodeNode(this.root, messages);
    return { root, messages };
  }
}

const byName = (a: { name: string }, b: { name: string }) => compareNames(a.name, b.name);

function encodeNode(node: Node, out: BuiltTree['messages']): Digest {
  const directories: DirectoryNode[] = [];
  for (const [name, child] of node.dirs) directories.push({ name, digest: encodeNode(child, out) });
  const dir: Directory = { files: node.files.sort(byName), directories: directories.sort(byName), symlinks: node.symlinks.sort(byName) };
  const blob = directoryBlob(dir);
  out.set(blob.digest.hash, blob);
  return blob.digest;
}
