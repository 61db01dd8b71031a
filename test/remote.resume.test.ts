/** Pulling into a store that already holds most of a large tree fetches exactly the rest. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { LocalStore } from '../src/store/local.js';
import { treeBlobs } from '../src/remote/push.js';
import { json, runCli, type TestServer } from './helpers/remote.js';
import { useRemoteFixture } from './helpers/remote-fixture.js';

let dir: string;
let s: TestServer;
let root: string;

// Over 4,096 files, so the client lists its store instead of stat-ing each blob.
useRemoteFixture('resume', { tree: { dirs: 250, files: 20 } }, (f) => ({ dir, server: s, root } = f));

test('a second pull after losing some blobs fetches exactly those, each once', async () => {
  const storeDir = join(dir, 'client');
  const first = json(await runCli(['pull', root, s.url, '--store', storeDir, '--json']));
  assert.equal(first.skipped, 0);
  const local = LocalStore.open(storeDir);
  const { files } = treeBlobs(local, local.resolve(root));
  assert.ok(files.length > 4096);
  const lost = files.filter((_, i) => i % 7 === 3);
  for (const d of lost) fs.unlinkSync(local.blobPath(d.hash));
  const before = s.log.length;
  const again = json(await runCli(['pull', root, s.url, '--store', storeDir, '--json']));
  assert.equal(again.fetched, lost.length);
  assert.equal(again.skipped, files.length - lost.length + (first.directories as number));
  const sent = s.log.slice(before).flatMap((e) => e.sent ?? []);
  assert.deepEqual(new Set(sent), new Set(lost.map((d) => d.hash)));
  assert.equal(sent.length, lost.length);
  const third = json(await runCli(['pull', root, s.url, '--store', storeDir, '--json']));
  assert.equal(third.fetched, 0);
});
