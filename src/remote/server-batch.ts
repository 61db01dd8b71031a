/**
 * treecast's batch endpoints (docs/remote-protocol.md): which of these digests are missing, read
 * many blobs in one response, write many in one request, and every Directory of a tree.
 */
import * as fs from 'node:fs';
import { type Digest, EMPTY_HASH, formatDigest } from '../core/digest.js';
import { decodeDirectory } from '../core/reapi.js';
import { MAX_DEPTH } from '../core/names.js';
import { BlobReceiver } from './receiver.js';
import type { ServerCore } from './server.js';
import { type Ctx, Gather, HttpFailure, SMALL_READ, contentLength, finished, methodNotAllowed, readBody, readFully, readSmallBody, sendJson, streamFile } from './server-http.js';
import { FRAME_HEADER_BYTES, FRAME_MISSING, FRAME_PRESENT, FrameDecoder, RECORD_BYTES, WireError, decodeDigestList, encodeDigestList, encodeFrameHeader } from './wire.js';

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
  for (const d of wanted) {
    await writeFrame(core, d, out, sent);
    if (res.destroyed) return;
  }
  await out.flush();
  res.end();
  await finished(res);
}

/** One frame: the blob when held with exactly this size, else a "missing" frame. */
async function writeFrame(core: ServerCore, d: Digest, out: Gather, sent: string[]): Promise<void> {
  if (d.size === 0) {
    await out.add(encodeFrameHeader(d, d.hash === EMPTY_HASH ? FRAME_PRESENT : FRAME_MISSING));
    if (d.hash === EMPTY_HASH) sent.push(d.hash);
    return;
  }
  let fd: number;
  try {
    fd = fs.openSync(core.store.blobPath(d.hash), 'r');
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

async function batchWrite(core: ServerCore, ctx: Ctx): Promise<void> {
  const { req, res } = ctx;
  const { maxBatchBytes, maxBlobBytes } = core.opts;
  if (core.opts.readOnly) throw methodNotAllowed(ctx, 'GET, HEAD');
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

/** GET .../tree/<hash>/<size>: every Directory message of a tree, breadth first, each distinct one once. */
export async function serveTree(core: ServerCore, root: Digest, ctx: Ctx): Promise<void> {
  if (ctx.req.method !== 'GET') throw methodNotAllowed(ctx, 'GET');
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
      if (++count > core.opts.maxTreeDirectories || res.destroyed) {
        res.destroy();
        return;
      }
      let bytes: Buffer;
      try {
        bytes = core.store.readSync(d);
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
