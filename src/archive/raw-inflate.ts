/**
 * Inflates one whole raw-deflate entry into an output buffer of its declared size plus one byte,
 * with one zlib engine kept per thread and reset between entries. The output buffer is the limit:
 * inflate stops when it is full, so an entry that inflates past its declared size is stopped there
 * (and refused) and never holds more than that in memory.
 *
 * Perf: `zlib.inflateRawSync` makes and closes a zlib engine per call (its 32 KiB window, state,
 * a stream object and its listeners). Over the 77,840 deflated entries of the Linux tree that was
 * 1.99-2.35 s of CPU against 1.71-1.75 s with one engine reset per entry (all entries inflated
 * in one thread, two rounds each, load 6-8); under 8 KiB, 0.56-0.77 s against 0.43 s. fflate
 * (pure JS) was slower at every size: 5.1-5.2 s for all, 0.32-0.37 s against 0.21-0.25 s under
 * 2 KiB, so it was not taken.
 * Import of the Linux tree zip, 4 interleaved pairs at load 11-13: user CPU 3.66-3.90 s against
 * 3.96-4.25 s (medians 3.85 and 4.21), system CPU unchanged (2.0-2.1 s).
 *
 * Node keeps no public way to reuse an engine synchronously (the sync call closes it), so this
 * drives the engine's handle as `inflateRawSync` itself does: `writeSync` with Z_FINISH, results in
 * the engine's write state, errors through the handle's `onerror`. Where a Node lacks that handle
 * the entry goes through `inflateRawSync` with the same limit instead.
 */
import * as zlib from 'node:zlib';

/** The deflate data is not a valid stream that ends within the entry (zlib's message). */
export class CorruptDeflateError extends Error {}

/** The stream inflates to more than the declared size (stopped one byte past it). */
export class PastDeclaredSizeError extends Error {}

interface ZlibHandle {
  reset(): void;
  writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): void;
  onerror: (message: string, errno: number, code?: string) => void;
}

interface KeptEngine {
  stream: zlib.InflateRaw;
  handle: ZlibHandle;
  /** [bytes of output space left, bytes of input left] after each writeSync. */
  state: Uint32Array;
  error: string | undefined;
}

let kept: KeptEngine | null | undefined;

/**
 * Entries inflating to at most this many bytes (+1) share the thread's output buffer: any entry a
 * batch holds (local-data.ts LARGE_ENTRY_BYTES, 64 MiB: larger ones are streamed). The buffer grows
 * only to the largest entry the thread met.
 * Perf: a new buffer per entry was allocated, page-faulted and left to the 2 MB young generation
 * to free. Import of the Linux tree zip, 4 interleaved rounds at load 12-14, user+sys CPU: 5.78-6.28 s
 * (median 5.95) with the shared buffer, 6.03-6.34 s (6.17) with a buffer per entry and the kept
 * engine, 6.40-6.93 s (6.63) with neither; peak RSS 235-283 MB in all three.
 * Perf: shared up to 8 MiB only, the Linux tree's 11 entries over 8 MiB (410 MB of its 1.3 GB,
 * 12-17 MB each) had a fresh buffer each: page faults inside inflate were 186 of the workers'
 * 11,500 cpu-clock samples (perf record, load 5), and a freed buffer waited for a collection.
 * Shared up to 64 MiB (measured together with import.ts's one entry shape and local-data.ts's sameName),
 * import of its zip into an empty store on tmpfs, 5 interleaved rounds under
 * chrt -r 10: peak RSS 237-250 MB against 278-284 MB; wall 3.14-3.34 s (median 3.18) against
 * 3.10-3.27 s (3.20) and user+sys 5.75-6.17 s (5.96) against 5.76-6.02 s (5.97), no change
 * within the spread (4 rounds at load 8 without chrt: user+sys median 6.85 s against 7.11 s).
 */
const SHARED_OUTPUT_BYTES = (64 << 20) + 1;
let sharedOutput = Buffer.allocUnsafeSlow(64 << 10);

/** The thread's output buffer, grown to hold `n` bytes. */
function outputFor(n: number): Buffer {
  if (n > SHARED_OUTPUT_BYTES) return Buffer.allocUnsafe(n);
  if (sharedOutput.length < n) sharedOutput = Buffer.allocUnsafeSlow(Math.min(SHARED_OUTPUT_BYTES, Math.max(n, sharedOutput.length * 2)));
  return sharedOutput;
}

/** This thread's engine, made on first use; null where Node's engine has no sync handle to drive. */
function engine(): KeptEngine | null {
  if (kept !== undefined) return kept;
  const stream = new zlib.InflateRaw();
  const inner = stream as unknown as { _handle?: Partial<ZlibHandle>; _writeState?: unknown };
  const handle = inner._handle;
  if (!handle || typeof handle.writeSync !== 'function' || typeof handle.reset !== 'function' || !(inner._writeState instanceof Uint32Array)) {
    stream.close();
    return (kept = null);
  }
  const k: KeptEngine = { stream, handle: handle as ZlibHandle, state: inner._writeState, error: undefined };
  // Replaces the stream's handler (which destroys the stream): errors come back to the caller.
  k.handle.onerror = (message) => {
    k.error = message;
  };
  return (kept = k);
}

/** Whether this thread inflates with a kept engine (else with `inflateRawSync` per entry). */
export function usesKeptEngine(): boolean {
  return engine() !== null;
}

/**
 * Inflates `raw`, writing at most `declared + 1` bytes. The result is shorter than `declared` when
 * the stream holds less. Throws PastDeclaredSizeError when it holds more, CorruptDeflateError when
 * the data is not a deflate stream or ends before the stream does. With the kept engine the result
 * is a view of the thread's output buffer (up to 8 MiB), valid until the next call: the caller uses
 * it before inflating another entry. `viaKept: false` takes the per-call path (the tests run both).
 */
export function inflateRawWhole(raw: Uint8Array, declared: number, viaKept = true): Buffer {
  const k = viaKept ? engine() : null;
  if (!k) return inflateRawOnce(raw, declared);
  const out = outputFor(declared + 1);
  const room = declared + 1;
  k.error = undefined;
  k.handle.reset();
  k.handle.writeSync(zlib.constants.Z_FINISH, raw, 0, raw.length, out, 0, room);
  if (k.error !== undefined) {
    const message = k.error;
    // An engine that met an error is not trusted again: closed, and the next entry makes a new one.
    k.stream.close();
    kept = undefined;
    throw new CorruptDeflateError(message);
  }
  const produced = room - k.state[0]!;
  if (produced > declared) throw new PastDeclaredSizeError();
  return out.subarray(0, produced);
}

function inflateRawOnce(raw: Uint8Array, declared: number): Buffer {
  let out: Buffer;
  try {
    // Perf: one output chunk of the declared size (+1) avoids zlib's concat of 16 KiB chunks. The
    // stream is stopped as soon as that chunk fills past maxOutputLength.
    out = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, declared), chunkSize: Math.max(64, Math.min(declared + 1, 64 << 20)) });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) throw new PastDeclaredSizeError();
    throw new CorruptDeflateError((err as Error).message);
  }
  if (out.length > declared) throw new PastDeclaredSizeError();
  return out;
}
