import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { snapshot } from '../src/capture/snapshot.js';
import { checkout } from '../src/materialize/checkout.js';
import { LocalStore } from '../src/store/local.js';
import { BlobNotFoundError, FileSystemError, LocalChangesError, TargetError } from '../src/errors.js';
import { digestOf, formatDigest } from '../src/core/digest.js';
import { status } from '../src/materialize/status.js';
import { gcStore } from '../src/store/maintenance.js';
import { canMount } from './helpers/mounts.js';
import { describeTree, settle, tempDir, writeTree } from './helpers/tmp.js';
import { makeRandomTree, mutateTree } from './helpers/random-tree.js';

async function twoVersions(dir: string, seed: number) {
  const store = LocalStore.open(join(dir, 's'));
  makeRandomTree(join(dir, 'v1'), seed, { files: 120 });
  execFileSync('cp', ['-a', join(dir, 'v1'), join(dir, 'v2')]);
  mutateTree(join(dir, 'v2'), seed + 100, 0.2);
  const a = await snapshot(join(dir, 'v1'), { store });
  const b = await snapshot(join(dir, 'v2'), { store });
  return { store, a: a.digest, b: b.digest };
}

for (const seed of [11, 12, 13, 14, 15]) {
  test(`random trees ${seed}: checkout v1, then v2 over it, then v1 again, equals a fresh checkout each time`, async () => {
    const dir = tempDir();
    const { store, a, b } = await twoVersions(dir, seed);
    const out = join(dir, 'out');
    await checkout(a, out, { store });
    await settle();
    const up = await checkout(b, out, { store });
    assert.equal(up.incremental, true);
    assert.deepEqual(describeTree(out), describeTree(join(dir, 'v2')));
    await settle();
    await checkout(a, out, { store });
    assert.deepEqual(describeTree(out), describeTree(join(dir, 'v1')));
  });
}

test('an update touches only what differs: unchanged files keep their inodes, subtrees are skipped', async () => {
  const dir = tempDir();
  const spec: Record<string, string> = {};
  for (let i = 0; i < 50; i++) spec[`same/f${i}`] = `same ${i}`;
  writeTree(join(dir, 'v1'), { ...spec, 'top.txt': 'one', 'changes/x': 'old' });
  writeTree(join(dir, 'v2'), { ...spec, 'top.txt': 'one', 'changes/x': 'new', 'changes/added': 'a' });
  const store = LocalStore.open(join(dir, 's'));
  const a = await snapshot(join(dir, 'v1'), { store });
  const b = await snapshot(join(dir, 'v2'), { store });
  const out = join(dir, 'out');
  await checkout(a.digest, out, { store });
  const before = fs.statSync(join(out, 'same', 'f7')).ino;
  const topBefore = fs.statSync(join(out, 'top.txt')).ino;
  await settle();
  const r = await checkout(b.digest, out, { store });
  assert.equal(r.copied + r.cloned, 2, 'only changes/x and changes/added are written');
  assert.equal(r.removed, 1);
  assert.equal(fs.statSync(join(out, 'same', 'f7')).ino, before);
  assert.equal(fs.statSync(join(out, 'top.txt')).ino, topBefore);
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'v2')));
});

test('local changes to files the update would replace stop the checkout and are listed; --force discards them; untracked files stay', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'v1'), { 'edit-me': 'v1', 'keep-edit': 'same', 'gone': 'v1 only' });
  writeTree(join(dir, 'v2'), { 'edit-me': 'v2', 'keep-edit': 'same' });
  const store = LocalStore.open(join(dir, 's'));
  const a = await snapshot(join(dir, 'v1'), { store });
  const b = await snapshot(join(dir, 'v2'), { store });
  const out = join(dir, 'out');
  await checkout(a.digest, out, { store });
  await settle();
  fs.writeFileSync(join(out, 'edit-me'), 'my local work');
  fs.writeFileSync(join(out, 'keep-edit'), 'local edit of a file the update leaves alone');
  fs.writeFileSync(join(out, 'untracked'), 'new file of mine');
  await assert.rejects(checkout(b.digest, out, { store }), (e: unknown) => {
    assert.ok(e instanceof LocalChangesError);
    assert.deepEqual([...e.paths].sort(), ['edit-me']);
    return true;
  });
  assert.equal(fs.readFileSync(join(out, 'edit-me'), 'utf8'), 'my local work', 'nothing touched');
  assert.ok(fs.existsSync(join(out, 'gone')), 'nothing removed either');
  await checkout(b.digest, out, { store, force: true });
  assert.equal(fs.readFileSync(join(out, 'edit-me'), 'utf8'), 'v2');
  assert.equal(fs.readFileSync(join(out, 'untracked'), 'utf8'), 'new file of mine', 'files neither tree has are not ours to remove');
  assert.equal(fs.readFileSync(join(out, 'keep-edit'), 'utf8'), 'same', '--force leaves exactly the tree, even where the trees agree');
});

test('without its record, checkout compares with the disk: equal content is kept, differences need --force', async () => {
  const dir = tempDir();
  const { store, a, b } = await twoVersions(dir, 21);
  const out = join(dir, 'out');
  await checkout(a, out, { store });
  fs.rmSync(join(store.root, 'checkouts'), { recursive: true });
  const same = await checkout(a, out, { store });
  assert.equal(same.copied + same.cloned + same.removed, 0, 'an identical tree is recognised by content');
  fs.rmSync(join(store.root, 'checkouts'), { recursive: true });
  await assert.rejects(checkout(b, out, { store }), LocalChangesError);
  // Without a record nothing on disk is known to be the old tree's: what v2 lacks stays until --clean.
  const before = new Set(describeTree(out));
  await checkout(b, out, { store, force: true });
  const v2 = describeTree(join(dir, 'v2'));
  for (const line of v2) assert.ok(describeTree(out).includes(line), line);
  const leftovers = describeTree(out).filter((l) => !v2.includes(l));
  for (const l of leftovers) assert.ok(before.has(l), `${l} was on disk before`);
  const r = await checkout(b, out, { store, force: true, clean: true });
  assert.deepEqual(describeTree(out), v2);
  assert.ok(r.cleaned.length > 0 || leftovers.length === 0);
});

