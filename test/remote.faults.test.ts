/**
 * Faults on the way: a 502 once (retried), wrong bytes (refused, never stored), SIGTERM in the middle
 * of a pull (the rerun fetches only the rest, no blob twice), a server that dies (the rerun
 * completes).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { LocalStore } from '../src/store/local.js';
import { treeBlobs } from '../src/remote/push.js';
import { describeTree, duplicateSends, json, leftoverTmp, runCli, startCli, startServer, waitExit, type TestServer } from './helpers/remote.js';
import { useRemoteFixture } from './helpers/remote-fixture.js';
import { startProxy } from './helpers/remote-proxy.js';

describe('remote faults', () => {
  let dir: string;
  let root: string;
  let fileHashes: string[];
  let serverStore: string;

  useRemoteFixture('faults', { tree: { dirs: 40, files: 20, bigBytes: 2 << 20 }, server: false }, (f) => {
    ({ dir, root, serverStore } = f);
    fileHashes = treeBlobs(LocalStore.open(serverStore), f.rootDigest).files.map((b) => b.hash);
  });

  for (const batch of [true, false]) {
    const mode = batch ? 'batch' : 'plain';

    test(`${mode}: a 502 once is retried and the pull completes`, async () => {
      const s = await startServer(serverStore, { batch });
      const target = fileHashes[5]!;
      let failed = 0;
      const proxy = await startProxy({
        upstream: s.url,
        fault: (method, path) => {
          const hit = batch ? method === 'POST' && path.endsWith('/read') : path.endsWith(target);
          if (hit && failed === 0) {
            failed++;
            return { status: 502 };
          }
          return 'pass';
        },
      });
      try {
        const r = await runCli(['pull', root, proxy.url, '--store', join(dir, `r502-${mode}`), '--json']);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(failed, 1);
        assert.equal(json(r).retried, 1);
        assert.ok(LocalStore.open(join(dir, `r502-${mode}`)).hasSync({ hash: target, size: fs.statSync(s.store.blobPath(target)).size }));
      } finally {
        await proxy.close();
        await s.close();
      }
    });

    test(`${mode}: wrong bytes are refused with the digest and server named, and not stored`, async () => {
      const s = await startServer(serverStore, { batch });
      const big = fileHashes.find((h) => fs.statSync(s.store.blobPath(h)).size > 1 << 20)!;
      // Batch mode: corrupt the first batch read; plain mode: corrupt one blob.
      const proxy = await startProxy({
        upstream: s.url,
        fault: (method, path) => ((batch ? method === 'POST' && path.endsWith('/read') : path.endsWith(big)) ? 'corrupt' : 'pass'),
      });
      const storeDir = join(dir, `bad-${mode}`);
      try {
        const r = await runCli(['pull', root, proxy.url, '--store', storeDir, '--retries', '3']);
        assert.equal(r.code, 5, r.stderr);
        assert.match(r.stderr, /ERR_TREECAST_DIGEST_MISMATCH/);
        assert.match(r.stderr, new RegExp(`[0-9a-f]{64}/\\d+ from ${proxy.url.replace(/[/.]/g, '\\$&')}`));
        // Nothing under a final name disagrees with its name, and no partial file is left.
        const local = LocalStore.open(storeDir);
        for (const h of local.listHashes()) local.readSync({ hash: h, size: fs.statSync(local.blobPath(h)).size });
        if (!batch) assert.ok(![...local.listHashes()].includes(big));
        assert.deepEqual(leftoverTmp(storeDir), []);
        // Without the corrupting proxy the same pull completes.
        const again = await runCli(['pull', root, s.url, '--store', storeDir, '--json']);
        assert.equal(again.code, 0, again.stderr);
        assert.ok((json(again).skipped as number) > 0);
      } finally {
        await proxy.close();
        await s.close();
      }
    });

    test(`${mode}: SIGTERM mid-pull, then the same pull: no blob fetched twice, checkout matches`, async () => {
      // Latency keeps the pull running long enough to be cut in the middle.
      const s = await startServer(serverStore, { batch, latencyMs: batch ? 150 : 15 });
      const storeDir = join(dir, `term-${mode}`);
      try {
        const child = startCli(['pull', root, s.url, '--store', storeDir, '--concurrency', '4', '--json']);
        const sentCount = () => s.log.reduce((n, e) => n + (e.sent?.length ?? 0), 0);
        const until = Date.now() + 20_000;
        while (sentCount() < (batch ? 100 : 60) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
        child.kill('SIGTERM');
        const first = await waitExit(child);
        assert.equal(first.code, 130, first.stderr);
        const partial = sentCount();
        assert.ok(partial < fileHashes.length, `cut in the middle (${partial} of ${fileHashes.length} sent)`);
        const second = await runCli(['pull', root, s.url, '--store', storeDir, '--json']);
        assert.equal(second.code, 0, second.stderr);
        assert.ok((json(second).skipped as number) > 0);
        assert.deepEqual(duplicateSends(s.log), []);
        assert.ok(s.log.every((e) => !e.aborted), 'no response was cut');
        const out = join(dir, `term-out-${mode}`);
        const co = await runCli(['checkout', root, out, '--store', storeDir]);
        assert.equal(co.code, 0, co.stderr);
        assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
      } finally {
        await s.close();
      }
    });
  }

  // SIGTERM mid `checkout --remote`: remote.direct, whose tree is large enough to cut part way
  // through a plain checkout's 256-blob batch reads.

  test('a server that dies mid-pull: the pull fails, and the rerun fetches only what is missing', async () => {
    let s: TestServer = await startServer(serverStore, { batch: false, latencyMs: 10 });
    const storeDir = join(dir, 'dead');
    const child = startCli(['pull', root, s.url, '--store', storeDir, '--concurrency', '4', '--retries', '1', '--json']);
    const until = Date.now() + 20_000;
    while (s.log.length < 80 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    await s.close();
    const first = await waitExit(child);
    assert.equal(first.code, 8, first.stderr);
    assert.match(first.stderr, /ERR_TREECAST_REMOTE/);
    const had = [...LocalStore.open(storeDir).listHashes()].length;
    assert.ok(had > 0);
    s = await startServer(serverStore, { batch: false });
    try {
      const r = await runCli(['pull', root, s.url, '--store', storeDir, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.ok((json(r).skipped as number) >= had - 1);
      assert.deepEqual(leftoverTmp(storeDir), []);
    } finally {
      await s.close();
    }
  });
});
