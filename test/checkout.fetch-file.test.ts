/**
 * fetchFile (materialize/fetch-file.ts), the direct checkout's path for blobs too large for memory:
 * the file takes its name only once its bytes match the digest, never replaces a name that exists
 * (a symlink least of all), restarts cleanly on a retry, and leaves no temporary file in any case.
 * The byte source here is a function handing chunks over; the same path against a real server is
 * in remote.direct.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { digestOf } from '../src/core/digest.js';
import { type FetchStream, fetchFile } from '../src/materialize/fetch-file.js';
import { tempDir } from './helpers/tmp.js';

const bytes = Buffer.alloc(3 << 20);
for (let i = 0; i < bytes.length; i += 4) bytes.writeUInt32LE((i * 2654435761) >>> 0, i);
const digest = digestOf(bytes);

/** Hands `bytes` over in 64 KiB chunks; with `retry`, first half of a wrong attempt, then restart. */
function source(body: Buffer, retry = false): FetchStream {
  return async (_d, sink, restart) => {
    if (retry) {
      for (let i = 0; i < body.length / 2; i += 65536) sink(Buffer.alloc(65536, 0x5a));
      restart();
    }
    for (let i = 0; i < body.length; i += 65536) sink(body.subarray(i, i + 65536));
    return { source: 'http://127.0.0.1:1/' };
  };
}

const leftovers = (dir: string) => fs.readdirSync(dir).filter((n) => n.startsWith('.treecast-'));

test('a verified file takes its name with the mode asked, after a restart too', async () => {
  const dir = tempDir('fetch-file');
  for (const retry of [false, true]) {
    const dst = join(dir, `big-${retry}.bin`);
    await fetchFile(dst, digest, 0o751, source(bytes, retry));
    assert.ok(fs.readFileSync(dst).equals(bytes));
    assert.equal(fs.statSync(dst).mode & 0o777, 0o751);
    assert.equal(fs.statSync(dst).nlink, 1, 'the temporary name is gone');
  }
  assert.deepEqual(leftovers(dir), []);
});

test('bytes that fail their digest create nothing at the name', async () => {
  const dir = tempDir('fetch-file');
  const bad = Buffer.from(bytes);
  bad[bad.length - 1]! ^= 1;
  await assert.rejects(fetchFile(join(dir, 'big.bin'), digest, 0o644, source(bad)), { code: 'ERR_TREECAST_DIGEST_MISMATCH' });
  assert.deepEqual(fs.readdirSync(dir), []);
});

test('a name that exists, a symlink to a file elsewhere, is neither replaced nor written through', async () => {
  const dir = tempDir('fetch-file');
  const outside = join(dir, 'outside.txt');
  fs.writeFileSync(outside, 'the user owns this\n');
  fs.mkdirSync(join(dir, 'tree'));
  const dst = join(dir, 'tree', 'big.bin');
  fs.symlinkSync(outside, dst);
  await assert.rejects(fetchFile(dst, digest, 0o644, source(bytes)), (e: NodeJS.ErrnoException) => e.code === 'ERR_TREECAST_FS' && /big\.bin/.test(e.message));
  assert.equal(fs.readFileSync(outside, 'utf8'), 'the user owns this\n');
  assert.equal(fs.readlinkSync(dst), outside);
  assert.deepEqual(leftovers(join(dir, 'tree')), []);
});