test('a record left by a checkout into a directory that was then emptied is not trusted', async () => {
  const dir = tempDir();
  const { store, a, b } = await twoVersions(dir, 22);
  const out = join(dir, 'out');
  await checkout(a, out, { store });
  for (const name of fs.readdirSync(out)) fs.rmSync(join(out, name), { recursive: true });
  await checkout(b, out, { store });
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'v2')));
});

test('an update that failed half way is finished by running it again, and is no record for another tree', { skip: canMount() }, async () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  writeTree(join(dir, 'v1'), { f: 'one', 'sub/s': 's1', 'sub/deep/d': 'd1' });
  writeTree(join(dir, 'v2'), { f: 'two', 'sub/s': 's2', 'sub/n': 'new', 'sub/deep/d': 'd1' });
  const a = (await snapshot(join(dir, 'v1'), { store })).digest;
  const b = (await snapshot(join(dir, 'v2'), { store })).digest;
  const out = join(dir, 'out');
  await checkout(a, out, { store });
  await settle();
  // A file the update cannot remove (a mount point: EBUSY, even for root), after it removed 'f'.
  fs.writeFileSync(join(dir, 'same-as-s'), 's1');
  execFileSync('mount', ['--bind', join(dir, 'same-as-s'), join(out, 'sub', 's')]);
  try {
    await assert.rejects(checkout(b, out, { store }), FileSystemError);
  } finally {
    execFileSync('umount', [join(out, 'sub', 's')]);
  }
  assert.ok(!fs.existsSync(join(out, 'f')), 'the update failed half way');
  assert.throws(() => status(out, store), (e: unknown) => e instanceof Error && /did not finish/.test(e.message));
  // Another tree is compared with the disk, not with the record: 'f', which it shares with the last
  // finished checkout, is missing and must come back.
  await checkout(a, out, { store });
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'v1')));
  execFileSync('mount', ['--bind', join(dir, 'same-as-s'), join(out, 'sub', 's')]);
  try {
    await assert.rejects(checkout(b, out, { store }), FileSystemError);
  } finally {
    execFileSync('umount', [join(out, 'sub', 's')]);
  }
  // The same command again finishes it: what the failed run left of v1 is still provably v1's.
  await checkout(b, out, { store });
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'v2')));
  const after = status(out, store);
  assert.deepEqual([after.modified, after.added, after.removed], [[], [], []]);

  // A --force run also rewrites paths both trees share (here 'f', edited): stopped half way, it
  // leaves no record, so a run again without --force does not skip what it removed: it compares
  // with the disk and stops; the same command again (--force) finishes it.
  await checkout(a, out, { store, force: true });
  fs.writeFileSync(join(out, 'sub', 'deep', 'd'), 'edited');
  execFileSync('mount', ['--bind', join(dir, 'same-as-s'), join(out, 'sub', 's')]);
  try {
    await assert.rejects(checkout(b, out, { store, force: true }), FileSystemError);
  } finally {
    execFileSync('umount', [join(out, 'sub', 's')]);
  }
  assert.ok(!fs.existsSync(join(out, 'sub', 'deep', 'd')), 'the forced update removed the edited file');
  await assert.rejects(checkout(b, out, { store }), LocalChangesError);
  await checkout(b, out, { store, force: true });
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'v2')));
});

test('a first checkout that did not finish is named by status (tree, name, remote, the command to finish it), and running it again finishes it', async () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  const files: Record<string, string> = {};
  for (let i = 0; i < 40; i++) files[`d/f${i}`] = `content ${i}`;
  writeTree(join(dir, 'src'), files);
  const root = (await snapshot(join(dir, 'src'), { store })).digest;
  const out = join(dir, 'out');
  // Stopped after planning, before every file is written: as a kill leaves it (nothing cleans up).
  const missing = digestOf(Buffer.from('content 30'));
  fs.renameSync(store.blobPath(missing.hash), join(dir, 'kept-blob'));
  await assert.rejects(checkout(root, out, { store, jobs: 1, source: { spec: 'web', remote: 'http://cache.example:8080' } }), BlobNotFoundError);
  assert.ok(fs.readdirSync(join(out, 'd')).length > 0, 'the checkout wrote part of the tree');
  assert.throws(
    () => status(out, store),
    (e: unknown) => {
      assert.ok(e instanceof TargetError, String(e));
      assert.match(e.message, new RegExp(`the checkout of ${formatDigest(root)} \\('web'\\) from http://cache\\.example:8080 into ${out} did not finish`));
      assert.equal(e.digest, formatDigest(root));
      assert.ok(e.hint?.includes(`treecast checkout web ${out} --remote http://cache.example:8080`), e.hint);
      return true;
    },
  );
  fs.renameSync(join(dir, 'kept-blob'), store.blobPath(missing.hash));
  // No ref names the tree: only the unfinished checkout's record keeps gc from removing its blobs.
  const gc = gcStore(store, { dryRun: false, graceSeconds: 0 });
  assert.deepEqual(gc.removed, []);
  await checkout(root, out, { store });
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  assert.deepEqual(status(out, store), { target: out, digest: formatDigest(root), modified: [], added: [], removed: [] });
});
