/**
 * The Bazel HTTP cache's content-addressed storage: GET, HEAD and PUT /cas/<sha256>, with
 * bazel-remote's status codes. A PUT is hashed as it arrives and stored only once verified.
 */
import * as fs from 'node:fs';
import { EMPTY_HASH } from '../core/digest.js';
import { BlobReceiver } from './receiver.js';
import type { ServerCore } from './server.js';
import { type Ctx, HttpFailure, contentLength, methodNotAllowed, readBody, sendFile, readOnlyRefusal } from './server-http.js';

export async function serveCas(core: ServerCore, hash: string, ctx: Ctx): Promise<void> {
  const m = ctx.req.method;
  if (m === 'GET' || m === 'HEAD') return getBlob(core, hash, ctx, m === 'HEAD');
  if (m === 'PUT') return putBlob(core, hash, ctx);
  throw methodNotAllowed(ctx, 'GET, HEAD, PUT');
}

async function getBlob(core: ServerCore, hash: string, ctx: Ctx, head: boolean): Promise<void> {
  const { res } = ctx;
  if (hash === EMPTY_HASH) {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 0 });
    res.end();
    if (!head) ctx.entry.sent = [hash];
    return;
  }
  const p = core.store.blobPath(hash);
  // lstat, a regular file in a real shard folder only: a symlink planted in the store is not served.
  let st: fs.Stats | undefined;
  try {
    core.store.checkShard(p);
    st = fs.lstatSync(p, { throwIfNoEntry: false });
  } catch {
    st = undefined;
  }
  if (!st?.isFile()) throw new HttpFailure(404, `blob ${hash} not found`);
  await sendFile(res, p, st.size, head);
  if (head || !res.writableFinished) return;
  ctx.entry.sent = [hash];
}

async function putBlob(core: ServerCore, hash: string, ctx: Ctx): Promise<void> {
  const { req, res } = ctx;
  const { maxBlobBytes } = core.opts;
  if (core.opts.readOnly) throw readOnlyRefusal(ctx);
  const len = contentLength(req);
  if (len !== undefined && len > maxBlobBytes) {
    throw new HttpFailure(413, `blob of ${len} bytes is larger than the limit of ${maxBlobBytes}`, true);
  }
  const d = { hash, size: len ?? -1 };
  const existed = len !== undefined && core.store.hasSync({ hash, size: len });
  const rx = new BlobReceiver(core.store, d, maxBlobBytes, '', core.buffering);
  try {
    let total = 0;
    await readBody(req, core.opts.stallTimeoutMs, (chunk) => {
      total += chunk.length;
      // A chunked body has no length up front: its size is checked as it arrives.
      if (total > maxBlobBytes) throw new HttpFailure(413, `blob is larger than the limit of ${maxBlobBytes}`, true);
      rx.write(chunk);
    });
    const stored = rx.finish();
    core.noteStored(stored, existed);
    ctx.entry.stored = 1;
  } catch (e) {
    rx.abort();
    throw e;
  }
  res.writeHead(200, { 'content-length': 0 });
  res.end();
}
