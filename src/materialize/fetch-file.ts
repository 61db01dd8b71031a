/**
 * A direct checkout's file whose blob is too large to hold in memory (execute.ts DIRECT_MAX_BYTES):
 * streamed from the remote into the target once, instead of into the store and then copied out.
 *
 * The bytes go to a new temporary name beside the file (O_EXCL, O_NOFOLLOW, mode 0600), hashed as
 * they pass; only once SHA-256 and size match does the file take its name, by link(), which never
 * replaces an existing name nor follows a symlink there. So, as for the blobs held in memory,
 * nothing is created at the file's name from bytes that fail their digest, and nothing a user owns
 * is overwritten. The temporary name is removed in every case but a kill; it holds the run's token
 * (`.treecast-TOKEN-RANDOM.tmp`), so the same checkout run again removes what a kill left
 * (leftovers.ts).
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname } from 'node:path';
import { type Digest, formatDigest } from '../core/digest.js';
import { DigestMismatchError, fsError } from '../errors.js';
import { removeIfPartial } from './import-file.js';
import { linkRefused } from '../fs/link-refused.js';
import { tempPath } from './leftovers.js';

/** CheckoutOptions.fetchStream: a blob's bytes to `sink`, unverified; `restart` before a retry's first chunk. */
export type FetchStream = (d: Digest, sink: (chunk: Buffer) => void, restart: () => void) => Promise<{ source: string }>;

const CREATE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;

/**
 * Creates `dst` (mode `mode`, exactly) with the blob `d` fetched through `fetch`, verified before
 * it takes the name. Perf: the Linux tree's 29 blobs over 4 MiB are 244 MB of its 1.2 GB; written
 * into the store and copied out, the copy took 1.8 s of the two workers' profiles. Streamed here
 * once, client CPU (user + sys) of `--direct` went from 5.97-6.80 s (median 6.75) to 5.31-6.15 s
 * (median 5.31), 3 interleaved pairs at load 4.9-5.3.
 */
export async function fetchFile(dst: string, d: Digest, mode: number, fetch: FetchStream, token?: string): Promise<void> {
  // The run's token in the name: a kill leaves this file, and the same checkout run again removes
  // the names with its token, and only those (leftovers.ts).
  const tmp = tempPath(dirname(dst), token);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, CREATE, 0o600);
  } catch (e) {
    throw fsError(e, 'cannot create', tmp);
  }
  try {
    let hash = createHash('sha256');
    let pos = 0;
    const file = fd;
    const { source } = await fetch(
      d,
      (chunk) => {
        hash.update(chunk);
        try {
          for (let off = 0; off < chunk.length; ) off += fs.writeSync(file, chunk, off, chunk.length - off, pos + off);
        } catch (e) {
          throw fsError(e, 'cannot write', tmp);
        }
        pos += chunk.length;
      },
      () => {
        hash = createHash('sha256');
        pos = 0;
      },
    );
    const actual = hash.digest('hex');
    if (actual !== d.hash || pos !== d.size) {
      throw new DigestMismatchError(`blob ${formatDigest(d)} from ${source} refused: its bytes hash to ${actual}/${pos}; nothing was written at ${dst}`, {
        digest: formatDigest(d),
        path: dst,
      });
    }
    try {
      // No attempt writes past d.size and the last wrote all of it from 0: the file is exact.
      fs.fchmodSync(file, mode);
      fs.closeSync(file);
      fd = undefined;
    } catch (e) {
      throw fsError(e, 'cannot write', tmp);
    }
    publish(tmp, dst);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* already gone */
    }
  }
}

/** Gives the verified file its name: link() never replaces a name; a copy where links are refused. */
function publish(tmp: string, dst: string): void {
  try {
    fs.linkSync(tmp, dst);
    return;
  } catch (e) {
    if (!linkRefused(e)) throw fsError(e, 'cannot create', dst);
  }
  try {
    fs.copyFileSync(tmp, dst, fs.constants.COPYFILE_EXCL);
  } catch (e) {
    removeIfPartial(dst, 'copy', e);
    throw fsError(e, 'cannot create', dst);
  }
}
