/**
 * The HTTP client: one request to a remote cache, with retries, verification and counters. What to
 * request and in which order is decided elsewhere (window.ts, fetch.ts, push.ts).
 *
 * undici rather than node:http: its Pool keeps a fixed set of keep-alive connections (one per
 * window slot, so N requests in flight use N warm sockets), exposes connect/headers/body timeouts
 * separately (a stalled body is caught without limiting a long download), and its body streams
 * are async iterables with backpressure. v7 is the last line that supports Node 20.
 *
 * Every blob is verified (SHA-256 and size) on its way into the local store by BlobReceiver; a bad
 * one is a DigestMismatchError naming the digest and the server, and is never stored or retried.
 */
import { Pool } from 'undici';
import { createReadStream } from 'node:fs';
import { type Digest, digestOf, formatDigest, looksLikeDigest } from '../core/digest.js';
import { BlobNotFoundError, DigestMismatchError, InterruptedError, RemoteError, TreecastError, UsageError, fsError } from '../errors.js';
import type { LocalStore } from '../store/local.js';
import { BlobReceiver } from './receiver.js';
import { BodyTooLongError, type BodyTarget, getInto } from './get-into.js';
import { copyInto } from './copy-shared.js';
import { DEFAULT_CONCURRENCY, MAX_CONCURRENCY } from './limits.js';
import { GATHER_BYTES, type StoreWriter } from './store-writer.js';
import { DEFAULT_RETRY, type RetryPolicy, backoffMs, isRetryableError, parseRetryAfter } from './retry.js';
import { parseRemoteUrl } from './url.js';
import { AC_MISSING_HEADER, AC_UNCHECKED_HEADER, BATCH_PREFIX, BATCH_PROTOCOL, FrameDecoder, READ_ONLY_HEADER, WireError, decodeDigestList, encodeDigestList, encodeFrame } from './wire.js';

const AC_UNCHECKED_HEADERS: Record<string, string> = { [AC_UNCHECKED_HEADER]: '1' };

export interface ClientOptions {
  /** Base URL of the cache, e.g. http://127.0.0.1:9090/ or http://host/instance/. */
  url: string;
  token?: string;
  /** Connections in the pool (= requests in flight at most). */
  concurrency?: number;
  retries?: number;
  /** Time to establish a connection. */
  connectTimeoutMs?: number;
  /** Time to the response headers (covers a server's think time). */
  headersTimeoutMs?: number;
  /** Longest pause between two chunks of a body before it counts as stalled. */
  bodyTimeoutMs?: number;
  /** 'auto': use batch endpoints when the server offers them; 'off': plain Bazel protocol only. */
  batch?: 'auto' | 'off';
  /** Retry delays; tests shorten them. */
  retryPolicy?: Partial<RetryPolicy>;
}

/** Told of each Directory message a /tree answer stored, with its verified bytes when buffered. */
export type TreeStored = (d: Digest, bytes: Buffer | undefined) => void;

export interface ClientStats {
  /** Blobs received and stored. */
  fetched: number;
  /** Bytes of those blobs. */
  fetchedBytes: number;
  /** Blobs sent. */
  uploaded: number;
  uploadedBytes: number;
  /** Attempts repeated after a transient failure. */
  retried: number;
  /** HTTP requests made (attempts included). */
  requests: number;
}


export { DEFAULT_CONCURRENCY, MAX_CONCURRENCY, parseRemoteUrl };

export function checkConcurrency(n: number): number {
  if (!Number.isInteger(n) || n < 1 || n > MAX_CONCURRENCY) throw new UsageError(`--concurrency must be an integer from 1 to ${MAX_CONCURRENCY}, not ${n}`);
  return n;
}

export function checkRetries(n: number): number {
  if (!Number.isInteger(n) || n < 0 || n > 100) throw new UsageError(`--retries must be an integer from 0 to 100, not ${n}`);
  return n;
}

