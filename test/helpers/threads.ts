/**
 * Runs the same code on several threads released at one instant, for race tests: each thread gets
 * `{ ...data, tag, gate }`, must count itself ready (Atomics.add(gate, 1, 1)) and wait for the
 * start (Atomics.wait(gate, 0, 0)), then post one message: its result.
 */
import { Worker } from 'node:worker_threads';

export async function runTogether<T>(source: string, tags: string[], data: Record<string, unknown>): Promise<T[]> {
  const gate = new SharedArrayBuffer(8);
  const threads = tags.map((tag) => new Worker(source, { eval: true, workerData: { ...data, tag, gate } }));
  const results = threads.map((w) => new Promise<T>((resolve, reject) => w.once('message', resolve).once('error', reject)));
  const cell = new Int32Array(gate);
  while (Atomics.load(cell, 1) < tags.length) await new Promise((r) => setTimeout(r, 1));
  Atomics.store(cell, 0, 1);
  Atomics.notify(cell, 0);
  return Promise.all(results);
}
