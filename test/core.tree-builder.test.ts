/**
 * TreeBuilder: the root digest depends only on the set of entries, not the order they come in, and
 * equals an encoding made directory by directory; unsafe names, duplicates and entries under a
 * file or symlink are refused however the entries are grouped (an entry in the same directory as
 * the one before it takes a shorter path through `add`). With files added pending and their digests
 * handed in later in any order, each directory is handed out once complete, with the same root.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type EncodedDirectory, type PendingFile, TreeBuilder, type TreeEntry } from '../src/core/tree-builder.js';
import { type Directory, decodeDirectory, directoryBlob, sortDirectory } from '../src/core/reapi.js';
import { type Digest, digestOf } from '../src/core/digest.js';
import { UnsafePathError } from '../src/errors.js';

/** A small deterministic generator (mulberry32), so a failure can be replayed. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface RefDir {
  dirs: Map<string, RefDir>;
  files: Map<string, { digest: Digest; executable: boolean }>;
  links: Map<string, string>;
}

/** A random tree as a depth-first list (each directory's entries together, as zip and walks list them). */
function randomTree(seed: number): { entries: TreeEntry[]; ref: RefDir } {
  const r = rng(seed);
  const entries: TreeEntry[] = [];
  const names = ['a', 'b', 'B', 'z', 'é', 'ab', 'a.b', 'x y', '日本', '0'];
  const fill = (path: string, depth: number): RefDir => {
    const d: RefDir = { dirs: new Map(), files: new Map(), links: new Map() };
    const used = new Set<string>();
    const count = 1 + Math.floor(r() * 6);
    for (let i = 0; i < count; i++) {
      const name = `${names[Math.floor(r() * names.length)]}${Math.floor(r() * 3) || ''}`;
      if (used.has(name)) continue;
      used.add(name);
      const p = path ? `${path}/${name}` : name;
      const kind = r();
      if (kind < 0.3 && depth < 5) {
        // An explicit directory entry, or one only implied by what lies under it.
        if (r() < 0.5) entries.push({ type: 'dir', path: p });
        d.dirs.set(name, fill(p, depth + 1));
      } else if (kind < 0.4) {
        const target = `../t${Math.floor(r() * 9)}`;
        entries.push({ type: 'symlink', path: p, target });
        d.links.set(name, target);
      } else {
        const digest = digestOf(Buffer.from(`${p}:${Math.floor(r() * 4)}`));
        const executable = r() < 0.2;
        entries.push({ type: 'file', path: p, digest, executable });
        d.files.set(name, { digest, executable });
      }
    }
    return d;
  };
  return { entries, ref: fill('', 0) };
}

/** The root digest encoded directory by directory, children first, without TreeBuilder. */
function refRoot(d: RefDir): Digest {
  const dir: Directory = {
    files: [...d.files].map(([name, f]) => ({ name, digest: f.digest, executable: f.executable })),
    directories: [...d.dirs].map(([name, c]) => ({ name, digest: refRoot(c) })),
    symlinks: [...d.links].map(([name, target]) => ({ name, target })),
  };
  return directoryBlob(sortDirectory(dir)).digest;
}

function build(entries: TreeEntry[]): Digest {
  const tb = new TreeBuilder();
  for (const e of entries) tb.add(e);
  return tb.build().root;
}

test('random trees: the root equals a directory-by-directory encoding, in listing order and shuffled', () => {
  for (let seed = 1; seed <= 60; seed++) {
    const { entries, ref } = randomTree(seed);
    const want = refRoot(ref);
    assert.deepEqual(build(entries), want, `seed ${seed}, listing order`);
    const r = rng(seed * 7919);
    const shuffled = [...entries];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
    }
    assert.deepEqual(build(shuffled), want, `seed ${seed}, shuffled`);
    // Files of one directory split by entries of another, then back: each goes to its own directory.
    assert.deepEqual(build([...shuffled].reverse()), want, `seed ${seed}, reversed`);
  }
});

const file = (path: string, text = path): TreeEntry => ({ type: 'file', path, digest: digestOf(Buffer.from(text)), executable: false });

