/**
 * A compressor that exits before pack has written the whole tar stream (its output failed: a full
 * disk, a reader gone) is never written to again. Node closes the pipe into it when it exits, so
 * the descriptor number is free for the next file the process opens; a write after that would
 * fail with EBADF, or land in that other file. The error is the compressor's own, typed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { TarOutput } from '../src/archive/tar-writer.js';

test('a write after the compressor died is its typed failure, never a write to a closed or reused descriptor', async () => {
  // zstd writes into /dev/full: its first output fails (ENOSPC) and it exits.
  const full = fs.openSync('/dev/full', 'w');
  const out = new TarOutput(full, '/dev/full', 'zstd', 1);
  fs.closeSync(full);
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((Math.imul(i, 2654435761) ^ (i >>> 5)) >>> 0, i);
  const errors: NodeJS.ErrnoException[] = [];
  const writeOnce = () => {
    try {
      out.write(chunk);
    } catch (e) {
      errors.push(e as NodeJS.ErrnoException);
    }
  };
  // Until a write fails: the compressor has met /dev/full (EPIPE here, if it is not yet seen to exit).
  for (let i = 0; i < 400 && errors.length === 0; i++) {
    writeOnce();
    await sleep(5);
  }
  // What that first failure stands for is the compressor's own cause, read once it has ended.
  const first = (await out.explain(errors[0])) as NodeJS.ErrnoException;
  // Once its exit has been seen, as after any await in pack, writes go on failing the same typed way.
  await sleep(300);
  writeOnce();
  writeOnce();
  out.abort();
  assert.ok(errors.length >= 3, 'the writes failed once the compressor was gone');
  for (const e of errors) assert.doesNotMatch(e.message, /EBADF/, 'never a write to a closed descriptor');
  for (const e of [first, errors.at(-1)!]) {
    assert.equal(e.code, 'ERR_TREECAST_NO_SPACE', e.message);
    assert.match(e.message, /^cannot write \/dev\/full: ENOSPC \(no space left on device, said zstd\)$/);
  }
});

test('a write failed for another reason is left as it is', async () => {
  const out = new TarOutput(1, 'stdout', 'zstd', 1);
  const other = Object.assign(new Error('cannot write stdout: EIO'), { syscallCode: 'EIO' });
  assert.equal(await out.explain(other), other);
  out.abort();
});
