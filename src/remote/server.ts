/**
 * `treecast serve`: a LocalStore over HTTP, speaking the Bazel HTTP remote cache protocol
 * (GET/HEAD/PUT /cas/<sha256> and /ac/<sha256>, bazel-remote's status codes) plus treecast's batch endpoints
 * (docs/remote-protocol.md).
 *
 * This file is the core: listening, the token check, dispatch by route, errors to status codes,
 * the access log and the status counters. Each protocol has its own module: `server-cas.ts`
 * (blobs), `server-ac.ts` (action cache), `server-batch.ts` (batch endpoints and /tree);
 * `server-http.ts` holds what they share.
 *
 * Bounded memory under many concurrent clients: bodies are streamed, never gathered (PUT bodies go
 * to a tmp file while hashed, responses wait for 'drain'), and every request size is capped before
 * it is read. A slow client is cut when its body stalls (408), a blob is stored only once verified.
 * node:http is enough here: one process, keep-alive, no TLS (put a TLS proxy in front when needed).
 */
import * as http from 'node:http';
import * as fs from 'node:fs';
import { once } from 'node:events';
import type * as net from 'node:net';
import { type Digest, EMPTY_HASH } from '../core/digest.js';
import { DigestMismatchError, NoSpaceError, StoreDamagedError, TreecastError } from '../errors.js';
import { ActionCache } from '../store/action-cache.js';
import type { LocalStore } from '../store/local.js';
import { VERSION } from '../version.js';
import { TokenChecker } from './auth.js';
import { BufferBudget, type BufferPolicy } from './receiver.js';
import { type Route, parseRoute } from './routes.js';
import { serveAc } from './server-ac.js';
import { ValidatedEntries } from './validated-entries.js';
import { serveBatch, serveTree } from './server-batch.js';
import { serveCas } from './server-cas.js';
import { type AccessLogEntry, CLIENT_CLOSED, type Ctx, HttpFailure, hasBody, methodNotAllowed, sendJson } from './server-http.js';
import { BATCH_PROTOCOL, WireError } from './wire.js';

export type { AccessLogEntry } from './server-http.js';

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
  /**
   * Action cache entries must be REAPI ActionResults (default true): a PUT that does not decode is
   * 400, and a GET whose entry names a blob the store lacks is a 404. False stores any bytes.
   */
  acValidation?: boolean;
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
  /**
   * Most connections open at once (default 512). One more is answered `503` with `Retry-After: 1`
   * and closed without reading its request.
   */
  maxConnections?: number;
  /** Bytes all uploads together may hold in memory (default 16 MiB); beyond, bodies go to temp files. */
  bufferBudgetBytes?: number;
  /** Holds every request this long before answering: simulates a distant server for benchmarks. */
  latencyMs?: number;
  /** Called once per finished request (access log). */
  log?: (entry: AccessLogEntry) => void;
}

export interface ServerStatus {
  version: string;
  protocol?: string;
  readOnly: boolean;
  /** True when a GET /ac answers an entry only if every blob it names is held (see server-ac.ts). */
  acValidation: boolean;
  /** GET /ac answers given from a remembered whole entry, without looking for its blobs again. */
  acRemembered: number;
  blobs: number;
  bytes: number;
  requests: number;
  inFlight: number;
  maxInFlight: number;
  /** Connections open now. */
  connections: number;
  /** The most connections open at once since start. */
  maxConnectionsOpen: number;
  /** Connections refused with 503 because `maxConnections` were open. */
  refusedConnections: number;
}

const DEFAULTS = {
  maxBlobBytes: 64 * 2 ** 30,
  maxBatchBytes: 1 * 2 ** 30,
  maxListRecords: 100_000,
  maxTreeDirectories: 1_000_000,
  stallTimeoutMs: 30_000,
  headersTimeoutMs: 20_000,
  maxConnections: 512,
  bufferBudgetBytes: 16 << 20,
};
/**
 * Upload bodies up to this size may be held in memory (within the budget); larger ones stream to
 * a temp file in the store as they arrive, so a slow or stalled upload costs a file, not memory.
 */
const BUFFERED_BODY_LIMIT = 64 << 10;
/** A refused connection is closed this long after its 503, if the client has not closed it first. */
const REFUSED_LINGER_MS = 1_000;
export type ResolvedServerOptions = Required<Omit<ServerOptions, 'token' | 'log' | 'host' | 'port' | 'latencyMs'>> & ServerOptions;

/** What the protocol modules see of the server. */
export interface ServerCore {
  readonly store: LocalStore;
  readonly opts: ResolvedServerOptions;
  /** Counts a blob a request stored (for /status). */
  noteStored(d: Digest, existed: boolean): void;
  /** Present with exactly this size (a size that disagrees is a different, absent blob). */
  hasExact(d: Digest): boolean;
  /** How upload bodies may be buffered: small ones only, within one budget for the server. */
  readonly buffering: BufferPolicy;
  readonly ac: ActionCache;
  /** Action cache entries found whole, until the store may have lost a blob. */
  readonly validated: ValidatedEntries;
}

