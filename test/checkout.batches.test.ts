import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { HEAVY_BATCH_BYTES, batchesOf, isHeavy } from '../src/materialize/execute.js';
import type { Step, WriteOp } from '../src/materialize/plan.js';
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
