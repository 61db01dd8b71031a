import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { LocalStore, defaultStorePath } from '../src/store/local.js';
import { EMPTY_DIGEST, digestOf, formatDigest, parseDigest } from '../src/core/digest.js';
import { BlobNotFoundError, CaptureError, DigestMismatchError, FileSystemError, InvalidDigestError, InvalidRefNameError, NotAStoreError, RefNotFoundError, StoreDamagedError } from '../src/errors.js';
import { gcStore, verifyStore } from '../src/store/maintenance.js';
import { snapshot } from '../src/capture/snapshot.js';
import { checkout } from '../src/materialize/checkout.js';
import { tempDir, writeTree } from './helpers/tmp.js';

test('blobs are stored read-only under their hash and read back verified', () => {
  const store = LocalStore.open(join(tempDir(), 's'));
  const d = store.putSync(Buffer.from('hello\n'));
  assert.equal(formatDigest(d), '5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03/6');
  assert.equal(fs.statSync(store.blobPath(d.hash)).mode & 0o777, 0o444);
  assert.equal(store.readSync(d).toString(), 'hello\n');
  assert.equal(fs.readdirSync(join(store.root, 'tmp')).length, 0, 'no temp file left behind');
});

test('a store is made only in a new or empty folder, never among the files of a folder that is not a store', () => {
  const base = tempDir();
  // The user's own folder, with a tmp/ and a trees/ of theirs (gc would sweep a store's).
  const mine = join(base, 'project');
  writeTree(mine, { 'notes.txt': 'mine\n', 'tmp/draft': 'draft\n', 'trees/oak': 'leaf\n' });
  const before = fs.readdirSync(mine).sort();
  assert.throws(() => LocalStore.open(mine), (e: unknown) => e instanceof NotAStoreError && e.path === mine && /not a treecast store and is not empty/.test(e.message));
  assert.deepEqual(fs.readdirSync(mine).sort(), before, 'nothing is written into the folder');
  // New, empty, or holding only a volume's lost+found: a store is made there.
  fs.mkdirSync(join(base, 'empty'));
  fs.mkdirSync(join(base, 'volume', 'lost+found'), { recursive: true });
  for (const name of ['new', 'empty', 'volume']) {
    const s = LocalStore.open(join(base, name));
    assert.equal(s.readSync(s.putSync(Buffer.from(name))).toString(), name);
  }
  // A store opened again, and one whose making stopped after cas/ (the first folder made).
  assert.doesNotThrow(() => LocalStore.open(join(base, 'new')));
  fs.mkdirSync(join(base, 'half', 'cas'), { recursive: true });
  assert.doesNotThrow(() => LocalStore.open(join(base, 'half')));
  assert.ok(fs.existsSync(join(base, 'half', 'tmp')));
});

test('the empty blob always exists and is never stored', () => {
  const store = LocalStore.open(join(tempDir(), 's'));
  assert.ok(store.hasSync(EMPTY_DIGEST));
  assert.deepEqual(store.putSync(Buffer.alloc(0)), EMPTY_DIGEST);
  assert.equal(store.readSync(EMPTY_DIGEST).length, 0);
  assert.equal(fs.existsSync(store.blobPath(EMPTY_DIGEST.hash)), false);
});

test('put with an expected digest refuses bytes that do not match, and stores nothing', () => {
  const store = LocalStore.open(join(tempDir(), 's'));
  const wrong = digestOf(Buffer.from('other'));
  assert.throws(() => store.putSync(Buffer.from('bytes'), wrong), DigestMismatchError);
  assert.equal([...store.listHashes()].length, 0);
});

test('a corrupt blob is reported by digest on read, and found and removed by verify --repair', () => {
  const store = LocalStore.open(join(tempDir(), 's'));
  const d = store.putSync(Buffer.from('precious'));
  const good = store.putSync(Buffer.from('fine'));
  fs.chmodSync(store.blobPath(d.hash), 0o644);
  fs.writeFileSync(store.blobPath(d.hash), 'tampered');
  assert.throws(() => store.readSync(d), (e: unknown) => e instanceof DigestMismatchError && e.message.includes(d.hash));
  const report = verifyStore(store, false);
  assert.equal(report.corrupt.length, 1);
  assert.equal(report.corrupt[0]!.hash, d.hash);
  verifyStore(store, true);
  assert.equal(store.hasSync(d), false);
  assert.equal(store.hasSync(good), true);
});

