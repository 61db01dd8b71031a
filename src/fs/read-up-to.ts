/**
 * A positioned read that does not stop at a short read before the end: `fs.readSync` may return
 * fewer bytes than asked, so every reader that needs a range whole loops the same way.
 */
import { readSync } from 'node:fs';

/** Reads up to `len` bytes at file position `pos` into `buf` at `off`; fewer only at the file's end. Returns how many. */
export function readUpTo(fd: number, buf: Uint8Array, off: number, len: number, pos: number): number {
  let got = 0;
  while (got < len) {
    const n = readSync(fd, buf, off + got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}
