/**
 * The byte source of a tar read: a file or stdin ('-'), its compression chosen by its first bytes
 * (gzip, zstd, or none), decompressed as a stream of chunks. gzip is inflated by node:zlib's stream
 * (on the libuv pool, off this thread); zstd by the `zstd` program in a child process, which
 * reads the archive file itself (or what this process feeds it from stdin) and accepts windows up
 * to 2 GiB (`--long=31`), as archives made with `zstd --long=30` (actions/cache) need.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { spawn, spawnSync } from 'node:child_process';
import { ArchiveError, FileSystemError, UsageError, fsError } from '../errors.js';
import { BLOCK, isZeroBlock, looksLikeTar } from './tar-format.js';
import { openFile } from '../fs/open-file.js';

export type Compression = 'none' | 'gzip' | 'zstd';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

export function compressionOf(head: Buffer): Compression | undefined {
  if (head.length >= 2 && head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1]) return 'gzip';
  if (head.length >= 4 && ZSTD_MAGIC.every((b, i) => head[i] === b)) return 'zstd';
  return undefined;
}

/**
 * Where a source that can read in place puts the stream: the consumer's own buffers (the batch
 * buffers the workers read from), so no byte is copied on this thread between the read and the
 * worker's write.
 */
export interface DirectSink {
  /**
   * Where the next read lands: a view of the consumer's buffer, non-empty. It stays valid, and
   * later reads continue it, until `got` has been told of all of its bytes.
   */
  target(): Uint8Array;
  /**
   * `n` bytes landed at the start of what `target` gave (after those of earlier calls). Returns
   * 'stop' to end reading (the archive ended), a promise to pause reading until it settles. May
   * throw (a refused archive): reading stops and `readInto` rejects with it.
   */
  got(n: number): Promise<void> | 'stop' | undefined;
}

export interface TarInput {
  compression: Compression;
  /**
   * Decompressed bytes, in order. A chunk may be a view of a buffer the source reuses: it is valid
   * only until the next one is asked for (whoever keeps bytes longer copies them).
   */
  chunks: AsyncIterable<Buffer>;
  /**
   * Reads the decompressed stream straight into `sink`'s buffers instead (where the source can:
   * a plain file, zstd's output); resolves at the end of the stream or on 'stop', rejects on a
   * read or decompression error. Use either this or `chunks`, once.
   */
  readInto?: (sink: DirectSink) => Promise<void>;
  /** Size of the archive file (undefined for stdin). */
  fileSize: number | undefined;
  /** Compressed bytes read so far (for --max-ratio). */
  bytesIn(): number;
  /** Stops the source (and the decompressor) early; safe to call more than once. */
  close(): void;
}

// 1 MiB reads: fewer, larger chunks through the parser (not measured against other sizes).
const READ_CHUNK = 1 << 20;
/**
 * Reads of a plain file straight into the batch buffers (readFileInto): half a buffer each.
 * Perf: in 1 MiB reads (1,300 for the Linux tree's .tar) perf put 30 ms of the main thread in
 * fs.read itself (a request object and a hand-off to the libuv pool per call).
 */
const DIRECT_READ = 4 << 20;

function readAt(source: { fd: number; path: string }, buf: Uint8Array, pos: number): Promise<number> {
  const p = new Promise<number>((res, rej) => fs.read(source.fd, buf, 0, buf.length, pos, (e, got) => (e ? rej(fsError(e, 'cannot read archive', source.path)) : res(got))));
  p.catch(() => {}); // awaited later; a read left behind by an early stop must not be an unhandled rejection
  return p;
}

/**
 * Raw bytes of a file (from offset 0), or of stdin (through process.stdin, which can be stopped
 * while it waits). With `reuse`, file chunks are views of two buffers read in turn, the next read
 * under way while the parser works on the current one; without, every chunk is a fresh buffer
 * (for a consumer that keeps them, as a decompressor's write queue does).
 */
