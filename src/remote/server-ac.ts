/**
 * The Bazel HTTP cache's action cache: GET, HEAD and PUT /ac/<64 hex>, as bazel-remote serves it.
 *
 * With validation on (the default), a PUT body must decode as a REAPI `ActionResult` (else 400,
 * nothing stored), and a GET answers an entry only when every blob it references is in the store
 * (output files, stdout/stderr, each output directory's Tree message and every file in it); an
 * entry that names an absent blob is a miss (404), so a client never gets a result it cannot
 * restore. treecast's own client, looking a ref up, asks with AC_UNCHECKED_HEADER and gets such an
 * entry with the missing blob named (AC_MISSING_HEADER, wire.ts). `--no-ac-validation` stores and serves any bytes (ccache keeps its own format there).
 *
 * An entry naming many blobs that was found whole is remembered until the store may have lost one
 * of them (validated-entries.ts), so a repeated restore by name is not checked in full again.
 *
 * Entries live in the store (STORE/ac/), are replaced atomically (temp file + rename), and a hit
 * refreshes the entry's last use for `gc --max-age`.
 */
import * as fs from 'node:fs';
import { MAX_ACTION_RESULT_BYTES, decodeActionResult } from '../core/action-result.js';
import { type Digest, formatDigest } from '../core/digest.js';
import { StoreDamagedError, fsError } from '../errors.js';
import { actionResultReferences } from '../store/action-cache.js';
import { removeQuietly } from '../store/local.js';
import type { ServerCore } from './server.js';
import { type Ctx, HttpFailure, contentLength, methodNotAllowed, readBody, sendFile, readOnlyRefusal } from './server-http.js';
import { openFile } from '../fs/open-file.js';
import { AC_MISSING_HEADER, AC_UNCHECKED_HEADER } from './wire.js';

export async function serveAc(core: ServerCore, key: string, ctx: Ctx): Promise<void> {
  const m = ctx.req.method;
  if (m === 'GET' || m === 'HEAD') return getEntry(core, key, ctx, m === 'HEAD');
  if (m === 'PUT') return putEntry(core, key, ctx);
  throw methodNotAllowed(ctx, 'GET, HEAD, PUT');
}

async function getEntry(core: ServerCore, key: string, ctx: Ctx, head: boolean): Promise<void> {
  const path = core.ac.path(key);
  // A link planted in ac/ (at the entry or as its shard folder) is a miss: never followed, so no
  // file the server can read is ever sent for it (`treecast verify` on the store reports it).
  const size = notDamaged(key, () => core.ac.size(key));
  if (size === undefined) throw new HttpFailure(404, `action ${key} not found`);
  if (core.opts.acValidation) {
    const bytes = notDamaged(key, () => core.ac.read(key));
    if (!bytes) throw new HttpFailure(404, `action ${key} not found`);
    if (!core.validated.holds(key, bytes)) {
      const stamps = core.validated.stampsBeforeCheck();
      const { absent, missing, needed } = check(core, key, bytes);
      if (absent) {
        // treecast's own client, looking a ref up, gets the entry with the missing blob named, so
        // it reports that blob and not "no entry" (wire.ts); not touched (no refreshed last use).
        // Every other client gets the miss, as the Bazel HTTP cache protocol has it.
        if (missing === undefined || ctx.req.headers[AC_UNCHECKED_HEADER] !== '1') throw new HttpFailure(404, `action ${key} is a miss: ${absent}`);
        ctx.res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': bytes.length,
          [AC_MISSING_HEADER]: formatDigest(missing),
          // Never kept by a cache between: a Bazel client asking the same must get the miss.
          'cache-control': 'no-store',
          vary: AC_UNCHECKED_HEADER,
        });
        ctx.res.end(head ? undefined : bytes);
        return;
      }
      core.validated.remember(key, bytes, needed, stamps);
    }
    core.ac.touch(key);
    ctx.res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length });
    ctx.res.end(head ? undefined : bytes);
    return;
  }
  core.ac.touch(key);
  await sendFile(ctx.res, path, size, head);
}

/** What `read` gives, with a damaged store entry (StoreDamagedError) answered as a miss. */
function notDamaged<T>(key: string, read: () => T): T {
  try {
    return read();
  } catch (e) {
    if (e instanceof StoreDamagedError) throw new HttpFailure(404, `action ${key} not found (the server's store entry for it is not a regular file; it was not followed)`);
    throw e;
  }
}

/**
 * Why the entry cannot be served (undecodable, or a referenced blob the store lacks), if it
 * cannot, and the blobs it names.
 */
function check(core: ServerCore, key: string, bytes: Buffer): { absent?: string; missing?: Digest; needed: readonly Digest[] } {
  let refs;
  try {
    refs = actionResultReferences(core.store, decodeActionResult(bytes, `action ${key}`), `action ${key}`);
  } catch (e) {
    // Stored while validation was off: not an ActionResult, so nothing a Bazel client can use.
    return { absent: `its entry is not a valid ActionResult (${(e as Error).message})`, needed: [] };
  }
  const { needed } = refs;
  if (refs.badTree) return { absent: refs.badTree, needed };
  for (const d of needed) if (!core.hasExact(d)) return { absent: `blob ${formatDigest(d)} is not in the store`, missing: d, needed };
  return { needed };
}

async function putEntry(core: ServerCore, key: string, ctx: Ctx): Promise<void> {
  const { req, res } = ctx;
  if (core.opts.readOnly) throw readOnlyRefusal(ctx);
  const limit = core.opts.acValidation ? Math.min(MAX_ACTION_RESULT_BYTES, core.opts.maxBlobBytes) : core.opts.maxBlobBytes;
  const len = contentLength(req);
  if (len !== undefined && len > limit) throw new HttpFailure(413, `action cache entry of ${len} bytes is larger than the limit of ${limit}`, true);
  // Streamed to a temp file as it arrives (an entry may be megabytes for ccache), renamed over
  // the entry only once complete and, with validation, decoded.
  const tmp = core.ac.tmpPath();
  const fd = openFile(tmp, 'wx', 'cannot create action cache entry', 0o644);
  let total = 0;
  try {
    try {
      await readBody(req, core.opts.stallTimeoutMs, (chunk) => {
        total += chunk.length;
        if (total > limit) throw new HttpFailure(413, `action cache entry is larger than the limit of ${limit}`, true);
        let off = 0;
        try {
          while (off < chunk.length) off += fs.writeSync(fd, chunk, off, chunk.length - off);
        } catch (e) {
          throw fsError(e, 'cannot write action cache entry', tmp);
        }
      });
    } finally {
      fs.closeSync(fd);
    }
    if (len !== undefined && total !== len) throw new HttpFailure(400, `action cache entry: ${total} bytes arrived of ${len}`, true);
    if (core.opts.acValidation) {
      try {
        decodeActionResult(fs.readFileSync(tmp), `action ${key}`);
      } catch (e) {
        throw new HttpFailure(400, (e as Error).message, false);
      }
    }
    core.ac.commit(tmp, key);
  } catch (e) {
    removeQuietly(tmp);
    throw e;
  }
  ctx.entry.stored = 1;
  res.writeHead(200, { 'content-length': 0 });
  res.end();
}
