/** Worker-thread entry: runs the batches WorkerPool posts, one at a time, with sync calls. */
import { parentPort, workerData } from 'node:worker_threads';
import { serializeError } from '../errors.js';
import { runOp, type OpContextInit, type OpName } from './worker-ops.js';

const init = workerData as OpContextInit;
parentPort!.on('message', async (m: { id: number; op: OpName; payload: unknown }) => {
  try {
    const value = await runOp(m.op, m.payload, init);
    parentPort!.postMessage({ id: m.id, ok: true, value }, ownedBuffers(value));
  } catch (e) {
    parentPort!.postMessage({ id: m.id, ok: false, error: serializeError(e) });
  }
});

/**
 * The memory a result owns outright (a typed array, or the `data` of an object, spanning its whole
 * ArrayBuffer), moved to the main thread instead of copied.
 *
 * Perf: `pack --level store` of the Linux tree copied each batch's output (up to 16 MiB) into the
 * message and left the original to a lazy GC: the worker threads held 100-180 MB each of such
 * buffers (peak RSS 650-730 MB).
 */
function ownedBuffers(value: unknown): ArrayBuffer[] {
  const v = ArrayBuffer.isView(value) ? value : (value as { data?: unknown } | null)?.data;
  if (!ArrayBuffer.isView(v) || !(v.buffer instanceof ArrayBuffer)) return [];
  return v.byteOffset === 0 && v.byteLength === v.buffer.byteLength ? [v.buffer] : [];
}
