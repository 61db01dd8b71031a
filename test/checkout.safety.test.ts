import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { snapshot } from '../src/capture/snapshot.js';
import { checkout } from '../src/materialize/checkout.js';
import { LocalStore } from '../src/store/local.js';
import { directoryBlob, type Directory } from '../src/core/reapi.js';
import { digestOf, formatDigest, type Digest } from '../src/core/digest.js';
import { BlobNotFoundError, DigestMismatchError, InvalidTreeError, LocalChangesError, TargetError } from '../src/errors.js';
import { describeTree, settle, tempDir, writeTree } from './helpers/tmp.js';

/** Stores raw Directory bytes without validation, as `treecast blob put` would. */
function putRaw(store: LocalStore, bytes: Buffer): Digest {
  return store.putSync(bytes);
}

function rawFileEntry(name: string, d: Digest): Buffer {
  const digest = Buffer.concat([Buffer.from([0x0a, 64]), Buffer.from(d.hash), Buffer.from([0x10, d.size])]);
  const nameBytes = Buffer.from(name);
  const body = Buffer.concat([Buffer.from([0x0a, nameBytes.length]), nameBytes, Buffer.from([0x12, digest.length]), digest]);
  return Buffer.concat([Buffer.from([0x0a, body.length]), body]);
}

for (const name of ['..', '.', '', 'a/b', 'x\0y']) {
  test(`a tree naming a file ${JSON.stringify(name)} is refused before anything is written`, async () => {
    const dir = tempDir();
    const store = LocalStore.open(join(dir, 's'));
    const blob = store.putSync(Buffer.from('payload'));
    const root = putRaw(store, rawFileEntry(name, blob));
    const out = join(dir, 'out');
    await assert.rejects(checkout(root, out, { store }), (e: unknown) => e instanceof InvalidTreeError && e.message.includes(formatDigest(root)));
    assert.ok(!fs.existsSync(out), 'nothing was written, and the target made is gone again');
    assert.equal(fs.existsSync(join(dir, 'payload')), false);
  });
}

test('a hostile Directory deep in an otherwise good tree stops the checkout before the first write', async () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  const blob = store.putSync(Buffer.from('payload'));
  const bad = putRaw(store, Buffer.concat([rawFileEntry('b', blob), rawFileEntry('a', blob)]));
  const good: Directory = {
    files: Array.from({ length: 600 }, (_, i) => ({ name: `f${String(i).padStart(4, '0')}`, digest: blob, executable: false })),
    directories: [{ name: 'zzz', digest: bad }],
    symlinks: [],
  };
  const top = directoryBlob(good);
  store.putSync(top.bytes);
  const out = join(dir, 'out');
  await assert.rejects(checkout(top.digest, out, { store }), InvalidTreeError);
  assert.ok(!fs.existsSync(out), 'the target the checkout made is gone again');
});

test('a checkout refused before its first write leaves no target or parent it made; a target that was there stays', async () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  const missing = digestOf(Buffer.from('a tree this store never had'));
  await assert.rejects(checkout(missing, join(dir, 'new', 'deep'), { store }), BlobNotFoundError);
  assert.ok(!fs.existsSync(join(dir, 'new')), 'new/deep and new are gone');
  // A file blob is no Directory.
  const file = store.putSync(Buffer.from('just a file'));
  fs.mkdirSync(join(dir, 'there'));
  await assert.rejects(checkout(file, join(dir, 'there', 'out'), { store }), InvalidTreeError);
  assert.deepEqual(fs.readdirSync(join(dir, 'there')), [], 'only what the checkout made went');
  await assert.rejects(checkout(file, join(dir, 'there'), { store }), InvalidTreeError);
  assert.ok(fs.statSync(join(dir, 'there')).isDirectory(), 'an existing target stays');
});

