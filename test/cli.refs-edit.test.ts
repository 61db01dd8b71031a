/** `treecast refs --delete NAME...` and `refs --rename OLD NEW [--force]` on a real store. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { digestOf, formatDigest, parseDigest } from '../src/core/digest.js';
import { lockStoreForGc } from '../src/fs/target-guard.js';
import { LocalStore } from '../src/store/local.js';
import { describeTree, tempDir, writeTree } from './helpers/tmp.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

function tc(args: string[], store: string) {
  const r = spawnSync(process.execPath, [bin, ...args], { env: { ...process.env, TREECAST_STORE: store }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A store with two trees: `one` under refs a and team/x, `two` under b. */
function setUp() {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'one'), { f: 'first tree file', 'd/g': 'first tree, deeper' });
  writeTree(join(dir, 'two'), { f: 'second tree file' });
  const snap = (src: string, ref: string) => {
    const r = tc(['snapshot', join(dir, src), '--ref', ref], store);
    assert.equal(r.code, 0, r.err);
    return r.out.trim().split('\n').pop()!;
  };
  const one = snap('one', 'a');
  assert.equal(snap('one', 'team/x'), one);
  const two = snap('two', 'b');
  const refs = () => (JSON.parse(tc(['refs', '--json'], store).out) as { name: string; digest: string }[]).map((r) => `${r.name} ${r.digest}`);
  return { dir, store, one, two, refs };
}

/** Everything under `dir` except the store, to show a command touched nothing outside it. */
function outsideStore(dir: string): string[] {
  return describeTree(dir).filter((l) => !/^[DFL] s(\/|$| )/.test(l));
}

test('refs --delete removes the names and keeps every blob; gc then removes the tree; empty ref folders go', () => {
  const { dir, store, one, two, refs } = setUp();
  const local = new LocalStore(store);
  const before = outsideStore(dir);
  const blobs = [digestOf(Buffer.from('first tree file')), digestOf(Buffer.from('first tree, deeper')), parseDigest(one)];

  const r = tc(['refs', '--delete', 'a', 'team/x', '--json'], store);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(JSON.parse(r.out), { ok: true, deleted: [{ name: 'a', digest: one }, { name: 'team/x', digest: one }] });
  assert.deepEqual(refs(), [`b ${two}`]);
  assert.equal(fs.existsSync(join(store, 'refs', 'team')), false, 'the empty folder of refs is removed');
  for (const b of blobs) assert.ok(local.hasSync(b), `${formatDigest(b)} is kept by the delete`);
  assert.deepEqual(outsideStore(dir), before, 'nothing outside the store touched');

  const gc = tc(['gc', '--grace', '0', '--json'], store);
  assert.equal(gc.code, 0, gc.err);
  for (const b of blobs) assert.ok(!local.hasSync(b), `${formatDigest(b)} is removed by gc once no ref reaches it`);
  assert.ok(local.hasSync(digestOf(Buffer.from('second tree file'))), 'the tree still named is kept');

  const text = tc(['refs', '--delete', 'b'], store);
  assert.equal(text.code, 0, text.err);
  assert.equal(text.out, `deleted b (was ${two})\n`);
});

test('refs --delete refuses a missing ref (exit 3) or an invalid name (exit 2) and then deletes none', () => {
  const { store, one, two, refs } = setUp();
  const all = refs();
  const missing = tc(['refs', '--delete', 'a', 'nope'], store);
  assert.equal(missing.code, 3, missing.err);
  assert.match(missing.err, /ERR_TREECAST_REF_NOT_FOUND/);
  assert.ok(missing.err.includes("no ref 'nope'"), missing.err);
  // A folder of refs is no ref either.
  const folder = tc(['refs', '--delete', 'team'], store);
  assert.equal(folder.code, 3, folder.err);
  for (const bad of ['../b', 'a..b', 'team/', '.hidden', `${'ab'.repeat(20)}`, 'x.lock']) {
    const r = tc(['refs', '--delete', 'a', bad], store);
    assert.equal(r.code, 2, `${bad}: ${r.err}`);
    assert.match(r.err, /ERR_TREECAST_INVALID_REF|ERR_TREECAST_USAGE/, bad);
  }
  const json = tc(['refs', '--delete', 'nope', '--json'], store);
  assert.equal(json.code, 3);
  assert.equal(JSON.parse(json.out).error.code, 'ERR_TREECAST_REF_NOT_FOUND');
  assert.deepEqual(refs(), all, 'no ref was deleted');
  assert.deepEqual(all, [`a ${one}`, `b ${two}`, `team/x ${one}`]);
  assert.equal(tc(['refs', '--delete'], store).code, 2, 'no NAME');
});

