/**
 * The walk reads a plain file or zstd's output straight into its batch buffers (no copy per file):
 * a batch names where each file's data already lies, and a file cut at a buffer's end is carried
 * whole into the next buffer. Checked with a cut at every offset of a file (and of its header and
 * padding), with reads of random sizes, with batch contents checked only after other batches were
 * read (a buffer reused too early shows), and through the real sources: a .tar file and zstd.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openTarSource, type DirectSink, type TarInput } from '../src/archive/tar-input.js';
import { walkTar, type BatchFile, type TarConsumer } from '../src/archive/tar-walk.js';
import { scratchDir } from './helpers/zip-craft.js';
import { craftTar, type TarCraftEntry } from './helpers/tar-craft.js';
import { sh } from './helpers/tar-trees.js';
import { rng } from './helpers/random-tree.js';

/** An in-memory archive read into the sink in pieces of `piece()` bytes (a pipe's short reads). */
function memoryInput(bytes: Buffer, piece: () => number): TarInput {
  let pos = 0;
  return {
    compression: 'none',
    chunks: (async function* () {})(),
    fileSize: bytes.length,
    bytesIn: () => pos,
    close: () => {},
    readInto: async (sink: DirectSink) => {
      while (pos < bytes.length) {
        const t = sink.target();
        assert.ok(t.length > 0, 'a target has room');
        const n = Math.min(piece(), t.length, bytes.length - pos);
        t.set(bytes.subarray(pos, pos + n));
        pos += n;
        const r = sink.got(n);
        if (r === 'stop') return;
        if (r) await r;
      }
    },
  };
}

/** What a walk hands over, each file's bytes checked against `want` once other batches were read. */
function checkingConsumer(want: Map<string, Buffer>, seen: { files: Set<string>; batches: BatchFile[][] }): TarConsumer {
  let large: Buffer[] = [];
  return {
    dir: () => {},
    symlink: () => {},
    hardlink: () => {},
    batch: async (files, data) => {
      seen.batches.push(files);
      // Let the walk read on (into other buffers) before the "worker" reads this one.
      await new Promise((r) => setImmediate(r));
      for (const f of files) {
        assert.ok(f.at >= 0 && f.at + f.size <= data.length, `${f.path} lies inside its buffer`);
        assert.ok(Buffer.from(data.buffer, data.byteOffset + f.at, f.size).equals(want.get(f.path)!), `${f.path}: contents`);
        seen.files.add(f.path);
      }
    },
    largeBegin: () => (large = []),
    largeData: (c) => large.push(Buffer.from(c)),
    largeEnd: (e) => {
      assert.ok(Buffer.concat(large).equals(want.get(e.path)!), `${e.path}: contents (streamed)`);
      seen.files.add(e.path);
    },
  };
}

function entriesOf(list: TarCraftEntry[]): Map<string, Buffer> {
  const m = new Map<string, Buffer>();
  for (const e of list) if ((e.type ?? '0') === '0') m.set(e.name, Buffer.from(e.data ?? ''));
  return m;
}

test('a file cut at a batch buffer end at every offset (header, data, padding) arrives whole', async () => {
  const F = 1500;
  // 'pre' (8 KiB, streamed: larger than largeBytes) puts f's header at 8704 and its data at 9216;
  // a buffer of 9216 + c bytes then ends c bytes into f's data.
  const list: TarCraftEntry[] = [
    { name: 'pre', data: randomBytes(8192) },
    { name: 'f', data: randomBytes(F) },
    { name: 'g', data: randomBytes(700) },
    { name: 'e', data: '' },
    { name: 'd/', type: '5' },
    { name: 'h', data: randomBytes(3000) },
    { name: 'long/' + 'n'.repeat(150), data: randomBytes(1200), pax: { path: 'long/' + 'n'.repeat(150) } },
    { name: 's', type: '2', linkname: 'f' },
    ...Array.from({ length: 40 }, (_, i) => ({ name: `m${i}`, data: randomBytes((i * 97) % 1400) })),
  ];
  const bytes = craftTar(list);
  const want = entriesOf(list);
  for (let c = -600; c <= F + 100; c++) {
    const rand = rng(c + 1000);
    // Reads of 1 byte to 4 KiB, or whole buffers.
    const piece = c % 3 === 0 ? () => 1 << 20 : () => 1 + Math.floor(rand() * 4096);
    const seen = { files: new Set<string>(), batches: [] as BatchFile[][] };
    const sum = await walkTar(memoryInput(bytes, piece), 'mem', {}, { parallelism: 2, largeBytes: F, batchBytes: 9216 + c }, checkingConsumer(want, seen));
    assert.equal(sum.files, want.size, `cut at ${c}: files`);
    assert.deepEqual([...seen.files].sort(), [...want.keys()].sort(), `cut at ${c}: every file arrived`);
  }
});

test('a .tar file and zstd output are read into the batch buffers in place, files cut across them arrive whole', async () => {
  const dir = scratchDir('tc-tar-direct');
  const rand = rng(7);
  const list: TarCraftEntry[] = [];
  for (let i = 0; i < 1500; i++) list.push({ name: `t/d${i % 13}/f${i}`, data: randomBytes(1 + Math.floor(rand() * 5999)) });
  list.push({ name: 't/big', data: randomBytes(50_000) });
  const archive = join(dir, 'a.tar');
  fs.writeFileSync(archive, craftTar(list));
  sh(`zstd -q ${archive} -o ${archive}.zst`);
  const want = entriesOf(list);
  for (const a of [archive, `${archive}.zst`]) {
    const src = openTarSource(a)!;
    assert.ok(src.input.readInto, `${a}: a source that reads in place`);
    const seen = { files: new Set<string>(), batches: [] as BatchFile[][] };
    // 6,001-byte buffers: every file fits one, most buffers end inside a file.
    await walkTar(src.input, a, {}, { parallelism: 2, largeBytes: 6000, batchBytes: 6001 }, checkingConsumer(want, seen));
    assert.equal(seen.files.size, want.size, `${a}: every file arrived`);
    // In place: a batch's next file starts after the previous one's padded data and its own
    // header (512 bytes), where the stream put it; copied in, it would follow directly.
    const gaps = seen.batches.flatMap((b) => b.slice(1).map((f, i) => f.at - (b[i]!.at + Math.ceil(b[i]!.size / 512) * 512)));
    assert.ok(gaps.length > 100 && gaps.every((g) => g === 512), `${a}: files lie where the stream put them`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
});