export class RemoteClient {
  readonly url: URL;
  /** Printable server name for errors (no token, no path). */
  readonly server: string;
  readonly stats: ClientStats = { fetched: 0, fetchedBytes: 0, uploaded: 0, uploadedBytes: 0, retried: 0, requests: 0 };
  readonly concurrency: number;
  private readonly pool: Pool;
  private readonly base: string;
  private readonly headers: Record<string, string>;
  private readonly retry: RetryPolicy;
  private readonly batchMode: 'auto' | 'off';
  private batchOffered: boolean | undefined;
  private entriesValidated = false;
  private stopping = false;
  /** Set by cut(): the pool is destroyed, every request in flight failed with this. */
  private cutReason: InterruptedError | undefined;
  /** Wakes each retry waiting out its backoff (stop()). */
  private readonly sleeping = new Set<() => void>();

  constructor(opts: ClientOptions) {
    this.url = parseRemoteUrl(opts.url);
    this.server = this.url.origin + this.url.pathname;
    this.base = this.url.pathname;
    this.concurrency = checkConcurrency(opts.concurrency ?? DEFAULT_CONCURRENCY);
    this.retry = { ...DEFAULT_RETRY, ...opts.retryPolicy, retries: checkRetries(opts.retries ?? DEFAULT_RETRY.retries) };
    this.batchMode = opts.batch ?? 'auto';
    this.headers = opts.token ? { authorization: `Bearer ${opts.token}` } : {};
    this.pool = new Pool(this.url.origin, {
      connections: this.concurrency,
      // One request per connection at a time: a slow blob must not hold up the ones queued behind it.
      pipelining: 1,
      keepAliveTimeout: 30_000,
      connect: { timeout: opts.connectTimeoutMs ?? 10_000 },
      headersTimeout: opts.headersTimeoutMs ?? 60_000,
      bodyTimeout: opts.bodyTimeoutMs ?? 30_000,
    });
  }

  async close(): Promise<void> {
    if (this.cutReason) return; // destroyed: nothing left to close
    await this.pool.close().catch((e: unknown) => {
      if (!this.cutReason) throw e; // cut while closing: the pool is gone either way
    });
  }

  /**
   * No new attempts after this: retries stop, one waiting out its backoff fails at once; the
   * requests in flight finish (their bytes are used).
   */
  stop(): void {
    this.stopping = true;
    for (const wake of [...this.sleeping]) wake();
  }

  /**
   * stop(), and every request in flight or queued in the pool fails at once with an
   * InterruptedError (the second SIGINT/SIGTERM: a stalled server must not hold the stop until
   * the HTTP timeouts). What those requests received is dropped by their callers, as after any
   * cut connection: a receiver removes its temporary file, a batch read stores only the frames it
   * had whole, a direct checkout writes nothing of a failed read. An upload cut short is never
   * stored by the server, which stores a blob only once all its bytes arrived and matched.
   */
  cut(): void {
    if (this.cutReason) return;
    this.cutReason = new InterruptedError('interrupted: requests in flight were cut; run the same command again to resume');
    this.stop();
    // Perf: one call ends them all; no per-request signal or listener on the hot path.
    this.pool.destroy(this.cutReason).catch(() => undefined);
  }

  /** True when the server offers treecast's batch endpoints (asked once, via GET status). */
  async batchAvailable(): Promise<boolean> {
    if (this.batchMode === 'off') return false;
    if (this.batchOffered !== undefined) return this.batchOffered;
    this.batchOffered = await this.attempt('GET status', undefined, async () => {
      const r = await this.request('GET', 'status');
      if (r.statusCode === 401) {
        await r.body.dump();
        throw this.statusError('GET status', r.statusCode);
      }
      if (r.statusCode !== 200) {
        await r.body.dump();
        if (r.statusCode >= 500 || r.statusCode === 429) throw this.statusError('GET status', r.statusCode, undefined, r.headers['retry-after']);
        return false; // 404 and friends: a plain Bazel HTTP cache
      }
      try {
        const status = (await r.body.json()) as { protocol?: unknown; acValidation?: unknown };
        this.entriesValidated = status?.protocol === BATCH_PROTOCOL && status.acValidation === true;
        return status?.protocol === BATCH_PROTOCOL;
      } catch {
        return false; // some other JSON, or not JSON: not ours
      }
    });
    return this.batchOffered;
  }