async function* rawChunks(source: { fd: number; path: string }, counter: { n: number }, reuse: boolean): AsyncGenerator<Buffer> {
  if (source.fd === 0) {
    for await (const c of process.stdin) {
      counter.n += (c as Buffer).length;
      yield c as Buffer;
    }
    return;
  }
  // Perf: reading the node_modules corpus's plain tar (387 MB) into a fresh 1 MiB buffer per read
  // took 108-148 ms of CPU, into two reused buffers 53-54 ms (3 runs each; the fresh buffers'
  // garbage collection comes on top, later).
  const bufs = [Buffer.allocUnsafeSlow(READ_CHUNK), reuse ? Buffer.allocUnsafeSlow(READ_CHUNK) : undefined];
  let k = 0;
  let pos = 0;
  let next = readAt(source, bufs[0]!, 0);
  for (;;) {
    const n = await next;
    if (n === 0) return;
    const cur = bufs[k]!;
    pos += n;
    counter.n += n;
    if (reuse) k ^= 1;
    else bufs[0] = Buffer.allocUnsafeSlow(READ_CHUNK);
    next = readAt(source, bufs[k]!, pos);
    yield cur.subarray(0, n);
  }
}

/**
 * A file read into the sink's buffers in 4 MiB reads, each next read under way (into the rest of
 * the same target) while the sink parses the bytes of the one before.
 */
async function readFileInto(source: { fd: number; path: string }, counter: { n: number }, sink: DirectSink): Promise<void> {
  let target = sink.target();
  let off = 0;
  let pos = 0;
  const readNext = () => readAt(source, target.subarray(off, Math.min(off + DIRECT_READ, target.length)), pos);
  let next = readNext();
  for (;;) {
    const n = await next;
    if (n === 0) return;
    pos += n;
    off += n;
    counter.n += n;
    const ahead = off < target.length ? readNext() : undefined;
    let r;
    try {
      r = sink.got(n);
      if (r && r !== 'stop') await r;
    } catch (e) {
      await ahead?.catch(() => {}); // nothing may land in the sink's buffer once this returned
      throw e;
    }
    if (r === 'stop') {
      await ahead?.catch(() => {});
      return;
    }
    if (ahead) next = ahead;
    else {
      target = sink.target();
      off = 0;
      next = readNext();
    }
  }
}

/**
 * Opens `path` ('-' for stdin) as a tar byte source. `head` is what was already read from the start
 * of stdin (the magic sniffed by the caller), or undefined for a file (read from offset 0).
 */
export function openTarInput(source: { fd: number; path: string }, head: Buffer | undefined): TarInput {
  const first = head ?? Buffer.alloc(0);
  let sniff = first;
  if (!head) {
    sniff = Buffer.alloc(4);
    const n = fs.readSync(source.fd, sniff, 0, 4, 0);
    sniff = sniff.subarray(0, n);
  }
  const compression = compressionOf(sniff) ?? 'none';
  const counter = { n: first.length };
  let closed = false;
  const closers: (() => void)[] = [];
  const raw = async function* (reuse: boolean): AsyncGenerator<Buffer> {
    if (first.length > 0) yield first;
    yield* rawChunks(source, counter, reuse);
  };

  let stream: Pick<TarInput, 'chunks' | 'readInto'>;
  if (compression === 'none') stream = { chunks: raw(true), readInto: source.fd === 0 ? undefined : (sink) => readFileInto(source, counter, sink) };
  else if (compression === 'gzip') stream = { chunks: gunzip(raw(false), source.path, closers) };
  else stream = unzstd(source, head, raw, source.path, closers, counter);
  return {
    compression,
    fileSize: head ? undefined : fs.fstatSync(source.fd).size,
    ...stream,
    bytesIn: () => counter.n,
    close: () => {
      if (closed) return;
      closed = true;
      for (const c of closers) c();
      if (source.fd !== 0) fs.closeSync(source.fd);
      else process.stdin.destroy();
    },
  };
}

