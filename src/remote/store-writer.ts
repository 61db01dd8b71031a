/**
 * Stores received blobs from a worker thread, so hashing and the file-system calls of one batch
 * overlap with receiving and parsing the next on the main thread.
 *
 * Perf: in a profile of a Linux-tree pull over loopback (83k blobs, 1.2 GiB), open/write/rename/
 * close and SHA-256 took ~7 s of the main thread's 15.1 s; with them here the main thread sat idle
 * 5.8 s of a 12.6 s pull (the writer thread, not the network code, is now the busy one). One
 * writer thread, not more: two threads writing the same tmpfs store each took 12.6 s for half the
 * blobs against 9.9 s for one thread doing all of them.
 *
 * A batch arrives as one transferred ArrayBuffer (no copy between threads) with the offset of each
 * blob; the worker verifies every blob (SHA-256 and size) before it gets its name, then transfers
 * the buffer back to be gathered into again.
 */
import { Worker } from 'node:worker_threads';
import type { Digest } from '../core/digest.js';
import { reviveError, type SerializedError } from '../errors.js';

/**
 * Writer threads (TREECAST_WRITER_THREADS overrides, for measuring). Perf: on 2 cores, pulling the
 * Linux tree with two took 13.21 and 8.50 s against 12.06 and 8.40 s with one (paired runs, load
 * average 7-8) and peaked 60 MB higher: the server and the main thread already share the cores.
 */
const WRITER_THREADS = Math.max(1, Math.min(8, Number(process.env.TREECAST_WRITER_THREADS) || 1));

/**
 * Size of the buffers batches are gathered into: a batch holds at most 1 MiB, or one blob of at
 * most 1 MiB (fetch.ts, window.ts), so it fits.
 */
export const GATHER_BYTES = 1 << 20;

export interface WriteReply {
  id: number;
  stored: number;
  error?: SerializedError;
  /** The batch's buffer, handed back for reuse. */
  data?: ArrayBuffer;
}

export class StoreWriter {
  private readonly workers: (Worker | undefined)[];
  /** Writes pending per thread; a batch goes to the thread with the fewest. */
  private readonly load: number[];
  private readonly pending = new Map<number, { resolve(n: number): void; reject(e: unknown): void; slot: number }>();
  private nextId = 1;
  /**
   * Gather buffers back from the thread, for the next batch. Perf: with a fresh buffer per batch
   * the writer thread held up to 69 MB of written batches waiting for its garbage collector
   * during a Linux-tree `checkout --remote` (its heap is small, so it rarely runs); reused, the
   * buffers number at most the requests in flight.
   */
  private readonly free: ArrayBuffer[] = [];
  /** Gather buffers made, and given out now (tests check the bound). */
  allocated = 0;
  outstanding = 0;

  constructor(
    private readonly storeRoot: string,
    threads = WRITER_THREADS,
  ) {
    this.workers = new Array<Worker | undefined>(threads).fill(undefined);
    this.load = new Array<number>(threads).fill(0);
  }

  /**
   * Verifies and stores `digests`, whose bytes lie back to back in `data` in that order. Resolves
   * once all are stored; rejects with the first failure (the valid blobs are stored regardless).
   */
  write(digests: readonly Digest[], data: ArrayBuffer, source: string): Promise<number> {
    let slot = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[slot]!) slot = i;
    const w = this.start(slot);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      // Held while writes are pending: an idle worker must not keep the process alive, but a
      // pending write must (the sockets may all be idle by then, and unref'd).
      if (this.load[slot]!++ === 0) w.ref();
      this.pending.set(id, { resolve, reject, slot });
      w.postMessage({ id, root: this.storeRoot, source, hashes: digests.map((d) => d.hash), sizes: digests.map((d) => d.size), data }, [data]);
    });
  }

  /** A buffer of GATHER_BYTES to gather a batch into; back to the pool through write() or release(). */
  buffer(): ArrayBuffer {
    this.outstanding++;
    const free = this.free.pop();
    if (free) return free;
    this.allocated++;
    return new ArrayBuffer(GATHER_BYTES);
  }

  /** Returns a buffer from buffer() that was not handed to write(). */
  release(buf: ArrayBuffer): void {
    this.outstanding--;
    if (buf.byteLength === GATHER_BYTES) this.free.push(buf);
  }

  async close(): Promise<void> {
    const ws = this.workers.splice(0, this.workers.length, ...this.workers.map(() => undefined));
    await Promise.all(ws.map((w) => w?.terminate()));
  }

  private start(slot: number): Worker {
    const running = this.workers[slot];
    if (running) return running;
    const w = new Worker(new URL('./store-writer-worker.js', import.meta.url));
    w.unref();
    w.on('message', (m: WriteReply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (--this.load[slot]! === 0) w.unref();
      if (m.data?.byteLength === GATHER_BYTES) this.release(m.data);
      if (m.error) p.reject(reviveError(m.error));
      else p.resolve(m.stored);
    });
    const fail = (err: unknown) => {
      for (const [id, p] of this.pending) {
        if (p.slot !== slot) continue;
        this.pending.delete(id);
        p.reject(err);
      }
      this.load[slot] = 0;
      this.workers[slot] = undefined;
    };
    w.on('error', fail);
    w.on('exit', (code) => {
      if (this.load[slot]! > 0) fail(new Error(`store writer thread exited with code ${code}`));
    });
    this.workers[slot] = w;
    return w;
  }
}
