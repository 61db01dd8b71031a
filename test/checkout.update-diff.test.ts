/**
 * An update's diff of two versions of a directory (plan.ts reconcileKnown): runs of shared bytes
 * passed over, only differing entries decoded, the new version checked whole only when it adds a
 * kind and name; and what it means on disk: a local change where the update writes is a conflict,
 * a local change elsewhere is left alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { type Digest, digestOf } from '../src/core/digest.js';
import { type Directory, type DirectoryNode, type FileNode, type SymlinkNode, decodeDirectory, encodeDirectory, splitDirectory } from '../src/core/reapi.js';
import { type DiskType, type DiskView, planUpdate } from '../src/materialize/plan.js';
import { snapshot } from '../src/capture/snapshot.js';
import { checkout } from '../src/materialize/checkout.js';
import { LocalStore } from '../src/store/local.js';
import { InvalidTreeError, LocalChangesError } from '../src/errors.js';
import { describeTree, settle, tempDir, writeTree } from './helpers/tmp.js';
import { listOfModel } from './helpers/disk-model.js';

type DiskEntry = { type: DiskType; digest?: Digest; executable?: boolean; target?: string };

/** Messages by hash, and a tree's entries as a flat map of path -> entry (what a checkout of it leaves). */
class Messages {
  readonly bytes = new Map<string, Buffer>();
  put(dir: Directory): Digest {
    const b = encodeDirectory(dir);
    const d = digestOf(b);
    this.bytes.set(d.hash, b);
    return d;
  }
  get(d: Digest): Buffer {
    const b = this.bytes.get(d.hash);
    if (!b) throw new Error(`no message ${d.hash}`);
    return b;
  }
  flatten(root: Digest, prefix = '', out = new Map<string, DiskEntry>()): Map<string, DiskEntry> {
    const dir = decodeDirectory(this.get(root));
    const at = (n: string) => (prefix === '' ? n : `${prefix}/${n}`);
    for (const f of dir.files) out.set(at(f.name), { type: 'file', digest: f.digest, executable: f.executable });
    for (const s of dir.symlinks) out.set(at(s.name), { type: 'symlink', target: s.target });
    for (const d of dir.directories) {
      out.set(at(d.name), { type: 'dir' });
      this.flatten(d.digest, at(d.name), out);
    }
    return out;
  }
}

/** A disk holding exactly the last checkout, every file provably as that checkout left it. */
class ModelDisk implements DiskView {
  lstats = 0;
  constructor(readonly files: Map<string, DiskEntry>) {}
  list(rel: string): Map<string, DiskType> | undefined {
    return listOfModel(this.files, rel);
  }
  kind(rel: string): DiskType | undefined {
    this.lstats++;
    return this.files.get(rel)?.type;
  }
  unchangedSinceCheckout(): boolean {
    return true;
  }
  fileEquals(rel: string, expected: { digest: Digest; executable: boolean }): boolean {
    const e = this.files.get(rel);
    return e?.type === 'file' && e.digest!.hash === expected.digest.hash && e.executable === expected.executable;
  }
  readlink(rel: string): string | undefined {
    return this.files.get(rel)?.target;
  }
  partialOf(): boolean {
    return false;
  }
  /** Runs a plan's removals and steps on the model. */
  apply(plan: ReturnType<typeof planUpdate>): void {
    for (const r of plan.removes) {
      const under = [...this.files.keys()].filter((p) => p.startsWith(`${r.rel}/`));
      if (r.ifEmpty && under.length > 0) continue;
      for (const p of under) this.files.delete(p);
      this.files.delete(r.rel);
    }
    for (const s of plan.steps) {
      if ('mkdir' in s) this.files.set(s.mkdir, { type: 'dir' });
      else if ('target' in s) this.files.set(s.rel, { type: 'symlink', target: s.target });
      else this.files.set(s.rel, { type: 'file', digest: { hash: s.hash, size: s.size }, executable: s.executable });
    }
  }
}

/** A small deterministic generator (xorshift), so a failing seed can be run again. */
function rng(seed: number): () => number {
  let x = seed | 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return ((x >>> 0) % 1_000_000) / 1_000_000;
  };
}

type Spec = Map<string, { kind: 'file'; text: string; exec: boolean } | { kind: 'link'; target: string } | { kind: 'dir'; spec: Spec }>;