test('a symlink placed in the target never redirects a write outside it', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'v1'), { 'sub/file': 'one' });
  writeTree(join(dir, 'v2'), { 'sub/file': 'two', 'sub/new': 'new' });
  const store = LocalStore.open(join(dir, 's'));
  const a = await snapshot(join(dir, 'v1'), { store });
  const b = await snapshot(join(dir, 'v2'), { store });
  const out = join(dir, 'out');
  const outside = join(dir, 'outside');
  fs.mkdirSync(outside);
  await checkout(a.digest, out, { store });
  await settle();
  fs.rmSync(join(out, 'sub'), { recursive: true });
  fs.symlinkSync(outside, join(out, 'sub'));
  await assert.rejects(checkout(b.digest, out, { store }), LocalChangesError);
  assert.deepEqual(fs.readdirSync(outside), []);
  await checkout(b.digest, out, { store, force: true });
  assert.deepEqual(fs.readdirSync(outside), [], '--force replaces the link; it never writes through it');
  assert.ok(fs.lstatSync(join(out, 'sub')).isDirectory());
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'v2')));
});

test('a symlink planted where a new file will go is not written through', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'v1'), { 'keep': 'k' });
  writeTree(join(dir, 'v2'), { 'keep': 'k', 'victim': 'payload' });
  const store = LocalStore.open(join(dir, 's'));
  const a = await snapshot(join(dir, 'v1'), { store });
  const b = await snapshot(join(dir, 'v2'), { store });
  const out = join(dir, 'out');
  const target = join(dir, 'precious');
  fs.writeFileSync(target, 'do not touch');
  await checkout(a.digest, out, { store });
  fs.symlinkSync(target, join(out, 'victim'));
  await assert.rejects(checkout(b.digest, out, { store }), LocalChangesError);
  await checkout(b.digest, out, { store, force: true });
  assert.equal(fs.readFileSync(target, 'utf8'), 'do not touch');
  assert.equal(fs.readFileSync(join(out, 'victim'), 'utf8'), 'payload');
  assert.ok(!fs.lstatSync(join(out, 'victim')).isSymbolicLink());
});

test('tree symlinks that point outside are created as links, and later files are not written through them', async () => {
  const dir = tempDir();
  const outside = join(dir, 'outside');
  fs.mkdirSync(outside);
  // v1 plants links to outside (absolute and relative, both kept inside this test's temp dir so a
  // broken checkout cannot write anywhere else); v2 has directories of the same names with files.
  writeTree(join(dir, 'v1'), { 'esc': { link: outside }, 'up': { link: '../outside' }, 'z/file': 'f' });
  writeTree(join(dir, 'v2'), { 'esc/f': 'under esc', 'esc/sub/g': 'deeper', 'up/h': 'under up', 'z/file': 'f' });
  const store = LocalStore.open(join(dir, 's'));
  const v1 = await snapshot(join(dir, 'v1'), { store });
  const v2 = await snapshot(join(dir, 'v2'), { store });
  const out = join(dir, 'out');
  await checkout(v1.digest, out, { store });
  assert.equal(fs.readlinkSync(join(out, 'esc')), outside);
  await checkout(v2.digest, out, { store });
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'v2')));
  assert.ok(fs.lstatSync(join(out, 'esc')).isDirectory() && fs.lstatSync(join(out, 'up')).isDirectory());
  assert.deepEqual(fs.readdirSync(outside), [], 'nothing was written through the links');
  // Links planted in the target by someone else (no record of them) are in the way: refused, and
  // with force removed, never followed.
  const planted = join(dir, 'planted');
  fs.mkdirSync(planted);
  fs.symlinkSync(outside, join(planted, 'esc'));
  fs.symlinkSync('../outside', join(planted, 'up'));
  await assert.rejects(checkout(v2.digest, planted, { store }), (e: unknown) => e instanceof LocalChangesError && e.paths.includes('esc') && e.paths.includes('up'));
  await checkout(v2.digest, planted, { store, force: true });
  assert.deepEqual(describeTree(planted), describeTree(join(dir, 'v2')));
  assert.deepEqual(fs.readdirSync(outside), []);
});

