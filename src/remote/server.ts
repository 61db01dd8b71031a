/**
 * `treecast serve`: a LocalStore over HTTP, speaking the Bazel HTTP remote cache protocol for blobs
 * (GET/HEAD/PUT /cas/<sha256>, bazel-remote's status codes) plus treecast's batch endpoints
 * (docs/remote-protocol.md).
 *
 * Bounded memory under many concurrent clients: bodies are streamed, never gathered (PUT bodies go
 * to a tmp file while hashed, responses wait for 'drain'), and every request size is capped before
 * it is read. A slow client is cut when its body stalls (408), a blob is stored only once verified.
 * node:http is enough here: one process, keep-alive, no TLS (put a TLS proxy in front when needed).
 */
import * as http from 'node:http';
import * as fs from 'node:fs';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { type Digest, EMPTY_HASH, formatDigest } from '../core/digest.js';
import { decodeDirectory } from '../core/reapi.js';
import { MAX_DEPTH } from '../core/names.js';
import { DigestMismatchError, NoSpaceError, TreecastError } from '../errors.js';
import type { LocalStore } from '../store/local.js';
import { VERSION } from '../version.js';
import { TokenChecker } from './auth.js';
import { BlobReceiver } from './receiver.js';
import { type Route, parseRoute } from './routes.js';
import {
  BATCH_PROTOCOL,
  FRAME_HEADER_BYTES,
  FRAME_MISSING,
  FRAME_PRESENT,
  FrameDecoder,
  RECORD_BYTES,
  WireError,
  decodeDigestList,
  encodeDigestList,
  encodeFrameHeader,
} from './wire.js';

export interface ServerOptions {
  store: LocalStore;
  host?: string;
  port?: number;
  /** Bearer token every request must carry; none: open (bind to loopback then). */
  token?: string;
  /** Refuse writes (PUT, batch write) with 405. */
  readOnly?: boolean;
  /** Offer the batch endpoints (default true); false makes a plain Bazel HTTP cache. */
  batch?: boolean;
  /** Largest blob accepted, in bytes (413 beyond). */
  maxBlobBytes?: number;
  /** Largest batch-write body, in bytes (413 beyond). */
  maxBatchBytes?: number;
  /** Most digests in one /missing or /read request (413 beyond). */
  maxListRecords?: number;
  /** Most Directory messages one /tree response walks. */
  maxTreeDirectories?: number;
  /** A request body that sends nothing for this long is cut with 408. */
  stallTimeoutMs?: number;
  /** Request headers must arrive within this time (408). */
  headersTimeoutMs?: number;
  /** Holds every request this long before answering: simulates a distant server for benchmarks. */
  latencyMs?: number;
  /** Called once per finished request (access log). */
  log?: (entry: AccessLogEntry) => void;
}

export interface AccessLogEntry {
  method: string;
  path: string;
  status: number;
  ms: number;
  /** Hashes of blobs whose bytes were sent completely (GET /cas, batch read, tree). */
  sent?: string[];
  /** Number of blobs stored by this request. */
  stored?: number;
  /** True when the client went away before the response was complete. */
  aborted?: boolean;
}

export interface ServerStatus {
  version: string;
  protocol?: string;
  readOnly: boolean;
  blobs: number;
  bytes: number;
  requests: number;
  inFlight: number;
  maxInFlight: number;
}

const DEFAULTS = {
  maxBlobBytes: 64 * 2 ** 30,
  maxBatchBytes: 1 * 2 ** 30,
  maxListRecords: 100_000,
  maxTreeDirectories: 1_000_000,
  stallTimeoutMs: 30_000,
  headersTimeoutMs: 20_000,
};
/** Blobs up to this size are read whole for GET; larger ones are streamed. */
const SMALL_READ = 256 << 10;
/** Batch responses gather small frames into writes of about this size. */
const WRITE_GATHER = 256 << 10;
const STREAM_CHUNK = 1 << 20;

class HttpFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly closeConnection = false,
  ) {
    super(message);
  }
}

interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  entry: AccessLogEntry;
}

export class RemoteServer {
  private readonly opts: Required<Omit<ServerOptions, 'token' | 'log' | 'host' | 'port' | 'latencyMs'>> & ServerOptions;
  private readonly checker?: TokenChecker;
  private readonly server: http.Server;
  private readonly store: LocalStore;
  private blobs = 0;
  private bytes = 0;
  private requests = 0;
  private inFlight = 0;
  private maxInFlight = 0;

  constructor(options: ServerOptions) {
    this.opts = { readOnly: false, batch: true, ...DEFAULTS, ...stripUndefined(options) };
    this.store = options.store;
    if (options.token !== undefined) this.checker = new TokenChecker(options.token);
    this.server = http.createServer(
      {
        // Node checks header/request timeouts on this interval; keep it well under the timeout.
        connectionsCheckingInterval: Math.max(100, Math.min(5_000, this.opts.headersTimeoutMs / 4)),
        headersTimeout: this.opts.headersTimeoutMs,
        // Whole-request time is unbounded (multi-GB uploads); stalls are caught per body instead.
        requestTimeout: 0,
        keepAliveTimeout: 65_000,
      },
      (req, res) => void this.handle(req, res),
    );
    this.server.maxHeadersCount = 64;
    this.countStore();
  }

  /** Starts listening; resolves with the base URL. */
  async listen(): Promise<string> {
    this.server.listen(this.opts.port ?? 9090, this.opts.host ?? '127.0.0.1');
    await once(this.server, 'listening');
    return this.url;
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `http://${host}:${a.port}/`;
  }

  async close(): Promise<void> {
    this.server.closeIdleConnections();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // Connections still busy get a moment to finish, then are cut.
    const timer = setTimeout(() => this.server.closeAllConnections(), 2_000);
    await closed;
    clearTimeout(timer);
  }

  status(): ServerStatus {
    return {
      version: VERSION,
      ...(this.opts.batch ? { protocol: BATCH_PROTOCOL } : {}),
      readOnly: this.opts.readOnly,
      blobs: this.blobs,
      bytes: this.bytes,
      requests: this.requests,
      inFlight: this.inFlight,
      maxInFlight: this.maxInFlight,
    };
  }

  /** Forgets the in-flight high-water mark (tests and benchmarks measure one run at a time). */
  resetMaxInFlight(): void {
    this.maxInFlight = this.inFlight;
  }

  private countStore(): void {
    for (const h of this.store.listHashes()) {
      const st = fs.statSync(this.store.blobPath(h), { throwIfNoEntry: false });
      if (!st) continue;
      this.blobs++;
      this.bytes += st.size;
    }
  }

  private noteStored(d: Digest, existed: boolean): void {
    if (existed || d.size === 0) return;
    this.blobs++;
    this.bytes += d.size;
  }

