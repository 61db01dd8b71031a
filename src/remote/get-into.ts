/**
 * One GET whose body is handed chunk by chunk to a sink, or copied straight into memory, through
 * undici's dispatch handler API: the plain Bazel cache's way to read a blob (one GET per blob),
 * without the body stream of `request()`.
 *
 * Perf: `request()` makes a Readable body and, read with `for await`, an async iterator and a
 * promise per chunk for every GET. A plain cache's checkout of the Linux tree is 78k GETs, many in
 * flight at once, so that garbage lived long enough to be promoted and piled up in the old
 * generation between full collections (peak RSS 327-336 MB from nginx). Here a request makes one
 * handler and one promise. Measured, Linux tree from nginx into tmpfs, two interleaved pairs at
 * load average 2-2.5: `checkout --remote` 11.23 / 15.02 s before, 7.47 / 8.68 s after (client CPU
 * 14.3-16.7 s before, 10.9-11.6 s after), but its peak RSS stayed 328-334 MB: the rest of it is
 * not this garbage. Restore by name 10.20 / 9.68 s before, 9.49 / 10.02 s after (within noise),
 * peak RSS 257-286 MB before, 222-237 MB after.
 *
 * Perf: the handler speaks undici's first handler API (onConnect, onHeaders, onData, onComplete,
 * onError), the one its HTTP/1 client calls. A handler of the newer API (onRequestStart,
 * onResponseStart, ...) is wrapped per request in an UnwrapHandler and an UnwrapController, which
 * turns the raw headers into an object of strings (parseHeaders) and keeps the raw headers, views
 * of the socket's read buffer, on the controller. Here the raw headers are looked at only for a
 * status that is not 200, for its Retry-After. With the handler resolving with itself and copying
 * into memory without a sink closure, and client.ts's first attempt of a blob without
 * attempt()'s closures, `checkout --remote` of the Linux tree from nginx allocated 1,147 MB of JS
 * heap over the run before and 926 MB after (one run each of the sampling heap profiler, objects
 * collected by either GC included: 14.6 KB per request before, 11.8 KB after; undici's own header
 * buffers, request and timers are most of the rest). Peak RSS, Linux tree from nginx into tmpfs,
 * 5 runs before and 5 after interleaved (with created.ts's held names for the restore by name), at
 * load average 11-23: `checkout DIGEST --remote` 262-313 MB (median 305) before, 262-300 MB
 * (median 287) after; `checkout NAME --remote` 293-343 MB (median 313) before, 265-277 MB in its
 * 3 runs after; client CPU (user + sys) median 9.70 s against 9.31 s and 9.32 s against 8.71 s.
 */
import type { Dispatcher } from 'undici';
import { copyInto } from './copy-shared.js';

export interface GetIntoResult {
  status: number;
  /** The Retry-After header, for a status that is retried. */
  retryAfter?: string | string[];
  /** Bytes of a 200 body handed to the sink. */
  bytes: number;
}

/** Where a 200 body goes: a function called per chunk, or memory it is copied into from `at`. */
export type BodyTarget = ((chunk: Buffer) => void) | { into: Uint8Array; at: number };

/** Thrown (and the request aborted) when a 200 body runs past getInto's `limit`. */
export class BodyTooLongError extends Error {}

/**
 * GET `path`. A 200 body goes to `target`; any other status's body is read and dropped, so the
 * connection stays usable, and the status is returned for the caller to judge. With `body`, a POST
 * (a batch read, client.ts readInto). A body of more than `limit` bytes is refused with
 * BodyTooLongError before the chunk that passes it reaches the target. A sink that throws aborts
 * the request, which then rejects with what it threw; a transport failure (reset, timeout)
 * rejects with undici's error.
 */
export function getInto(dispatcher: Dispatcher, path: string, headers: Record<string, string>, target: BodyTarget, body?: Buffer, limit = Infinity): Promise<GetIntoResult> {
  return new Promise((resolve, reject) => {
    dispatcher.dispatch({ method: body ? 'POST' : 'GET', path, headers, body }, new IntoHandler(target, limit, resolve, reject));
  });
}

class IntoHandler implements GetIntoResult {
  status = 0;
  retryAfter: string | string[] | undefined;
  bytes = 0;
  private failure: unknown;
  private abort: ((err?: Error) => void) | undefined;
  private readonly sink: ((chunk: Buffer) => void) | undefined;
  private readonly into: Uint8Array | undefined;
  private readonly at: number;

  constructor(
    target: BodyTarget,
    private readonly limit: number,
    private readonly resolve: (r: GetIntoResult) => void,
    private readonly reject: (e: unknown) => void,
  ) {
    if (typeof target === 'function') {
      this.sink = target;
      this.at = 0;
    } else {
      this.into = target.into;
      this.at = target.at;
    }
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abort = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[]): boolean {
    this.status = statusCode;
    if (statusCode !== 200) this.retryAfter = headerOf(rawHeaders, 'retry-after');
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.status !== 200 || this.failure !== undefined) return true;
    try {
      if (this.bytes + chunk.length > this.limit) throw new BodyTooLongError(`more than ${this.limit} bytes arrived`);
      if (this.into) copyInto(chunk, this.into, this.at + this.bytes);
      else this.sink!(chunk);
      this.bytes += chunk.length;
    } catch (e) {
      this.failure = e;
      this.abort?.(e instanceof Error ? e : new Error(String(e)));
    }
    return true;
  }

  onComplete(): void {
    if (this.failure !== undefined) this.reject(this.failure);
    else this.resolve(this);
  }

  onError(err: Error): void {
    this.reject(this.failure ?? err);
  }
}

/** The value of header `name` (lower case) among undici's raw name/value pairs. */
function headerOf(raw: Buffer[], name: string): string | string[] | undefined {
  let found: string[] | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.length === name.length && raw[i]!.toString('latin1').toLowerCase() === name) (found ??= []).push(raw[i + 1]!.toString('latin1'));
  }
  return found && found.length === 1 ? found[0] : found;
}
