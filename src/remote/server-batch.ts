/**
 * treecast's batch endpoints (docs/remote-protocol.md): which of these digests are missing, read
 * many blobs in one response, write many in one request, and every Directory of a tree.
 */
import * as fs from 'node:fs';
import { type Digest, EMPTY_HASH, formatDigest } from '../core/digest.js';
import { subdirectoryDigests } from '../core/reapi.js';
import { readTreePack, treePackBytes } from '../store/tree-pack.js';
import { MAX_DEPTH } from '../core/names.js';
import { BlobReceiver } from './receiver.js';
import type { ServerCore } from './server.js';
import { type Ctx, Gather, HttpFailure, SMALL_READ, openBlobNoFollow, WRITE_GATHER, contentLength, finished, methodNotAllowed, readBody, readSmallBody, sendJson, streamFile, writeWithBackpressure, readOnlyRefusal } from './server-http.js';
import { FRAME_HEADER_BYTES, FRAME_MISSING, FRAME_PRESENT, FrameDecoder, RECORD_BYTES, WireError, decodeDigestList, encodeDigestList, encodeFrameHeader, writeRecord } from './wire.js';

export async function serveBatch(core: ServerCore, op: 'missing' | 'read' | 'write', ctx: Ctx): Promise<void> {
  if (ctx.req.method !== 'POST') throw methodNotAllowed(ctx, 'POST');
  if (op === 'missing') return missing(core, ctx);
  if (op === 'read') return batchRead(core, ctx);
  return batchWrite(core, ctx);
}

async function readDigestList(core: ServerCore, ctx: Ctx): Promise<Digest[]> {
  const body = await readSmallBody(ctx.req, core.opts.stallTimeoutMs, core.opts.maxListRecords * RECORD_BYTES);
  try {
    return decodeDigestList(body);
  } catch (e) {
    throw new HttpFailure(400, (e as Error).message);
  }
}

async function missing(core: ServerCore, ctx: Ctx): Promise<void> {
  const wanted = await readDigestList(core, ctx);
  const absent = wanted.filter((d) => !core.hasExact(d));
  const body = encodeDigestList(absent);
  ctx.res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
  ctx.res.end(body);
}

async function batchRead(core: ServerCore, ctx: Ctx): Promise<void> {
  const wanted = await readDigestList(core, ctx);
  const { res } = ctx;
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  const sent: string[] = [];
  ctx.entry.sent = sent;
  const out = new Gather(res);
  for (let i = 0; i < wanted.length; ) {
    if (wanted[i]!.size > SMALL_READ) {
      await writeLargeFrame(core, wanted[i++]!, out, sent);
    } else {
      // A run of small frames, read straight into one buffer of about WRITE_GATHER bytes.
      let end = i;
      let bytes = 0;
      while (end < wanted.length && wanted[end]!.size <= SMALL_READ && (end === i || bytes + FRAME_HEADER_BYTES + wanted[end]!.size <= WRITE_GATHER)) {
        bytes += FRAME_HEADER_BYTES + wanted[end++]!.size;
      }
      const buf = runBuffers.take(bytes + 1);
      let at = 0;
      for (; i < end; i++) at = readFrameInto(core, wanted[i]!, buf, at, sent);
      await out.flush();
      await writeWithBackpressure(res, buf.subarray(0, at), () => runBuffers.give(buf));
    }
    if (res.destroyed) return;
  }
  res.end();
  await finished(res);
}

/** The largest run of small frames batchRead reads into one buffer, and the spare byte. */
const RUN_BYTES = Math.max(WRITE_GATHER, FRAME_HEADER_BYTES + SMALL_READ) + 1;
/** Run buffers kept for reuse, for all responses: 8 MiB at most. */
const KEPT_RUN_BUFFERS = 32;

/**
 * Buffers for runs of small frames, each reused once the socket has written it (the write's
 * callback; the next run may be read while a short one still waits in the socket's queue).
 * Perf: a new 256 KiB buffer per run, about 4,900 for the Linux tree, is memory outside the heap
 * whose growth keeps starting garbage collections (0.66-0.85 s of GC in the server's profiles of a
 * Linux-tree checkout, of 6.7-7.4 s busy at load 10). Reused, the server's CPU (utime + stime)
 * serving `checkout --remote --method hardlink` was 1.49-1.94 s (median 1.51) against 1.85-2.02 s
 * (median 1.99), 5 interleaved pairs at load 7.4-9.3 (the same client build for both).
 */
class RunBuffers {
  private readonly free: Buffer[] = [];

  take(n: number): Buffer {
    if (n > RUN_BYTES) return Buffer.allocUnsafe(n);
    return this.free.pop() ?? Buffer.allocUnsafeSlow(RUN_BYTES);
  }

  /** `buf` from take(), which nothing holds any more. */
  give(buf: Buffer): void {
    if (buf.length === RUN_BYTES && this.free.length < KEPT_RUN_BUFFERS) this.free.push(buf);
  }
}
const runBuffers = new RunBuffers();

/**
 * Writes blob `d`'s frame into `buf` at `at` (its data when held with exactly this size, else a
 * "missing" frame) and returns where the next frame goes. `buf` has a byte to spare after the
 * frame, for the read that proves the size.
 *
 * Perf: a frame buffer per blob, gathered and concatenated into 256 KiB writes, with an fstat per
 * blob, cost the server 4.6 s of CPU for the Linux tree (profile: read 1.7 s, writev 1.2 s, open
 * 1.1 s, GC 1.0 s, the concatenation 0.36 s, buffer allocation 0.22 s, fstat 0.23 s); a run of
 * frames read in place takes one buffer, no copy and no Stats object. Serving a plain Linux-tree
 * `checkout --remote` then took 2.71-2.84 s of server CPU against 3.21-4.00 s (3 interleaved
 * pairs, load average 8-13).
 */