/** Feeds `from` into a writable with backpressure; errors go to `fail`. */
async function feed(from: AsyncIterable<Buffer>, to: NodeJS.WritableStream & { destroyed?: boolean }, fail: (e: unknown) => void): Promise<void> {
  try {
    for await (const c of from) {
      if (to.destroyed) return;
      if (!to.write(c)) await new Promise<void>((r) => to.once('drain', () => r()));
    }
    to.end();
  } catch (e) {
    fail(e);
  }
}

function gunzip(raw: AsyncIterable<Buffer>, path: string, closers: (() => void)[]): AsyncIterable<Buffer> {
  // 256 KiB output chunks rather than zlib's 16 KiB: 16 times fewer chunks through the parser (not measured).
  const z = zlib.createGunzip({ chunkSize: 256 << 10 });
  let failure: unknown;
  void feed(raw, z, (e) => {
    failure = e;
    z.destroy(e as Error);
  });
  closers.push(() => z.destroy());
  return (async function* () {
    try {
      for await (const c of z) yield c as Buffer;
    } catch (e) {
      if (failure) throw failure;
      throw new ArchiveError(`${path}: gzip data is corrupt (${(e as Error).message})`, { path });
    }
  })();
}

/**
 * A FIFO for the decompressor's output, made in a private temporary directory and unlinked once
 * both ends are open; undefined where one cannot be made (the caller then reads a plain pipe).
 */
function outputFifo(): { read: number; write: number } | undefined {
  let dir: string | undefined;
  try {
    dir = fs.mkdtempSync(`${tmpdir()}/treecast-zstd-`);
    const path = `${dir}/out`;
    if (spawnSync('mkfifo', ['-m', '600', path], { stdio: 'ignore' }).status !== 0) return undefined;
    // The read end first, non-blocking (a FIFO's write end opens only once a reader exists).
    const read = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    try {
      return { read, write: fs.openSync(path, fs.constants.O_WRONLY) };
    } catch {
      fs.closeSync(read);
      return undefined;
    }
  } catch {
    return undefined;
  } finally {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The chunks of a pipe read into one reused buffer (net.Socket's `onread`): each chunk is a view
 * valid until the next is asked for; the socket pauses after each read until then.
 */
function reusedPipeChunks(fd: number, closers: (() => void)[]): AsyncIterable<Buffer> {
  const buf = Buffer.allocUnsafeSlow(256 << 10);
  let ready: number | undefined;
  let ended = false;
  let error: Error | undefined;
  let wake: (() => void) | undefined;
  const woken = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const socket = pipeSocket(fd, () => buf, (n) => {
    ready = n;
    woken();
    return false; // pause until the parser is done with this chunk
  });
  socket.on('end', () => ((ended = true), woken()));
  socket.on('close', () => ((ended = true), woken()));
  socket.on('error', (e) => ((error = e), woken()));
  closers.push(() => socket.destroy());
  return (async function* () {
    for (;;) {
      while (ready === undefined && !ended && !error) await new Promise<void>((r) => (wake = r));
      if (ready !== undefined) {
        const n = ready;
        ready = undefined;
        yield buf.subarray(0, n);
        socket.resume();
        continue;
      }
      if (error) throw error;
      return;
    }
  })();
}

/**
 * A pipe read straight into the sink's buffers: `onread` asks for the next buffer right after each
 * read's callback, and the callback has by then handed the bytes to the sink (which parsed them and
 * knows where the next ones go).
 */
function readPipeInto(fd: number, closers: (() => void)[], sink: DirectSink): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const finish = (e?: unknown) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (e === undefined) resolve();
      else reject(e);
    };
    let last: Uint8Array | undefined;
    const socket = pipeSocket(
      fd,
      // (after 'stop' or a failure the socket reads no more, but node still asks once)
      () => (settled ? last! : (last = sink.target())),
      (n) => {
        let r;
        try {
          r = sink.got(n);
        } catch (e) {
          finish(e);
          return false;
        }
        if (r === 'stop') finish();
        else if (r) {
          r.then(
            () => settled || socket.resume(),
            (e: unknown) => finish(e),
          );
        }
        return r === undefined;
      },
    );
    socket.on('end', () => finish());
    socket.on('close', () => finish());
    socket.on('error', (e) => finish(e));
    closers.push(() => finish());
  });
}

