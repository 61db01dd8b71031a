/**
 * The executable twin of a blob (what a hardlink checkout links executables to) is made once and
 * never replaced: two threads making the same twins at once both link the one that won, and no
 * link meets a twin that lost its name (ENOENT), as a hardlink checkout of node_modules did when
 * both its threads made the twin of the `.bin/semver` shim its packages share.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { LocalStore } from '../src/store/local.js';
import { tempDir } from './helpers/tmp.js';
import { runTogether } from './helpers/threads.js';

/** Each thread waits for the start signal, then makes every twin in order and links it to `out/TAG-i`. */
const THREAD = `
const { workerData, parentPort } = require('node:worker_threads');
const fs = require('node:fs');
import(workerData.local).then(({ LocalStore }) => {
  const store = new LocalStore(workerData.root);
  const gate = new Int32Array(workerData.gate);
  Atomics.add(gate, 1, 1);
  Atomics.wait(gate, 0, 0);
  const failures = [];
  workerData.digests.forEach((d, i) => {
    try {
      fs.linkSync(store.executablePathSync(d), workerData.out + '/' + workerData.tag + '-' + i);
    } catch (e) {
      failures.push(e.code + ' ' + e.message);
    }
  });
  parentPort.postMessage(failures);
});
`;

test('two threads making the same executable twins at once link one inode each, and no link fails', async () => {
  const dir = tempDir();
  const root = join(dir, 'store');
  const store = LocalStore.open(root);
  const digests = Array.from({ length: 4000 }, (_, i) => store.putSync(Buffer.from(`#!/bin/sh\necho ${i}\n`)));
  const out = join(dir, 'out');
  fs.mkdirSync(out);
  const local = new URL('../src/store/local.js', import.meta.url).href;
  const failures = (await runTogether<string[]>(THREAD, ['a', 'b'], { local, root, digests, out })).flat();
  assert.deepEqual(failures.slice(0, 5), [], `${failures.length} links failed`);
  let apart = 0;
  for (let i = 0; i < digests.length; i++) {
    const [a, b] = ['a', 'b'].map((t) => fs.statSync(join(out, `${t}-${i}`)));
    const twin = fs.statSync(store.executableBlobPath(digests[i]!.hash));
    if (a.ino !== twin.ino || b.ino !== twin.ino) apart++;
    assert.equal(a.mode & 0o777, 0o555);
  }
  assert.equal(apart, 0, `${apart} of ${digests.length} blobs: a thread linked a twin that another replaced`);
  assert.deepEqual(fs.readdirSync(join(root, 'tmp')), [], 'no temporary twin left');
});