test('a target that is a file is refused with the path named', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { a: 'a' });
  fs.writeFileSync(join(dir, 'file'), 'x');
  const store = LocalStore.open(join(dir, 's'));
  const snap = await snapshot(join(dir, 'src'), { store });
  await assert.rejects(checkout(snap.digest, join(dir, 'file'), { store }), (e: unknown) => e instanceof TargetError && e.message.includes(join(dir, 'file')));
  assert.equal(fs.readFileSync(join(dir, 'file'), 'utf8'), 'x');
});

test('--verify names a corrupt blob and leaves no file under its final name', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'good': 'fine', 'bad': 'will be corrupted' });
  const store = LocalStore.open(join(dir, 's'));
  const snap = await snapshot(join(dir, 'src'), { store });
  const bad = digestOf(Buffer.from('will be corrupted'));
  fs.chmodSync(store.blobPath(bad.hash), 0o644);
  fs.writeFileSync(store.blobPath(bad.hash), 'WILL BE CORRUPTED');
  for (const method of ['copy', 'hardlink'] as const) {
    const out = join(dir, `out-${method}`);
    await assert.rejects(checkout(snap.digest, out, { store, verify: true, method }), (e: unknown) => e instanceof DigestMismatchError && e.message.includes(bad.hash));
    assert.equal(fs.existsSync(join(out, 'bad')), false);
  }
});

test('a tree nested deeper than 1,024 levels is refused before anything is written', async () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  let child = directoryBlob({ files: [], directories: [], symlinks: [] });
  store.putSync(child.bytes);
  for (let i = 0; i < 1030; i++) {
    child = directoryBlob({ files: [], directories: [{ name: 'd', digest: child.digest }], symlinks: [] });
    store.putSync(child.bytes);
  }
  const out = join(dir, 'out');
  await assert.rejects(checkout(child.digest, out, { store }), (e: unknown) => e instanceof InvalidTreeError && /deeper than 1024/.test(e.message));
  assert.ok(!fs.existsSync(out), 'nothing was written, and the target made is gone again');
});

test('a name longer than 255 bytes is refused', async () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  const blob = store.putSync(Buffer.from('x'));
  const long = 'n'.repeat(4100);
  const nameBytes = Buffer.from(long);
  const digest = Buffer.concat([Buffer.from([0x0a, 64]), Buffer.from(blob.hash), Buffer.from([0x10, 1])]);
  const lenName = Buffer.from([0x0a, 0x84, 0x20]); // tag 1, varint 4100
  const body = Buffer.concat([lenName, nameBytes, Buffer.from([0x12, digest.length]), digest]);
  const bodyLen = body.length; // 4100 + 3 + 2 + 68 = 4173 -> varint 0xcd 0x20
  const msg = Buffer.concat([Buffer.from([0x0a, (bodyLen & 0x7f) | 0x80, bodyLen >> 7]), body]);
  const root = store.putSync(msg);
  await assert.rejects(checkout(root, join(dir, 'out'), { store }), (e: unknown) => e instanceof InvalidTreeError && /longer than 255/.test(e.message));
});

test('a symlink target over 4095 UTF-8 bytes is refused, also when it has fewer UTF-16 units than that', async () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  const out = join(dir, 'out');
  // 2,048 two-byte characters: 4,096 bytes in 2,048 units (a length check on units alone passes it).
  const { bytes } = directoryBlob({ files: [], directories: [], symlinks: [{ name: 'l', target: '\u00e9'.repeat(2048) }] });
  const root = putRaw(store, bytes);
  await assert.rejects(checkout(root, out, { store }), (e: unknown) => e instanceof InvalidTreeError && /longer than 4095 bytes/.test(e.message));
  assert.ok(!fs.existsSync(out), 'nothing was written, and the target made is gone again');
});
