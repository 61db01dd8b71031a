import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { LocalStore, checkout, formatDigest, snapshot } from '../src/index.js';
import { describeTree, tempDir, writeTree } from './helpers/tmp.js';

test('the library API from the README: snapshot then checkout', async () => {
  const dir = tempDir();
  writeTree(join(dir, 'src'), { 'a': 'a', 'b/c': 'c' });
  const store = LocalStore.open(join(dir, 'store'));
  const { digest } = await snapshot(join(dir, 'src'), { store, ref: 'main' });
  const result = await checkout(digest, join(dir, 'copy'), { store, method: 'auto' });
  assert.match(formatDigest(digest), /^[0-9a-f]{64}\/\d+$/);
  assert.equal(result.copied + result.cloned, 2);
  assert.deepEqual(describeTree(join(dir, 'copy')), describeTree(join(dir, 'src')));
  assert.deepEqual(store.resolve('main'), digest);
});