  /**
   * True when the server (a treecast server, per its /status) answers an action cache entry only
   * while it holds every blob the entry names. Known once batchAvailable() has been asked.
   */
  get validatesEntries(): boolean {
    return this.entriesValidated;
  }

  // ------------------------------------------------------------ single blobs (Bazel protocol)

  /** HEAD /cas/<hash>: whether the server holds the blob. */
  async has(d: Digest): Promise<boolean> {
    if (d.size === 0) return true;
    return this.attempt('HEAD', d, async () => {
      const r = await this.request('HEAD', `cas/${d.hash}`);
      await r.body.dump();
      if (r.statusCode === 404) return false;
      if (r.statusCode !== 200) throw this.statusError('HEAD', r.statusCode, d, r.headers['retry-after']);
      // A server that holds the hash with another size does not hold this blob.
      const len = r.headers['content-length'];
      return len === undefined || Number(len) === d.size;
    });
  }

  /** GET /cas/<hash> into the local store, streamed and verified. */
  async fetchOne(d: Digest, store: LocalStore): Promise<void> {
    if (d.size === 0) return;
    await this.attempt('GET', d, async (n) => {
      // The caller asked because the blob is absent; after a failed attempt, look again.
      if (n > 1 && store.hasSync(d)) return;
      const rx = new BlobReceiver(store, d, d.size, this.server);
      try {
        await this.getBlobInto(d, (chunk) => rx.write(chunk));
        rx.finish();
      } catch (e) {
        rx.abort();
        throw e;
      }
      this.countFetched(d);
    });
  }

  /** PUT /cas/<hash> from the local store (streamed from disk for large blobs). */
  async uploadOne(d: Digest, store: LocalStore): Promise<void> {
    if (d.size === 0) return;
    await this.attempt('PUT', d, async () => {
      // A large blob is streamed from its file: only a regular file in a real shard folder (lstat),
      // opened with O_NOFOLLOW, so a symlink planted in the store is never uploaded through.
      if (d.size > 1 << 20) store.blobFileStat(d);
      const body = d.size <= 1 << 20 ? store.readSync(d) : createReadStream(store.blobPath(d.hash), { fd: store.openBlobFile(d) });
      const r = await this.request('PUT', `cas/${d.hash}`, body, { 'content-type': 'application/octet-stream', 'content-length': String(d.size) });
      await r.body.dump();
      if (r.statusCode < 200 || r.statusCode > 299) throw this.statusError('PUT', r.statusCode, d, r.headers['retry-after'], '', r.headers[READ_ONLY_HEADER]);
      this.stats.uploaded++;
      this.stats.uploadedBytes += d.size;
    });
  }

  /** GET /cas/<hash> into memory, verified (for small blobs; HttpStore.get). */
  async getBytes(d: Digest): Promise<Buffer> {
    if (d.size === 0) return Buffer.alloc(0);
    return this.attempt('GET', d, async () => {
      const r = await this.getBlob(d);
      const bytes = Buffer.from(await r.body.arrayBuffer());
      const actual = digestOf(bytes);
      if (actual.hash !== d.hash || actual.size !== d.size) {
        throw new DigestMismatchError(`blob ${formatDigest(d)} from ${this.server} refused: its bytes hash to ${formatDigest(actual)}`, { digest: formatDigest(d) });
      }
      this.countFetched(d);
      return bytes;
    });
  }

