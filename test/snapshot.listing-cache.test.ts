/**
 * The stat cache's directory listings: a directory whose stat is unchanged is not listed again and
 * its message is reused, yet every change deep in the tree still reaches the digest. Each case
 * compares the cached snapshot with a snapshot into a fresh store (no cache at all).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { snapshot, type SnapshotOptions } from '../src/capture/snapshot.js';
import { LocalStore } from '../src/store/local.js';
import { TreeReader } from '../src/store/tree-reader.js';
import { formatDigest } from '../src/core/digest.js';
import { gcStore } from '../src/store/maintenance.js';
import { SpecialFileError } from '../src/errors.js';
import { settle, tempDir, writeTree } from './helpers/tmp.js';
import { makeRandomTree, mutateTree } from './helpers/random-tree.js';
import { canMount } from './helpers/mounts.js';
import { execFileSync } from 'node:child_process';

let fresh = 0;
/** The digest of `src` snapshotted into a store that has never seen it. */
async function uncached(dir: string, src: string, opts: Partial<SnapshotOptions> = {}): Promise<string> {
  return formatDigest((await snapshot(src, { ...opts, store: LocalStore.open(join(dir, `fresh-${fresh++}`)) })).digest);
}

test('an unchanged tree is snapshotted again without listing any directory or building any message', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'a': 'a', 'b/c': 'c', 'b/d/e': 'e', 'b/d/empty': '', 'x': { text: '#!/bin/sh', exec: true }, 'l': { link: 'b/c' } });
  await settle();
  const store = LocalStore.open(join(dir, 's'));
  const first = await snapshot(join(dir, 'src'), { store });
  assert.equal(first.readDirectories, 3);
  const second = await snapshot(join(dir, 'src'), { store });
  assert.equal(second.readDirectories, 0);
  assert.equal(second.reusedDirectories, 3);
  assert.equal(second.hashedFiles, 0);
  assert.equal(formatDigest(second.digest), formatDigest(first.digest));
  assert.equal(second.symlinks, 1);
});

test('renames, deletions and type changes deep in the tree reach the digest', async () => {
  const dir = tempDir();
  const src = join(dir, 'src');
  const deep = 'a/b/c/d';
  const build = () =>
    writeTree(src, {
      [`${deep}/f`]: 'file',
      [`${deep}/g`]: 'gee',
      [`${deep}/sub/h`]: 'aitch',
      [`${deep}/link`]: { link: 'f' },
      [`${deep}/empty`]: '',
      'top': 'top',
    });
  const changes: [string, () => void][] = [
    ['rename a file', () => fs.renameSync(join(src, deep, 'f'), join(src, deep, 'f2'))],
    ['rename a directory', () => fs.renameSync(join(src, deep, 'sub'), join(src, deep, 'sub2'))],
    ['swap two files', () => {
      fs.renameSync(join(src, deep, 'f'), join(src, deep, 'tmp'));
      fs.renameSync(join(src, deep, 'g'), join(src, deep, 'f'));
      fs.renameSync(join(src, deep, 'tmp'), join(src, deep, 'g'));
    }],
    ['delete a file', () => fs.rmSync(join(src, deep, 'g'))],
    ['delete a directory', () => fs.rmSync(join(src, deep, 'sub'), { recursive: true })],
    ['file -> directory', () => {
      fs.rmSync(join(src, deep, 'f'));
      fs.mkdirSync(join(src, deep, 'f'));
      fs.writeFileSync(join(src, deep, 'f', 'inside'), 'inside');
    }],
    ['directory -> symlink', () => {
      fs.rmSync(join(src, deep, 'sub'), { recursive: true });
      fs.symlinkSync('f', join(src, deep, 'sub'));
    }],
    ['symlink -> file', () => {
      fs.rmSync(join(src, deep, 'link'));
      fs.writeFileSync(join(src, deep, 'link'), 'now a file');
    }],
    ['symlink retargeted', () => {
      fs.rmSync(join(src, deep, 'link'));
      fs.symlinkSync('g', join(src, deep, 'link'));
    }],
    ['a file rewritten in place (its directory keeps its stat)', () => fs.writeFileSync(join(src, deep, 'sub', 'h'), 'AITCH')],
    ['an empty file made executable', () => fs.chmodSync(join(src, deep, 'empty'), 0o755)],
    ['a directory moved under another', () => fs.renameSync(join(src, deep, 'sub'), join(src, 'a', 'moved'))],
  ];
  for (const [what, change] of changes) {
    fs.rmSync(src, { recursive: true, force: true });
    build();
    await settle();
    const store = LocalStore.open(join(dir, 's'));
    const before = await snapshot(src, { store });
    assert.equal((await snapshot(src, { store })).readDirectories, 0, `${what}: the unchanged tree is served from the cache`);
    change();
    const after = await snapshot(src, { store });
    assert.notEqual(formatDigest(after.digest), formatDigest(before.digest), what);
    assert.equal(formatDigest(after.digest), await uncached(dir, src), what);
    assert.ok(after.readDirectories < 7, `${what}: only the changed directories are listed (${after.readDirectories})`);
    // The tree is complete in the store: every message and blob can be read back.
    for await (const e of new TreeReader(store).walk(after.digest)) if (e.type === 'file') assert.ok(store.hasSync(e.digest), `${what}: ${e.path}`);
  }
});

