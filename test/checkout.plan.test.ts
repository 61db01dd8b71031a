/** The checkout planner against an in-memory disk: no filesystem involved. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TreeBuilder, type TreeEntry } from '../src/core/tree-builder.js';
import { decodeDirectory, splitDirectory } from '../src/core/reapi.js';
import { type Digest, digestOf } from '../src/core/digest.js';
import { type DiskType, type DiskView, type Plan, planFresh, planFreshPacked, planUpdate } from '../src/materialize/plan.js';
import { join } from 'node:path';
import { LocalStore } from '../src/store/local.js';
import { TreeReader } from '../src/store/tree-reader.js';
import { tempDir } from './helpers/tmp.js';
import { listOfModel } from './helpers/disk-model.js';

function tree(entries: TreeEntry[]) {
  const b = new TreeBuilder();
  for (const e of entries) b.add(e);
  const built = b.build();
  return { root: built.root, messages: built.messages };
}
const f = (path: string, text: string, executable = false): TreeEntry => ({ type: 'file', path, digest: digestOf(Buffer.from(text)), executable });

/** A disk as a map of path -> entry; `touched` paths fail the stat shortcut (written since the last checkout). */
class FakeDisk implements DiskView {
  reads: string[] = [];
  constructor(
    readonly files: Map<string, { type: DiskType; digest?: Digest; target?: string; partOf?: string }>,
    private readonly touched = new Set<string>(),
  ) {}
  list(rel: string): Map<string, DiskType> | undefined {
    this.reads.push(`list ${rel}`);
    return listOfModel(this.files, rel);
  }
  kind(rel: string): DiskType | undefined {
    this.reads.push(`lstat ${rel}`);
    return this.files.get(rel)?.type;
  }
  unchangedSinceCheckout(rel: string): boolean {
    return !this.touched.has(rel);
  }
  fileEquals(rel: string, expected: { digest: Digest }): boolean {
    this.reads.push(`hash ${rel}`);
    return this.files.get(rel)?.digest?.hash === expected.digest.hash;
  }
  readlink(rel: string): string | undefined {
    return this.files.get(rel)?.target;
  }
  /** `partOf`: the hash of the blob the file's bytes are a prefix of (a write stopped half way). */
  partialOf(rel: string, expected: { digest: Digest }): boolean {
    this.reads.push(`prefix ${rel}`);
    const e = this.files.get(rel);
    return e?.type === 'file' && e.partOf === expected.digest.hash;
  }
}

function diskOf(entries: TreeEntry[]): Map<string, { type: DiskType; digest?: Digest; target?: string }> {
  const m = new Map<string, { type: DiskType; digest?: Digest; target?: string }>();
  for (const e of entries) {
    const parts = e.path.split('/');
    for (let i = 1; i < parts.length; i++) m.set(parts.slice(0, i).join('/'), { type: 'dir' });
    if (e.type === 'file') m.set(e.path, { type: 'file', digest: e.digest });
    else if (e.type === 'symlink') m.set(e.path, { type: 'symlink', target: e.target });
    else m.set(e.path, { type: 'dir' });
  }
  return m;
}

function bytesIn(trees: ReturnType<typeof tree>[], d: Digest): Buffer {
  for (const t of trees) {
    const m = t.messages.get(d.hash);
    if (m) return m.bytes;
  }
  throw new Error(`no directory ${d.hash}`);
}

/** The planner's two views of the trees: decoded, and split into raw entries. */
function lookupIn(...trees: ReturnType<typeof tree>[]) {
  return { tree: (d: Digest) => decodeDirectory(bytesIn(trees, d)), raw: (d: Digest) => splitDirectory(bytesIn(trees, d)) };
}

const summary = (p: Plan) => ({
  removes: p.removes.map((r) => r.rel).sort(),
  steps: [...p.steps].map((s) => ('mkdir' in s ? `mkdir ${s.mkdir}` : 'target' in s ? `link ${s.rel}` : `file ${s.rel}`)),
  conflicts: p.conflicts,
});

test('a fresh plan makes every directory before anything inside it', () => {
  const t = tree([f('z', 'z'), f('a/b/c', 'c'), { type: 'symlink', path: 'a/l', target: 'b/c' }, { type: 'dir', path: 'empty' }]);
  const plan = planFresh(t.root, lookupIn(t).tree);
  assert.deepEqual(summary(plan).steps, ['file z', 'mkdir a', 'link a/l', 'mkdir a/b', 'file a/b/c', 'mkdir empty']);
  assert.equal(plan.mkdirs, 3);
  assert.equal(plan.writes, 3);
});

