/**
 * Race tests: the same code on several threads released at one instant.
 */
import { Worker } from 'node:worker_threads';

/**
 * Runs `source` on one thread per tag: each gets `{ ...data, tag, gate }`, must count itself ready
 * (Atomics.add(gate, 1, 1)) and wait for the start (Atomics.wait(gate, 0, 0)), then post one
 * message: its result.
 */
async function runTogether<T>(source: string, tags: string[], data: Record<string, unknown>): Promise<T[]> {
  const gate = new SharedArrayBuffer(8);
  const threads = tags.map((tag) => new Worker(source, { eval: true, workerData: { ...data, tag, gate } }));
  const results = threads.map((w) => new Promise<T>((resolve, reject) => w.once('message', resolve).once('error', reject)));
  const cell = new Int32Array(gate);
  while (Atomics.load(cell, 1) < tags.length) await new Promise((r) => setTimeout(r, 1));
  Atomics.store(cell, 0, 1);
  Atomics.notify(cell, 0);
  return Promise.all(results);
}

/** The store module, as a thread imports it. */
const LOCAL_STORE = new URL('../../src/store/local.js', import.meta.url).href;

/**
 * Two threads (tags `a` and `b`), each with its own LocalStore on `root`, released at one instant:
 * for i from 0 to count - 1 each calls `pathOf(store, i, workerData)` (JavaScript source of a
 * function, run in the thread; `data` is in workerData) and hardlinks the store file it names to
 * `out/TAG-i`, as a hardlink checkout links the store's file. Returns both threads' failures.
 */
export async function linkRace(pathOf: string, data: { root: string; out: string; count: number } & Record<string, unknown>): Promise<string[]> {
  const source = `
const { workerData, parentPort } = require('node:worker_threads');
const fs = require('node:fs');
import(workerData.local).then(({ LocalStore }) => {
  const store = new LocalStore(workerData.root);
  const pathOf = ${pathOf};
  const gate = new Int32Array(workerData.gate);
  Atomics.add(gate, 1, 1);
  Atomics.wait(gate, 0, 0);
  const failures = [];
  for (let i = 0; i < workerData.count; i++) {
    try {
      fs.linkSync(pathOf(store, i, workerData), workerData.out + '/' + workerData.tag + '-' + i);
    } catch (e) {
      failures.push(e.code + ' ' + e.message);
    }
  }
  parentPort.postMessage(failures);
});
`;
  return (await runTogether<string[]>(source, ['a', 'b'], { ...data, local: LOCAL_STORE })).flat();
}