/** Adds `before`, then expects `bad` to be refused with `why`. */
function refused(before: TreeEntry[], bad: TreeEntry, why: RegExp): void {
  const tb = new TreeBuilder();
  for (const e of before) tb.add(e);
  assert.throws(() => tb.add(bad), (e: unknown) => e instanceof UnsafePathError && why.test(e.message), `${bad.path} after ${before.map((e) => e.path).join(', ')}`);
}

test('an entry in the same directory as the one before is still checked: unsafe names and duplicates', () => {
  const sameDir = [file('d/a'), file('d/b')];
  refused(sameDir, file('d/..'), /unsafe path 'd\/\.\.': name '\.\.' is reserved/);
  refused(sameDir, file('d/.'), /unsafe path 'd\/\.': name '\.' is reserved/);
  refused(sameDir, file('d/'), /unsafe path 'd\/': empty name/);
  refused(sameDir, file('d/x\0y'), /NUL byte/);
  refused(sameDir, file('d/\ud800'), /not valid Unicode/);
  refused(sameDir, file(`d/${'n'.repeat(256)}`), /longer than 255 bytes/);
  refused(sameDir, file('d/a', 'other'), /duplicate entry 'd\/a' \(file and file\)/);
  refused(sameDir, { type: 'dir', path: 'd/b' }, /duplicate entry 'd\/b' \(file and dir\)/);
  refused(sameDir, { type: 'symlink', path: 'd/a', target: 'x' }, /duplicate entry 'd\/a' \(file and symlink\)/);
  // At the root too (its parent is '').
  refused([file('a'), file('b')], file('..'), /name '\.\.' is reserved/);
  refused([file('a'), file('b')], file(''), /empty name/);
  refused([file('a'), file('b')], file('a'), /duplicate entry 'a'/);
});

test('entries under a file or symlink, and a directory named after files lie under it, are refused', () => {
  refused([file('d/a'), file('d/b')], file('d/a/x'), /'d\/a\/x' lies under 'd\/a', which is a file/);
  refused([file('d/a'), { type: 'symlink', path: 'd/l', target: '/tmp' }], file('d/l/x'), /lies under 'd\/l', which is a symlink/);
  refused([file('d/a'), { type: 'symlink', path: 'd/l', target: '/tmp' }, file('d/b')], { type: 'dir', path: 'd/l/x' }, /lies under 'd\/l', which is a symlink/);
  refused([file('d/a'), file('d/b')], file('d'), /duplicate entry 'd' \(dir and file\)/);
  refused([file('d/e/a'), file('d/e/b')], { type: 'symlink', path: 'd/e', target: 'x' }, /duplicate entry 'd\/e' \(dir and symlink\)/);
  // A directory named twice is one directory.
  const tb = new TreeBuilder();
  for (const e of [{ type: 'dir', path: 'd' } as TreeEntry, file('d/a'), { type: 'dir', path: 'd' } as TreeEntry, file('d/b')]) tb.add(e);
  assert.deepEqual(tb.build().root, build([file('d/a'), file('d/b')]));
});

test('an unsafe part in the directory path is refused, also after entries of a similar directory', () => {
  refused([file('d/a')], file('d/../a'), /name '\.\.' is reserved/);
  refused([file('d/a')], file('d//a'), /empty name/);
  refused([file('d/a')], file('./d/a'), /name '\.' is reserved/);
  refused([], file(`${'a/'.repeat(1024)}x`), /nests deeper than 1024 levels/);
  // 1,024 parts are allowed, in the same directory one after another.
  const deep = 'a/'.repeat(1023);
  const tb = new TreeBuilder();
  tb.add(file(`${deep}x`));
  tb.add(file(`${deep}y`));
  assert.throws(() => tb.add(file(`${deep}y/z`)), /nests deeper than 1024 levels/);
});

/**
 * Adds `entries` with every file pending, seals after `sealAfter` digests, and hands the digests in
 * shuffled (so directories complete in any order). Returns the root and the messages in the order
 * they were handed out.
 */