test('a fresh plan from the packed tree has the same steps, counts and sample as from decoded Directories', () => {
  // Shared subtrees (one message named by several entries, at different depths), symlinks,
  // executables, empty files and directories, UTF-8 names.
  const shared = (at: string): TreeEntry[] => [f(`${at}/index.js`, 'same'), f(`${at}/bin/run`, 'run', true), { type: 'symlink', path: `${at}/link`, target: '../x' }];
  const t = tree([
    f('empty', ''),
    f('z', 'z'),
    f('é', 'e'),
    ...shared('a'),
    ...shared('b'),
    ...shared('c/d/e'),
    ...shared('c/d/e/a'),
    { type: 'dir', path: 'hollow' },
    { type: 'symlink', path: 'top', target: 'z' },
    f('c/0', ''),
  ]);
  const store = LocalStore.open(join(tempDir('tc-packed-plan'), 'store'));
  for (const m of t.messages.values()) store.putSync(m.bytes);
  const decoded = planFresh(t.root, lookupIn(t).tree);
  const packed = planFreshPacked(new TreeReader(store).loadPackedSync(t.root));
  assert.deepEqual([...packed.steps], [...decoded.steps]);
  assert.ok([...packed.steps].length > 20);
  assert.deepEqual(
    { mkdirs: packed.mkdirs, writes: packed.writes, sample: packed.sample },
    { mkdirs: decoded.mkdirs, writes: decoded.writes, sample: decoded.sample },
  );
});

test('an update skips unchanged subtrees without listing them, and replaces only what changed', () => {
  const same = Array.from({ length: 5 }, (_, i) => f(`same/f${i}`, `s${i}`));
  const v1 = tree([...same, f('x', 'old'), f('gone', 'g')]);
  const v2 = tree([...same, f('x', 'new'), f('added', 'a')]);
  const disk = new FakeDisk(diskOf([...same, f('x', 'old'), f('gone', 'g')]));
  const plan = planUpdate({ target: v2.root, previous: v1.root, ...lookupIn(v1, v2), disk, force: false });
  assert.deepEqual(summary(plan), { removes: ['gone', 'x'], steps: ['file added', 'file x'], conflicts: [] });
  assert.deepEqual(disk.reads.sort(), ['lstat added', 'lstat gone', 'lstat x'], 'only the entries that differ are looked at; "same" never is');
});

test('edited files in the way are conflicts; edits to files the update leaves alone are kept, and restored by force', () => {
  const v1 = tree([f('a', '1'), f('b', '1')]);
  const v2 = tree([f('a', '2'), f('b', '1')]);
  const disk = new FakeDisk(diskOf([f('a', 'local edit'), f('b', 'local edit')]), new Set(['a', 'b']));
  const plan = planUpdate({ target: v2.root, previous: v1.root, ...lookupIn(v1, v2), disk, force: false });
  assert.deepEqual(plan.conflicts, ['a']);
  const forced = planUpdate({ target: v2.root, previous: v1.root, ...lookupIn(v1, v2), disk, force: true });
  assert.deepEqual({ ...summary(forced), steps: summary(forced).steps.sort() }, { removes: ['a', 'b'], steps: ['file a', 'file b'], conflicts: [] });
});

test('an entry already equal to the target (left by an interrupted run) is kept, not rewritten', () => {
  const v1 = tree([f('a', '1')]);
  const v2 = tree([f('a', '2'), f('b', 'new')]);
  const disk = new FakeDisk(diskOf([f('a', '2'), f('b', 'new')]), new Set(['a', 'b']));
  const plan = planUpdate({ target: v2.root, previous: v1.root, ...lookupIn(v1, v2), disk, force: false });
  assert.deepEqual(summary(plan), { removes: [], steps: [], conflicts: [] });
  assert.equal(plan.unchanged, 2);
});

test('an untracked file in the way of a new one is a conflict; untracked files elsewhere are left alone', () => {
  const v1 = tree([f('a', '1')]);
  const v2 = tree([f('a', '1'), f('new', 'n')]);
  const disk = new FakeDisk(diskOf([f('a', '1'), f('new', 'mine'), f('other', 'mine too')]), new Set(['new', 'other']));
  const plan = planUpdate({ target: v2.root, previous: v1.root, ...lookupIn(v1, v2), disk, force: false });
  assert.deepEqual(summary(plan), { removes: [], steps: [], conflicts: ['new'] });
});

