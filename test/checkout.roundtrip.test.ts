import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { snapshot } from '../src/capture/snapshot.js';
import { checkout } from '../src/materialize/checkout.js';
import { LocalStore } from '../src/store/local.js';
import { formatDigest } from '../src/core/digest.js';
import { describeTree, tempDir } from './helpers/tmp.js';
import { makeRandomTree } from './helpers/random-tree.js';

for (const seed of [1, 2, 3, 4]) {
  for (const method of ['copy', 'hardlink', 'auto'] as const) {
    test(`random tree ${seed}: snapshot then checkout (--method ${method}) reproduces contents, types, exec bits, links and empties`, async () => {
      const dir = tempDir();
      makeRandomTree(join(dir, 'src'), seed, { files: 80 });
      const store = LocalStore.open(join(dir, 's'));
      const snap = await snapshot(join(dir, 'src'), { store });
      const out = join(dir, 'out');
      const r = await checkout(snap.digest, out, { store, method, jobs: 2 });
      assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
      assert.equal(r.incremental, false);
      assert.equal(r.cloned + r.hardlinked + r.copied + r.empty, snap.files);
      if (method === 'hardlink') assert.equal(r.copied, 0);
      const again = await snapshot(out, { store });
      assert.equal(formatDigest(again.digest), formatDigest(snap.digest));
    });
  }
}

test('a large checkout runs in worker threads and gives the same tree as a small inline one', async () => {
  const dir = tempDir();
  const src = join(dir, 'src');
  fs.mkdirSync(src);
  for (let d = 0; d < 30; d++) {
    fs.mkdirSync(join(src, `d${d}`));
    for (let f = 0; f < 40; f++) fs.writeFileSync(join(src, `d${d}`, `f${f}`), `${d}/${f}`.repeat(f));
  }
  const store = LocalStore.open(join(dir, 's'));
  const snap = await snapshot(src, { store });
  for (const jobs of [1, 2]) {
    const r = await checkout(snap.digest, join(dir, `out${jobs}`), { store, jobs });
    assert.equal(r.copied + r.cloned + r.empty, 1200);
    assert.deepEqual(describeTree(join(dir, `out${jobs}`)), describeTree(src));
  }
});

test('checked-out files honour the umask and get the execute bit only where the tree says', async () => {
  const dir = tempDir();
  fs.mkdirSync(join(dir, 'src'));
  fs.writeFileSync(join(dir, 'src', 'plain'), 'p');
  fs.writeFileSync(join(dir, 'src', 'tool'), 't');
  fs.chmodSync(join(dir, 'src', 'tool'), 0o700);
  const store = LocalStore.open(join(dir, 's'));
  const snap = await snapshot(join(dir, 'src'), { store });
  await checkout(snap.digest, join(dir, 'out'), { store, method: 'copy' });
  const mask = process.umask();
  assert.equal(fs.statSync(join(dir, 'out', 'plain')).mode & 0o777, 0o666 & ~mask);
  assert.equal(fs.statSync(join(dir, 'out', 'tool')).mode & 0o777, 0o777 & ~mask);
});
