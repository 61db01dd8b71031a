import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { WorkerPool, runBatches } from '../src/fs/worker-pool.js';
import { type ApplyBatch, packWrites } from '../src/materialize/apply-op.js';
import { TreecastError } from '../src/errors.js';
import { tempDir } from './helpers/tmp.js';

/** A batch of `n` symlinks named b<batch>-<i> (the apply op needs no store for links). */
function linkBatch(root: string, batch: number, n: number): ApplyBatch {
  const ops = Array.from({ length: n }, (_, i) => ({ rel: `b${batch}-${i}`, target: `t${batch}-${i}` }));
  return { root, method: 'copy', fileMode: 0o644, execMode: 0o755, verify: false, writes: packWrites(ops) };
}

test('with callerRuns, the calling thread and the worker share the batches, and every batch is written', async () => {
  const root = tempDir();
  const pool = new WorkerPool(1, {}, { callerRuns: true });
  try {
    // A booted worker first: while it boots, the calling thread rightly takes every batch.
    await pool.run('materialize.apply', linkBatch(root, -1, 1));
    const batches = Array.from({ length: 60 }, (_, b) => linkBatch(root, b, 40));
    let results = 0;
    await runBatches(pool, 'materialize.apply', batches, () => results++);
    assert.equal(results, 60);
    for (let b = 0; b < 60; b++) for (let i = 0; i < 40; i++) assert.equal(fs.readlinkSync(join(root, `b${b}-${i}`)), `t${b}-${i}`);
    // The caller ran some batches, and the worker more than the two it held when the caller began:
    // a caller that never let the worker's finished batches through would run all the rest.
    assert.ok(pool.ranHere > 0, `the calling thread ran no batch`);
    assert.ok(pool.ranHere < 60 - 2 - 5, `the calling thread ran ${pool.ranHere} of 60 batches: the worker starved`);
  } finally {
    await pool.close();
  }
});

test('with callerRuns, a batch failing on the calling thread fails the run and writes through no existing name', async () => {
  const root = tempDir();
  const pool = new WorkerPool(1, {}, { callerRuns: true });
  try {
    await pool.run('materialize.apply', linkBatch(root, -1, 1));
    // Every batch's first name exists already, as a file someone owns.
    for (let b = 0; b < 20; b++) fs.writeFileSync(join(root, `b${b}-0`), 'mine');
    const batches = Array.from({ length: 20 }, (_, b) => linkBatch(root, b, 10));
    await assert.rejects(
      runBatches(pool, 'materialize.apply', batches, () => {}),
      (e: unknown) => e instanceof TreecastError && /b\d+-0/.test(e.message),
    );
    for (let b = 0; b < 20; b++) assert.equal(fs.readFileSync(join(root, `b${b}-0`), 'utf8'), 'mine');
  } finally {
    await pool.close();
  }
});

test('runBatches tells payloadOf where each batch runs: packed only for a worker', async () => {
  const root = tempDir();
  for (const workers of [0, 1]) {
    const pool = new WorkerPool(workers, {}, { callerRuns: true });
    try {
      if (workers) await pool.run('materialize.apply', linkBatch(root, -1 - workers, 1));
      const batches = Array.from({ length: 40 }, (_, b) => ({ b, ops: Array.from({ length: 30 }, (_, i) => ({ rel: `w${workers}-${b}-${i}`, target: `t${i}` })) }));
      let toldHere = 0;
      await runBatches(pool, 'materialize.apply', batches, () => {}, {
        payloadOf: ({ ops }, here): ApplyBatch => {
          if (here) toldHere++;
          return { root, method: 'copy', fileMode: 0o644, execMode: 0o755, verify: false, writes: here ? ops : packWrites(ops) };
        },
      });
      for (const { b, ops } of batches) for (const [i, op] of ops.entries()) assert.equal(fs.readlinkSync(join(root, op.rel)), `t${i}`, `batch ${b}`);
      // Inline every batch runs here; with a worker, exactly the ones the pool ran on this thread.
      assert.equal(toldHere, workers ? pool.ranHere : 40);
      if (workers) assert.ok(pool.ranHere > 0 && pool.ranHere < 40, `ran here: ${pool.ranHere}`);
    } finally {
      await pool.close();
    }
  }
});

test('with callerRuns, a heavy batch always goes to a worker, and payloadOf is told so', async () => {
  const root = tempDir();
  const pool = new WorkerPool(1, {}, { callerRuns: true });
  try {
    await pool.run('materialize.apply', linkBatch(root, -1, 1));
    const batches = Array.from({ length: 60 }, (_, b) => ({ b, heavy: b % 3 === 0, ops: Array.from({ length: 30 }, (_, i) => ({ rel: `h${b}-${i}`, target: `t${i}` })) }));
    let toldHere = 0;
    const heavyToldHere: number[] = [];
    await runBatches(pool, 'materialize.apply', batches, () => {}, {
      heavy: (batch) => batch.heavy,
      payloadOf: ({ b, heavy, ops }, here): ApplyBatch => {
        if (here) toldHere++;
        if (here && heavy) heavyToldHere.push(b);
        return { root, method: 'copy', fileMode: 0o644, execMode: 0o755, verify: false, writes: here ? ops : packWrites(ops) };
      },
    });
    for (const { b, ops } of batches) for (const [i, op] of ops.entries()) assert.equal(fs.readlinkSync(join(root, op.rel)), `t${i}`, `batch ${b}`);
    assert.deepEqual(heavyToldHere, []);
    // What payloadOf was told is what the pool did: no heavy batch ran here unannounced.
    assert.equal(pool.ranHere, toldHere);
    assert.ok(pool.ranHere > 0, 'the calling thread ran none of the light batches');
  } finally {
    await pool.close();
  }
});

test('with callerRuns and workerDepth, the calling thread runs a batch only once each worker holds that many', async () => {
  const root = tempDir();
  for (const [depth, expected] of [
    [undefined, 2],
    [3, 3],
  ] as const) {
    const pool = new WorkerPool(1, {}, { callerRuns: true, workerDepth: depth });
    try {
      assert.equal(pool.parallelism, expected + 1);
      // Started with no await between them: the worker takes `expected`, the calling thread the rest.
      const runs = Array.from({ length: 5 }, (_, b) => pool.run('materialize.apply', linkBatch(root, 100 * expected + b, 3)));
      await Promise.all(runs);
      assert.equal(pool.ranHere, 5 - expected, `depth ${depth}: ran here ${pool.ranHere} of 5`);
      for (let b = 0; b < 5; b++) assert.equal(fs.readlinkSync(join(root, `b${100 * expected + b}-2`)), `t${100 * expected + b}-2`);
    } finally {
      await pool.close();
    }
  }
});
