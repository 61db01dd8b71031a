/** Worker-thread entry: runs the batches WorkerPool posts, one at a time, with sync calls. */
import { parentPort, workerData } from 'node:worker_threads';
import { serializeError } from '../errors.js';
import { runOp, type OpContextInit, type OpName } from './worker-ops.js';

const init = workerData as OpContextInit;
parentPort!.on('message', async (m: { id: number; op: OpName; payload: unknown }) => {
  try {
    parentPort!.postMessage({ id: m.id, ok: true, value: await runOp(m.op, m.payload, init) });
  } catch (e) {
    parentPort!.postMessage({ id: m.id, ok: false, error: serializeError(e) });
  }
});
