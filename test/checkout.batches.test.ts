import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { HEAVY_BATCH_BYTES, TAIL_MIN_OPS, batchesOf, executePlan, isHeavy } from '../src/materialize/execute.js';
import type { Plan, Step, WriteOp } from '../src/materialize/plan.js';
import { LocalStore } from '../src/store/local.js';
import { WorkerPool } from '../src/fs/worker-pool.js';
import { tempDir } from './helpers/tmp.js';

test('batches keep the plan order, hold at most 256 writes, and pass maxBytes only with a single file', () => {
  const root = tempDir();
  const max = 4 << 20;
  const steps: Step[] = [];
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 5000; i++) {
    if (i % 300 === 0) steps.push({ mkdir: `d${i}` });
    const r = rand();
    // Mostly small files, some near and over the limit, and symlinks (no bytes).
    const size = r < 0.05 ? Math.floor(rand() * 2 * max) : r < 0.1 ? max : Math.floor(rand() * 64 << 10);
    steps.push(r > 0.97 ? { rel: `l${i}`, target: 'x' } : { rel: `f${i}`, hash: 'a'.repeat(64), size, executable: false });
  }
  const batches = [...batchesOf(root, steps, max)];
  const writes = steps.filter((s): s is WriteOp => !('mkdir' in s));
  assert.deepEqual(batches.flat(), writes);
  for (const b of batches) {
    const bytes = b.reduce((n, w) => n + ('size' in w ? w.size : 0), 0);
    assert.ok(b.length <= 256, `batch of ${b.length} writes`);
    // A direct checkout's slab is maxBytes: a batch's blobs must fit it.
    assert.ok(bytes <= max || b.length === 1, `batch of ${b.length} writes holds ${bytes} bytes`);
  }
  for (const s of steps) if ('mkdir' in s) assert.ok(fs.statSync(join(root, s.mkdir)).isDirectory());
});

test('with a tail, batches keep the plan order and shrink to an even share of what is left, down to TAIL_MIN_OPS', () => {
  const root = tempDir();
  const steps: Step[] = [{ mkdir: 'd' }];
  const writes = 3000;
  for (let i = 0; i < writes; i++) steps.push(i % 10 === 0 ? { rel: `d/l${i}`, target: 'x' } : { rel: `d/f${i}`, hash: 'a'.repeat(64), size: 100, executable: false });
  const inFlight = 4;
  const batches = [...batchesOf(root, steps, 32 << 20, { writes, inFlight })];
  assert.deepEqual(batches.flat(), steps.slice(1));
  let left = writes;
  for (const [i, b] of batches.entries()) {
    // Full batches while much is left; after that at most what is left over 2 * inFlight batches.
    const most = Math.min(256, Math.max(TAIL_MIN_OPS, Math.ceil(left / (2 * inFlight))));
    if (i < batches.length - 1) assert.equal(b.length, most, `batch ${i} with ${left} left`);
    else assert.ok(b.length <= most && b.length === left, `last batch ${b.length} with ${left} left`);
    left -= b.length;
  }
  assert.equal(batches[0]!.length, 256);
  assert.ok(batches.at(-2)!.length === TAIL_MIN_OPS, `the last batches are small: ${batches.slice(-4).map((b) => b.length)}`);
  // Without a tail, every batch but the last is full.
  const plain = [...batchesOf(tempDir(), steps, 32 << 20)];
  assert.deepEqual(plain.slice(0, -1).map((b) => b.length), Array(plain.length - 1).fill(256));
});

test('a batch is heavy (run by a worker, never the main thread) from HEAVY_BATCH_BYTES of file bytes', () => {
  const file = (i: number, size: number): WriteOp => ({ rel: `f${i}`, hash: 'a'.repeat(64), size, executable: false });
  assert.equal(isHeavy([file(0, 125 << 20)]), true);
  assert.equal(isHeavy([file(0, HEAVY_BATCH_BYTES)]), true);
  assert.equal(isHeavy([file(0, HEAVY_BATCH_BYTES - 1)]), false);
  // 256 small files (a typical batch) are light; as many mid-size ones summing past the bound are heavy.
  assert.equal(isHeavy(Array.from({ length: 256 }, (_, i) => file(i, 8 << 10))), false);
  assert.equal(isHeavy(Array.from({ length: 256 }, (_, i) => file(i, 100 << 10))), true);
  assert.equal(isHeavy([...Array.from({ length: 200 }, (_, i) => ({ rel: `l${i}`, target: 'x' })), file(200, 1 << 20)]), false);
});

test('executePlan: a heavy batch to copy goes to the worker; one to link or clone may run on the main thread', async () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  // 17 MiB: two do not fit one batch, so each file is a heavy batch of its own.
  const blob = store.putSync(Buffer.alloc(17 << 20, 7));
  for (const method of ['copy', 'hardlink'] as const) {
    const pool = new WorkerPool(1, { storeRoot: store.root }, { callerRuns: true });
    try {
      const steps = Array.from({ length: 3 }, (_, i) => ({ rel: `f${i}`, hash: blob.hash, size: blob.size, executable: false }));
      const plan: Plan = { removes: [], steps, mkdirs: 0, writes: 3, conflicts: [], unchanged: 0 };
      const root = join(dir, method);
      fs.mkdirSync(root);
      const r = await executePlan(plan, { store, pool, rootAbs: root, method, verify: false });
      assert.equal(method === 'copy' ? r.copied : r.hardlinked, 3);
      for (const s of steps) assert.equal(fs.statSync(join(root, s.rel)).size, 17 << 20);
      // The first two go to the worker at once; the third finds it holding two.
      assert.equal(pool.ranHere, method === 'copy' ? 0 : 1, method);
    } finally {
      await pool.close();
    }
  }
});
