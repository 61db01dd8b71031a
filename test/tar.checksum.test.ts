/**
 * Header checksums (golden vectors, built by hand): tar writers store the sum of the header's bytes
 * as unsigned (POSIX) or as signed chars (old Sun and some GNU tars), the checksum field counted as
 * spaces; treecast accepts both, and nothing else, whatever bytes above 127 the header holds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseHeader } from '../src/archive/tar-format.js';
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
