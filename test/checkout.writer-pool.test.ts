import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { LOCAL_WORKER_DEPTH, REMOTE_WRITER_YOUNG_MB, writerPool } from '../src/materialize/checkout.js';
import { LocalStore } from '../src/store/local.js';
import type { WorkerPool } from '../src/fs/worker-pool.js';
import { tempDir } from './helpers/tmp.js';

// A remote checkout's writer threads run with a small young generation (REMOTE_WRITER_YOUNG_MB),
// as their threads report it; a checkout from the local store leaves V8's default.

async function limitsOf(pool: WorkerPool): Promise<number[]> {
  const until = Date.now() + 10_000;
  for (;;) {
    const limits = pool.youngGenerationLimits();
    // -1 (not set) until the thread is up, then the thread's own figure.
    if (limits.every((l) => l !== undefined && l > 0)) return limits as number[];
    if (Date.now() > until) throw new Error('workers did not start');
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("a remote checkout's writer threads have a small young generation; a local one's keep V8's", async () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 'store'));
  const remote = writerPool(2, store, { store, prepareTree: async () => {} });
  const local = writerPool(1, store, { store });
  try {
    const r = await limitsOf(remote);
    assert.equal(r.length, 2);
    for (const mb of r) assert.ok(mb > 0 && mb <= REMOTE_WRITER_YOUNG_MB, `a remote checkout's writer has a ${mb} MB young generation`);
    const l = await limitsOf(local);
    assert.equal(l.length, 1);
    assert.ok(l[0]! >= 16, `a local checkout's writer has a ${l[0]} MB young generation, not V8's default`);
  } finally {
    await remote.close();
    await local.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a local checkout's pool lets its worker hold LOCAL_WORKER_DEPTH batches; a remote one's workers two each", async () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 'store'));
  const local = writerPool(2, store, { store });
  const remote = writerPool(2, store, { store, prepareTree: async () => {} });
  try {
    assert.equal(local.size, 1);
    assert.equal(local.parallelism, LOCAL_WORKER_DEPTH + 1);
    assert.equal(remote.size, 2);
    assert.equal(remote.parallelism, 4);
  } finally {
    await local.close();
    await remote.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