function build(m: Messages, spec: Spec): Digest {
  const files: FileNode[] = [];
  const directories: DirectoryNode[] = [];
  const symlinks: SymlinkNode[] = [];
  const names = [...spec.keys()].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
  for (const name of names) {
    const e = spec.get(name)!;
    if (e.kind === 'file') files.push({ name, digest: digestOf(Buffer.from(e.text)), executable: e.exec });
    else if (e.kind === 'link') symlinks.push({ name, target: e.target });
    else directories.push({ name, digest: build(m, e.spec) });
  }
  return m.put({ files, directories, symlinks });
}

/** Names of several lengths, some over 127 bytes (a two-byte length), some sharing long prefixes. */
function randomSpec(r: () => number, depth: number, width: number): Spec {
  const spec: Spec = new Map();
  for (let i = 0; i < width; i++) {
    const name = r() < 0.1 ? `${'long-name-'.repeat(14)}${i}` : r() < 0.3 ? `shared-prefix-${i}` : `n${Math.floor(r() * 1e6)}`;
    const roll = r();
    if (roll < 0.15 && depth < 3) spec.set(name, { kind: 'dir', spec: randomSpec(r, depth + 1, Math.floor(r() * width)) });
    else if (roll < 0.22) spec.set(name, { kind: 'link', target: `t${Math.floor(r() * 100)}` });
    else spec.set(name, { kind: 'file', text: r() < 0.2 ? 'x'.repeat(200 + i) : `text ${i}`, exec: r() < 0.1 });
  }
  return spec;
}

/** A symlink target of the same length with its last byte changed: its entry differs in its last byte only. */
const lastByteChanged = (t: string) => `${t.slice(0, -1)}${t.endsWith('a') ? 'b' : 'a'}`;

/** Changes a few entries: contents, modes, kinds (file <-> dir <-> link), removals and additions. */
function mutate(r: () => number, spec: Spec, rate: number): Spec {
  const out: Spec = new Map();
  for (const [name, e] of spec) {
    const roll = r();
    if (roll < rate * 0.2) continue;
    if (roll < rate * 0.5) out.set(name, e.kind === 'file' ? { ...e, text: `${e.text} changed` } : e.kind === 'link' ? { kind: 'link', target: lastByteChanged(e.target) } : { kind: 'file', text: 'was a dir', exec: false });
    else if (roll < rate * 0.6) out.set(name, e.kind === 'dir' ? { kind: 'link', target: 'was a dir' } : { kind: 'dir', spec: new Map([['inside', { kind: 'file', text: 'i', exec: false }]]) });
    else if (roll < rate * 0.7 && e.kind === 'file') out.set(name, { ...e, exec: !e.exec });
    else out.set(name, e.kind === 'dir' ? { kind: 'dir', spec: mutate(r, e.spec, rate) } : e);
  }
  for (let i = 0; i < 3; i++) if (r() < rate) out.set(`added-${Math.floor(r() * 1e6)}`, { kind: 'file', text: 'new', exec: false });
  return out;
}

for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
  test(`random update ${seed}: the plan, run on the last checkout, leaves exactly the new tree, looking only at what differs`, () => {
    const r = rng(seed * 7919);
    const m = new Messages();
    const v1 = randomSpec(r, 0, 60);
    const v2 = mutate(r, v1, seed % 2 === 0 ? 0.05 : 0.4);
    const a = build(m, v1);
    const b = build(m, v2);
    const disk = new ModelDisk(m.flatten(a));
    const plan = planUpdate({ target: b, previous: a, tree: (d) => decodeDirectory(m.get(d)), raw: (d) => splitDirectory(m.get(d)), message: (d) => m.get(d), disk, force: false });
    assert.deepEqual(plan.conflicts, []);
    disk.apply(plan);
    assert.deepEqual(new Map([...disk.files].sort()), new Map([...m.flatten(b)].sort()));
    // Only what differs is looked at: never more lstats than paths that differ and the directories
    // above them.
    const before = m.flatten(a);
    const after = m.flatten(b);
    const looked = new Set<string>();
    for (const p of new Set([...before.keys(), ...after.keys()])) {
      if (JSON.stringify(before.get(p)) === JSON.stringify(after.get(p))) continue;
      const parts = p.split('/');
      for (let i = 1; i <= parts.length; i++) looked.add(parts.slice(0, i).join('/'));
    }
    assert.ok(disk.lstats <= looked.size, `${disk.lstats} lstats for ${looked.size} differing paths and their directories`);
    assert.ok(looked.size < before.size / 2 || seed % 2 === 1, 'a small change is small');
  });
}

