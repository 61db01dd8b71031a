/**
 * The parallel gzip pack uses for .tar.gz (gzip-parallel.ts): its output is one gzip member that
 * the `gzip` program and node:zlib read back to the input, for lengths around the block size and
 * any way the input is cut into reads; the same input gives the same bytes whatever the reads and
 * the number of blocks in flight; each block gets the one before as its dictionary; the header is
 * the one `gzip -n` writes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { GZIP_BLOCK, gzipHeader, gzipStream } from '../src/archive/gzip-parallel.js';

async function* chunked(data: Buffer, cut: (i: number) => number): AsyncGenerator<Buffer> {
  for (let at = 0, i = 0; at < data.length; i++) {
    const n = Math.max(1, cut(i));
    yield data.subarray(at, at + n);
    at += n;
  }
}

async function gzipOf(data: Buffer, level = 6, inFlight = 4, cut: (i: number) => number = () => 65536): Promise<Buffer> {
  const out: Buffer[] = [];
  await gzipStream(chunked(data, cut), (b) => out.push(Buffer.from(b)), level, inFlight);
  return Buffer.concat(out);
}

/** Text-like bytes with long repeats, plus random runs, so blocks both match and miss. */
function sample(len: number, seed: number): Buffer {
  const words = ['static ', 'int ', 'return ', 'struct ', 'void ', '{\n', '}\n', ';\n', 'if (', ') ', 'unsigned long ', '#include <linux/'];
  const b = Buffer.allocUnsafe(len);
  let s = seed;
  let at = 0;
  while (at < len) {
    s = (s * 1103515245 + 12345) >>> 0;
    if (s % 50 === 0) {
      const r = randomBytes(Math.min(len - at, 1 + (s % 3000)));
      r.copy(b, at);
      at += r.length;
    } else at += b.write(words[s % words.length]!, at);
  }
  return b;
}

function gunzipWithProgram(gz: Buffer): Buffer {
  const r = spawnSync('gzip', ['-dc'], { input: gz, maxBuffer: 1 << 30 });
  assert.equal(r.status, 0, `gzip -dc failed: ${r.stderr}`);
  return r.stdout;
}

test('the parallel gzip decompresses to its input with gzip and node:zlib, at every length around the block size', async () => {
  for (const len of [0, 1, 100, GZIP_BLOCK - 1, GZIP_BLOCK, GZIP_BLOCK + 1, 2 * GZIP_BLOCK, 3 * GZIP_BLOCK + 777]) {
    const data = sample(len, len + 1);
    const gz = await gzipOf(data, 6, 3, (i) => 1 + ((i * 7919) % 200000));
    assert.ok(gunzipWithProgram(gz).equals(data), `gzip -dc of ${len} bytes`);
    assert.ok(zlib.gunzipSync(gz).equals(data), `gunzipSync of ${len} bytes`);
    // One member: node reads only the first member with this option off, so a second would be lost.
    assert.equal(gz.readUInt32LE(gz.length - 8), zlib.crc32(data), `CRC-32 of ${len} bytes`);
    assert.equal(gz.readUInt32LE(gz.length - 4), len % 2 ** 32);
  }
  const t = spawnSync('gzip', ['-t'], { input: await gzipOf(sample(2 * GZIP_BLOCK + 5, 9)) });
  assert.equal(t.status, 0, `gzip -t: ${t.stderr}`);
});

test('the same input gives the same bytes whatever the reads and the number of blocks in flight', async () => {
  const data = sample(4 * GZIP_BLOCK + 12345, 42);
  const a = await gzipOf(data, 6, 1, () => GZIP_BLOCK);
  const b = await gzipOf(data, 6, 8, (i) => 1 + ((i * 104729) % 300000));
  const c = await gzipOf(data, 6, 2, () => 4096);
  assert.ok(a.equals(b) && a.equals(c), 'same bytes');
  for (const level of [1, 9]) assert.ok(zlib.gunzipSync(await gzipOf(data, level)).equals(data), `level ${level}`);
});

test('each block is deflated with the 32 KiB before it as its dictionary, so repeats across a cut still match', async () => {
  // A 20 KiB random piece repeated: every block after the first is all matches, provided it can
  // see the piece's previous copy across the cut; without the dictionary each block repeats it.
  const piece = randomBytes(20 << 10);
  const data = Buffer.concat(Array.from({ length: Math.ceil((6 * GZIP_BLOCK) / piece.length) }, () => piece));
  const ours = (await gzipOf(data)).length;
  const whole = zlib.gzipSync(data, { level: 6 }).length;
  assert.ok(ours < whole + 2048, `parallel gzip ${ours} bytes against ${whole} for one stream`);
  assert.ok(zlib.gunzipSync(await gzipOf(data)).equals(data));
});

test('the header is the one gzip -n writes: no name, no time, Unix, XFL for the fastest and best levels', () => {
  const program = (level: number) => spawnSync('gzip', ['-c', '-n', `-${level}`], { input: Buffer.from('x') }).stdout.subarray(0, 10);
  for (const level of [1, 6, 9]) assert.deepEqual(gzipHeader(level), program(level), `level ${level}`);
});
