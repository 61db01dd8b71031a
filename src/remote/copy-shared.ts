/**
 * Copies received bytes into shared memory (a direct checkout's slabs, materialize/execute.ts)
 * at full speed.
 *
 * Perf: V8 copies into a SharedArrayBuffer with relaxed atomic loads and stores, a word at a time
 * only where source and target share their alignment mod 8, else byte by byte. A batch read's
 * frames start anywhere in a socket chunk and blobs lie back to back at any offset, so nearly
 * every copy was byte by byte: `Buffer.copy` into the slab took 0.51 s of the main thread's
 * profile of the Linux tree's `checkout --remote --direct` (1.48 s at load 9). Measured alone,
 * 1,250 MiB in 64 KiB chunks at odd offsets: 0.96-1.11 s straight into shared memory, 0.26-0.46 s
 * through a small private buffer placed at the target's alignment (a plain memcpy, then a
 * word-wise copy), 0.18-0.22 s into private memory.
 */

/** Bytes copied per step through the staging buffer. */
const STEP = 256 << 10;
let stage: Buffer | undefined;

/** Copies all of `src` into `dst` at `at` (which must have room); returns src.length. */
export function copyInto(src: Uint8Array, dst: Uint8Array, at: number): number {
  if (!(dst.buffer instanceof SharedArrayBuffer)) {
    dst.set(src, at);
    return src.length;
  }
  // Its own ArrayBuffer from offset 0: aligned, so `skew` puts each step at the target's alignment.
  stage ??= Buffer.allocUnsafeSlow(STEP + 8);
  for (let off = 0; off < src.length; ) {
    const n = Math.min(src.length - off, STEP);
    const skew = (dst.byteOffset + at + off) & 7;
    stage.set(src.subarray(off, off + n), skew);
    dst.set(stage.subarray(skew, skew + n), at + off);
    off += n;
  }
  return src.length;
}
