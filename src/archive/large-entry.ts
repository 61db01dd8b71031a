/**
 * Streams one large entry (over LARGE_ENTRY_BYTES, up to the Zip64 sizes) through inflate in
 * bounded memory, checking size and CRC-32 as it goes, and hands each chunk to a sink. Runs on the
 * main thread with zlib's asynchronous stream (which inflates on the libuv pool), alongside the
 * workers that extract the small entries.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { dataError, dataOffset, type EntryRef } from './local-data.js';
import { fsError } from '../errors.js';
import { METHOD_STORE } from './zip-format.js';

export async function streamEntry(archive: string, fd: number, e: EntryRef, sink: (chunk: Buffer) => void): Promise<void> {
  const start = dataOffset(fd, e, archive);
  let seen = 0;
  let crc = 0;
  const source = fs.createReadStream(archive, { start, end: start + e.compressedSize - 1, highWaterMark: 1 << 20 });
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > e.size) return done(dataError(e, `inflates to more than its declared ${e.size} bytes`));
      crc = zlib.crc32(chunk, crc);
      try {
        sink(chunk);
        done();
      } catch (err) {
        done(err as Error);
      }
    },
  });
  try {
    if (e.compressedSize === 0) source.destroy();
    else if (e.method === METHOD_STORE) await pipeline(source, out);
    else await pipeline(source, zlib.createInflateRaw({ chunkSize: 1 << 20 }), out);
  } catch (err) {
    if ((err as { code?: string }).code?.startsWith('Z_')) throw dataError(e, `deflate data is corrupt (${(err as Error).message})`);
    if ((err as NodeJS.ErrnoException).syscall) throw fsError(err, 'cannot read archive', archive);
    throw err;
  }
  if (seen !== e.size) throw dataError(e, `sizes disagree: declared ${e.size} bytes, data holds ${seen}`);
  if (crc >>> 0 !== e.crc) throw dataError(e, 'CRC-32 mismatch (data is corrupt)');
}
