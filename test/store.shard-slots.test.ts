/**
 * A blob's shard folder found sound is remembered by the two hex digits of the hashes it holds, one
 * slot for cas/ and one for cas-exec/ (LocalStore.checkShardOf): a sound shard must never vouch for
 * another shard, nor a blob's shard for its executable twin's, however close their names.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { LocalStore } from '../src/store/local.js';
import type { Digest } from '../src/core/digest.js';
import { StoreDamagedError } from '../src/errors.js';
import { importBlob } from '../src/materialize/import-file.js';
import { tempDir } from './helpers/tmp.js';

/** Stores blobs until one in a shard `h0` and one in a shard `hN` (same first digit, N not 0). */
function twoNeighbours(store: LocalStore): [Digest, Digest] {
  const zero = new Map<string, Digest>();
  const other = new Map<string, Digest>();
  for (let i = 0; ; i++) {
    const d = store.putSync(Buffer.from(`blob ${i}\n`));
    const h = d.hash[0]!;
    if (d.hash[1] === '0') zero.set(h, d);
    else other.set(h, d);
    if (zero.has(h) && other.has(h)) return [zero.get(h)!, other.get(h)!];
  }
}

/** Moves folder `dir` outside the store and links it back: the blobs there keep their right bytes. */
function plantLink(dir: string, outside: string): void {
  fs.renameSync(dir, outside);
  fs.symlinkSync(outside, dir);
}

const damagedAt = (p: string) => (e: unknown) => e instanceof StoreDamagedError && e.message.includes(p);

test('a sound blob shard never vouches for a neighbouring shard that is a symlink (stat, open, link and copy of its blob refused)', () => {
  const dir = tempDir();
  const root = join(dir, 's');
  const [x, y] = twoNeighbours(LocalStore.open(root));
  const yShard = join(root, 'cas', y.hash.slice(0, 2));
  plantLink(yShard, join(dir, 'outside'));
  // A fresh process's view: x's shard is found sound first, by each call that checks it.
  const store = new LocalStore(root);
  assert.equal(store.blobFileStat(x)?.size, x.size);
  fs.closeSync(store.openBlobFile(x));
  assert.throws(() => store.blobFileStat(y), damagedAt(yShard));
  assert.throws(() => store.openBlobFile(y), damagedAt(yShard));
  for (const method of ['hardlink', 'copy'] as const) {
    const dst = join(dir, `out-${method}`);
    assert.throws(() => importBlob(store, y, dst, method, false, 0o644), damagedAt(yShard), method);
    assert.equal(fs.existsSync(dst), false, `nothing written by ${method}`);
  }
  // x itself still links and copies.
  importBlob(store, x, join(dir, 'x-link'), 'hardlink', false, 0o644);
  importBlob(store, x, join(dir, 'x-copy'), 'copy', false, 0o644);
  assert.equal(fs.readFileSync(join(dir, 'x-copy'), 'utf8'), fs.readFileSync(store.blobPath(x.hash), 'utf8'));
});

test("a sound blob shard never vouches for its executable twins' shard that is a symlink", () => {
  const dir = tempDir();
  const root = join(dir, 's');
  const maker = LocalStore.open(root);
  const d = maker.putSync(Buffer.from('#!/bin/sh\necho twin\n'));
  const twin = maker.executablePathSync(d);
  const twinShard = join(root, 'cas-exec', d.hash.slice(0, 2));
  plantLink(twinShard, join(dir, 'outside'));
  const store = new LocalStore(root);
  // The plain blob's shard, cas/ of the same two digits, is sound and found so first.
  assert.equal(store.blobFileStat(d)?.size, d.size);
  fs.closeSync(store.openBlobFile(d));
  assert.throws(() => store.blobFileStat(d, true), damagedAt(twinShard));
  // Told the plain blob's role with the twin's path, the path still decides which shard is checked.
  assert.throws(() => store.blobFileStat(d, false, twin), damagedAt(twinShard));
  assert.throws(() => store.openBlobFile(d, twin), damagedAt(twinShard));
  const dst = join(dir, 'tool');
  assert.throws(() => importBlob(store, d, dst, 'hardlink', true, 0o755), damagedAt(twinShard));
  assert.equal(fs.existsSync(dst), false, 'nothing linked');
});
