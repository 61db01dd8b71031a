import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { snapshot } from '../src/capture/snapshot.js';
import { checkout } from '../src/materialize/checkout.js';
import { LocalStore } from '../src/store/local.js';
import { readTreePack, writeTreePack } from '../src/store/tree-pack.js';
import { TreeReader } from '../src/store/tree-reader.js';
import { directoryBlob } from '../src/core/reapi.js';
import { digestOf } from '../src/core/digest.js';
import { InvalidTreeError } from '../src/errors.js';
import { describeTree, tempDir, writeTree } from './helpers/tmp.js';

test('snapshot writes a tree pack with every Directory message, and checkout reads the tree from it', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'a/b/c': 'c', 'a/d': 'd', 'e': 'e' });
  const store = LocalStore.open(join(dir, 's'));
  const snap = await snapshot(join(dir, 'src'), { store });
  const pack = readTreePack(store, snap.digest);
  assert.ok(pack);
  assert.equal(pack.size, 3);
  // Remove the loose Directory blobs: the checkout can only succeed through the pack.
  for (const hash of pack.keys()) fs.rmSync(store.blobPath(hash), { force: true });
  await checkout(snap.digest, join(dir, 'out'), { store });
  assert.deepEqual(describeTree(join(dir, 'out')), describeTree(join(dir, 'src')));
});

test('a damaged pack is ignored, and the tree is read from its blobs', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'x/y': 'y' });
  const store = LocalStore.open(join(dir, 's'));
  const snap = await snapshot(join(dir, 'src'), { store });
  const p = join(store.root, 'trees', snap.digest.hash);
  const bytes = fs.readFileSync(p);
  bytes[bytes.length - 1] ^= 0xff;
  fs.writeFileSync(p, bytes);
  assert.equal(readTreePack(store, snap.digest), undefined);
  await checkout(snap.digest, join(dir, 'out'), { store });
  assert.deepEqual(describeTree(join(dir, 'out')), describeTree(join(dir, 'src')));
});

test('messages from a pack are still validated: a hostile message in a well-formed pack is refused', () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  const blob = store.putSync(Buffer.from('x'));
  const ok = directoryBlob({ files: [{ name: 'fine', digest: blob, executable: false }], directories: [], symlinks: [] });
  const evil = Buffer.from(ok.bytes.toString('latin1').replace('fine', '../x'), 'latin1');
  const root = digestOf(evil);
  writeTreePack(store, root, [[root.hash, evil]]);
  const reader = new TreeReader(store);
  assert.ok(reader.usePack(root));
  assert.throws(() => reader.getSync(root), InvalidTreeError);
});
