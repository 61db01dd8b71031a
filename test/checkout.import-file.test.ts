/**
 * A file that appears at a checkout's destination between planning and writing (another program,
 * a name that folds onto another) is never the checkout's to remove: each way of putting a blob at
 * a path fails on the existing name, names it, and leaves it exactly as it was.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { LocalStore } from '../src/store/local.js';
import { importBlob, writeBytes, type ImportMethod } from '../src/materialize/import-file.js';
import { tempDir } from './helpers/tmp.js';

function setup() {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  const small = Buffer.from('tree contents\n');
  const large = Buffer.alloc(300 << 10, 7); // past the small-copy path: copyFileSync
  return { dir, store, small, large, smallDigest: store.putSync(small), largeDigest: store.putSync(large) };
}

const occupied = (dir: string, name: string) => {
  const p = join(dir, name);
  fs.writeFileSync(p, 'the user wrote this\n');
  return p;
};

const unchanged = (p: string) => assert.equal(fs.readFileSync(p, 'utf8'), 'the user wrote this\n', `${p} must be left as it was`);

test('writeBytes onto an existing name fails naming it, and leaves the file there', () => {
  const { dir, small } = setup();
  const p = occupied(dir, 'w');
  assert.throws(() => writeBytes(p, small, 0o644), (e: Error) => e.message.includes(p));
  unchanged(p);
});

for (const method of ['copy', 'clone', 'hardlink'] as ImportMethod[]) {
  for (const which of ['small', 'large'] as const) {
    test(`importBlob (${method}, ${which} blob) onto an existing name fails naming it, and leaves the file there`, () => {
      const s = setup();
      const p = occupied(s.dir, `${method}-${which}`);
      const d = which === 'small' ? s.smallDigest : s.largeDigest;
      assert.throws(() => importBlob(s.store, d, p, method, false, 0o644), (e: Error) => e.message.includes(p));
      unchanged(p);
    });
  }
}

test('writeBytes creates a new file with the bytes and mode', () => {
  const { dir, small } = setup();
  const p = join(dir, 'new');
  writeBytes(p, small, 0o640);
  assert.deepEqual(fs.readFileSync(p), small);
  assert.equal(fs.statSync(p).mode & 0o777, 0o640);
});
