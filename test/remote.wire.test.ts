import { test } from 'node:test';
import assert from 'node:assert/strict';
import { digestOf, EMPTY_DIGEST } from '../src/core/digest.js';
import {
  FrameDecoder,
  decodeDigestList,
  encodeDigestList,
  encodeFrame,
  encodeFrameHeader,
  FRAME_MISSING,
  WireError,
  type FrameSink,
} from '../src/remote/wire.js';

function collect(): FrameSink & { frames: { hash: string; present: boolean; data: Buffer }[] } {
  const frames: { hash: string; present: boolean; data: Buffer }[] = [];
  let cur: Buffer[] = [];
  let present = false;
  return {
    frames,
    header: (_d, p) => {
      present = p;
      cur = [];
    },
    data: (c) => cur.push(Buffer.from(c)),
    end: (d) => frames.push({ hash: d.hash, present, data: Buffer.concat(cur) }),
  };
}

test('digest lists round-trip, including sizes above 2^32', () => {
  const ds = [digestOf(Buffer.from('a')), EMPTY_DIGEST, { hash: 'ab'.repeat(32), size: 2 ** 40 + 5 }];
  const buf = encodeDigestList(ds);
  assert.equal(buf.length, 120);
  assert.deepEqual(decodeDigestList(buf), ds);
});

test('digest lists of a wrong length or with absurd sizes are refused', () => {
  assert.throws(() => decodeDigestList(Buffer.alloc(39)), WireError);
  const buf = encodeDigestList([EMPTY_DIGEST]);
  buf.writeUInt32BE(0xffffffff, 32);
  assert.throws(() => decodeDigestList(buf), /out of range/);
});

test('a frame stream split at every byte boundary decodes the same', () => {
  const blobs = [Buffer.from('hello'), Buffer.alloc(0), Buffer.alloc(3000, 7)];
  const stream = Buffer.concat([
    ...blobs.map((b) => encodeFrame(digestOf(b), b)),
    encodeFrameHeader({ hash: 'cd'.repeat(32), size: 10 }, FRAME_MISSING),
  ]);
  for (const step of [1, 2, 3, 40, 41, 42, 1000, stream.length]) {
    const sink = collect();
    const dec = new FrameDecoder(sink);
    for (let i = 0; i < stream.length; i += step) dec.push(stream.subarray(i, i + step));
    dec.finish();
    assert.equal(sink.frames.length, 4, `step ${step}`);
    assert.deepEqual(sink.frames.slice(0, 3).map((f) => f.data), blobs);
    assert.deepEqual(sink.frames.map((f) => f.present), [true, true, true, false]);
    assert.equal(sink.frames[3]!.data.length, 0);
  }
});

test('a stream cut inside a header or inside data is reported as truncated', () => {
  const b = Buffer.from('0123456789');
  const frame = encodeFrame(digestOf(b), b);
  for (const cut of [1, 40, 41, 45]) {
    const dec = new FrameDecoder(collect());
    dec.push(frame.subarray(0, cut));
    assert.equal(dec.atBoundary, false);
    assert.throws(() => dec.finish(), /truncated/);
  }
  const dec = new FrameDecoder(collect());
  dec.push(frame);
  assert.equal(dec.atBoundary, true);
  dec.finish();
});

test('unknown frame status and frames over the size limit are refused', () => {
  const h = encodeFrameHeader(digestOf(Buffer.from('x')), 0);
  h[40] = 9;
  assert.throws(() => new FrameDecoder(collect()).push(h), /unknown status 9/);
  const big = encodeFrameHeader({ hash: 'ab'.repeat(32), size: 1000 }, 0);
  assert.throws(() => new FrameDecoder(collect(), { maxBlobBytes: 999 }).push(big), /larger than the limit/);
});

test('encodeFrame refuses data whose length disagrees with the digest', () => {
  assert.throws(() => encodeFrame({ hash: 'ab'.repeat(32), size: 3 }, Buffer.from('ab')), WireError);
});