export class RemoteServer implements ServerCore {
  readonly opts: ResolvedServerOptions;
  private readonly checker?: TokenChecker;
  private readonly server: http.Server;
  readonly store: LocalStore;
  private blobs = 0;
  private bytes = 0;
  private requests = 0;
  private inFlight = 0;
  private maxInFlight = 0;
  private readonly connections = new Set<net.Socket>();
  private maxConnectionsOpen = 0;
  private refusedConnections = 0;
  readonly buffering: BufferPolicy;
  readonly ac: ActionCache;
  readonly validated: ValidatedEntries;

  constructor(options: ServerOptions) {
    this.opts = { readOnly: false, batch: true, acValidation: true, ...DEFAULTS, ...stripUndefined(options) };
    this.store = options.store;
    this.ac = new ActionCache(this.store);
    this.validated = new ValidatedEntries(this.store.root, (d) => this.hasExact(d));
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
    this.buffering = { limit: BUFFERED_BODY_LIMIT, budget: new BufferBudget(this.opts.bufferBudgetBytes) };
    this.capConnections();
    this.countStore();
  }

  /** Starts listening; resolves with the base URL. */
  async listen(): Promise<string> {
    this.server.listen(this.opts.port ?? 9090, this.opts.host ?? '127.0.0.1');
    await once(this.server, 'listening');
    return this.url;
  }

  get url(): string {
    const a = this.server.address() as net.AddressInfo;
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
      acValidation: this.opts.acValidation,
      acRemembered: this.validated.served,
      blobs: this.blobs,
      bytes: this.bytes,
      requests: this.requests,
      inFlight: this.inFlight,
      maxInFlight: this.maxInFlight,
      connections: this.connections.size,
      maxConnectionsOpen: this.maxConnectionsOpen,
      refusedConnections: this.refusedConnections,
    };
  }

  /**
   * Puts a gate in front of node:http's own connection handler: past `maxConnections`, a new
   * connection gets a 503 and is closed without a parser ever being attached to it, so it costs
   * next to nothing however many arrive. (net.Server's own maxConnections would drop the
   * connection without a word, which clients report as a reset.)
   */
  private capConnections(): void {
    const httpHandlers = this.server.listeners('connection') as ((s: net.Socket) => void)[];
    this.server.removeAllListeners('connection');
    this.server.on('connection', (socket: net.Socket) => {
      if (this.connections.size >= this.opts.maxConnections) {
        this.refuse(socket);
        return;
      }
      this.connections.add(socket);
      this.maxConnectionsOpen = Math.max(this.maxConnectionsOpen, this.connections.size);
      socket.once('close', () => this.connections.delete(socket));
      for (const h of httpHandlers) h.call(this.server, socket);
    });
  }

  private refuse(socket: net.Socket): void {
    this.refusedConnections++;
    const body = `too many connections (limit ${this.opts.maxConnections}); retry shortly\n`;
    socket.on('error', () => {});
    // The request is never read: whatever the client sends is discarded until it closes.
    socket.resume();
    socket.end(
      `HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n` +
        `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
    this.opts.log?.({ method: '', path: '', status: 503, ms: 0, refused: true });
  }

  /** Forgets the in-flight high-water mark (tests and benchmarks measure one run at a time). */
  resetMaxInFlight(): void {
    this.maxInFlight = this.inFlight;
  }

  private countStore(): void {
    for (const h of this.store.listHashes()) {
      const st = fs.lstatSync(this.store.blobPath(h), { throwIfNoEntry: false });
      if (!st?.isFile()) continue;
      this.blobs++;
      this.bytes += st.size;
    }
  }

  noteStored(d: Digest, existed: boolean): void {
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
      entry.ms = Math.round(performance.now() - started);
      // A response cut short is logged as what happened, not as the status it began with, as
      // nginx does: 400 when the request body ended early, 499 when the client left while answered.
      if (res.writableFinished) entry.status = res.statusCode;
      else {
        entry.status = req.complete ? CLIENT_CLOSED : 400;
        entry.aborted = true;
      }
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
        return serveCas(this, route.hash, ctx);
      case 'ac':
        return serveAc(this, route.hash, ctx);
      case 'status':
        if (m !== 'GET' && m !== 'HEAD') throw methodNotAllowed(ctx, 'GET, HEAD');
        return sendJson(ctx.res, 200, this.status(), m === 'HEAD');
      case 'batch':
        if (!this.opts.batch) throw new HttpFailure(404, 'batch endpoints are disabled', hasBody(ctx.req));
        return serveBatch(this, route.op, ctx);
      case 'tree':
        if (!this.opts.batch) throw new HttpFailure(404, 'batch endpoints are disabled');
        return serveTree(this, route.digest, ctx);
    }
  }

  hasExact(d: Digest): boolean {
    if (d.size === 0) return d.hash === EMPTY_HASH;
    // lstat, in a real shard folder: a symlink planted at the blob's name, as its shard folder or as
    // cas/ is not held (it is never served either, server-cas.ts).
    const p = this.store.blobPath(d.hash);
    try {
      this.store.checkShardOf(d.hash, false, p);
    } catch (e) {
      if (e instanceof StoreDamagedError) return false;
      throw e;
    }
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    return st !== undefined && st.isFile() && st.size === d.size;
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
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