test("a blob the store cannot read because its folder is a file (or its name a folder) names the blob and that cause, not a bare 'is not a directory'", async () => {
  const dir = tempDir();
  const root = join(dir, 's');
  const store = LocalStore.open(root);
  writeTree(join(dir, 'src'), { f: 'hello\n' });
  const tree = (await snapshot(join(dir, 'src'), { store })).digest;
  const d = digestOf(Buffer.from('hello\n'));
  const shard = join(root, 'cas', d.hash.slice(0, 2));
  fs.chmodSync(shard, 0o755);
  fs.rmSync(shard, { recursive: true });
  fs.writeFileSync(shard, 'not a folder');
  assert.throws(
    () => store.readSync(d),
    (e: FileSystemError) => {
      assert.equal(e.message, `cannot read blob ${formatDigest(d)} in the store ${root}: ${shard} is a file where the store needs a folder (ENOTDIR)`);
      assert.equal(e.path, shard);
      assert.equal(e.digest, formatDigest(d));
      assert.match(e.hint ?? '', /the store is damaged there: move .* away/);
      return e instanceof FileSystemError && e.exitCode === 7;
    },
  );
  // A checkout copying or linking the blob says the same, not 'cannot write' the target's file.
  for (const method of ['copy', 'hardlink'] as const) {
    const out = join(root, '..', `out-${method}`);
    await assert.rejects(checkout(tree, out, { store, method, jobs: 1 }), (e: FileSystemError) => e.message.startsWith(`cannot read blob ${formatDigest(d)} in the store ${root}: ${shard} is a file`) && e.path === shard);
  }
  fs.rmSync(shard);
  fs.mkdirSync(store.blobPath(d.hash), { recursive: true });
  assert.throws(() => store.readSync(d), (e: FileSystemError) => e.message === `cannot read blob ${formatDigest(d)} in the store ${root}: ${store.blobPath(d.hash)} is a directory, not the blob's file (EISDIR)`);
});

test('missing blobs, malformed digests and bad ref names are typed errors', () => {
  const store = LocalStore.open(join(tempDir(), 's'));
  assert.throws(() => store.readSync(digestOf(Buffer.from('absent'))), BlobNotFoundError);
  assert.throws(() => parseDigest('abc/12'), InvalidDigestError);
  assert.throws(() => parseDigest(`${'A'.repeat(64)}/1`), InvalidDigestError);
  assert.throws(() => store.resolve(`${'a'.repeat(64)}/x`), InvalidDigestError);
  assert.throws(() => store.resolve('no-such-ref'), RefNotFoundError);
  for (const bad of ['../x', 'a/../b', '/abs', 'x.lock', '', 'a//b']) assert.throws(() => store.writeRef(bad, EMPTY_DIGEST), InvalidRefNameError, bad);
});

test('refs are written atomically, listed, and resolve wherever a digest is accepted', () => {
  const store = LocalStore.open(join(tempDir(), 's'));
  const d = store.putSync(Buffer.from('x'));
  store.writeRef('release/v1', d);
  store.writeRef('main', EMPTY_DIGEST);
  assert.deepEqual(store.resolve('release/v1'), d);
  assert.deepEqual(store.listRefs().map((r) => r.name), ['main', 'release/v1']);
});

test('the store location follows --store, then TREECAST_STORE, then XDG_CACHE_HOME, then ~/.cache', () => {
  assert.equal(defaultStorePath('/x/y', {}), '/x/y');
  assert.equal(defaultStorePath(undefined, { TREECAST_STORE: '/s' }), '/s');
  assert.equal(defaultStorePath(undefined, { XDG_CACHE_HOME: '/c' }), '/c/treecast');
  assert.match(defaultStorePath(undefined, {}), /\/\.cache\/treecast$/);
});

test('ingest refuses a file that changed since it was listed, and stores nothing', () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  const f = join(dir, 'f');
  fs.writeFileSync(f, 'version one');
  const st = fs.statSync(f);
  fs.writeFileSync(f, 'version two is longer');
  assert.throws(() => store.ingestFileSync(f, { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs }), CaptureError);
  assert.equal([...store.listHashes()].length, 0);
});

