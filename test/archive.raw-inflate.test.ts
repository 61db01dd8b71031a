/**
 * raw-inflate.ts: an entry's deflate data inflated whole, with the thread's kept zlib engine and
 * with the per-call path, must give the same bytes and the same refusals: a corrupt stream, a
 * stream cut short, and a stream that inflates past its declared size, stopped there before the
 * rest of the stream is read. After a refusal the next entry still inflates right.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as zlib from 'node:zlib';
import { CorruptDeflateError, PastDeclaredSizeError, inflateRawWhole, usesKeptEngine } from '../src/archive/raw-inflate.js';

const paths = [
  { name: 'kept engine', viaKept: true },
  { name: 'per call', viaKept: false },
];

/** Bytes from a fixed xorshift sequence, so every run inflates (and corrupts) the same streams. */
function noise(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** Text-like data (it compresses, with back-references) mixed with runs of noise. */
function sample(size: number): Buffer {
  const words = ['static ', 'int ', 'return ', '{\n', '}\n', 'struct ', ' = ', ';\n', 'if (', ') '];
  const parts: Buffer[] = [];
  let n = 0;
  while (n < size) {
    const p = n % 7 === 3 ? noise(1 + (n % 300), n) : Buffer.from(words[n % words.length]!.repeat(1 + (n % 5)));
    parts.push(p);
    n += p.length;
  }
  return Buffer.concat(parts).subarray(0, size);
}

test('this Node inflates with the kept engine (the fast path the other tests cover)', () => {
  assert.equal(usesKeptEngine(), true);
});

for (const { name, viaKept } of paths) {
  test(`${name}: entries of many sizes inflate to their bytes, one after another`, () => {
    // Rising then falling sizes: a shared output buffer grows, then serves shorter entries.
    for (const size of [0, 1, 63, 64, 100, 4095, 4096, 4097, 32768, 70000, 1 << 20, (8 << 20) + 5, 70000, 100, 1, 0]) {
      const data = sample(size);
      for (const level of [0, 1, 9]) {
        const out = inflateRawWhole(zlib.deflateRawSync(data, { level }), size, viaKept);
        assert.ok(out.equals(data), `size ${size}, level ${level}`);
      }
    }
  });

  test(`${name}: a stream that holds fewer bytes than declared returns what it holds`, () => {
    const data = sample(5000);
    assert.equal(inflateRawWhole(zlib.deflateRawSync(data), 6000, viaKept).length, 5000);
  });

  test(`${name}: a corrupt stream is refused, and the next entry inflates right`, () => {
    const good = sample(20000);
    const raw = zlib.deflateRawSync(good);
    assert.throws(() => inflateRawWhole(Buffer.from([0xff, 0xff, 0xff, 0x12, 0x34]), 100, viaKept), (e: unknown) => e instanceof CorruptDeflateError && /invalid block type/.test(e.message));
    const flipped = Buffer.from(raw);
    flipped[Math.floor(raw.length / 2)] ^= 0xff;
    // A flipped byte breaks the stream, changes its length, or changes the bytes (which the CRC-32
    // check then finds); it never gives the good bytes back.
    let outcome: string;
    try {
      outcome = inflateRawWhole(flipped, good.length, viaKept).equals(good) ? 'the good bytes' : 'other bytes';
    } catch (e) {
      if (!(e instanceof CorruptDeflateError || e instanceof PastDeclaredSizeError)) throw e;
      outcome = e.constructor.name;
    }
    assert.notEqual(outcome, 'the good bytes');
    assert.ok(inflateRawWhole(raw, good.length, viaKept).equals(good));
  });

  test(`${name}: a stream cut short is refused, and the next entry inflates right`, () => {
    const good = sample(20000);
    const raw = zlib.deflateRawSync(good);
    assert.throws(() => inflateRawWhole(raw.subarray(0, raw.length - 10), good.length, viaKept), (e: unknown) => e instanceof CorruptDeflateError && /unexpected end of file/.test(e.message));
    assert.throws(() => inflateRawWhole(Buffer.alloc(0), 10, viaKept), CorruptDeflateError);
    assert.ok(inflateRawWhole(raw, good.length, viaKept).equals(good));
  });

  test(`${name}: a stream that inflates past its declared size is stopped there, before the rest of the stream`, () => {
    // 64 MiB of zeros, then a block that is not deflate: inflating on past the declared 100 bytes
    // would reach it and call the stream corrupt; stopped at 101 bytes, it is refused as too large.
    const bomb = zlib.deflateRawSync(Buffer.alloc(64 << 20), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
    const raw = Buffer.concat([bomb, Buffer.from([0xff, 0xff, 0xff, 0xff])]);
    assert.throws(() => inflateRawWhole(raw, 100, viaKept), PastDeclaredSizeError);
    assert.throws(() => inflateRawWhole(raw, (64 << 20) - 4096, viaKept), PastDeclaredSizeError);
    // Declared as large as the zeros, the same stream does reach the bad block.
    assert.throws(() => inflateRawWhole(raw, 64 << 20, viaKept), CorruptDeflateError);
    // The same after a large entry (a shared output buffer has grown): the limit is the declared
    // size, not the room the buffer has.
    const large = sample(1 << 20);
    assert.ok(inflateRawWhole(zlib.deflateRawSync(large), large.length, viaKept).equals(large));
    const near = Buffer.concat([zlib.deflateRawSync(Buffer.alloc(200 << 10), { finishFlush: zlib.constants.Z_SYNC_FLUSH }), Buffer.from([0xff, 0xff, 0xff, 0xff])]);
    assert.throws(() => inflateRawWhole(near, 100, viaKept), PastDeclaredSizeError);
    const good = sample(3000);
    assert.ok(inflateRawWhole(zlib.deflateRawSync(good), good.length, viaKept).equals(good));
  });

  test(`${name}: one byte past the declared size is refused`, () => {
    const data = sample(4097);
    assert.throws(() => inflateRawWhole(zlib.deflateRawSync(data), 4096, viaKept), PastDeclaredSizeError);
  });
}

test('kept engine: entries over 8 MiB reuse the thread output buffer, and each still inflates right', () => {
  // Such entries once had a fresh buffer each (allocated and page-faulted per entry); any entry a
  // batch holds (up to 64 MiB) now shares the one buffer, grown to the largest met.
  const first = sample((12 << 20) + 7);
  const second = Buffer.from(first.subarray(0, (10 << 20) + 3)).reverse();
  const a = inflateRawWhole(zlib.deflateRawSync(first, { level: 1 }), first.length);
  assert.ok(a.equals(first));
  const aBuffer = a.buffer;
  const b = inflateRawWhole(zlib.deflateRawSync(second, { level: 1 }), second.length);
  assert.ok(b.equals(second));
  assert.equal(b.buffer, aBuffer, 'the second large entry was inflated into a new buffer');
  const small = sample(5000);
  assert.ok(inflateRawWhole(zlib.deflateRawSync(small), small.length).equals(small));
});