test('a new version that adds a name already in another group, or adds entries out of order, is refused', () => {
  const m = new Messages();
  const blob = (t: string) => digestOf(Buffer.from(t));
  const sub = m.put({ files: [{ name: 'in', digest: blob('i'), executable: false }], directories: [], symlinks: [] });
  const files = (names: string[]): FileNode[] => names.map((name) => ({ name, digest: blob(name), executable: false }));
  const old = m.put({ files: files(['a', 'x', 'z']), directories: [], symlinks: [] });
  const hostile: Directory[] = [
    // "x" stays the same file and is added as a directory too.
    { files: files(['a', 'x', 'z']), directories: [{ name: 'x', digest: sub }], symlinks: [] },
    // "x" stays the same file and is added as a symlink too.
    { files: files(['a', 'x', 'z']), directories: [], symlinks: [{ name: 'x', target: 'y' }] },
    // An added file out of order among unchanged ones.
    { files: files(['a', 'x', 'z', 'b']), directories: [], symlinks: [] },
    // A duplicate of an unchanged file.
    { files: files(['a', 'x', 'x', 'z']), directories: [], symlinks: [] },
  ];
  for (const dir of hostile) {
    const next = m.put(dir);
    const disk = new ModelDisk(m.flatten(old));
    assert.throws(
      () => planUpdate({ target: next, previous: old, tree: (d) => decodeDirectory(m.get(d)), raw: (d) => splitDirectory(m.get(d)), message: (d) => m.get(d), disk, force: false }),
      InvalidTreeError,
      JSON.stringify(dir),
    );
  }
});

test('an entry the update changes is decoded and validated: an unsafe name in it is refused', () => {
  const m = new Messages();
  const blob = (t: string) => digestOf(Buffer.from(t));
  const old = m.put({ files: [{ name: 'aa', digest: blob('1'), executable: false }, { name: 'b', digest: blob('b'), executable: false }], directories: [], symlinks: [] });
  // The same length as 'aa': the bytes differ only inside the name.
  const next = m.put({ files: [{ name: '..', digest: blob('1'), executable: false }, { name: 'b', digest: blob('b'), executable: false }], directories: [], symlinks: [] });
  const disk = new ModelDisk(m.flatten(old));
  assert.throws(
    () => planUpdate({ target: next, previous: old, tree: (d) => decodeDirectory(m.get(d)), raw: (d) => splitDirectory(m.get(d)), message: (d) => m.get(d), disk, force: false }),
    InvalidTreeError,
  );
});

test('on disk, in a large directory: a local edit to a file the update changes stops it; one to a file it leaves alone is kept', async () => {
  const dir = tempDir();
  const spec: Record<string, string> = {};
  for (let i = 0; i < 300; i++) spec[`big/f${String(i).padStart(3, '0')}.c`] = `file ${i}\n`;
  const changed = ['big/f010.c', 'big/f150.c', 'big/f299.c'];
  const v2spec = { ...spec };
  for (const p of changed) v2spec[p] = `${spec[p]}changed\n`;
  writeTree(join(dir, 'v1'), spec);
  writeTree(join(dir, 'v2'), v2spec);
  const store = LocalStore.open(join(dir, 's'));
  const a = await snapshot(join(dir, 'v1'), { store });
  const b = await snapshot(join(dir, 'v2'), { store });
  const out = join(dir, 'out');
  await checkout(a.digest, out, { store, method: 'copy' });
  await settle();
  // Edits of the same size, so only the change time tells them.
  fs.writeFileSync(join(out, 'big/f150.c'), 'FILE 150\n');
  fs.writeFileSync(join(out, 'big/f151.c'), 'FILE 151\n');
  await assert.rejects(checkout(b.digest, out, { store, method: 'copy' }), (e: unknown) => {
    assert.ok(e instanceof LocalChangesError);
    assert.deepEqual(e.paths, ['big/f150.c']);
    return true;
  });
  assert.equal(fs.readFileSync(join(out, 'big/f150.c'), 'utf8'), 'FILE 150\n');
  assert.equal(fs.readFileSync(join(out, 'big/f010.c'), 'utf8'), 'file 10\n', 'a refused update writes nothing');
  // The user puts the changed file back; the update then goes through and keeps the other edit.
  fs.writeFileSync(join(out, 'big/f150.c'), 'file 150\n');
  const r = await checkout(b.digest, out, { store, method: 'copy' });
  assert.equal(r.copied, 3);
  assert.equal(fs.readFileSync(join(out, 'big/f151.c'), 'utf8'), 'FILE 151\n');
  const want = describeTree(join(dir, 'v2'));
  const got = describeTree(out);
  assert.notDeepEqual(got, want);
  fs.writeFileSync(join(out, 'big/f151.c'), 'file 151\n');
  assert.deepEqual(describeTree(out), want);
});
