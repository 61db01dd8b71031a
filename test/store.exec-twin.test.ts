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
import { linkRace } from './helpers/threads.js';

test('two threads making the same executable twins at once link one inode each, and no link fails', async () => {
  const dir = tempDir();
  const root = join(dir, 'store');
  const store = LocalStore.open(root);
  const digests = Array.from({ length: 4000 }, (_, i) => store.putSync(Buffer.from(`#!/bin/sh\necho ${i}\n`)));
  const out = join(dir, 'out');
  fs.mkdirSync(out);
  const failures = await linkRace('(store, i, w) => store.executablePathSync(w.digests[i])', { root, count: digests.length, digests, out });
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