test('random trees mutated between snapshots give the digest of a fresh snapshot', async () => {
  const dir = tempDir();
  for (let seed = 1; seed <= 12; seed++) {
    const src = join(dir, `t${seed}`);
    makeRandomTree(src, seed, { files: 120 });
    await settle();
    const store = LocalStore.open(join(dir, `s${seed}`));
    await snapshot(src, { store });
    mutateTree(src, seed * 7, 0.1);
    const after = await snapshot(src, { store });
    assert.equal(formatDigest(after.digest), await uncached(dir, src), `seed ${seed}`);
    // And once more, unchanged (the racy entries just written are re-read, nothing else differs).
    assert.equal(formatDigest((await snapshot(src, { store })).digest), formatDigest(after.digest), `seed ${seed}, again`);
  }
});

test('a directory changed within the clock tick of its cached stat is listed again', async () => {
  const dir = tempDir();
  const src = join(dir, 'src');
  writeTree(src, { 'old/f': 'f', 'young/g': 'g' });
  await settle();
  // A directory time at or after the snapshot's start stands for a change in the same tick as the
  // stat the snapshot records: the entry is racy, so it must not be trusted next time.
  const future = new Date(Date.now() + 3600_000);
  fs.utimesSync(join(src, 'young'), future, future);
  const store = LocalStore.open(join(dir, 's'));
  await snapshot(src, { store });
  const again = await snapshot(src, { store });
  assert.equal(again.readDirectories, 1, 'the young directory is listed again, the others are not');
});

test('a directory replaced by an older one (a bind mount: old times, other inode) is listed again', { skip: canMount() }, async () => {
  const dir = tempDir();
  const src = join(dir, 'src');
  writeTree(src, { 'a/b/f': 'f', 'a/g': 'g' });
  writeTree(join(dir, 'elsewhere'), { 'other': 'other', 'deeper/x': 'x' });
  await settle();
  const store = LocalStore.open(join(dir, 's'));
  await snapshot(src, { store });
  // Neither directory's times change, so only the identity (device, inode) tells them apart.
  execFileSync('mount', ['--bind', join(dir, 'elsewhere'), join(src, 'a', 'b')]);
  try {
    const r = await snapshot(src, { store });
    assert.equal(formatDigest(r.digest), await uncached(dir, src));
  } finally {
    execFileSync('umount', [join(src, 'a', 'b')]);
  }
});

test('a directory holding a special file is listed every time, so the warning (or --strict) is not lost', async () => {
  const dir = tempDir();
  const src = join(dir, 'src');
  writeTree(src, { 'sub/a': 'a', 'other/b': 'b' });
  execFileSync('mkfifo', [join(src, 'sub', 'pipe')]);
  await settle();
  const store = LocalStore.open(join(dir, 's'));
  for (let i = 0; i < 2; i++) {
    const seen: string[] = [];
    const r = await snapshot(src, { store, onSkip: (s) => seen.push(s.path) });
    assert.deepEqual(seen, [join(src, 'sub', 'pipe')], `run ${i + 1}`);
    if (i === 1) assert.equal(r.readDirectories, 1, 'only the directory with the FIFO is listed again');
  }
  await assert.rejects(snapshot(src, { store, strict: true }), SpecialFileError);
});

test('changing --exclude between runs lists the tree again under the new patterns', async () => {
  const dir = tempDir();
  const src = join(dir, 'src');
  writeTree(src, { 'keep.c': 'c', 'x.o': 'o', 'sub/y.o': 'o2', 'sub/keep.h': 'h', 'build/out': 'out' });
  await settle();
  const store = LocalStore.open(join(dir, 's'));
  for (const exclude of [['*.o'], [], ['*.o', '/build'], ['*.o']]) {
    const r = await snapshot(src, { store, exclude });
    assert.equal(formatDigest(r.digest), await uncached(dir, src, { exclude }), JSON.stringify(exclude));
    assert.equal((await snapshot(src, { store, exclude })).readDirectories, 0, `${JSON.stringify(exclude)}, again`);
  }
});

