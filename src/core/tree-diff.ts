/**
 * Differences between two trees as paths: added, removed, changed (content, type, execute bit or
 * symlink target). Subtrees with equal digests are not walked.
 */
import { type Digest, sameDigest } from './digest.js';
import type { Directory } from './reapi.js';
import { compareNames } from './names.js';

export type TreeLookup = (d: Digest) => Directory;

export interface TreeChange {
  change: 'added' | 'removed' | 'changed';
  path: string;
  type: 'file' | 'dir' | 'symlink';
}

type Node = { kind: 'file'; digest: Digest; exec: boolean } | { kind: 'dir'; digest: Digest } | { kind: 'symlink'; target: string };

function nodes(d: Directory): Map<string, Node> {
  const m = new Map<string, Node>();
  for (const f of d.files) m.set(f.name, { kind: 'file', digest: f.digest, exec: f.executable });
  for (const s of d.symlinks) m.set(s.name, { kind: 'symlink', target: s.target });
  for (const x of d.directories) m.set(x.name, { kind: 'dir', digest: x.digest });
  return m;
}

export function diffTrees(a: Digest, b: Digest, tree: TreeLookup): TreeChange[] {
  const out: TreeChange[] = [];
  const all = (d: Digest, prefix: string, change: 'added' | 'removed') => {
    for (const [name, n] of nodes(tree(d))) {
      out.push({ change, path: prefix + name, type: n.kind });
      if (n.kind === 'dir') all(n.digest, `${prefix}${name}/`, change);
    }
  };
  const walk = (x: Digest, y: Digest, prefix: string) => {
    if (sameDigest(x, y)) return;
    const left = nodes(tree(x));
    const right = nodes(tree(y));
    const names = [...new Set([...left.keys(), ...right.keys()])].sort(compareNames);
    for (const name of names) {
      const l = left.get(name);
      const r = right.get(name);
      const path = prefix + name;
      if (!l) {
        out.push({ change: 'added', path, type: r!.kind });
        if (r!.kind === 'dir') all(r!.digest, `${path}/`, 'added');
      } else if (!r) {
        out.push({ change: 'removed', path, type: l.kind });
        if (l.kind === 'dir') all(l.digest, `${path}/`, 'removed');
      } else if (l.kind === 'dir' && r.kind === 'dir') {
        walk(l.digest, r.digest, `${path}/`);
      } else if (l.kind !== r.kind) {
        out.push({ change: 'removed', path, type: l.kind });
        if (l.kind === 'dir') all(l.digest, `${path}/`, 'removed');
        out.push({ change: 'added', path, type: r.kind });
        if (r.kind === 'dir') all(r.digest, `${path}/`, 'added');
      } else if (l.kind === 'file' && r.kind === 'file' ? !sameDigest(l.digest, r.digest) || l.exec !== r.exec : l.kind === 'symlink' && r.kind === 'symlink' && l.target !== r.target) {
        out.push({ change: 'changed', path, type: l.kind });
      }
    }
  };
  walk(a, b, '');
  return out;
}
