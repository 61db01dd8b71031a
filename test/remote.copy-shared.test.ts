import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyInto } from '../src/remote/copy-shared.js';

// Random sources at every alignment, into shared and private memory at every alignment, some
// longer than one staging step (256 KiB), each checked byte for byte and for what it must not touch.
for (const shared of [true, false]) {
  test(`copyInto places every byte exactly, at any alignment (${shared ? 'shared' : 'private'} target)`, () => {
    const backing = shared ? new SharedArrayBuffer(2 << 20) : new ArrayBuffer(2 << 20);
    const pool = randomBytes(1 << 20);
    for (const size of [0, 1, 7, 8, 9, 4095, 65537, (256 << 10) - 1, 256 << 10, (256 << 10) + 3, 700_001]) {
      for (let k = 0; k < 8; k++) {
        const from = (k * 13 + size) % 8 + 8 * k;
        const src = pool.subarray(from, from + size);
        const viewAt = k; // the target view itself starts at an odd place in its buffer
        const dst = new Uint8Array(backing, viewAt, (1 << 20) + 64);
        dst.fill(0xa5);
        const at = (k * 5 + 3) % 8 + 16;
        assert.equal(copyInto(src, dst, at), size);
        assert.ok(Buffer.from(dst.buffer, dst.byteOffset + at, size).equals(src), `size ${size}, k ${k}`);
        assert.ok(dst.subarray(0, at).every((b) => b === 0xa5), 'nothing before');
        assert.equal(dst[at + size], 0xa5, 'nothing after');
      }
    }
  });
}

test('copyInto refuses bytes past the end of the target rather than dropping them', () => {
  const dst = new Uint8Array(new SharedArrayBuffer(16));
  assert.throws(() => copyInto(Buffer.alloc(10), dst, 8), RangeError);
});
