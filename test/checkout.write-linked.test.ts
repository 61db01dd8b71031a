/**
 * writeLinked (materialize/write-linked.ts), a hardlink checkout's fetched blob written once: at the
 * target's name, then linked into the store. The store's name must only ever reach the file this
 * call wrote (not one put at the target's name meanwhile), never through a symlink, and where the
 * store is on another filesystem the target keeps a copy and the store its own write. The same
 * path against a real server, with corrupted bytes, is in remote.direct.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { digestOf } from '../src/core/digest.js';
import { createWritten, linkIntoStore, writeLinked } from '../src/materialize/write-linked.js';
import { LocalStore } from '../src/store/local.js';
import { tempDir } from './helpers/tmp.js';
import { canMount, withTmpfs } from './helpers/mounts.js';
import { leftoverTmp } from './helpers/remote.js';

const bytes = Buffer.from('int main(void) { return 0; }\n'.repeat(300));
const digest = digestOf(bytes);

function setup(): { dir: string; store: LocalStore; out: string } {
  const dir = tempDir('write-linked');
  const out = join(dir, 'out');
  fs.mkdirSync(out);
  return { dir, store: LocalStore.open(join(dir, 'store')), out };
}

test('the file is written once and is the store blob: one read-only inode at both names, no temporary name', () => {
  const { store, out } = setup();
  const dst = join(out, 'main.c');
  assert.deepEqual(writeLinked(store, digest, bytes, dst, 0o644), { used: 'hardlink' });
  const file = fs.statSync(dst);
  const blob = fs.statSync(store.blobPath(digest.hash));
  assert.equal(file.ino, blob.ino);
  assert.equal(file.nlink, 2);
  assert.equal(file.mode & 0o777, 0o444);
  assert.ok(fs.readFileSync(dst).equals(bytes));
  assert.equal(store.readSync(digest).length, bytes.length); // verifies
  assert.deepEqual(leftoverTmp(store.root), []);
});

test('an executable is written once and is the store blob\'s executable twin, mode 0555 whatever the umask; the plain blob stays its own inode', () => {
  const { store, out } = setup();
  store.putSync(bytes, digest); // the caller stores the plain blob first (apply-op.ts)
  const plain = fs.statSync(store.blobPath(digest.hash));
  const dst = join(out, 'run.sh');
  const umask = process.umask(0o077);
  try {
    assert.deepEqual(writeLinked(store, digest, bytes, dst, 0o700, true), { used: 'hardlink' });
  } finally {
    process.umask(umask);
  }
  const file = fs.statSync(dst);
  const twin = fs.statSync(store.executableBlobPath(digest.hash));
  assert.equal(file.ino, twin.ino);
  assert.equal(file.nlink, 2);
  assert.equal(file.mode & 0o777, 0o555);
  assert.ok(fs.readFileSync(dst).equals(bytes));
  const after = fs.statSync(store.blobPath(digest.hash));
  assert.equal(after.ino, plain.ino, 'the plain blob is the one stored before');
  assert.equal(after.mode & 0o777, plain.mode & 0o777);
  assert.equal(store.readSync(digest).length, bytes.length); // verifies
  assert.equal(store.executablePathSync(digest), store.executableBlobPath(digest.hash));
  assert.equal(fs.statSync(store.executableBlobPath(digest.hash)).ino, file.ino, 'the twin is taken as it is, not made again');
  assert.deepEqual(leftoverTmp(store.root), []);
});

test('a name that exists, a symlink to a file elsewhere, is neither replaced nor written through, and nothing is stored', () => {
  const { dir, store, out } = setup();
  const outside = join(dir, 'outside.txt');
  fs.writeFileSync(outside, 'the user owns this\n');
  const dst = join(out, 'main.c');
  fs.symlinkSync(outside, dst);
  assert.throws(() => writeLinked(store, digest, bytes, dst, 0o644), (e: NodeJS.ErrnoException) => e.code === 'ERR_TREECAST_FS' && e.message.includes(dst));
  assert.equal(fs.readFileSync(outside, 'utf8'), 'the user owns this\n');
  assert.equal(fs.readlinkSync(dst), outside);
  assert.equal(store.hasSync(digest), false);
});

for (const executable of [false, true])
for (const swapIn of ['file', 'symlink'] as const)
  test(`a ${swapIn} put at the name of ${executable ? 'an executable' : 'a file'} between the write and the link never enters the store, and is left where it is`, () => {
    const { dir, store, out } = setup();
    if (executable) store.putSync(bytes, digest);
    const dst = join(out, 'main.c');
    const fd = createWritten(dst, bytes, executable);
    // Another process replaces the file the checkout just wrote.
    const foreign = join(dir, 'foreign');
    if (swapIn === 'file') fs.writeFileSync(foreign, 'not the blob\n');
    else fs.symlinkSync('/etc/hostname', foreign);
    fs.renameSync(foreign, dst);
    assert.throws(
      () => linkIntoStore(store, digest, bytes, fd, dst, 0o644, executable),
      (e: NodeJS.ErrnoException & { path?: string }) => e.code === 'ERR_TREECAST_TARGET' && e.path === dst,
    );
    const linkedAt = executable ? store.executableBlobPath(digest.hash) : store.blobPath(digest.hash);
    assert.equal(fs.lstatSync(linkedAt, { throwIfNoEntry: false }), undefined, 'nothing at the name it was to be linked to');
    if (swapIn === 'file') assert.equal(fs.readFileSync(dst, 'utf8'), 'not the blob\n');
    else assert.equal(fs.readlinkSync(dst), '/etc/hostname');
    assert.deepEqual(leftoverTmp(store.root), []);
  });

test('a blob the store already holds is left as it is; the file keeps its own verified copy', () => {
  const { store, out } = setup();
  store.putSync(bytes, digest);
  const before = fs.statSync(store.blobPath(digest.hash));
  const dst = join(out, 'main.c');
  assert.deepEqual(writeLinked(store, digest, bytes, dst, 0o644), { used: 'copy' });
  assert.ok(fs.readFileSync(dst).equals(bytes));
  const after = fs.statSync(store.blobPath(digest.hash));
  assert.equal(after.ino, before.ino);
  assert.equal(after.nlink, 1);
});

test('a store on another filesystem (EXDEV): the file is a copy with the copy mode, the store holds its own verified blob', { skip: canMount() }, async () => {
  const { out } = setup();
  await withTmpfs('4m', async (mnt) => {
    const store = LocalStore.open(join(mnt, 'store'));
    const dst = join(out, 'main.c');
    assert.deepEqual(writeLinked(store, digest, bytes, dst, 0o640), { used: 'copy', fellBack: 'EXDEV' });
    const file = fs.statSync(dst);
    assert.equal(file.mode & 0o777, 0o640);
    assert.equal(file.nlink, 1);
    assert.ok(fs.readFileSync(dst).equals(bytes));
    assert.equal(store.readSync(digest).length, bytes.length); // verifies
    assert.equal(fs.statSync(store.blobPath(digest.hash)).mode & 0o777, 0o444);
    assert.deepEqual(leftoverTmp(store.root), []);
  });
});