/** A socket reading the pipe `fd` into the buffers `buffer` gives, one read per `callback` (false pauses). */
function pipeSocket(fd: number, buffer: () => Uint8Array, callback: (n: number) => boolean): net.Socket {
  // (`onread` is documented for sockets; @types/node lists it only for connect())
  return new net.Socket({ fd, readable: true, writable: false, onread: { buffer, callback } } as net.SocketConstructorOpts);
}

function unzstd(source: { fd: number; path: string }, head: Buffer | undefined, raw: (reuse: boolean) => AsyncIterable<Buffer>, path: string, closers: (() => void)[], counter: { n: number }): Pick<TarInput, 'chunks' | 'readInto'> {
  // A file is handed to zstd as its stdin directly (no copy through this process); stdin is fed.
  const fromFile = head === undefined;
  // Perf: zstd writes into a FIFO read by this process into buffers it chooses, not a child_process
  // pipe, whose stream allocates a fresh buffer per 64 KiB read: reading the node_modules corpus's
  // decompressed stream alone took 190-230 ms of CPU that way against 85-100 ms (the garbage
  // collections the fresh buffers caused later come on top).
  // A larger pipe was tried and left out (node cannot set F_SETPIPE_SZ; a wrapper set 1 MiB before
  // starting zstd): reading the Linux tree's stream took about 9,000 reads instead of 23,000 (of up
  // to 64 KiB), but this process's CPU for them only fell from 0.25-0.29 s to 0.23-0.24 s, and
  // whole unpacks showed no difference beyond the noise (3 interleaved runs each, load 5-9).
  const fifo = outputFifo();
  // --long=31: accept windows up to 2 GiB (memory is only used as far as a frame needs it).
  const child = spawn('zstd', ['-d', '-c', '-q', '--long=31'], { stdio: [fromFile ? source.fd : 'pipe', fifo ? fifo.write : 'pipe', 'pipe'] });
  if (fifo) fs.closeSync(fifo.write);
  // Node resumes (and so discards) a child's unread stdout when the child exits; a 'readable'
  // listener marks it as read from, so output waits for the parser however late it starts.
  child.stdout?.on('readable', () => {});
  let stderr = '';
  let spawnError: unknown;
  child.on('error', (e) => (spawnError = e));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-2000)));
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  if (fromFile) counter.n = fs.fstatSync(source.fd).size;
  else void feed(raw(false), child.stdin!, () => child.kill());
  closers.push(() => {
    if (child.exitCode === null) child.kill();
  });
  /** After the output ended: zstd's verdict on its input. */
  const checkExit = async () => {
    const code = await exited;
    if (spawnError) {
      const code = (spawnError as NodeJS.ErrnoException).code;
      throw new FileSystemError(`cannot run zstd: ${code ?? spawnError}`, { path: 'zstd', syscallCode: code, cause: spawnError, hint: 'install the zstd program (Debian: apt-get install zstd)' });
    }
    if (code !== 0) throw new ArchiveError(`${path}: zstd data is corrupt (${stderr.trim().replace(/\s+/g, ' ') || `zstd exited with ${code}`})`, { path });
  };
  const chunks = (async function* () {
    try {
      for await (const c of fifo ? reusedPipeChunks(fifo.read, closers) : (child.stdout! as AsyncIterable<Buffer>)) yield c;
    } catch (e) {
      if (!spawnError) throw new ArchiveError(`${path}: cannot read zstd output (${(e as Error).message})`, { path });
    }
    await checkExit();
  })();
  if (!fifo) return { chunks };
  const readInto = async (sink: DirectSink) => {
    let stopped = false;
    let refused: { e: unknown } | undefined;
    const watched: DirectSink = {
      target: () => sink.target(),
      got: (n) => {
        try {
          const r = sink.got(n);
          if (r === 'stop') stopped = true;
          return r;
        } catch (e) {
          refused = { e };
          throw e;
        }
      },
    };
    try {
      await readPipeInto(fifo.read, closers, watched);
    } catch (e) {
      if (refused) throw refused.e;
      if (!spawnError) throw new ArchiveError(`${path}: cannot read zstd output (${(e as Error).message})`, { path });
    }
    // After 'stop' (the end-of-archive marker) zstd is stopped, as the chunks' reader stops it.
    if (!stopped) await checkExit();
  };
  return { chunks, readInto };
}