  // ------------------------------------------------------------ dispatch

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    this.requests++;
    this.inFlight++;
    if (this.inFlight > this.maxInFlight) this.maxInFlight = this.inFlight;
    const entry: AccessLogEntry = { method: req.method ?? '', path: (req.url ?? '').slice(0, 300), status: 0, ms: 0 };
    res.once('close', () => {
      this.inFlight--;
      entry.status = res.statusCode;
      entry.ms = Math.round(performance.now() - started);
      if (!res.writableFinished) entry.aborted = true;
      this.opts.log?.(entry);
    });
    const ctx: Ctx = { req, res, entry };
    try {
      const route = parseRoute(req.url ?? '');
      if (!route) throw new HttpFailure(400, 'not a valid path: expected [/<instance>]/cas/<sha256>', hasBody(req));
      if (this.checker && !this.checker.check(req.headers.authorization)) {
        res.setHeader('www-authenticate', 'Bearer realm="treecast"');
        throw new HttpFailure(401, 'missing or wrong bearer token', hasBody(req));
      }
      if (this.opts.latencyMs) await sleep(this.opts.latencyMs);
      await this.route(route, ctx);
    } catch (e) {
      this.fail(ctx, e);
    }
  }

  private async route(route: Route, ctx: Ctx): Promise<void> {
    const m = ctx.req.method;
    switch (route.kind) {
      case 'cas':
        if (m === 'GET' || m === 'HEAD') return this.getBlob(route.hash, ctx, m === 'HEAD');
        if (m === 'PUT') return this.putBlob(route.hash, ctx);
        throw methodNotAllowed(ctx, 'GET, HEAD, PUT');
      case 'ac':
        // The action cache is not offered: nothing is ever there, and it cannot be written.
        if (m === 'GET' || m === 'HEAD') throw new HttpFailure(404, 'this server keeps no action cache');
        throw methodNotAllowed(ctx, 'GET, HEAD');
      case 'status':
        if (m !== 'GET' && m !== 'HEAD') throw methodNotAllowed(ctx, 'GET, HEAD');
        return sendJson(ctx.res, 200, this.status(), m === 'HEAD');
      case 'batch':
        if (!this.opts.batch) throw new HttpFailure(404, 'batch endpoints are disabled', hasBody(ctx.req));
        if (m !== 'POST') throw methodNotAllowed(ctx, 'POST');
        if (route.op === 'missing') return this.missing(ctx);
        if (route.op === 'read') return this.batchRead(ctx);
        return this.batchWrite(ctx);
      case 'tree':
        if (!this.opts.batch) throw new HttpFailure(404, 'batch endpoints are disabled');
        if (m !== 'GET') throw methodNotAllowed(ctx, 'GET');
        return this.tree(route.digest, ctx);
    }
  }

  private fail(ctx: Ctx, e: unknown): void {
    const { res } = ctx;
    let status = 500;
    let message = 'internal error';
    let close = false;
    if (e instanceof HttpFailure) {
      status = e.status;
      message = e.message;
      close = e.closeConnection;
    } else if (e instanceof DigestMismatchError || e instanceof WireError) {
      status = e instanceof WireError && e.status ? e.status : 400;
      message = e.message;
      close = true;
    } else if (e instanceof NoSpaceError) {
      status = 507;
      message = 'insufficient storage';
      close = true;
    } else if (e instanceof TreecastError) {
      message = e.message;
      close = true;
    } else {
      close = true;
    }
    if (res.headersSent) {
      // Mid-stream: the only honest signal left is to cut the connection.
      res.destroy();
      return;
    }
    if (close) res.setHeader('connection', 'close');
    const body = `${message}\n`;
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    res.end(ctx.req.method === 'HEAD' ? undefined : body);
    // A body we will not read is dropped with the connection rather than drained.
    if (close && !ctx.req.complete) res.once('finish', () => ctx.req.destroy());
  }

  // ------------------------------------------------------------ Bazel HTTP cache

  private async getBlob(hash: string, ctx: Ctx, head: boolean): Promise<void> {
    const { res } = ctx;
    if (hash === EMPTY_HASH) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 0 });
      res.end();
      if (!head) ctx.entry.sent = [hash];
      return;
    }
    const p = this.store.blobPath(hash);
    const st = fs.statSync(p, { throwIfNoEntry: false });
    if (!st) throw new HttpFailure(404, `blob ${hash} not found`);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size });
    if (head) {
      res.end();
      return;
    }
    if (st.size <= SMALL_READ) {
      res.end(fs.readFileSync(p));
    } else {
      const fd = fs.openSync(p, 'r');
      try {
        await streamFile(fd, st.size, res);
      } finally {
        fs.closeSync(fd);
      }
      res.end();
    }
    await finished(res);
    ctx.entry.sent = [hash];
  }

  private async putBlob(hash: string, ctx: Ctx): Promise<void> {
    const { req, res } = ctx;
    if (this.opts.readOnly) throw methodNotAllowed(ctx, 'GET, HEAD');
    const len = contentLength(req);
    if (len !== undefined && len > this.opts.maxBlobBytes) {
      throw new HttpFailure(413, `blob of ${len} bytes is larger than the limit of ${this.opts.maxBlobBytes}`, true);
    }
    const d = { hash, size: len ?? -1 };
    const existed = len !== undefined && this.store.hasSync({ hash, size: len });
    const rx = new BlobReceiver(this.store, d, this.opts.maxBlobBytes);
    try {
      let total = 0;
      await this.readBody(req, (chunk) => {
        total += chunk.length;
        // A chunked body has no length up front: its size is checked as it arrives.
        if (total > this.opts.maxBlobBytes) throw new HttpFailure(413, `blob is larger than the limit of ${this.opts.maxBlobBytes}`, true);
        rx.write(chunk);
      });
      const stored = rx.finish();
      this.noteStored(stored, existed);
      ctx.entry.stored = 1;
    } catch (e) {
      rx.abort();
      throw e;
    }
    res.writeHead(200, { 'content-length': 0 });
    res.end();
  }

  /**
   * Feeds the request body to `onChunk` (synchronously, so a chunk is handled before the next is
   * read) and resolves at its end. Rejects with 408 when the body stalls, and when the client
   * goes away mid-body.
   */
  private readBody(req: http.IncomingMessage, onChunk: (chunk: Buffer) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const arm = () => {
        if (timer) clearTimeout(timer);
        timer = setTimeout(() => finish(new HttpFailure(408, `request body stalled for ${this.opts.stallTimeoutMs} ms`, true)), this.opts.stallTimeoutMs);
      };
      const finish = (err?: unknown) => {
        if (timer) clearTimeout(timer);
        timer = undefined;
        req.off('data', onData);
        req.off('end', onEnd);
        req.off('close', onClose);
        if (err) {
          req.pause();
          reject(err);
        } else resolve();
      };
      const onData = (chunk: Buffer) => {
        try {
          onChunk(chunk);
          arm();
        } catch (e) {
          finish(e);
        }
      };
      const onEnd = () => finish();
      const onClose = () => finish(new HttpFailure(400, 'request body ended early', true));
      req.on('data', onData);
      req.on('end', onEnd);
      req.on('close', onClose);
      arm();
    });
  }

  /** Reads a small body (a digest list) whole, refusing more than `limit` bytes. */
  private async readSmallBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
    const len = contentLength(req);
    if (len !== undefined && len > limit) throw new HttpFailure(413, `request body of ${len} bytes is larger than the limit of ${limit}`, true);
    const chunks: Buffer[] = [];
    let total = 0;
    await this.readBody(req, (c) => {
      total += c.length;
      if (total > limit) throw new HttpFailure(413, `request body is larger than the limit of ${limit}`, true);
      chunks.push(c);
    });
    return Buffer.concat(chunks, total);
  }

  // ------------------------------------------------------------ batch endpoints

  private async readDigestList(req: http.IncomingMessage): Promise<Digest[]> {
    const body = await this.readSmallBody(req, this.opts.maxListRecords * RECORD_BYTES);
    try {
      return decodeDigestList(body);
    } catch (e) {
      throw new HttpFailure(400, (e as Error).message);
    }
  }

  private async missing(ctx: Ctx): Promise<void> {
    const wanted = await this.readDigestList(ctx.req);
    const missing = wanted.filter((d) => !this.hasExact(d));
    const body = encodeDigestList(missing);
    ctx.res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    ctx.res.end(body);
  }

  /** Present with exactly this size (a size that disagrees is a different, absent blob). */
  private hasExact(d: Digest): boolean {
    if (d.size === 0) return d.hash === EMPTY_HASH;
    const st = fs.statSync(this.store.blobPath(d.hash), { throwIfNoEntry: false });
    return st !== undefined && st.size === d.size;
  }

  private async batchRead(ctx: Ctx): Promise<void> {
    const wanted = await this.readDigestList(ctx.req);
    const { res } = ctx;
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const sent: string[] = [];
    ctx.entry.sent = sent;
    const out = new Gather(res);
    for (const d of wanted) {
      await this.writeFrame(d, out, sent);
      if (res.destroyed) return;
    }
    await out.flush();
    res.end();
    await finished(res);
  }

  /** One frame: the blob when held with exactly this size, else a "missing" frame. */
  private async writeFrame(d: Digest, out: Gather, sent: string[]): Promise<void> {
    if (d.size === 0) {
      await out.add(encodeFrameHeader(d, d.hash === EMPTY_HASH ? FRAME_PRESENT : FRAME_MISSING));
      if (d.hash === EMPTY_HASH) sent.push(d.hash);
      return;
    }
    let fd: number;
    try {
      fd = fs.openSync(this.store.blobPath(d.hash), 'r');
    } catch {
      await out.add(encodeFrameHeader(d, FRAME_MISSING));
      return;
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size !== d.size) {
        await out.add(encodeFrameHeader(d, FRAME_MISSING));
        return;
      }
      if (size <= SMALL_READ) {
        // Header and data in one buffer, gathered with neighbours into one socket write.
        const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + size);
        encodeFrameHeader(d, FRAME_PRESENT).copy(frame, 0);
        readFully(fd, frame, FRAME_HEADER_BYTES, size);
        await out.add(frame);
      } else {
        await out.add(encodeFrameHeader(d, FRAME_PRESENT));
        await out.flush();
        await streamFile(fd, size, out.res);
      }
      sent.push(d.hash);
    } finally {
      fs.closeSync(fd);
    }
  }

  private async batchWrite(ctx: Ctx): Promise<void> {
    const { req, res } = ctx;
    if (this.opts.readOnly) throw methodNotAllowed(ctx, 'GET, HEAD');
    const len = contentLength(req);
    if (len !== undefined && len > this.opts.maxBatchBytes) {
      throw new HttpFailure(413, `batch of ${len} bytes is larger than the limit of ${this.opts.maxBatchBytes}`, true);
    }
    let rx: BlobReceiver | undefined;
    let existed = false;
    let stored = 0;
    let total = 0;
    const decoder = new FrameDecoder(
      {
        header: (d, present) => {
          if (!present) throw new WireError(`write batch holds a 'missing' frame for ${formatDigest(d)}`);
          existed = this.store.hasSync(d);
          rx = new BlobReceiver(this.store, d, this.opts.maxBlobBytes);
        },
        data: (chunk) => rx!.write(chunk),
        end: () => {
          const d = rx!.finish();
          rx = undefined;
          this.noteStored(d, existed);
          stored++;
        },
      },
      { maxBlobBytes: this.opts.maxBlobBytes },
    );
    try {
      await this.readBody(req, (chunk) => {
        total += chunk.length;
        if (total > this.opts.maxBatchBytes) throw new HttpFailure(413, `batch is larger than the limit of ${this.opts.maxBatchBytes}`, true);
        decoder.push(chunk);
      });
      decoder.finish();
    } catch (e) {
      rx?.abort();
      throw e;
    } finally {
      ctx.entry.stored = stored;
    }
    sendJson(res, 200, { stored });
  }

  /** Every Directory message of a tree, breadth first, each distinct one once. */
  private async tree(root: Digest, ctx: Ctx): Promise<void> {
    const { res } = ctx;
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const sent: string[] = [];
    ctx.entry.sent = sent;
    const out = new Gather(res);
    const seen = new Set<string>([root.hash]);
    let level: Digest[] = [root];
    let count = 0;
    for (let depth = 0; level.length > 0 && depth <= MAX_DEPTH; depth++) {
      const next: Digest[] = [];
      for (const d of level) {
        if (++count > this.opts.maxTreeDirectories || res.destroyed) {
          res.destroy();
          return;
        }
        let bytes: Buffer;
        try {
          bytes = this.store.readSync(d);
        } catch {
          // Absent or corrupt here: the client fetches it (and what is below) another way.
          await out.add(encodeFrameHeader(d, FRAME_MISSING));
          continue;
        }
        let children: Digest[] = [];
        try {
          children = decodeDirectory(bytes, formatDigest(d)).directories.map((n) => n.digest);
        } catch {
          // Not a valid Directory: send it anyway; the client validates and reports it.
        }
        const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + bytes.length);
        encodeFrameHeader(d, FRAME_PRESENT).copy(frame, 0);
        bytes.copy(frame, FRAME_HEADER_BYTES);
        await out.add(frame);
        sent.push(d.hash);
        for (const c of children) {
          if (seen.has(c.hash)) continue;
          seen.add(c.hash);
          next.push(c);
        }
      }
      level = next;
    }
    await out.flush();
    res.end();
    await finished(res);
  }
}

