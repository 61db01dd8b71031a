/**
 * A pull queues each directory's file blobs as its walk finds them: blob batches travel while
 * later directory levels are still being fetched (or, after one /tree answer, while the walk goes
 * on), in whole batches, and the pull still ends with a correct completeness record.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Digest } from '../src/core/digest.js';
import { LocalStore } from '../src/store/local.js';
import { TreeReader } from '../src/store/tree-reader.js';
import { BATCH_BLOBS } from '../src/remote/fetch.js';
import { json, runCli, startServer } from './helpers/remote.js';
import { useRemoteFixture } from './helpers/remote-fixture.js';
import { startProxy } from './helpers/remote-proxy.js';

/** The hashes of every Directory message of the tree under `root` in `store`. */
function directoryHashes(store: LocalStore, root: Digest): Set<string> {
  const reader = new TreeReader(store);
  const out = new Set<string>();
  const walk = (d: Digest) => {
    out.add(d.hash);
    for (const sub of reader.getSync(d).directories) walk(sub.digest);
  };
  walk(root);
  return out;
}

describe('pull: file blobs queued as the walk goes', () => {
  let dir: string;
  let root: string;
  let rootDigest: Digest;
  // makeTree nests every third directory's files two levels deeper (dNNNN/deep/er): four levels.
  useRemoteFixture('pullwalk', { tree: { dirs: 120, files: 20 }, server: false }, (f) => ({ dir, root, rootDigest } = f));

  test('without /tree, file batches are fetched while deeper directory levels still are', async () => {
    const s = await startServer(join(dir, 'server'));
    // The proxy refuses /tree, so the directories come level by level through the window.
    const proxy = await startProxy({ upstream: s.url, delayMs: 15, fault: (_m, path) => (path.includes('/tree/') ? { status: 404 } : 'pass') });
    try {
      const store = join(dir, 'levels');
      const r = await runCli(['pull', root, proxy.url, '--store', store, '--concurrency', '4', '--json']);
      assert.equal(r.code, 0, r.stderr);
      const dirs = directoryHashes(LocalStore.open(store), rootDigest);
      // The server logs each request as it ends, with the hashes it sent.
      const reads = s.log.filter((e) => (e.sent ?? []).length > 0);
      const isDirRead = reads.map((e) => e.sent!.some((h) => dirs.has(h)));
      const isFileRead = reads.map((e) => e.sent!.some((h) => !dirs.has(h)));
      const lastDirRead = isDirRead.lastIndexOf(true);
      const firstFileRead = isFileRead.indexOf(true);
      assert.ok(lastDirRead > 0 && firstFileRead >= 0, 'both kinds were read');
      assert.ok(firstFileRead < lastDirRead, `expected the first file batch (read ${firstFileRead}) before the last directory read (${lastDirRead})`);
      // Whole, and recorded so: a pull again makes no request.
      const again = await runCli(['pull', root, proxy.url, '--store', store, '--json']);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(json(again).requests, 0);
      const verify = await runCli(['verify', '--store', store]);
      assert.equal(verify.code, 0, verify.stderr);
    } finally {
      await proxy.close();
      await s.close();
    }
  });

  test('queued during the walk, blobs still travel in whole batches: one request per 64 files', async () => {
    const s = await startServer(join(dir, 'server'), { latencyMs: 5 });
    try {
      for (const n of [1, 16]) {
        const store = join(dir, `whole-${n}`);
        const r = await runCli(['pull', root, s.url, '--store', store, '--concurrency', String(n), '--json']);
        assert.equal(r.code, 0, r.stderr);
        const sum = json(r) as { files: number; requests: number; fetched: number; directories: number };
        assert.ok(sum.files > 4 * BATCH_BLOBS, 'enough files for several batches');
        // /status, /tree, then the file blobs (small: only the count limits a batch).
        assert.equal(sum.requests, 2 + Math.ceil(sum.files / BATCH_BLOBS), `--concurrency ${n}: ${sum.requests} requests for ${sum.files} files`);
        assert.equal(sum.fetched, sum.files + sum.directories);
      }
    } finally {
      await s.close();
    }
  });
});