/** Reads up to `n` bytes from the start of stdin (blocking), for the magic. */
function readStdinHead(n: number): Buffer {
  const buf = Buffer.alloc(n);
  let got = 0;
  const wait = new Int32Array(new SharedArrayBuffer(4));
  while (got < n) {
    let k: number;
    try {
      k = fs.readSync(0, buf, got, n - got, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') {
        Atomics.wait(wait, 0, 0, 5);
        continue;
      }
      if ((e as NodeJS.ErrnoException).code === 'EOF') break;
      throw fsError(e, 'cannot read archive', 'stdin');
    }
    if (k === 0) break;
    got += k;
  }
  return buf.subarray(0, got);
}

/** Whether these first bytes start a tar stream (compressed, or a header, or an empty archive). */
function isTarHead(head: Buffer): boolean {
  return compressionOf(head) !== undefined || looksLikeTar(head) || (head.length >= BLOCK && isZeroBlock(head, 0));
}

/**
 * Opens an archive path ('-' for stdin) as a tar source when its first bytes say it is one;
 * undefined for anything else (the caller reads it as a zip). stdin can only be tar.
 */
export function openTarSource(path: string): { input: TarInput; label: string } | undefined {
  if (path === '-') {
    const head = readStdinHead(BLOCK);
    if (!isTarHead(head)) {
      if (head.length >= 2 && head[0] === 0x50 && head[1] === 0x4b) throw new UsageError('a zip archive cannot be read from stdin (it is read from its end); save it to a file first');
      throw new ArchiveError(head.length === 0 ? 'stdin: archive is empty' : 'stdin: not a tar archive (plain, gzip or zstd)', { path: 'stdin' });
    }
    return { input: openTarInput({ fd: 0, path: 'stdin' }, head), label: 'stdin' };
  }
  const fd = openFile(path, 'r', 'cannot open archive');
  try {
    const head = Buffer.alloc(BLOCK);
    const n = fs.readSync(fd, head, 0, BLOCK, 0);
    if (isTarHead(head.subarray(0, n))) return { input: openTarInput({ fd, path }, undefined), label: path };
  } catch (e) {
    fs.closeSync(fd);
    throw fsError(e, 'cannot read archive', path);
  }
  fs.closeSync(fd);
  return undefined;
}

/**
 * Worker threads worth starting for an input: none for a small file (starting them costs more).
 * Perf: zstd input keeps one worker per core although zstd needs a core of its own part of the
 * time: on 2 cores, `--jobs 1` against 2 (interleaved, load 2.6-4) took 5.11-6.27 s against
 * 4.11-6.22 s for the Linux tree's .tar.zst and 1.54-2.70 s against 1.56-2.41 s for node_modules,
 * with the same CPU time within the noise.
 */
export function tarJobs(input: TarInput, jobs: number): number {
  return input.fileSize !== undefined && input.fileSize <= 4 << 20 ? 0 : jobs;
}
