/**
 * A blob, once stored, is never replaced: two threads storing the same blobs at once while linking
 * each into a checkout (as a hardlink checkout links the store's blob) both link the one that won,
 * and no link meets a blob that lost its name to the other writer's rename (ENOENT).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { LocalStore } from '../src/store/local.js';
import { tempDir } from './helpers/tmp.js';
import { linkRace } from './helpers/threads.js';

test('two threads storing the same blobs at once while linking them link one inode each, and no link fails', async () => {
  const dir = tempDir();
  const root = join(dir, 'store');
  const store = LocalStore.open(root);
  const count = 4000;
  const out = join(dir, 'out');
  fs.mkdirSync(out);
  // putNewSync asks no existence check first, so both threads commit each blob.
  const failures = await linkRace("(store, i) => store.blobPath(store.putNewSync(Buffer.from('blob ' + i + '\\n')).hash)", { root, count, out });
  assert.deepEqual(failures.slice(0, 5), [], `${failures.length} links failed`);
  let apart = 0;
  for (let i = 0; i < count; i++) {
    const d = store.putSync(Buffer.from(`blob ${i}\n`));
    const [a, b] = ['a', 'b'].map((t) => fs.statSync(join(out, `${t}-${i}`)));
    const blob = fs.statSync(store.blobPath(d.hash));
    if (a.ino !== blob.ino || b.ino !== blob.ino) apart++;
    assert.equal(blob.mode & 0o777, 0o444);
    assert.equal(fs.readFileSync(join(out, `a-${i}`), 'utf8'), `blob ${i}\n`);
  }
  assert.equal(apart, 0, `${apart} of ${count} blobs: a thread linked a blob that another replaced`);
  assert.deepEqual([...store.listTmpFiles()], [], 'no temporary file left');
});