test('refs --rename moves a name; onto an existing ref only with --force; missing OLD exit 3; invalid names exit 2', () => {
  const { dir, store, one, two, refs } = setUp();
  const before = outsideStore(dir);

  const r = tc(['refs', '--rename', 'team/x', 'releases/v1', '--json'], store);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(JSON.parse(r.out), { ok: true, renamed: { from: 'team/x', to: 'releases/v1', digest: one, replaced: null } });
  assert.deepEqual(refs(), [`a ${one}`, `b ${two}`, `releases/v1 ${one}`]);
  assert.equal(fs.existsSync(join(store, 'refs', 'team')), false);

  const clash = tc(['refs', '--rename', 'a', 'b'], store);
  assert.equal(clash.code, 2, clash.err);
  assert.match(clash.err, /ERR_TREECAST_REF_EXISTS/);
  assert.match(clash.err, /--force/);
  assert.deepEqual(refs(), [`a ${one}`, `b ${two}`, `releases/v1 ${one}`], 'nothing changed');

  const forced = tc(['refs', '--rename', 'a', 'b', '--force', '--json'], store);
  assert.equal(forced.code, 0, forced.err);
  assert.deepEqual(JSON.parse(forced.out).renamed, { from: 'a', to: 'b', digest: one, replaced: two });
  assert.deepEqual(refs(), [`b ${one}`, `releases/v1 ${one}`]);

  const missing = tc(['refs', '--rename', 'nope', 'c'], store);
  assert.equal(missing.code, 3, missing.err);
  assert.match(missing.err, /ERR_TREECAST_REF_NOT_FOUND/);
  for (const [from, to] of [['b', 'c..d'], ['b..', 'c'], ['b', `${'cd'.repeat(20)}/1`], ['b', '/c']]) {
    const bad = tc(['refs', '--rename', from!, to!], store);
    assert.equal(bad.code, 2, `${from} -> ${to}: ${bad.err}`);
    assert.match(bad.err, /ERR_TREECAST_INVALID_REF/);
  }
  // A name another ref is in the way of, as a write refuses it.
  const inTheWay = tc(['refs', '--rename', 'b', 'releases/v1/sub'], store);
  assert.equal(inTheWay.code, 2, inTheWay.err);
  assert.match(inTheWay.err, /ERR_TREECAST_INVALID_REF/);
  for (const args of [['--rename', 'b'], ['--rename', 'b', 'c', 'd'], ['--delete', 'b', '--rename'], ['--force', '--delete', 'b'], ['--delete', 'b', '--remote', 'http://127.0.0.1:9']]) {
    const u = tc(['refs', ...args], store);
    assert.equal(u.code, 2, `${args.join(' ')}: ${u.err}`);
    assert.match(u.err, /ERR_TREECAST_USAGE/);
  }
  assert.deepEqual(refs(), [`b ${one}`, `releases/v1 ${one}`], 'no refused command changed a ref');

  const text = tc(['refs', '--rename', 'b', 'c'], store);
  assert.equal(text.code, 0, text.err);
  assert.equal(text.out, `renamed b to c (${one})\n`);
  assert.deepEqual(outsideStore(dir), before, 'nothing outside the store touched');
});

test('refs --rename is refused (exit 9, nothing changed) while gc runs; refs --delete is not', () => {
  const { store, one, two, refs } = setUp();
  const gc = lockStoreForGc(store);
  try {
    const r = tc(['refs', '--rename', 'a', 'c'], store);
    assert.equal(r.code, 9, r.err);
    assert.match(r.err, /ERR_TREECAST_TARGET_BUSY/);
    assert.ok(r.err.includes('gc'), r.err);
    assert.deepEqual(refs(), [`a ${one}`, `b ${two}`, `team/x ${one}`], 'nothing renamed');
    // A delete needs no lock: gc keeps, for its run, what it listed; a ref it did not list was gone already.
    assert.equal(tc(['refs', '--delete', 'b'], store).code, 0);
  } finally {
    gc.release();
  }
  assert.equal(tc(['refs', '--rename', 'a', 'c'], store).code, 0);
  assert.deepEqual(refs(), [`c ${one}`, `team/x ${one}`]);
});

test('a rename never leaves a moment with neither name (watched from another thread while renaming back and forth)', async () => {
  const dir = tempDir();
  const local = LocalStore.open(join(dir, 's'));
  local.writeRef('p/one', digestOf(Buffer.from('x')));
  local.writeRef('p/keep', digestOf(Buffer.from('x'))); // the folder is never left empty
  const folder = join(local.root, 'refs', 'p');
  const flag = new Int32Array(new SharedArrayBuffer(8));
  // The watcher lists the folder (one getdents of a small folder: a consistent view against a
  // rename in it) and counts the listings holding neither name, until the flag says stop.
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads'); const fs = require('node:fs');
     const flag = workerData.flag; let looks = 0, neither = 0;
     Atomics.store(flag, 1, 1);
     while (Atomics.load(flag, 0) === 0) {
       looks++;
       let names = [];
       try { names = fs.readdirSync(workerData.folder); } catch {}
       if (!names.includes('one') && !names.includes('two')) neither++;
     }
     parentPort.postMessage({ looks, neither });`,
    { eval: true, workerData: { folder, flag } },
  );
  const done = new Promise<{ looks: number; neither: number }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  while (Atomics.load(flag, 1) === 0) await new Promise((r) => setTimeout(r, 5));
  for (let i = 0; i < 800; i++) {
    local.renameRef('p/one', 'p/two', i % 2 === 1);
    local.renameRef('p/two', 'p/one', i % 2 === 0);
  }
  Atomics.store(flag, 0, 1);
  const seen = await done;
  await worker.terminate();
  assert.ok(seen.looks > 100, `the watcher looked ${seen.looks} times`);
  assert.equal(seen.neither, 0, `neither name was there in ${seen.neither} listings of ${seen.looks}`);
  assert.ok(local.readRef('p/one'));
});