test('gc removes only blobs that no ref reaches; --dry-run removes nothing', async () => {
  const dir = tempDir();
  const store = LocalStore.open(join(dir, 's'));
  writeTree(join(dir, 'kept'), { 'a.txt': 'kept' });
  await snapshot(join(dir, 'kept'), { store, ref: 'keep' });
  const orphan = store.putSync(Buffer.from('orphan'));
  const dry = gcStore(store, { dryRun: true, graceSeconds: 0 });
  assert.deepEqual(dry.removed, [orphan.hash]);
  assert.ok(store.hasSync(orphan));
  gcStore(store, { dryRun: false, graceSeconds: 0 });
  assert.equal(store.hasSync(orphan), false);
  assert.equal(verifyStore(store, false).corrupt.length, 0);
  assert.equal(store.readSync(store.putSync(Buffer.from('kept'))).toString(), 'kept');
  // Within the grace period nothing unreachable is removed (a snapshot may still be writing it).
  const young = store.putSync(Buffer.from('young'));
  gcStore(store, { dryRun: false, graceSeconds: 3600 });
  assert.ok(store.hasSync(young));
});

test('two processes snapshotting overlapping trees into one store at once both succeed', async () => {
  const dir = tempDir();
  const storeDir = join(dir, 's');
  const shared: Record<string, string> = {};
  for (let i = 0; i < 300; i++) shared[`d${i % 7}/f${i}`] = `shared ${i}\n`.repeat(i % 50);
  writeTree(join(dir, 'one'), { ...shared, 'only-one': '1' });
  writeTree(join(dir, 'two'), { ...shared, 'only-two': '2' });
  const bin = new URL('../../bin/treecast', import.meta.url).pathname;
  const run = (src: string) =>
    new Promise<string>((resolve, reject) => {
      const p = spawn(process.execPath, [bin, 'snapshot', src, '--store', storeDir, '--jobs', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      p.stdout.on('data', (c) => (out += c));
      p.stderr.on('data', (c) => (err += c));
      p.on('close', (code) => (code === 0 ? resolve(out.trim().split('\n').pop()!) : reject(new Error(`exit ${code}: ${err}`))));
    });
  const [a, b] = await Promise.all([run(join(dir, 'one')), run(join(dir, 'two'))]);
  const store = LocalStore.open(storeDir);
  assert.equal(verifyStore(store, false).corrupt.length, 0);
  assert.equal(fs.readdirSync(join(storeDir, 'tmp')).length, 0);
  const again = await snapshot(join(dir, 'one'), { store: LocalStore.open(join(dir, 'fresh')) });
  assert.equal(formatDigest(again.digest), a);
  assert.notEqual(a, b);
});

test('a shard folder replaced by a symlink is refused by reads and checkouts, also after other shards were found sound', async () => {
  const dir = tempDir();
  const root = join(dir, 's');
  const store = LocalStore.open(root);
  // Two contents whose blobs sit in different shard folders.
  const a = 'first\n';
  let b = 'second 0\n';
  for (let i = 1; digestOf(Buffer.from(b)).hash.slice(0, 2) === digestOf(Buffer.from(a)).hash.slice(0, 2); i++) b = `second ${i}\n`;
  writeTree(join(dir, 'ta'), { f: a });
  writeTree(join(dir, 'tb'), { f: b });
  const ta = (await snapshot(join(dir, 'ta'), { store })).digest;
  const tb = (await snapshot(join(dir, 'tb'), { store })).digest;
  const da = digestOf(Buffer.from(a));
  const db = digestOf(Buffer.from(b));
  // A fresh store object (as a new process has), which finds A's shard sound first.
  const fresh = new LocalStore(root);
  assert.equal(fresh.readSync(da).toString(), a);
  for (const method of ['copy', 'hardlink'] as const) await checkout(ta, join(dir, `a-${method}`), { store: fresh, method });
  // B's shard moved away and a symlink to it planted in its place: the blob's bytes are still right.
  const shard = join(root, 'cas', db.hash.slice(0, 2));
  const moved = join(dir, 'elsewhere');
  fs.renameSync(shard, moved);
  fs.symlinkSync(moved, shard);
  const refused = (e: unknown) => e instanceof StoreDamagedError && e.path === shard && e.message.includes('not a folder of blobs');
  assert.throws(() => fresh.readSync(db), refused);
  for (const method of ['copy', 'hardlink'] as const) {
    const out = join(dir, `b-${method}`);
    await assert.rejects(checkout(tb, out, { store: fresh, method }), refused, method);
    assert.equal(fs.existsSync(join(out, 'f')), false, `${method}: nothing written through the link`);
  }
});