test('without a record, different entries are conflicts, equal ones are kept, entries the tree lacks are untracked', () => {
  const v2 = tree([f('same', 's'), f('diff', 'new')]);
  const disk = new FakeDisk(diskOf([f('same', 's'), f('diff', 'old'), f('extra', 'e')]));
  const plan = planUpdate({ target: v2.root, ...lookupIn(v2), disk, force: false });
  assert.deepEqual(plan.conflicts, ['diff']);
  assert.equal(plan.unchanged, 1);
  // force replaces what conflicts with the tree and keeps what the tree does not have.
  const forced = planUpdate({ target: v2.root, ...lookupIn(v2), disk, force: true });
  assert.deepEqual(summary(forced), { removes: ['diff'], steps: ['file diff'], conflicts: [] });
  const cleaned = planUpdate({ target: v2.root, ...lookupIn(v2), disk, force: false, clean: true });
  assert.deepEqual(cleaned.removes, [{ rel: 'extra', type: 'file', untracked: true }]);
  assert.deepEqual(cleaned.conflicts, ['diff'], 'clean alone does not discard local changes');
});

test('force with a record keeps untracked files; only clean removes them, in unchanged subtrees too', () => {
  const v1 = tree([f('a', '1'), f('d/x', 'x')]);
  const v2 = tree([f('a', '2'), f('d/x', 'x')]);
  const disk = new FakeDisk(diskOf([f('a', '1'), f('d/x', 'x'), f('mine', 'm'), f('d/mine', 'm')]));
  const forced = planUpdate({ target: v2.root, previous: v1.root, ...lookupIn(v1, v2), disk, force: true });
  assert.deepEqual(summary(forced), { removes: ['a'], steps: ['file a'], conflicts: [] });
  const cleaned = planUpdate({ target: v2.root, previous: v1.root, ...lookupIn(v1, v2), disk, force: true, clean: true });
  assert.deepEqual(summary(cleaned), { removes: ['a', 'd/mine', 'mine'], steps: ['file a'], conflicts: [] });
  assert.deepEqual(cleaned.removes.filter((r) => r.untracked).map((r) => r.rel).sort(), ['d/mine', 'mine']);
});

test('a directory the target drops loses its tracked files; untracked ones stay and so does the directory', () => {
  const v1 = tree([f('keep', 'k'), f('d/x', 'x'), f('d/sub/y', 'y')]);
  const v2 = tree([f('keep', 'k')]);
  const disk = new FakeDisk(diskOf([f('keep', 'k'), f('d/x', 'x'), f('d/sub/y', 'y'), f('d/sub/mine', 'm')]));
  for (const force of [false, true]) {
    const plan = planUpdate({ target: v2.root, previous: v1.root, ...lookupIn(v1, v2), disk, force });
    const order = plan.removes.map((r) => r.rel);
    assert.deepEqual([...plan.removes].sort((x, y) => (x.rel < y.rel ? -1 : 1)), [
      { rel: 'd', type: 'dir', ifEmpty: true },
      { rel: 'd/sub', type: 'dir', ifEmpty: true },
      { rel: 'd/sub/y', type: 'file' },
      { rel: 'd/x', type: 'file' },
    ]);
    assert.ok(order.indexOf('d/sub/y') < order.indexOf('d/sub') && order.indexOf('d/sub') < order.indexOf('d') && order.indexOf('d/x') < order.indexOf('d'), 'children before their directory');
    assert.deepEqual(plan.conflicts, []);
  }
});

test('force re-checking-out the same tree restores edited, missing and retyped entries, reading only files the stat cannot prove', () => {
  const v1 = tree([f('a', 'a'), f('b', 'b'), f('c', 'c'), f('d/e', 'e'), { type: 'symlink', path: 'l', target: 'a' }]);
  const disk = new FakeDisk(
    new Map<string, { type: DiskType; digest?: Digest; target?: string }>([
      ['a', { type: 'file', digest: digestOf(Buffer.from('edited')) }],
      ['b', { type: 'file', digest: digestOf(Buffer.from('b')) }],
      ['d', { type: 'file', digest: digestOf(Buffer.from('not a dir')) }],
      ['l', { type: 'symlink', target: 'elsewhere' }],
    ]),
    new Set(['a', 'd']),
  );
  assert.deepEqual(summary(planUpdate({ target: v1.root, previous: v1.root, ...lookupIn(v1), disk, force: false })), { removes: [], steps: [], conflicts: [] });
  disk.reads.length = 0;
  const plan = planUpdate({ target: v1.root, previous: v1.root, ...lookupIn(v1), disk, force: true });
  assert.deepEqual(summary(plan), { removes: ['a', 'd', 'l'], steps: ['file a', 'file c', 'mkdir d', 'file d/e', 'link l'], conflicts: [] });
  assert.deepEqual(disk.reads, ['list ', 'hash a'], 'one listing; only the file whose stat changed is read');
});

