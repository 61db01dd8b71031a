/**
 * What every protocol handler of `treecast serve` shares: the request context, the failure type
 * that carries an HTTP status, reading bodies with a stall timeout and a size cap, and writing
 * responses with backpressure.
 */
import * as http from 'node:http';
import * as fs from 'node:fs';
import { READ_ONLY_HEADER } from './wire.js';
import type { Digest } from '../core/digest.js';
import type { LocalStore } from '../store/local.js';
import { readUpTo } from '../fs/read-up-to.js';

export interface AccessLogEntry {
  method: string;
  path: string;
  /**
   * The status sent. When the client went away first, as nginx logs it: 400 if the request body
   * was incomplete, 499 if the request was whole and the response was cut.
   */
  status: number;
  ms: number;
  /** Hashes of blobs whose bytes were sent completely (GET /cas, batch read, tree). */
  sent?: string[];
  /** Number of blobs (or action-cache entries) stored by this request. */
  stored?: number;
  /** True when the client went away before the response was complete. */
  aborted?: boolean;
  /** A connection refused (503) because the server had `maxConnections` open; no request was read. */
  refused?: boolean;
}

/** Logged when the client closed the connection before the response was complete (nginx's code). */
export const CLIENT_CLOSED = 499;

export interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  entry: AccessLogEntry;
}

export class HttpFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly closeConnection = false,
  ) {
    super(message);
  }
}

/** Blobs up to this size are read whole for GET; larger ones are streamed. */
export const SMALL_READ = 256 << 10;
/** Batch responses gather small frames into writes of about this size. */
export const WRITE_GATHER = 256 << 10;
const STREAM_CHUNK = 1 << 20;

/**
 * Feeds the request body to `onChunk` (synchronously, so a chunk is handled before the next is
 * read) and resolves at its end. Rejects with 408 when the body stalls for `stallMs`, and with 400
 * when the client goes away mid-body.
 */
export function readBody(req: http.IncomingMessage, stallMs: number, onChunk: (chunk: Buffer) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => finish(new HttpFailure(408, `request body stalled for ${stallMs} ms`, true)), stallMs);
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

/** Reads a small body (a digest list, an action-cache entry) whole, refusing more than `limit` bytes. */
export async function readSmallBody(req: http.IncomingMessage, stallMs: number, limit: number): Promise<Buffer> {
  const len = contentLength(req);
  if (len !== undefined && len > limit) throw new HttpFailure(413, `request body of ${len} bytes is larger than the limit of ${limit}`, true);
  const chunks: Buffer[] = [];
  let total = 0;
  await readBody(req, stallMs, (c) => {
    total += c.length;
    if (total > limit) throw new HttpFailure(413, `request body is larger than the limit of ${limit}`, true);
    chunks.push(c);
  });
  return Buffer.concat(chunks, total);
}

/** Gathers small buffers into larger socket writes and waits for 'drain' (backpressure). */
export class Gather {
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

/**
 * Writes `buf`, waiting for 'drain' when the response is full. `onWritten` runs once the socket is
 * done with `buf` (written, or the response gone), so the caller may fill it again.
 */
export async function writeWithBackpressure(res: http.ServerResponse, buf: Buffer, onWritten?: () => void): Promise<void> {
  if (res.destroyed) throw new HttpFailure(CLIENT_CLOSED, 'client went away');
  if (res.write(buf, onWritten)) return;
  await new Promise<void>((resolve, reject) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', gone);
      resolve();
    };
    const gone = () => {
      res.off('drain', done);
      res.off('close', gone);
      reject(new HttpFailure(CLIENT_CLOSED, 'client went away'));
    };
    res.on('drain', done);
    res.on('close', gone);
  });
}

/** Streams `size` bytes of an open file to the response, one chunk in flight at a time. */
export async function streamFile(fd: number, size: number, res: http.ServerResponse): Promise<void> {
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

/**
 * Answers 200 with the file at `path` (`size` bytes): read whole when small, else streamed with
 * backpressure. Resolves once the response is complete or the client has gone.
 */
export async function sendFile(res: http.ServerResponse, path: string, size: number, head: boolean): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
  if (head) {
    res.end();
    return;
  }
  // O_NOFOLLOW: a symlink planted in the store is never served (the caller's lstat saw a file; this
  // holds if one is swapped in since).
  if (size <= SMALL_READ) {
    const fd = fs.openSync(path, NO_FOLLOW);
    try {
      res.end(fs.readFileSync(fd));
    } finally {
      fs.closeSync(fd);
    }
  } else {
    const fd = fs.openSync(path, NO_FOLLOW);
    try {
      await streamFile(fd, size, res);
    } finally {
      fs.closeSync(fd);
    }
    res.end();
  }
  await finished(res);
}

const NO_FOLLOW = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW;

/**
 * An open descriptor of blob `d` in `store` (LocalStore.openBlobFile), or undefined when the store
 * cannot open it as its file: absent, or a symlink planted at its name or as its shard, which is
 * never followed (served as missing; `treecast verify` reports it).
 */
export function openBlobNoFollow(store: LocalStore, d: Digest): number | undefined {
  try {
    return store.openBlobFile(d);
  } catch {
    return undefined;
  }
}

export function readFully(fd: number, buf: Buffer, off: number, len: number, position = 0): void {
  if (readUpTo(fd, buf, off, len, position) !== len) throw new Error('blob file shorter than its size');
}

export function finished(res: http.ServerResponse): Promise<void> {
  if (res.writableFinished) return Promise.resolve();
  return new Promise((resolve) => {
    res.once('finish', resolve);
    res.once('close', resolve);
  });
}

export function sendJson(res: http.ServerResponse, status: number, value: unknown, head = false): void {
  const body = `${JSON.stringify(value)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(head ? undefined : body);
}

export function methodNotAllowed(ctx: Ctx, allow: string): HttpFailure {
  ctx.res.setHeader('allow', allow);
  return new HttpFailure(405, `method ${ctx.req.method} not allowed here`, hasBody(ctx.req));
}

/**
 * A write (blob, batch or action cache upload) to a server started with --read-only: 405 with
 * `allow`, READ_ONLY_HEADER and a body saying so (a bare 405 gave the user no hint).
 */
export function readOnlyRefusal(ctx: Ctx): HttpFailure {
  ctx.res.setHeader('allow', 'GET, HEAD');
  ctx.res.setHeader(READ_ONLY_HEADER, '1');
  return new HttpFailure(405, `this server is read-only (started with --read-only): ${ctx.req.method} refused, uploads are not accepted`, hasBody(ctx.req));
}

export function hasBody(req: http.IncomingMessage): boolean {
  return req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined;
}

export function contentLength(req: http.IncomingMessage): number | undefined {
  const v = req.headers['content-length'];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d{1,16}$/.test(v) || !Number.isSafeInteger(n)) throw new HttpFailure(400, 'bad content-length', true);
  return n;
}
