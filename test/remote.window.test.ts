import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Digest } from '../src/core/digest.js';
import { FetchScheduler, runWindow, type SchedulerOptions } from '../src/remote/window.js';

const dig = (i: number, size = 10): Digest => ({ hash: i.toString(16).padStart(64, '0'), size });

function fake(opts: Partial<SchedulerOptions> & { delay?: number; fail?: (ds: Digest[]) => boolean } = {}) {
  const local = new Set<string>();
  const batches: Digest[][] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const s = new FetchScheduler({
    concurrency: 4,
    maxBatchBlobs: 3,
    maxBatchBytes: 1000,
    singleAbove: 500,
    isLocal: (d) => local.has(d.hash),
    fetchBatch: async (ds) => {
      batches.push(ds);
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((r) => setTimeout(r, opts.delay ?? 5));
      inFlight--;
      if (opts.fail?.(ds)) {
        local.add(ds[0]!.hash); // the first blob made it before the failure
        throw new Error('boom');
      }
      for (const d of ds) local.add(d.hash);
    },
    ...opts,
  });
  return { s, local, batches, max: () => maxInFlight };
}

test('keeps exactly `concurrency` requests in flight and batches by count', async () => {
  const f = fake();
  await f.s.want(Array.from({ length: 30 }, (_, i) => dig(i)));
  assert.equal(f.batches.length, 10);
  assert.ok(f.batches.every((b) => b.length === 3));
  assert.equal(f.max(), 4);
  assert.equal(f.s.maxInFlight, 4);
  assert.equal(f.local.size, 30);
});

test('batches never hold more than their byte limit, and big blobs travel alone', async () => {
  const f = fake();
  await f.s.want([dig(1, 400), dig(2, 400), dig(3, 400), dig(4, 900), dig(5, 10), dig(6, 450), dig(7, 450), dig(8, 100)]);
  assert.deepEqual(f.batches.map((b) => b.map((d) => d.size)), [[400, 400], [400], [900], [10, 450, 450], [100]]);
});

test('blobs already local, empty blobs and repeated wants are not fetched again', async () => {
  const f = fake();
  f.local.add(dig(1).hash);
  await Promise.all([f.s.want([dig(1), dig(2), { ...dig(3), size: 0 }]), f.s.want([dig(2)])]);
  await f.s.want([dig(2)]);
  assert.deepEqual(f.batches.flat().map((d) => d.hash), [dig(2).hash]);
});

test('urgent wants overtake queued background work', async () => {
  const f = fake({ concurrency: 1, maxBatchBlobs: 1 });
  const bg = f.s.want(Array.from({ length: 10 }, (_, i) => dig(i)));
  await f.s.want([dig(8)], true);
  assert.ok(f.batches.findIndex((b) => b[0]!.hash === dig(8).hash) <= 1, 'dig(8) went right after the batch in flight');
  await bg;
  assert.equal(f.batches.length, 10);
});

test('a failure stops new dispatch; stored blobs of the failed batch still count', async () => {
  const f = fake({ concurrency: 1, fail: (ds) => ds.some((d) => d.hash === dig(4).hash) });
  const all = Array.from({ length: 12 }, (_, i) => dig(i));
  await assert.rejects(f.s.want(all), /boom/);
  await f.s.idle();
  assert.equal(f.batches.length, 2); // [0,1,2] then [3,4,5] failed; nothing after
  assert.ok(f.local.has(dig(3).hash));
  await f.s.want([dig(3)]); // done and local: resolves
});

test('stop() lets requests in flight finish and fails the queued ones', async () => {
  const f = fake({ concurrency: 2, maxBatchBlobs: 1, delay: 20 });
  const p = f.s.want(Array.from({ length: 10 }, (_, i) => dig(i)));
  await new Promise((r) => setTimeout(r, 5));
  f.s.stop();
  await assert.rejects(p, /interrupted/);
  await f.s.idle();
  assert.equal(f.batches.length, 2);
  assert.equal(f.local.size, 2, 'the two in flight completed and were kept');
});

test('blobs queued in the background hold no record until dispatched', async () => {
  const f = fake({ delay: 0 });
  const all = Array.from({ length: 10_000 }, (_, i) => dig(i));
  f.s.queue(all);
  // A checkout's urgent wants meanwhile: awaited, so recorded, but only these.
  await f.s.want(all.slice(9_000, 9_010), true);
  await f.s.drain();
  assert.equal(f.local.size, 10_000);
  assert.ok(f.s.maxTracked <= 4 * 3 + 10, `at most the blobs in flight plus those awaited were recorded, not ${f.s.maxTracked}`);
});

test('runWindow bounds concurrency and reports the first error', async () => {
  let inFlight = 0;
  let max = 0;
  const seen: number[] = [];
  await runWindow([1, 2, 3, 4, 5, 6, 7], 3, async (x) => {
    inFlight++;
    max = Math.max(max, inFlight);
    await new Promise((r) => setTimeout(r, 2));
    seen.push(x);
    inFlight--;
  });
  assert.equal(max, 3);
  assert.equal(seen.length, 7);
  await assert.rejects(runWindow([1, 2, 3], 2, async (x) => {
    if (x === 2) throw new Error('two');
  }), /two/);
});