test('a directory replaced by a symlink on disk is a conflict; with force the link is removed, never followed', () => {
  const v1 = tree([f('d/x', '1')]);
  const v2 = tree([f('d/x', '2')]);
  const disk = new FakeDisk(new Map([['d', { type: 'symlink' as DiskType, target: '/etc' }]]));
  const plan = planUpdate({ target: v2.root, previous: v1.root, ...lookupIn(v1, v2), disk, force: false });
  assert.deepEqual(plan.conflicts, ['d']);
  const forced = planUpdate({ target: v2.root, previous: v1.root, ...lookupIn(v1, v2), disk, force: true });
  assert.deepEqual(summary(forced), { removes: ['d'], steps: ['mkdir d', 'file d/x'], conflicts: [] });
});

/** A file a stopped checkout was writing: its bytes are the first part of `text`'s blob. */
const partial = (path: string, text: string) => ({ path, entry: { type: 'file' as DiskType, digest: digestOf(Buffer.from(text.slice(0, 3))), partOf: digestOf(Buffer.from(text)).hash } });

function withPartials(entries: TreeEntry[], partials: ReturnType<typeof partial>[]) {
  const m = diskOf(entries);
  for (const p of partials) m.set(p.path, p.entry);
  return m;
}

test('resuming the same checkout, a file that is a prefix of its blob is replaced; without resume, or not a prefix, it is a conflict', () => {
  const t = tree([f('d/big', 'the whole content'), f('d/done', 'done'), f('d/mine', 'their content'), f('todo', 't')]);
  // 'd/big' stopped half way; 'd/done' finished; 'd/mine' holds other bytes; 'todo' not reached.
  const disk = () => new FakeDisk(withPartials([f('d/done', 'done'), f('d/mine', 'other bytes')], [partial('d/big', 'the whole content')]));
  const resumed = disk();
  const plan = planUpdate({ target: t.root, ...lookupIn(t), disk: resumed, force: false, resume: true });
  assert.deepEqual(plan.conflicts, ['d/mine']);
  const clean = disk();
  clean.files.delete('d/mine');
  const ok = planUpdate({ target: t.root, ...lookupIn(t), disk: clean, force: false, resume: true });
  assert.deepEqual(summary(ok), { removes: ['d/big'], steps: ['file d/big', 'file d/mine', 'file todo'], conflicts: [] });
  assert.equal(ok.unchanged, 1);
  assert.ok(!clean.reads.includes('prefix d/done'), 'a file equal to the target is never compared as a prefix');
  const fresh = planUpdate({ target: t.root, ...lookupIn(t), disk: disk(), force: false });
  assert.deepEqual(fresh.conflicts.sort(), ['d/big', 'd/mine'], 'another checkout than the stopped one finds the prefix a local change');
});

test('resuming an update of the same tree replaces the prefix it left where the trees differ', () => {
  const v1 = tree([f('a', 'old a'), f('b', 'b')]);
  const v2 = tree([f('a', 'the new a, longer'), f('b', 'b')]);
  const disk = new FakeDisk(withPartials([f('b', 'b')], [partial('a', 'the new a, longer')]), new Set(['a']));
  const plan = planUpdate({ target: v2.root, previous: v1.root, ...lookupIn(v1, v2), disk, force: false, resume: true });
  assert.deepEqual(summary(plan), { removes: ['a'], steps: ['file a'], conflicts: [] });
  assert.deepEqual(planUpdate({ target: v2.root, previous: v1.root, ...lookupIn(v1, v2), disk, force: false }).conflicts, ['a']);
});

test('resuming, only a file in place of a file can be an unfinished write: a directory or symlink there is a conflict', () => {
  const t = tree([f('x', 'content'), f('y', 'content')]);
  const m = diskOf([{ type: 'dir', path: 'x' }, { type: 'symlink', path: 'y', target: 'x' }]);
  const disk = new FakeDisk(m);
  const plan = planUpdate({ target: t.root, ...lookupIn(t), disk, force: false, resume: true });
  assert.deepEqual(plan.conflicts.sort(), ['x', 'y']);
  assert.ok(!disk.reads.some((r) => r.startsWith('prefix')), disk.reads.join(', '));
});
