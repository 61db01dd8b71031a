import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { snapshot } from '../src/capture/snapshot.js';
import { checkout } from '../src/materialize/checkout.js';
import { LocalStore } from '../src/store/local.js';
import { digestOf, formatDigest } from '../src/core/digest.js';
import { NoSpaceError, TargetError } from '../src/errors.js';
import { describeTree, tempDir, writeTree } from './helpers/tmp.js';
import { canMount, hasCommand, hasSharedExtents, withTmpfs, withXfs } from './helpers/mounts.js';
import { makeRandomTree } from './helpers/random-tree.js';

const noRoot = canMount();
const bin = new URL('../../bin/treecast', import.meta.url).pathname;

test('on XFS with reflink, auto and clone check out by cloning: blocks are shared with the store', { skip: noRoot ?? (!hasCommand('mkfs.xfs') && 'needs mkfs.xfs (xfsprogs)') }, async () => {
  await withXfs(async (mnt) => {
    const store = LocalStore.open(join(mnt, 'store'));
    writeTree(join(mnt, 'src'), { 'big.bin': { bytes: randomBytes(256 << 10) }, 'tool': { text: '#!/bin/sh\n', exec: true }, 'e': '' });
    const snap = await snapshot(join(mnt, 'src'), { store });
    for (const method of ['auto', 'clone'] as const) {
      const out = join(mnt, `out-${method}`);
      const r = await checkout(snap.digest, out, { store, method });
      assert.equal(r.method, 'clone');
      assert.equal(r.cloned, 2);
      assert.equal(r.copied, 0);
      assert.ok(hasSharedExtents(join(out, 'big.bin')), 'big.bin shares its extents with the store blob');
      assert.deepEqual(describeTree(out), describeTree(join(mnt, 'src')));
      // A clone is a separate inode: writing to it leaves the store intact.
      fs.appendFileSync(join(out, 'big.bin'), 'local edit');
    }
    assert.equal(store.readSync(digestOf(fs.readFileSync(join(mnt, 'src', 'big.bin')))).length, 256 << 10);
  });
});

test('on tmpfs, auto falls back to copy (no reflink there) and says so', { skip: noRoot }, async () => {
  await withTmpfs('16m', async (mnt) => {
    writeTree(join(mnt, 'src'), { a: 'a', b: 'b', 'big.bin': { bytes: randomBytes(64 << 10) } });
    const env = { ...process.env, TREECAST_STORE: join(mnt, 's') };
    const snap = spawnSync(process.execPath, [bin, 'snapshot', join(mnt, 'src')], { env, encoding: 'utf8' });
    assert.equal(snap.status, 0, snap.stderr);
    const digest = snap.stdout.trim();
    const json = spawnSync(process.execPath, [bin, 'checkout', digest, join(mnt, 'out1'), '--method', 'auto', '--json'], { env, encoding: 'utf8' });
    assert.equal(json.status, 0, json.stderr);
    const r = JSON.parse(json.stdout);
    assert.deepEqual({ method: r.method, copied: r.copied, cloned: r.cloned, hardlinked: r.hardlinked }, { method: 'copy', copied: 3, cloned: 0, hardlinked: 0 });
    const text = spawnSync(process.execPath, [bin, 'checkout', digest, join(mnt, 'out2')], { env, encoding: 'utf8' });
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stderr, /\(full, copy\): 0 cloned, 0 hardlinked, 3 copied/);
    assert.deepEqual(describeTree(join(mnt, 'out2')), describeTree(join(mnt, 'src')));
  });
});

test('hardlink checkouts share the read-only store inode, executables link a separate read-only twin', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'data': 'same bytes', 'tool': { text: 'same bytes', exec: true } });
  const store = LocalStore.open(join(dir, 's'));
  const snap = await snapshot(join(dir, 'src'), { store });
  const out = join(dir, 'out');
  await checkout(snap.digest, out, { store, method: 'hardlink' });
  const d = digestOf(Buffer.from('same bytes'));
  const blob = fs.statSync(store.blobPath(d.hash));
  const twin = fs.statSync(store.executableBlobPath(d.hash));
  assert.equal(fs.statSync(join(out, 'data')).ino, blob.ino);
  assert.equal(fs.statSync(join(out, 'tool')).ino, twin.ino);
  assert.notEqual(blob.ino, twin.ino);
  assert.equal(blob.mode & 0o777, 0o444, 'the shared inode was never chmod-ed');
  assert.equal(twin.mode & 0o777, 0o555);
});