function readFrameInto(core: ServerCore, d: Digest, buf: Buffer, at: number, sent: string[]): number {
  const header = (status: number): number => {
    writeRecord(d, buf, at);
    buf[at + RECORD_BYTES] = status;
    return at + FRAME_HEADER_BYTES;
  };
  if (d.size === 0) {
    if (d.hash !== EMPTY_HASH) return header(FRAME_MISSING);
    sent.push(d.hash);
    return header(FRAME_PRESENT);
  }
  const fd = openBlobNoFollow(core.store, d);
  if (fd === undefined) return header(FRAME_MISSING);
  let got = 0;
  try {
    // One byte more than the size: a regular file's read is short only at its end, so getting
    // exactly `size` proves the blob has that size (a longer one fills the spare byte).
    const start = at + FRAME_HEADER_BYTES;
    for (;;) {
      const want = d.size + 1 - got;
      const n = fs.readSync(fd, buf, start + got, want, got);
      got += n;
      if (n === 0 || n < want) break;
    }
  } catch {
    got = -1;
  } finally {
    fs.closeSync(fd);
  }
  if (got !== d.size) return header(FRAME_MISSING);
  sent.push(d.hash);
  header(FRAME_PRESENT);
  return at + FRAME_HEADER_BYTES + d.size;
}

/** A frame of a blob above SMALL_READ: the header, then the file streamed (or a "missing" frame). */
async function writeLargeFrame(core: ServerCore, d: Digest, out: Gather, sent: string[]): Promise<void> {
  const fd = openBlobNoFollow(core.store, d); // undefined when not held: a missing frame
  try {
    const held = fd !== undefined && fs.fstatSync(fd).size === d.size;
    await out.add(encodeFrameHeader(d, held ? FRAME_PRESENT : FRAME_MISSING));
    await out.flush();
    if (!held) return;
    await streamFile(fd!, d.size, out.res);
    sent.push(d.hash);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

async function batchWrite(core: ServerCore, ctx: Ctx): Promise<void> {
  const { req, res } = ctx;
  const { maxBatchBytes, maxBlobBytes } = core.opts;
  if (core.opts.readOnly) throw readOnlyRefusal(ctx);
  const len = contentLength(req);
  if (len !== undefined && len > maxBatchBytes) {
    throw new HttpFailure(413, `batch of ${len} bytes is larger than the limit of ${maxBatchBytes}`, true);
  }
  let rx: BlobReceiver | undefined;
  let existed = false;
  let stored = 0;
  let total = 0;
  const decoder = new FrameDecoder(
    {
      header: (d, present) => {
        if (!present) throw new WireError(`write batch holds a 'missing' frame for ${formatDigest(d)}`);
        existed = core.store.hasSync(d);
        rx = new BlobReceiver(core.store, d, maxBlobBytes, '', core.buffering);
      },
      data: (chunk) => rx!.write(chunk),
      end: () => {
        const d = rx!.finish();
        rx = undefined;
        core.noteStored(d, existed);
        stored++;
      },
    },
    { maxBlobBytes },
  );
  try {
    await readBody(req, core.opts.stallTimeoutMs, (chunk) => {
      total += chunk.length;
      if (total > maxBatchBytes) throw new HttpFailure(413, `batch is larger than the limit of ${maxBatchBytes}`, true);
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

/** Tree packs up to this size serve /tree from memory (one per response in flight); larger
 * trees are read message by message. */
const MAX_PACK_BYTES = 64 << 20;

/** GET .../tree/<hash>/<size>: every Directory message of a tree, breadth first, each distinct one once. */
export async function serveTree(core: ServerCore, root: Digest, ctx: Ctx): Promise<void> {
  if (ctx.req.method !== 'GET') throw methodNotAllowed(ctx, 'GET');
  const { res } = ctx;
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  const sent: string[] = [];
  ctx.entry.sent = sent;
  const out = new Gather(res);
  // Perf: the Linux tree's /tree took ~0.46 s of server CPU before any blob could be asked for:
  // an open, read and SHA-256 per message (0.20 s) and a full decode of each to find its
  // subdirectories (0.12 s), profiled at --latency 50 --concurrency 16. The root's tree pack
  // (store/tree-pack.ts, checksummed, written from verified messages) serves them in one read,
  // (an access() each still asks the store whether it holds the message), and only the subdirectory
  // digests are read; the client hashes and validates every message. After: 0.15 s of server CPU
  // against 0.39 s, one profiled pull each at load 5-8.
  const pack = (treePackBytes(core.store, root) ?? Infinity) <= MAX_PACK_BYTES ? readTreePack(core.store, root) : undefined;
  const seen = new Set<string>([root.hash]);
  let level: Digest[] = [root];
  let count = 0;
  for (let depth = 0; level.length > 0 && depth <= MAX_DEPTH; depth++) {
    const next: Digest[] = [];
    for (const d of level) {
      if (++count > core.opts.maxTreeDirectories || res.destroyed) {
        res.destroy();
        return;
      }
      // A message the store lacks is missing here even when the pack holds it, as is one whose
      // name in the store is a planted link (hasSyncOr). Perf: hasSync, not hasExact, which also
      // compares the size: the pack's bytes already have the digest's size and hash.
      let bytes = pack?.get(d.hash);
      if (bytes?.length !== d.size || !core.store.hasSyncOr(d, false)) {
        try {
          bytes = core.store.readSync(d);
        } catch {
          // Absent or corrupt here: the client fetches it (and what is below) another way.
          await out.add(encodeFrameHeader(d, FRAME_MISSING));
          continue;
        }
      }
      let children: Digest[] = [];
      try {
        children = subdirectoryDigests(bytes, formatDigest(d));
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