// ------------------------------------------------------------ helpers

/** Gathers small buffers into larger socket writes and waits for 'drain' (backpressure). */
class Gather {
  private parts: Buffer[] = [];
  private size = 0;
  constructor(readonly res: http.ServerResponse) {}

  async add(b: Buffer): Promise<void> {
    this.parts.push(b);
    this.size += b.length;
    if (this.size >= WRITE_GATHER) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.size === 0 && this.parts.length === 0) return;
    const buf = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    await writeWithBackpressure(this.res, buf);
  }
}

async function writeWithBackpressure(res: http.ServerResponse, buf: Buffer): Promise<void> {
  if (res.destroyed) throw new HttpFailure(499, 'client went away');
  if (res.write(buf)) return;
  await new Promise<void>((resolve, reject) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', gone);
      resolve();
    };
    const gone = () => {
      res.off('drain', done);
      res.off('close', gone);
      reject(new HttpFailure(499, 'client went away'));
    };
    res.on('drain', done);
    res.on('close', gone);
  });
}

/** Streams `size` bytes of an open file to the response, one chunk in flight at a time. */
async function streamFile(fd: number, size: number, res: http.ServerResponse): Promise<void> {
  let pos = 0;
  while (pos < size) {
    // A fresh buffer per chunk: the socket may still hold the previous one.
    const n = Math.min(STREAM_CHUNK, size - pos);
    const buf = Buffer.allocUnsafe(n);
    readFully(fd, buf, 0, n, pos);
    await writeWithBackpressure(res, buf);
    pos += n;
  }
}

function readFully(fd: number, buf: Buffer, off: number, len: number, position = 0): void {
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, buf, off + got, len - got, position + got);
    if (n === 0) throw new Error('blob file shorter than its size');
    got += n;
  }
}

function finished(res: http.ServerResponse): Promise<void> {
  if (res.writableFinished) return Promise.resolve();
  return new Promise((resolve) => {
    res.once('finish', resolve);
    res.once('close', resolve);
  });
}

function sendJson(res: http.ServerResponse, status: number, value: unknown, head = false): void {
  const body = `${JSON.stringify(value)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(head ? undefined : body);
}

function methodNotAllowed(ctx: Ctx, allow: string): HttpFailure {
  ctx.res.setHeader('allow', allow);
  return new HttpFailure(405, `method ${ctx.req.method} not allowed here`, hasBody(ctx.req));
}

function hasBody(req: http.IncomingMessage): boolean {
  return req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined;
}

function contentLength(req: http.IncomingMessage): number | undefined {
  const v = req.headers['content-length'];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d{1,16}$/.test(v) || !Number.isSafeInteger(n)) throw new HttpFailure(400, 'bad content-length', true);
  return n;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
