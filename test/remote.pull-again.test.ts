/**
 * Pulling a tree again after a complete pull: no request and no read while the store is as the
 * pull left it; a full check again once any blob was added or removed, whoever did it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { parseDigest } from '../src/core/digest.js';
import { LocalStore } from '../src/store/local.js';
import { SETTLE_MS, markComplete, readComplete, settledStateHolding, shardState } from '../src/store/completeness.js';
import { treeBlobs } from '../src/remote/push.js';
import { RemoteFetcher } from '../src/remote/fetch.js';
import { json, runCli, type TestServer } from './helpers/remote.js';
import { useRemoteFixture } from './helpers/remote-fixture.js';

let dir: string;
let s: TestServer;
let root: string;

useRemoteFixture('pull-again', { tree: { dirs: 20, files: 10 } }, (f) => ({ dir, server: s, root } = f));

const pull = async (store: string) => json(await runCli(['pull', root, s.url, '--store', store, '--json']));

test('a pull again after a complete pull makes no request and reports the whole tree present', async () => {
  const store = join(dir, 'again');
  const first = await pull(store);
  assert.ok((first.fetched as number) > 0);
  const before = s.log.length;
  const again = await pull(store);
  assert.equal(s.log.length, before, 'the server saw no request');
  assert.equal(again.requests, 0);
  assert.equal(again.fetched, 0);
  assert.equal(again.files, first.files);
  assert.equal(again.directories, first.directories);
  assert.equal(again.skipped, (first.fetched as number) + (first.skipped as number));
});

test('a pull again after a blob was removed by hand, by verify --repair or by gc fetches exactly it', async () => {
  const store = join(dir, 'removed');
  await pull(store);
  const local = LocalStore.open(store);
  const { files } = treeBlobs(local, local.resolve(root));

  // By hand.
  fs.unlinkSync(local.blobPath(files[0]!.hash));
  let before = s.log.length;
  let again = await pull(store);
  assert.equal(again.fetched, 1);
  assert.deepEqual(s.log.slice(before).flatMap((e) => e.sent ?? []), [files[0]!.hash]);

  // By verify --repair, after the bytes went bad in place (which alone changes no folder).
  const p = local.blobPath(files[1]!.hash);
  fs.chmodSync(p, 0o644);
  fs.writeFileSync(p, 'not the blob');
  const repaired = await runCli(['verify', '--repair', '--store', store]);
  assert.match(repaired.stdout, new RegExp(files[1]!.hash));
  before = s.log.length;
  again = await pull(store);
  assert.equal(again.fetched, 1);
  assert.deepEqual(s.log.slice(before).flatMap((e) => e.sent ?? []), [files[1]!.hash]);

  // By gc: with no ref, the whole tree is unreachable and goes.
  const gc = json(await runCli(['gc', '--grace', '0', '--store', store, '--json']));
  assert.ok((gc.removed as string[]).length > files.length);
  again = await pull(store);
  assert.equal(again.fetched, (again.files as number) + (again.directories as number));
});

test('a blob added to the store makes the next pull check the tree in full, and the one after that is free again', async () => {
  const store = join(dir, 'added');
  await pull(store);
  LocalStore.open(store).putSync(Buffer.from('something else entirely'));
  let before = s.log.length;
  const checked = await pull(store);
  assert.ok(s.log.length > before, 'the full check asked the server about the tree');
  assert.equal(checked.fetched, 0);
  before = s.log.length;
  const free = await pull(store);
  assert.equal(s.log.length, before);
  assert.equal(free.requests, 0);
});

test('the library pull takes the same shortcut', async () => {
  const store = LocalStore.open(join(dir, 'library'));
  const digest = parseDigest(root);
  for (const expectRequests of [true, false]) {
    const f = new RemoteFetcher(store, { url: s.url });
    try {
      const r = await f.pull(digest);
      assert.equal(r.requests > 0, expectRequests);
    } finally {
      await f.close();
    }
  }
});

test('a bad URL is refused even when the tree is complete', async () => {
  const store = join(dir, 'url');
  await pull(store);
  const r = await runCli(['pull', root, 'ftp://example.invalid/', '--store', store]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unsupported URL scheme/);
});

test('a shard state is taken only once every change is older than a clock tick, and any later change shows', async () => {
  const store = LocalStore.open(join(dir, 'settle'));
  const one = store.putSync(Buffer.from('one'));
  const changed = fs.statSync(join(store.root, 'cas', one.hash.slice(0, 2))).mtimeMs;
  const state = await settledStateHolding(store.root, [], false);
  assert.ok(Date.now() >= changed + SETTLE_MS, 'waited out the tick of the last change');
  assert.equal(shardState(store.root), state);
  // Same shard as 'one' or not, a new name changes some folder.
  store.putSync(Buffer.from('two'));
  assert.notEqual(shardState(store.root), state);
});

for (const list of [true, false]) {
  test(`the state a pull records is taken only if every blob is there after it (${list ? 'by listing each folder' : 'by one access each'})`, async () => {
    const store = LocalStore.open(join(dir, `holding-${list}`));
    const blobs = Array.from({ length: 40 }, (_, i) => store.putSync(Buffer.from(`blob ${i}`)));
    const state = await settledStateHolding(store.root, [...blobs, { hash: blobs[0]!.hash.replace(/.$/, (c) => (c === '0' ? '1' : '0')), size: 0 }], list);
    assert.equal(state, shardState(store.root), 'the settled state of every folder (an empty blob needs no file)');
    const gone = blobs[7]!;
    store.removeBlobSync(gone.hash);
    assert.equal(await settledStateHolding(store.root, blobs, list), undefined, 'a blob removed by hand');
    // A blob removed while its folder is still settling, after the call began, is seen: the folder
    // is looked at only once its own state is settled and taken. (Its mtime is set 300 ms ahead so
    // it is still settling when the call starts, however loaded the machine.)
    const victim = store.putSync(Buffer.from('victim'));
    const folder = join(store.root, 'cas', victim.hash.slice(0, 2));
    fs.utimesSync(folder, new Date(), new Date(Date.now() + 300));
    const rest = blobs.filter((b) => b !== gone);
    const holding = settledStateHolding(store.root, [...rest, victim], list);
    store.removeBlobSync(victim.hash);
    assert.equal(await holding, undefined, 'removed before its settling folder was looked at');
  });
}

test('a record is refused when damaged or when the store changed after the state it names', async () => {
  const store = LocalStore.open(join(dir, 'record'));
  const d = store.putSync(Buffer.from('tree'));
  const state = (await settledStateHolding(store.root, [], false))!;
  markComplete(store.root, d, { state, directories: 1, files: 2 });
  assert.deepEqual(readComplete(store.root, d), { state, directories: 1, files: 2 });
  fs.writeFileSync(join(store.root, 'complete', d.hash), '{"state": 1');
  assert.equal(readComplete(store.root, d), undefined);
  markComplete(store.root, d, { state, directories: 1, files: 2 });
  fs.unlinkSync(store.blobPath(d.hash));
  assert.equal(readComplete(store.root, d), undefined);
});