  /** PUT /cas/<hash> from memory (HttpStore.put). */
  async putBytes(bytes: Uint8Array, d: Digest): Promise<void> {
    if (d.size === 0) return;
    await this.attempt('PUT', d, async () => {
      const r = await this.request('PUT', `cas/${d.hash}`, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
        'content-type': 'application/octet-stream',
      });
      await r.body.dump();
      if (r.statusCode < 200 || r.statusCode > 299) throw this.statusError('PUT', r.statusCode, d, r.headers['retry-after'], '', r.headers[READ_ONLY_HEADER]);
      this.stats.uploaded++;
      this.stats.uploadedBytes += d.size;
    });
  }

  // ------------------------------------------------------------ action cache (Bazel protocol)

  /**
   * GET /ac/<key>: the entry's bytes, or undefined when the server has none (404). At most
   * `maxBytes` are read; a larger entry is refused. Retried like every request (5xx, resets).
   */
  async getActionResult(key: string, maxBytes: number): Promise<Buffer | undefined> {
    return (await this.getAc(key, maxBytes, undefined))?.bytes;
  }

  /**
   * A ref's entry (GET /ac/<key> asking with AC_UNCHECKED_HEADER): a treecast server validating
   * its action cache also sends an entry whose tree reaches a blob it lacks, naming that blob in
   * AC_MISSING_HEADER (`missing`: the digest, or '' when the header does not hold one), so the
   * caller can tell a missing blob from a name with no entry. Any other server answers as to
   * getActionResult.
   */
  async getRefEntry(key: string, maxBytes: number): Promise<{ bytes: Buffer; missing?: string } | undefined> {
    const got = await this.getAc(key, maxBytes, AC_UNCHECKED_HEADERS);
    if (!got) return undefined;
    const said = got.headers[AC_MISSING_HEADER];
    if (said === undefined) return { bytes: got.bytes };
    const text = Array.isArray(said) ? said[0] : said;
    return { bytes: got.bytes, missing: typeof text === 'string' && looksLikeDigest(text) ? text : '' };
  }

  private async getAc(key: string, maxBytes: number, headers: Record<string, string> | undefined): Promise<{ bytes: Buffer; headers: Record<string, string | string[] | undefined> } | undefined> {
    return this.attempt(`GET ac/${key}`, undefined, async () => {
      const r = await this.request('GET', `ac/${key}`, undefined, headers);
      if (r.statusCode === 404) {
        await r.body.dump();
        return undefined;
      }
      if (r.statusCode !== 200) {
        await r.body.dump();
        throw this.statusError(`GET ac/${key}`, r.statusCode, undefined, r.headers['retry-after']);
      }
      const declared = Number(r.headers['content-length'] ?? 0);
      if (declared > maxBytes) {
        r.body.destroy();
        throw new RemoteError(`action cache entry ${key} on ${this.server} is ${declared} bytes, more than the ${maxBytes} accepted`);
      }
      const parts: Buffer[] = [];
      let n = 0;
      try {
        for await (const chunk of r.body) {
          n += (chunk as Buffer).length;
          if (n > maxBytes) throw new RemoteError(`action cache entry ${key} on ${this.server} is more than the ${maxBytes} bytes accepted`);
          parts.push(chunk as Buffer);
        }
      } catch (e) {
        r.body.destroy();
        throw this.bodyError(e);
      }
      return { bytes: Buffer.concat(parts), headers: r.headers };
    });
  }

  /** PUT /ac/<key> with an entry's bytes (any 2xx is success, as nginx answers 201/204). */
  async putActionResult(key: string, bytes: Buffer): Promise<void> {
    await this.attempt(`PUT ac/${key}`, undefined, async () => {
      const r = await this.request('PUT', `ac/${key}`, bytes, { 'content-type': 'application/octet-stream' });
      if (r.statusCode >= 200 && r.statusCode <= 299) {
        await r.body.dump();
        return;
      }
      const text = await r.body.text().catch(() => '');
      throw this.statusError(`PUT ac/${key}`, r.statusCode, undefined, r.headers['retry-after'], text, r.headers[READ_ONLY_HEADER]);
    });
  }

  // ------------------------------------------------------------ batch endpoints

  /** Which of `digests` the server lacks (batch endpoint). */
  async missing(digests: readonly Digest[]): Promise<Digest[]> {
    const body = encodeDigestList(digests);
    return this.attempt('POST missing', undefined, async () => {
      const r = await this.request('POST', `${BATCH_PREFIX}missing`, body, { 'content-type': 'application/octet-stream' });
      if (r.statusCode !== 200) {
        await r.body.dump();
        throw this.statusError('POST missing', r.statusCode, undefined, r.headers['retry-after']);
      }
      try {
        return decodeDigestList(Buffer.from(await r.body.arrayBuffer()));
      } catch (e) {
        throw this.bodyError(e);
      }
    });
  }

  /**
   * Reads many blobs in one streamed response into the local store. Each blob is stored as soon as
   * its frame is complete and verified; a retry asks only for those not yet stored.
   */
  async fetchBatch(digests: readonly Digest[], store: LocalStore, writer?: StoreWriter): Promise<void> {
    await this.attempt('POST read', digests.length === 1 ? digests[0] : undefined, async (n) => {
      // A retry asks only for what the failed attempt did not store.
      const want = n === 1 ? digests : digests.filter((d) => d.size > 0 && !store.hasSync(d));
      if (want.length === 0) return;
      let total = 0;
      for (const d of want) total += d.size;
      // With a writer, blobs are gathered into one of its buffers; a batch too large for one
      // (only when limits differ from fetch.ts's) streams through receivers here instead.
      const data = writer !== undefined && total <= GATHER_BYTES ? writer.buffer() : undefined;
      let r;
      try {
        r = await this.postBatchRead(want);
      } catch (e) {
        if (data) writer!.release(data);
        throw e;
      }
      let i = 0;
      let rx: BlobReceiver | undefined;
      const view = data ? Buffer.from(data) : undefined;
      let pos = 0;
      const decoder = new FrameDecoder({
        header: (d, present) => {
          this.checkFrame(want[i], i, d, present);
          if (!view) rx = new BlobReceiver(store, d, d.size, this.server);
        },
        data: (chunk) => {
          if (view) pos += chunk.copy(view, pos);
          else rx!.write(chunk);
        },
        end: (d) => {
          if (!view) {
            rx!.finish();
            rx = undefined;
            this.countFetched(d);
          }
          i++;
        },
      });
      let failure: unknown;
      try {
        for await (const chunk of r.body) decoder.push(chunk as Buffer);
        decoder.finish();
        if (i !== want.length) throw new WireError(`${this.server} answered ${i} of ${want.length} blobs of a batch read`);
      } catch (e) {
        rx?.abort();
        r.body.destroy();
        failure = this.bodyError(e);
      }
      if (data && i > 0) {
        // Complete frames are stored even when the stream broke later: nothing received is fetched twice.
        const done = want.slice(0, i);
        await writer!.write(done, data, this.server);
        for (const d of done) this.countFetched(d);
      } else if (data) {
        writer!.release(data);
      }
      if (failure !== undefined) throw failure;
    });
  }

  /**
   * Reads `digests` into `into` at `offset`, back to back, unverified: for a direct checkout, whose
   * worker threads verify each blob before writing it (materialize/apply-op.ts). One POST read when
   * the server offers batches, else one GET per blob. A retry reads the whole list again.
   */
  async readInto(digests: readonly Digest[], into: Uint8Array, offset: number): Promise<void> {
    if (!(await this.batchAvailable())) {
      let at = offset;
      for (const d of digests) {
        await this.readOneAt(d, into, at);
        at += d.size;
      }
      return;
    }
    let total = 0;
    for (const d of digests) total += d.size;
    const region = into.subarray(offset, offset + total);
    const body = encodeDigestList(digests);
    const headers = { ...this.headers, 'content-type': 'application/octet-stream' };
    await this.attempt('POST read', digests.length === 1 ? digests[0] : undefined, async () => {
      let i = 0;
      let pos = 0;
      const decoder = new FrameDecoder({
        header: (d, present) => this.checkFrame(digests[i], i, d, present),
        data: (chunk) => {
          pos += copyInto(chunk, region, pos);
        },
        end: () => {
          i++;
        },
      });
      // Perf: the body goes through a dispatch handler (get-into.ts), not request()'s Readable and
      // its async iterator: no stream, iterator or promise per chunk. Linux tree `--direct`, 3
      // interleaved runs at load 8-10: client CPU (user + sys) 5.54-6.15 s against 5.77-6.04 s,
      // within the noise; kept for the garbage it does not make.
      this.stats.requests++;
      let status: number;
      let retryAfter: string | string[] | undefined;
      try {
        ({ status, retryAfter } = await getInto(this.pool, `${this.base}${BATCH_PREFIX}read`, headers, (c) => decoder.push(c), body));
        if (status === 200) {
          decoder.finish();
          if (i !== digests.length) throw new WireError(`${this.server} answered ${i} of ${digests.length} blobs of a batch read`);
        }
      } catch (e) {
        throw this.bodyError(e);
      }
      if (status !== 200) throw this.statusError('POST read', status, undefined, retryAfter);
    });
    for (const d of digests) this.countFetched(d);
  }

  /**
   * GET /cas/<hash>, its body handed to `sink` chunk by chunk, unverified: for a direct checkout's
   * blobs too large to hold in memory, which the caller hashes as they pass and refuses unless the
   * digest matches (materialize/fetch-file.ts). A retry calls `restart` before its first chunk, and
   * more than `d.size` bytes are refused as they arrive.
   */
  async readStream(d: Digest, sink: (chunk: Buffer) => void, restart: () => void): Promise<void> {
    await this.attempt('GET', d, async (n) => {
      if (n > 1) restart();
      await this.getBlobInto(d, sink);
    });
    this.countFetched(d);
  }

  /**
   * GET /cas/<hash> into `into` at `at` (room for exactly its size), unverified (see readInto): a
   * plain cache's blob of a direct or plain remote checkout (fetch.ts fetchBytes).
   * Perf: one GET per blob, 78k of them for the Linux tree, so the first attempt goes without
   * attempt()'s closures and async frames, and without a view of `into` per blob; only a failed
   * one is retried through attempt().
   */
  async readOneAt(d: Digest, into: Uint8Array, at: number): Promise<void> {
    try {
      await this.getOneAt(d, into, at);
    } catch (e) {
      await this.attempt('GET', d, () => this.getOneAt(d, into, at), e);
    }
    this.countFetched(d);
  }

  private async getOneAt(d: Digest, into: Uint8Array, at: number): Promise<void> {
    const n = await this.getBlobInto(d, { into, at });
    if (n !== d.size) throw new DigestMismatchError(`blob ${formatDigest(d)} from ${this.server} refused: ${n} of ${d.size} bytes arrived`, { digest: formatDigest(d) });
  }

  /**
   * GET /cas/<hash> with its body handed to `target` (get-into.ts: no body stream per request). A
   * 404 is the blob missing there; more than `d.size` bytes are refused as they arrive, before the
   * target sees them. Returns the bytes received.
   */
  private async getBlobInto(d: Digest, target: BodyTarget): Promise<number> {
    this.stats.requests++;
    let r;
    try {
      r = await getInto(this.pool, `${this.base}cas/${d.hash}`, this.headers, target, undefined, d.size);
    } catch (e) {
      if (e instanceof BodyTooLongError) throw new DigestMismatchError(`blob ${formatDigest(d)} from ${this.server} refused: more than ${d.size} bytes arrived`, { digest: formatDigest(d) });
      throw this.bodyError(e, d);
    }
    if (r.status === 404) throw this.notFound(d);
    if (r.status !== 200) throw this.statusError('GET', r.status, d, r.retryAfter);
    return r.bytes;
  }

  private countFetched(d: Digest): void {
    this.stats.fetched++;
    this.stats.fetchedBytes += d.size;
  }

  /** Sends many small blobs in one request (batch endpoint). */
  async uploadBatch(digests: readonly Digest[], store: LocalStore): Promise<void> {
    const frames = digests.map((d) => encodeFrame(d, store.readSync(d)));
    const body = Buffer.concat(frames);
    await this.attempt('POST write', undefined, async () => {
      const r = await this.request('POST', `${BATCH_PREFIX}write`, body, { 'content-type': 'application/octet-stream' });
      const text = r.statusCode === 200 ? '' : await r.body.text().catch(() => '');
      if (r.statusCode === 200) await r.body.dump();
      else throw this.statusError('POST write', r.statusCode, undefined, r.headers['retry-after'], text, r.headers[READ_ONLY_HEADER]);
    });
    this.stats.uploaded += digests.length;
    for (const d of digests) this.stats.uploadedBytes += d.size;
  }

  /**
   * Every Directory message of the tree under `root`, breadth first, in one response. Each is
   * verified and stored as it arrives; `onStored` sees it (with its bytes when they were held
   * whole in memory). Returns the digests the server lacks.
   */
  async fetchTree(root: Digest, store: LocalStore, onStored: TreeStored): Promise<Digest[]> {
    return this.attempt('GET tree', root, () => this.readTree(root, store, onStored));
  }

  /**
   * fetchTree sent before the server is known to offer batches (batchAvailable), to be used only
   * if it does: one attempt, no retry, never failing. What it stored is verified like any blob;
   * whatever it did not (no endpoint, a failure) the caller fetches as it would have. Not sent
   * with batch 'off'.
   */
  async fetchTreeEarly(root: Digest, store: LocalStore, onStored: TreeStored): Promise<void> {
    if (this.batchMode === 'off') return;
    await this.readTree(root, store, onStored).catch(() => undefined);
  }

  private async readTree(root: Digest, store: LocalStore, onStored: TreeStored): Promise<Digest[]> {
    const r = await this.request('GET', `${BATCH_PREFIX}tree/${root.hash}/${root.size}`);
    if (r.statusCode !== 200) {
      await r.body.dump();
      if (r.statusCode === 404) return [root];
      throw this.statusError('GET tree', r.statusCode, root, r.headers['retry-after']);
    }
    const missing: Digest[] = [];
    let rx: BlobReceiver | undefined;
    const decoder = new FrameDecoder({
      header: (d, present) => {
        if (!present) missing.push(d);
        else if (!store.hasSync(d)) rx = new BlobReceiver(store, d, d.size, this.server);
      },
      data: (chunk) => rx?.write(chunk),
      end: (d) => {
        if (!rx) return;
        rx.finish();
        const bytes = rx.storedBytes;
        rx = undefined;
        this.countFetched(d);
        onStored(d, bytes);
      },
    });
    try {
      for await (const chunk of r.body) decoder.push(chunk as Buffer);
      decoder.finish();
    } catch (e) {
      rx?.abort();
      r.body.destroy();
      throw this.bodyError(e, root);
    }
    return missing;
  }

  // ------------------------------------------------------------ plumbing

  private request(method: 'GET' | 'HEAD' | 'PUT' | 'POST', path: string, body?: Buffer | NodeJS.ReadableStream, headers?: Record<string, string>) {
    this.stats.requests++;
    return this.pool.request({
      method,
      path: this.base + path,
      headers: headers ? { ...this.headers, ...headers } : this.headers,
      body: body as Buffer | undefined,
    });
  }

  /** Runs one request with retries on transient failures. */
  private async attempt<T>(what: string, d: Digest | undefined, fn: (attempt: number) => Promise<T>, firstFailure?: unknown): Promise<T> {
    let attempt = 1;
    if (firstFailure !== undefined) await this.afterFailure(firstFailure, attempt++, what, d);
    for (; ; attempt++) {
      try {
        return await fn(attempt);
      } catch (e) {
        await this.afterFailure(e, attempt, what, d);
      }
    }
  }

  /** After attempt number `attempt` failed with `e`: throws when it is not to be retried, else waits the backoff. */
  private async afterFailure(e: unknown, attempt: number, what: string, d: Digest | undefined): Promise<void> {
    if (this.stopping) throw e instanceof TreecastError ? e : (this.cutReason ?? new InterruptedError('interrupted', { cause: e }));
    if (attempt > this.retry.retries || !isRetryableError(e)) throw this.finalError(e, what, d);
    this.stats.retried++;
    const retryAfter = (e as { retryAfter?: number }).retryAfter;
    await new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleeping.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, backoffMs(attempt, this.retry, Math.random, retryAfter));
      this.sleeping.add(wake);
    });
    // A stop during the backoff: no new attempt.
    if (this.stopping) throw new InterruptedError('interrupted while waiting to retry; run the same command again to resume', { cause: e });
  }

  private finalError(e: unknown, what: string, d?: Digest): unknown {
    if (e instanceof TreecastError) return e;
    // A local file-system error while storing what arrived (disk full, read-only store) is not the server's.
    const local = e as NodeJS.ErrnoException;
    if (typeof local?.path === 'string' && local.syscall) return fsError(e, `${local.syscall} failed on`, local.path);
    const code = (e as { code?: string })?.code ?? '';
    const msg = (e as Error)?.message ?? String(e);
    return new RemoteError(`${what}${d ? ` ${formatDigest(d)}` : ''} from ${this.server} failed: ${code ? `${code} ` : ''}${msg}`, {
      digest: d ? formatDigest(d) : undefined,
      cause: e,
      hint: 'check that the server is running and reachable; run the same command again to resume',
    });
  }

  private statusError(what: string, status: number, d?: Digest, retryAfter?: string | string[], text = '', readOnly?: string | string[]): RemoteError {
    // A write refused with 405: a treecast server says it is read-only (READ_ONLY_HEADER); another
    // cache (nginx without WebDAV PUT, say) refuses the method the same way, so the hint says both.
    if (status === 405 && what !== 'GET' && what !== 'HEAD') {
      const isReadOnly = readOnly !== undefined;
      return new RemoteError(`${what}${d ? ` ${formatDigest(d)}` : ''} to ${this.server} refused: ${isReadOnly ? 'the server is read-only' : 'the server does not accept writes there'} (HTTP 405)`, {
        status,
        digest: d ? formatDigest(d) : undefined,
        hint: isReadOnly
          ? 'the server was started with --read-only: push to a server started without it, or restart this one without --read-only'
          : 'a treecast server started with --read-only answers so, as does a cache that takes no uploads: push to one that accepts them',
      });
    }
    const hint =
      status === 401
        ? this.headers.authorization === undefined
          ? 'pass a token with --token, --token-file or TREECAST_TOKEN'
          : 'the server refused the token given (--token, --token-file or TREECAST_TOKEN): check it is the one the server was started with'
        : status === 507 ? 'the server is out of disk space' : undefined;
    const detail = text.trim() ? `: ${text.trim().slice(0, 300)}` : '';
    const err = new RemoteError(`${what}${d ? ` ${formatDigest(d)}` : ''} from ${this.server}: HTTP ${status}${detail}`, {
      status,
      digest: d ? formatDigest(d) : undefined,
      hint,
    });
    (err as { retryAfter?: number }).retryAfter = parseRetryAfter(retryAfter);
    return err;
  }

  /** GET /cas/<hash>, answered 200 with its body to read; a 404 is the blob missing there. */
  private async getBlob(d: Digest) {
    const r = await this.request('GET', `cas/${d.hash}`);
    if (r.statusCode !== 200) {
      await r.body.dump();
      if (r.statusCode === 404) throw this.notFound(d);
      throw this.statusError('GET', r.statusCode, d, r.headers['retry-after']);
    }
    return r;
  }

  /** POST of a batch read, answered 200 with its frames to decode (checkFrame each). */
  private async postBatchRead(digests: readonly Digest[]) {
    const r = await this.request('POST', `${BATCH_PREFIX}read`, encodeDigestList(digests), { 'content-type': 'application/octet-stream' });
    if (r.statusCode !== 200) {
      await r.body.dump();
      throw this.statusError('POST read', r.statusCode, undefined, r.headers['retry-after']);
    }
    return r;
  }

  /** A batch read's frame `i` must be the blob asked for in that place, and present. */
  private checkFrame(expected: Digest | undefined, i: number, d: Digest, present: boolean): void {
    if (!expected || expected.hash !== d.hash || expected.size !== d.size) {
      throw new WireError(`${this.server} answered a batch read out of order (frame ${i} is ${formatDigest(d)})`);
    }
    if (!present) throw this.notFound(d);
  }

  private notFound(d: Digest): BlobNotFoundError {
    return new BlobNotFoundError(`blob ${formatDigest(d)} is not on the server ${this.server}`, { digest: formatDigest(d) });
  }

  /** Errors while reading a body: integrity failures as they are; transport failures retryable. */
  private bodyError(e: unknown, d?: Digest): unknown {
    if (e instanceof DigestMismatchError || e instanceof BlobNotFoundError) return e;
    if (e instanceof WireError) {
      // A stream that ended inside a frame was cut in transit: worth another try.
      if (/truncated/.test(e.message)) return Object.assign(e, { code: 'ERR_TREECAST_REMOTE_TRUNCATED' });
      return e;
    }
    return e ?? new RemoteError(`reading from ${this.server} failed`, { digest: d ? formatDigest(d) : undefined });
  }
}

