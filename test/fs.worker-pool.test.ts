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

test('with callerRuns, a heavy batch goes to a worker unless one is already set aside there, and payloadOf is told so', async () => {
  const root = tempDir();
  const pool = new WorkerPool(1, {}, { callerRuns: true });
  try {
    await pool.run('materialize.apply', linkBatch(root, -1, 1));
    const batches = Array.from({ length: 60 }, (_, b) => ({ b, heavy: b % 3 === 0, ops: Array.from({ length: 30 }, (_, i) => ({ rel: `h${b}-${i}`, target: `t${i}` })) }));
    let toldHere = 0;
    const heavyPosted = new Set<number>();
    const heavyHereAlone: number[] = [];
    await runBatches(pool, 'materialize.apply', batches, (_r, { b }) => heavyPosted.delete(b), {
      heavy: (batch) => batch.heavy,
      payloadOf: ({ b, heavy, ops }, here): ApplyBatch => {
        if (here) toldHere++;
        if (heavy && !here) heavyPosted.add(b);
        // A heavy batch runs here only while another is on the worker.
        if (heavy && here && heavyPosted.size === 0) heavyHereAlone.push(b);
        return { root, method: 'copy', fileMode: 0o644, execMode: 0o755, verify: false, writes: here ? ops : packWrites(ops) };
      },
    });
    for (const { b, ops } of batches) for (const [i, op] of ops.entries()) assert.equal(fs.readlinkSync(join(root, op.rel)), `t${i}`, `batch ${b}`);
    assert.deepEqual(heavyHereAlone, []);
    // What payloadOf was told is what the pool did: no heavy batch ran here unannounced.
    assert.equal(pool.ranHere, toldHere);
    assert.ok(pool.ranHere > 0, 'the calling thread ran none of the light batches');
  } finally {
    await pool.close();
  }
});

test('with callerRuns, a heavy batch posted behind two others does not hold the calling thread: the next batch runs there at once', async () => {
  const root = tempDir();
  const pool = new WorkerPool(1, {}, { callerRuns: true });
  try {
    await pool.run('materialize.apply', linkBatch(root, -1, 1));
    // Batches 0 and 1 fill the worker; 2 is heavy and goes to it as a third; 3.. are light.
    const batches = Array.from({ length: 12 }, (_, b) => ({ b, heavy: b === 2, ops: Array.from({ length: 200 }, (_, i) => ({ rel: `a${b}-${i}`, target: `t${i}` })) }));
    const events: string[] = [];
    const settled: number[] = [];
    const results: number[] = [];
    await runBatches(pool, 'materialize.apply', batches, (_r, { b }) => (events.push(`r${b}`), results.push(b)), {
      heavy: (batch) => batch.heavy,
      settled: ({ b }) => settled.push(b),
      payloadOf: ({ b, ops }, here): ApplyBatch => {
        events.push(`p${b}${here ? 'h' : 'w'}`);
        return { root, method: 'copy', fileMode: 0o644, execMode: 0o755, verify: false, writes: here ? ops : packWrites(ops) };
      },
    });
    assert.deepEqual(events.slice(0, 4), ['p0w', 'p1w', 'p2w', 'p3h'], `no batch settled before the one after the heavy batch was handed out: ${events.join(' ')}`);
    for (const { b, ops } of batches) for (const [i, op] of ops.entries()) assert.equal(fs.readlinkSync(join(root, op.rel)), `t${i}`, `batch ${b}`);
    assert.deepEqual([...results].sort((x, y) => x - y), batches.map(({ b }) => b));
    assert.deepEqual([...settled].sort((x, y) => x - y), batches.map(({ b }) => b));
  } finally {
    await pool.close();
  }
});

