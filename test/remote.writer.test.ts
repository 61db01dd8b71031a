import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { digestOf } from '../src/core/digest.js';
import { LocalStore } from '../src/store/local.js';
import { StoreWriter } from '../src/remote/store-writer.js';
import { BlobReceiver } from '../src/remote/receiver.js';
import { leftoverTmp, removeDir, tempDir } from './helpers/remote.js';

function packed(bufs: Buffer[]): ArrayBuffer {
  const all = Buffer.concat(bufs);
  const ab = new ArrayBuffer(all.length);
  all.copy(Buffer.from(ab));
  return ab;
}

test('the store writer thread stores verified blobs and refuses a bad one, naming it and the source', async () => {
  const dir = tempDir('writer');
  const w = new StoreWriter(join(dir, 's'));
  try {
    const store = LocalStore.open(join(dir, 's'));
    const a = Buffer.from('alpha');
    const b = Buffer.from('bravo');
    assert.equal(await w.write([digestOf(a), digestOf(b)], packed([a, b]), 'http://peer/'), 2);
    assert.equal(store.readSync(digestOf(b)).toString(), 'bravo');
    const c = Buffer.from('charlie');
    const claimed = digestOf(Buffer.from('delta!!'));
    await assert.rejects(w.write([claimed, digestOf(c)], packed([Buffer.from('DELTA!!'), c]), 'http://peer/'), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'ERR_TREECAST_DIGEST_MISMATCH');
      assert.match(e.message, new RegExp(`${claimed.hash}/7 from http://peer/`));
      return true;
    });
    assert.equal(store.hasSync(claimed), false);
    assert.equal(store.hasSync(digestOf(c)), true, 'the valid blob of the batch is kept');
    assert.deepEqual(leftoverTmp(join(dir, 's')), []);
  } finally {
    await w.close();
    removeDir(dir);
  }
});

test('a streamed receiver stores only when hash and size match, and cleans up otherwise', () => {
  const dir = tempDir('rx');
  try {
    const store = LocalStore.open(join(dir, 's'));
    const big = Buffer.alloc(5 << 20, 3); // above the in-memory limit: goes through a tmp file
    const d = digestOf(big);
    let rx = new BlobReceiver(store, d, d.size, 'peer');
    for (let i = 0; i < big.length; i += 65536) rx.write(big.subarray(i, i + 65536));
    rx.finish();
    assert.equal(store.hasSync(d), true);
    const other = Buffer.alloc(5 << 20, 4);
    rx = new BlobReceiver(store, { hash: digestOf(other).hash, size: other.length }, other.length, 'peer');
    rx.write(big.subarray(0, 1 << 20));
    rx.write(other.subarray(1 << 20));
    assert.throws(() => rx.finish(), /refused/);
    assert.equal(store.hasSync(digestOf(other)), false);
    rx = new BlobReceiver(store, { hash: d.hash, size: 10 }, 10, 'peer');
    assert.throws(() => rx.write(Buffer.alloc(11)), /more than 10 bytes/);
    assert.deepEqual(leftoverTmp(join(dir, 's')), []);
  } finally {
    removeDir(dir);
  }
});