test('a write to a hardlinked checkout file by an ordinary user fails and leaves the store intact', { skip: noRoot }, async () => {
  const dir = tempDir();
  fs.chmodSync(dir, 0o755);
  writeTree(join(dir, 'src'), { 'data': 'original' });
  const store = LocalStore.open(join(dir, 's'));
  const snap = await snapshot(join(dir, 'src'), { store });
  const out = join(dir, 'out');
  await checkout(snap.digest, out, { store, method: 'hardlink' });
  const r = spawnSync(process.execPath, ['-e', `require('fs').writeFileSync(${JSON.stringify(join(out, 'data'))}, 'tampered')`], { uid: 65534, gid: 65534, encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /EACCES/);
  assert.equal(store.readSync(digestOf(Buffer.from('original'))).toString(), 'original');
});

test('ENOSPC while writing is a NoSpaceError naming the path, with no partial file left', { skip: noRoot }, async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'small': 'fits', 'huge.bin': { bytes: randomBytes(2 << 20) } });
  const store = LocalStore.open(join(dir, 's'));
  const snap = await snapshot(join(dir, 'src'), { store });
  await withTmpfs('1m', async (mnt) => {
    const out = join(mnt, 'out');
    await assert.rejects(checkout(snap.digest, out, { store, method: 'copy' }), (e: unknown) => e instanceof NoSpaceError && e.message.includes('huge.bin'));
    assert.equal(fs.existsSync(join(out, 'huge.bin')), false);
  });
});

test('a target on a read-only filesystem is refused with the path named', { skip: noRoot }, async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { a: 'a' });
  const store = LocalStore.open(join(dir, 's'));
  const snap = await snapshot(join(dir, 'src'), { store });
  await withTmpfs('1m', async (mnt) => {
    await assert.rejects(checkout(snap.digest, mnt, { store }), (e: unknown) => e instanceof TargetError && e.message.includes(mnt));
  }, true);
});

test('SIGINT in the middle of a checkout exits 130; the same command run again finishes it correctly', async () => {
  const dir = tempDir();
  const src = join(dir, 'src');
  makeRandomTree(src, 99, { files: 50 });
  for (let d = 0; d < 40; d++) {
    fs.mkdirSync(join(src, `bulk${d}`));
    for (let f = 0; f < 150; f++) fs.writeFileSync(join(src, `bulk${d}`, `f${f}`), randomBytes(2048));
  }
  const storeDir = join(dir, 's');
  const snap = await snapshot(src, { store: LocalStore.open(storeDir) });
  const out = join(dir, 'out');
  const args = [bin, 'checkout', formatDigest(snap.digest), out, '--store', storeDir, '--jobs', '1'];
  // The executor's test hook pauses before its second batch of writes, so the signal provably
  // lands mid-checkout: the first batch is written, the rest is not.
  const pause = join(dir, 'pause');
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TREECAST_TEST_PAUSE_FILE: pause } });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  for (let i = 0; i < 3000 && !fs.existsSync(pause) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(fs.existsSync(pause), `the checkout reached its pause: ${stderr}`);
  const written = describeTree(out).length;
  assert.ok(written > 1 && written < describeTree(src).length, 'the checkout is half done');
  child.kill('SIGINT');
  const code = await exited;
  assert.equal(code, 130, stderr);
  assert.match(stderr, /ERR_TREECAST_INTERRUPTED/);
  assert.notDeepEqual(describeTree(out), describeTree(src), 'stopped before the end');
  const again = spawnSync(process.execPath, args, { encoding: 'utf8' });
  assert.equal(again.status, 0, again.stderr);
  assert.deepEqual(describeTree(out), describeTree(src));
});
