/**
 * Memory bounds of remote fetching, counted through the fetcher's own counters rather than timed or
 * measured as RSS: the scheduler keeps per-blob records only for blobs in flight or awaited (not
 * for every queued blob; its rule alone is in remote.window.test.ts), and the store writer's
 * gather buffers number at most the requests in flight and all come back; a checkout from a plain
 * cache (one GET per blob) keeps at most a few requests per batch waiting for a connection, not one
 * per blob. Against a real treecast server on loopback.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { type Digest, formatDigest } from '../src/core/digest.js';
import { LocalStore } from '../src/store/local.js';
import { RemoteFetcher, BATCH_BLOBS } from '../src/remote/fetch.js';
import { type CheckoutOptions, checkout } from '../src/materialize/checkout.js';
import { DIRECT_SLABS, PLAIN_CACHE_SLABS } from '../src/materialize/execute.js';
import { remoteCheckoutHooks } from '../src/cli/commands/remote.js';
import { describeTree, runCli, type TestServer } from './helpers/remote.js';
import { useRemoteFixture } from './helpers/remote-fixture.js';

describe('pull through a real server', () => {
  let dir: string;
  let server: TestServer;
  let root: Digest;

  // ~2,600 small blobs: about 40 batch reads, ten per request slot.
  useRemoteFixture('memory', { tree: { dirs: 200, files: 13 } }, (f) => ({ dir, server, rootDigest: root } = f));

  test('gather buffers number at most the requests in flight, are reused, and all come back', async () => {
    const store = LocalStore.open(join(dir, 'client'));
    const fetcher = new RemoteFetcher(store, { url: server.url, concurrency: 4 });
    try {
      const summary = await fetcher.pull(root);
      assert.ok(summary.requests >= 30, `enough batch reads to reuse buffers (${summary.requests})`);
      const held = fetcher.held();
      assert.ok(held.gatherBuffers >= 1 && held.gatherBuffers <= 4, `gather buffers made: ${held.gatherBuffers}`);
      assert.equal(held.gatherOutstanding, 0);
      assert.ok(held.maxTracked <= 4 * BATCH_BLOBS, `per-blob records: ${held.maxTracked} for ${summary.files} files`);
    } finally {
      await fetcher.close();
    }
    // The pulled store checks out the same tree, offline.
    const out = join(dir, 'out');
    const r = await runCli(['checkout', formatDigest(root), out, '--store', join(dir, 'client')]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  });
});

describe('checkout --remote from a plain Bazel cache (one GET per blob)', () => {
  let dir: string;
  let server: TestServer;
  let root: Digest;

  // ~2,600 small blobs: ten checkout batches of 256 files, each fetched one GET per blob.
  useRemoteFixture('memory-plain', { tree: { dirs: 200, files: 13 }, server: { batch: false } }, (f) => ({ dir, server, rootDigest: root } = f));

  test('requests waiting for a slot number at most the slots of each batch in flight, not one per blob', async () => {
    const store = LocalStore.open(join(dir, 'client'));
    const fetcher = new RemoteFetcher(store, { url: server.url, concurrency: 2 });
    const out = join(dir, 'out');
    const controller = new AbortController();
    // The CLI's own wiring: the copy method fetches into memory, writes the file and the store.
    const remote = remoteCheckoutHooks(store, server.url, {}, controller.signal, false, fetcher);
    let summary;
    try {
      const r = await checkout(root, out, { store, method: 'copy', ...remote.hooks });
      assert.equal(r.copied > 2000, true, `copied ${r.copied}`);
    } finally {
      summary = await remote.done();
    }
    assert.equal(summary.batch, false);
    assert.ok(summary.requests >= 2000, `one GET per blob (${summary.requests})`);
    const { maxDirectWaiting } = fetcher.held();
    // Each batch in flight (at most DIRECT_SLABS hold fetched bytes) runs at most `concurrency`
    // requests, one on the wire or waiting each.
    assert.ok(maxDirectWaiting >= 1 && maxDirectWaiting <= DIRECT_SLABS * 2, `requests waiting for a slot: ${maxDirectWaiting}`);
    assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
    // Every fetched blob was stored too: the same tree checks out again offline.
    const again = await runCli(['checkout', formatDigest(root), join(dir, 'again'), '--store', join(dir, 'client')]);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(describeTree(join(dir, 'again')), describeTree(join(dir, 'src')));
  });

  test('at most PLAIN_CACHE_SLABS batches hold fetched bytes at once, fewer than from a batch server', async () => {
    assert.ok(PLAIN_CACHE_SLABS < DIRECT_SLABS);
    const store = LocalStore.open(join(dir, 'client-slabs'));
    const fetcher = new RemoteFetcher(store, { url: server.url, concurrency: 2 });
    const out = join(dir, 'out-slabs');
    const controller = new AbortController();
    const remote = remoteCheckoutHooks(store, server.url, {}, controller.signal, false, fetcher);
    // Each fetchBytes call is one batch's fetch into its slab: counted while it runs.
    let inFlight = 0;
    let most = 0;
    const fetchFor = remote.hooks.fetchFor;
    const counted: CheckoutOptions['fetchFor'] = () => {
      const t = fetchFor();
      assert.equal(t.slabs, PLAIN_CACHE_SLABS);
      return {
        ...t,
        fetchBytes: async (digests: Digest[], into: Uint8Array) => {
          most = Math.max(most, ++inFlight);
          try {
            return await t.fetchBytes(digests, into);
          } finally {
            inFlight--;
          }
        },
      };
    };
    try {
      const r = await checkout(root, out, { store, method: 'copy', ...remote.hooks, fetchFor: counted });
      assert.equal(r.copied > 2000, true, `copied ${r.copied}`);
    } finally {
      await remote.done();
    }
    assert.ok(most >= 2 && most <= PLAIN_CACHE_SLABS, `batches fetching at once: ${most}`);
    assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  });
});
