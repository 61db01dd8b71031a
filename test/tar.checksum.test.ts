/**
 * Header checksums (golden vectors, built by hand): tar writers store the sum of the header's bytes
 * as unsigned (POSIX) or as signed chars (old Sun and some GNU tars), the checksum field counted as
 * spaces; treecast accepts both, and nothing else, whatever bytes above 127 the header holds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newWordView, parseHeader } from '../src/archive/tar-format.js';
import { tarHeader } from './helpers/tar-craft.js';

function withChecksum(h: Buffer, sum: number): Buffer {
  const b = Buffer.from(h);
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
}

function sums(h: Buffer): { unsigned: number; signed: number } {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < 512; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return { unsigned, signed };
}

test('a header checksum is accepted as the unsigned or the signed sum of its bytes, and refused otherwise', () => {
  // A UTF-8 name and a base-256 size: bytes above 127, so the two sums differ.
  const sizeField = Buffer.alloc(12);
  sizeField[0] = 0x80;
  sizeField.writeUIntBE(5, 6, 6);
  const plain = tarHeader({ name: Buffer.from('caf\u00e9/\u00fcber-na\u00efve'), type: '0', size: 5, mode: 0o644, mtime: 1_600_000_000, linkname: Buffer.from('\u00e9'), uid: 0, gid: 0, sizeField });
  const { unsigned, signed } = sums(plain);
  assert.notEqual(unsigned, signed);
  for (const sum of [unsigned, signed]) {
    const r = parseHeader(withChecksum(plain, sum), 0);
    assert.ok(r.ok, `checksum ${sum} accepted`);
    assert.equal(r.header.size, 5);
  }
  for (const sum of [unsigned + 1, unsigned - 1, signed + 1, signed - 1, unsigned - 256, signed + 256 * 20]) {
    const r = parseHeader(withChecksum(plain, sum), 0);
    assert.equal(r.ok, false, `checksum ${sum} refused`);
  }
  // Offsets other than 0 (a header inside a larger chunk) read the same bytes.
  const inChunk = Buffer.concat([Buffer.alloc(1024, 0xff), withChecksum(plain, signed), Buffer.alloc(512, 0xff)]);
  assert.ok(parseHeader(inChunk, 1024).ok);
  assert.equal(parseHeader(inChunk, 512).ok, false);
});

test('a header is summed alike wherever it lies: at every offset of a plain or a shared buffer, one reader going from buffer to buffer', () => {
  const view = newWordView();
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let round = 0; round < 40; round++) {
    const h = tarHeader({ name: Buffer.from('x'), type: '0', size: 3, mode: 0o644, mtime: 1_600_000_000, linkname: Buffer.alloc(0), uid: 0, gid: 0 });
    // Random name and tail bytes, many above 127 (where unsigned and signed sums part).
    for (const i of [...Array(100).keys(), ...Array.from({ length: 12 }, (_, k) => 500 + k)]) h[i] = Math.floor(rand() * 256);
    const { unsigned, signed } = sums(h);
    for (const shared of [false, true]) {
      for (let at = 0; at < 8; at++) {
        const b = shared ? Buffer.from(new SharedArrayBuffer(at + 1024)) : Buffer.alloc(at + 1024);
        b.fill(0xff);
        for (const [sum, ok] of [[unsigned, true], [signed, true], [unsigned + 1, false], [unsigned - 255, false]] as const) {
          withChecksum(h, sum).copy(b, at);
          assert.equal(parseHeader(b, at, view).ok, ok, `round ${round}, ${shared ? 'shared' : 'plain'} buffer, offset ${at}, sum ${sum}`);
        }
        // One byte changed anywhere outside the checksum field is refused.
        withChecksum(h, unsigned).copy(b, at);
        const i = Math.floor(rand() * 512);
        if (i >= 148 && i < 156) continue;
        b[at + i] = (b[at + i]! + 1 + Math.floor(rand() * 254)) & 0xff;
        assert.equal(parseHeader(b, at, view).ok, false, `round ${round}, byte ${i} changed at offset ${at}`);
      }
    }
  }
});

test('a header cut short by the end of its buffer is refused, even where the bytes present sum to its checksum', () => {
  const h = tarHeader({ name: Buffer.from('short'), type: '0', size: 3, mode: 0o644, mtime: 1_600_000_000, linkname: Buffer.alloc(0), uid: 0, gid: 0 });
  h.fill(0, 400); // the bytes cut off are zeros, so the sum of what is left is the whole block's
  const whole = withChecksum(h, sums(h).unsigned);
  assert.ok(parseHeader(whole, 0).ok);
  for (const at of [0, 4, 1]) {
    const b = Buffer.alloc(at + 400);
    whole.copy(b, at, 0, 400);
    assert.equal(parseHeader(b, at).ok, false, `offset ${at}`);
  }
});
