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
import { runTogether } from './helpers/threads.js';

/**
 * Each thread waits for the start signal, then stores every blob in order (putNewSync: no
 * existence check, so both threads commit each one) and links the store's blob to `out/TAG-i`.
 */
const THREAD = `
const { workerData, parentPort } = require('node:worker_threads');
const fs = require('node:fs');
import(workerData.local).then(({ LocalStore }) => {
  const store = new LocalStore(workerData.root);
  const gate = new Int32Array(workerData.gate);
  Atomics.add(gate, 1, 1);
  Atomics.wait(gate, 0, 0);
  const failures = [];
  for (let i = 0; i < workerData.count; i++) {
    try {
      const d = store.putNewSync(Buffer.from('blob ' + i + '\\n'));
      fs.linkSync(store.blobPath(d.hash), workerData.out + '/' + workerData.tag + '-' + i);
    } catch (e) {
      failures.push(e.code + ' ' + e.message);
    }
  }
  parentPort.postMessage(failures);
});
`;

test('two threads storing the same blobs at once while linking them link one inode each, and no link fails', async () => {
  const dir = tempDir();
  const root = join(dir, 'store');
  const store = LocalStore.open(root);
  const count = 4000;
  const out = join(dir, 'out');
  fs.mkdirSync(out);
  const local = new URL('../src/store/local.js', import.meta.url).href;
  const failures = (await runTogether<string[]>(THREAD, ['a', 'b'], { local, root, count, out })).flat();
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