test('with --follow-symlinks, a change behind a link is seen although no directory of the tree changed', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'outside'), { 'f': 'f' });
  writeTree(join(dir, 'src'), { 'real': 'r', 'to-outside': { link: '../outside' } });
  await settle();
  const store = LocalStore.open(join(dir, 's'));
  const first = await snapshot(join(dir, 'src'), { store, followSymlinks: true });
  fs.writeFileSync(join(dir, 'outside', 'new'), 'new');
  const second = await snapshot(join(dir, 'src'), { store, followSymlinks: true });
  assert.notEqual(formatDigest(second.digest), formatDigest(first.digest));
  assert.equal(formatDigest(second.digest), await uncached(dir, join(dir, 'src'), { followSymlinks: true }));
  // And without --follow-symlinks after it, the link is a link again.
  const plain = await snapshot(join(dir, 'src'), { store });
  assert.equal(formatDigest(plain.digest), await uncached(dir, join(dir, 'src')));
});

test('after gc removed an unreferenced snapshot, the next snapshot stores everything again', async () => {
  const dir = tempDir();
  const src = join(dir, 'src');
  writeTree(src, { 'a/b/c': 'c', 'a/d': 'd', 'e': 'e' });
  await settle();
  const store = LocalStore.open(join(dir, 's'));
  await snapshot(src, { store });
  gcStore(store, { dryRun: false, graceSeconds: 0 });
  fs.writeFileSync(join(src, 'e'), 'E');
  const r = await snapshot(src, { store, ref: 'kept' });
  for await (const e of new TreeReader(store).walk(r.digest)) if (e.type === 'file') assert.ok(store.hasSync(e.digest), e.path);
});

test('a cached listing finds its files by entry, a listed directory by path; an unchanged tree rewrites no cache', async () => {
  const dir = tempDir();
  const src = join(dir, 'src');
  // Empty files between the others: each directory's files must still be one run of entries.
  writeTree(src, { 'a/0': '', 'a/1': 'one', 'a/2': '', 'a/3': 'three', 'b/e': '', 'b/f': 'f', 'b/c/g': 'g', 'b/c/h': '', 'top': 'top' });
  await settle();
  const store = LocalStore.open(join(dir, 's'));
  const first = await snapshot(src, { store });
  const cacheFile = join(store.root, 'stat-cache', fs.readdirSync(join(store.root, 'stat-cache'))[0]!);
  const written = fs.statSync(cacheFile).ino;
  const second = await snapshot(src, { store });
  assert.equal(second.readDirectories, 0);
  assert.equal(second.hashedFiles, 0);
  assert.equal(second.cachedFiles, 9);
  assert.equal(fs.statSync(cacheFile).ino, written, 'an unchanged snapshot rewrote the stat cache');
  assert.equal(formatDigest(second.digest), formatDigest(first.digest));
  // A new file: b is listed again, and its unchanged files are found by path, not hashed.
  fs.writeFileSync(join(src, 'b', 'new'), 'new');
  await settle();
  const third = await snapshot(src, { store });
  assert.equal(third.readDirectories, 1);
  assert.equal(third.hashedFiles, 1);
  assert.equal(formatDigest(third.digest), await uncached(dir, src));
  const fourth = await snapshot(src, { store });
  assert.equal(fourth.readDirectories, 0);
  assert.equal(fourth.hashedFiles, 0);
  assert.equal(formatDigest(fourth.digest), formatDigest(third.digest));
  // b's message is built again from the digests the third snapshot's cache copied for its files.
  fs.writeFileSync(join(src, 'b', 'f'), 'F');
  fs.writeFileSync(join(src, 'a', '1'), 'ONE');
  await settle();
  const fifth = await snapshot(src, { store });
  assert.equal(fifth.hashedFiles, 2);
  assert.equal(formatDigest(fifth.digest), await uncached(dir, src));
});

test('files left as a run of cache entries keep their paths when the cache is rewritten for another change', async () => {
  const dir = tempDir();
  const src = join(dir, 'src');
  writeTree(src, { 'a/1': 'one', 'b/c/2': 'two', 'b/c/3': 'three' });
  await settle();
  const store = LocalStore.open(join(dir, 's'));
  await snapshot(src, { store });
  // b/c is unchanged, so its files stay a run of entries while the cache is rewritten for a/1.
  fs.writeFileSync(join(src, 'a', '1'), 'ONE');
  await settle();
  const second = await snapshot(src, { store });
  assert.equal(second.hashedFiles, 1);
  // b/c is listed again: its old files are found by their paths, only the new one is hashed.
  fs.writeFileSync(join(src, 'b', 'c', 'new'), 'new');
  await settle();
  const third = await snapshot(src, { store });
  assert.equal(third.readDirectories, 1);
  assert.equal(third.hashedFiles, 1);
  assert.equal(formatDigest(third.digest), await uncached(dir, src));
});