function buildPending(entries: TreeEntry[], r: () => number, sealAfter: number): { root: Digest; order: EncodedDirectory[] } {
  const tb = new TreeBuilder();
  const waiting: { p: PendingFile; digest: Digest }[] = [];
  for (const e of entries) {
    if (e.type === 'file') waiting.push({ p: tb.addPending(e.path, e.executable), digest: e.digest });
    else tb.add(e);
  }
  for (let i = waiting.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [waiting[i], waiting[j]] = [waiting[j]!, waiting[i]!];
  }
  const order: EncodedDirectory[] = [];
  const cut = Math.min(sealAfter, waiting.length);
  for (const w of waiting.slice(0, cut)) tb.setDigest(w.p, w.digest);
  tb.seal((m) => order.push(m));
  for (const w of waiting.slice(cut)) tb.setDigest(w.p, w.digest);
  const built = tb.build();
  assert.equal(built.messages.size, 0, 'every message went to the seal callback');
  return { root: built.root, order };
}

test('pending files handed in out of order: same root and messages, each once, children before parents', () => {
  for (let seed = 1; seed <= 60; seed++) {
    const { entries, ref } = randomTree(seed);
    const want = refRoot(ref);
    const all = new TreeBuilder();
    for (const e of entries) all.add(e);
    const whole = all.build();
    const r = rng(seed * 104729);
    for (const sealAfter of [0, Math.floor(entries.length / 2), entries.length]) {
      const { root, order } = buildPending(entries, r, sealAfter);
      const why = `seed ${seed}, sealed after ${sealAfter} digests`;
      assert.deepEqual(root, want, why);
      assert.deepEqual(order.map((m) => m.digest.hash).sort(), [...whole.messages.keys()].sort(), why);
      const handed = new Set<string>();
      for (const m of order) {
        assert.ok(!handed.has(m.digest.hash), `${why}: ${m.digest.hash} handed out twice`);
        for (const d of decodeDirectory(m.bytes).directories) assert.ok(handed.has(d.digest.hash), `${why}: a parent came before its child`);
        handed.add(m.digest.hash);
      }
      assert.equal(order[order.length - 1]!.digest.hash, want.hash, why);
    }
  }
});

test('a directory is handed out as soon as its last file is in, not before', () => {
  const tb = new TreeBuilder();
  const a1 = tb.addPending('a/1', false);
  const b1 = tb.addPending('a/b/1', false);
  const c1 = tb.addPending('c/1', true);
  tb.add({ type: 'dir', path: 'e' });
  tb.add({ type: 'dir', path: 'f' });
  const out: string[] = [];
  tb.seal((m) => out.push(m.digest.hash));
  // The empty directories 'e' and 'f' are complete at once, and are one message, handed out once.
  assert.equal(out.length, 1);
  tb.setDigest(a1, digestOf(Buffer.from('a1')));
  assert.equal(out.length, 1, "'a' waits for 'a/b'");
  tb.setDigest(b1, digestOf(Buffer.from('b1')));
  assert.equal(out.length, 3, "'a/b', then 'a'");
  tb.setDigest(c1, digestOf(Buffer.from('c1')));
  assert.equal(out.length, 5, "'c', then the root");
  assert.throws(() => tb.setDigest(c1, digestOf(Buffer.from('c1'))), /has its digest already/);
  assert.throws(() => tb.add(file('x')), /after seal/);
  const plain = new TreeBuilder();
  for (const e of [file('a/1', 'a1'), file('a/b/1', 'b1'), { ...file('c/1', 'c1'), executable: true } as TreeEntry, { type: 'dir', path: 'e' } as TreeEntry, { type: 'dir', path: 'f' } as TreeEntry]) plain.add(e);
  assert.deepEqual(tb.build().root, plain.build().root);
});

test('build refuses while a pending file has no digest, and pending names are checked as added ones', () => {
  const tb = new TreeBuilder();
  tb.addPending('d/a', false);
  assert.throws(() => tb.build(), /pending file has no digest/);
  const tb2 = new TreeBuilder();
  tb2.add(file('d/a'));
  assert.throws(() => tb2.addPending('d/a', false), (e: unknown) => e instanceof UnsafePathError && /duplicate entry 'd\/a'/.test(e.message));
  assert.throws(() => tb2.addPending('d/..', false), (e: unknown) => e instanceof UnsafePathError && /reserved/.test(e.message));
});