test('with callerRuns, two heavy batches are set aside behind a full worker, and a third then runs on the calling thread, not behind them', async () => {
  const root = tempDir();
  const pool = new WorkerPool(1, {}, { callerRuns: true });
  try {
    await pool.run('materialize.apply', linkBatch(root, -1, 1));
    // 0 and 1 fill the worker; 2 and 3 are set aside there; 4 is heavy too.
    const batches = Array.from({ length: 10 }, (_, b) => ({ b, heavy: b >= 2 && b <= 4, ops: Array.from({ length: 200 }, (_, i) => ({ rel: `c${b}-${i}`, target: `t${i}` })) }));
    const events: string[] = [];
    await runBatches(pool, 'materialize.apply', batches, (_r, { b }) => events.push(`r${b}`), {
      heavy: (batch) => batch.heavy,
      payloadOf: ({ b, ops }, here): ApplyBatch => {
        events.push(`p${b}${here ? 'h' : 'w'}`);
        return { root, method: 'copy', fileMode: 0o644, execMode: 0o755, verify: false, writes: here ? ops : packWrites(ops) };
      },
    });
    assert.deepEqual(events.slice(0, 5), ['p0w', 'p1w', 'p2w', 'p3w', 'p4h'], events.join(' '));
    assert.equal(pool.ranHere, events.filter((e) => e.endsWith('h')).length);
    for (const { b, ops } of batches) for (const [i, op] of ops.entries()) assert.equal(fs.readlinkSync(join(root, op.rel)), `t${i}`, `batch ${b}`);
  } finally {
    await pool.close();
  }
});

test('with callerRuns, a heavy batch set aside that fails fails the run, once every batch started has settled', async () => {
  const root = tempDir();
  const pool = new WorkerPool(1, {}, { callerRuns: true });
  try {
    await pool.run('materialize.apply', linkBatch(root, -1, 1));
    // The heavy batch is long and fails at its last name, after the light ones after it are done.
    fs.writeFileSync(join(root, 'x2-2999'), 'mine');
    const sizes = [100, 100, 3000, 20, 20, 20];
    const batches = sizes.map((n, b) => ({ b, ops: Array.from({ length: n }, (_, i) => ({ rel: `x${b}-${i}`, target: `t${i}` })) }));
    const started: number[] = [];
    const settled: number[] = [];
    await assert.rejects(
      runBatches(pool, 'materialize.apply', batches, () => {}, {
        heavy: ({ b }) => b === 2,
        settled: ({ b }) => settled.push(b),
        payloadOf: ({ b, ops }, here): ApplyBatch => {
          started.push(b);
          return { root, method: 'copy', fileMode: 0o644, execMode: 0o755, verify: false, writes: here ? ops : packWrites(ops) };
        },
      }),
      (e: unknown) => e instanceof TreecastError && /x2-2999/.test(e.message),
    );
    assert.equal(fs.readFileSync(join(root, 'x2-2999'), 'utf8'), 'mine');
    assert.ok(started.includes(2));
    assert.deepEqual([...settled].sort((x, y) => x - y), [...started].sort((x, y) => x - y));
  } finally {
    await pool.close();
  }
});

test('with callerRuns, one batch at a time is queued on the calling thread; with heavy batches set aside, others go even to a full worker', async () => {
  const root = tempDir();
  const pool = new WorkerPool(1, {}, { callerRuns: true });
  try {
    await pool.run('materialize.apply', linkBatch(root, -1, 1));
    // Pairs of long heavy batches, so two are often set aside and lanes are free.
    const batches = Array.from({ length: 60 }, (_, b) => {
      const heavy = b % 10 === 2 || b % 10 === 3;
      return { b, heavy, ops: Array.from({ length: heavy ? 1500 : 60 }, (_, i) => ({ rel: `q${b}-${i}`, target: `t${i}` })) };
    });
    const here = new Set<number>();
    let mostHere = 0;
    let postedToFull = 0;
    await runBatches(pool, 'materialize.apply', batches, (_r, { b }) => here.delete(b), {
      heavy: (batch) => batch.heavy,
      payloadOf: ({ b, heavy, ops }, runsHere): ApplyBatch => {
        if (runsHere) here.add(b);
        else if (!heavy && pool.full) postedToFull++;
        mostHere = Math.max(mostHere, here.size);
        return { root, method: 'copy', fileMode: 0o644, execMode: 0o755, verify: false, writes: runsHere ? ops : packWrites(ops) };
      },
    });
    for (const { b, ops } of batches) for (const [i, op] of ops.entries()) assert.equal(fs.readlinkSync(join(root, op.rel)), `t${i}`, `batch ${b}`);
    assert.equal(mostHere, 1, 'two batches were queued on the calling thread at once');
    assert.ok(postedToFull > 0, 'no light batch went to a full worker while one was queued here');
  } finally {
    await pool.close();
  }
});
