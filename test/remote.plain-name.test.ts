/**
 * `checkout NAME --remote` from a plain Bazel cache (nginx WebDAV): into an empty or new target the
 * files are written as their blobs arrive, and a blob the cache lacks undoes the checkout. These
 * tests hold the guarantees that makes: a name missing a blob is a miss (exit 3) that leaves the
 * target exactly as it was, nothing a user owns is removed, and no unverified byte is written.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { LocalStore } from '../src/store/local.js';
import { type Nginx, findNginx, startNginx } from './helpers/remote-nginx.js';
import { type RunResult, describeTree, json, makeTree, removeDir, runCli, startCli, tempDir, waitExit } from './helpers/remote.js';

const nginxBin = findNginx();
const base = tempDir('plain-name');
const src = join(base, 'src');
const other = join(base, 'other');
let nginx: Nginx;
let n = 0;
const freshStore = (): string => join(base, `store-${n++}`);
const freshDir = (): string => join(base, `out-${n++}`);

/** 60 directories of 30 files: several batches of writes come back before the last file's blob is asked for. */
const LAST_FILE = 'd0059/f28.txt';
let victim = '';

before(async () => {
  makeTree(src, 60, 30);
  makeTree(other, 3, 2);
  fs.writeFileSync(join(other, 'marker'), 'the other tree\n');
  victim = createHash('sha256').update(fs.readFileSync(join(src, LAST_FILE))).digest('hex');
  if (!nginxBin) return;
  nginx = await startNginx(nginxBin, join(base, 'nginx'));
  for (const [dir, name] of [
    [src, 'broken'],
    [other, 'good'],
  ] as const) {
    const r = await runCli(['push', dir, nginx.url, '--ref', name, '--store', freshStore(), '--json']);
    assert.equal(r.code, 0, r.stderr);
  }
  // The last file's blob is evicted: `broken` names a blob the cache no longer holds.
  fs.rmSync(join(nginx.root, 'cas', victim));
});
after(async () => {
  await nginx?.stop();
  removeDir(base);
});

/** Blob GETs nginx answered since the log was emptied. */
function blobGets(): number {
  return fs
    .readFileSync(nginx.accessLog, 'utf8')
    .split('\n')
    .filter((l) => l.includes('"GET /cas/')).length;
}

function missed(r: RunResult, reason = 'incomplete'): void {
  assert.equal(r.code, 3, r.stderr);
  const tried = (json(r).error as { tried: { name: string; reason: string }[] }).tried;
  assert.deepEqual(tried.map((t) => t.reason), [reason]);
}

describe('checkout NAME from a plain cache (nginx), written as blobs arrive', { skip: nginxBin ? false : 'nginx is not installed (apt-get install nginx-light)' }, () => {
  test('a miss after files were written removes them, the new target and the parents it made (exit 3)', async () => {
    const parent = freshDir();
    const out = join(parent, 'a', 'target');
    fs.writeFileSync(nginx.accessLog, '');
    const r = await runCli(['checkout', 'broken', out, '--remote', nginx.url, '--store', freshStore(), '--json']);
    missed(r);
    // Hundreds of blobs came (and their files were written) before the missing one was asked for.
    assert.ok(blobGets() > 300, `${blobGets()} blob GETs before the miss`);
    assert.ok(!fs.existsSync(parent), 'the target and the parents the checkout made are gone');
  });

  test('an existing empty target is left empty; the fallback name then hits', async () => {
    const out = freshDir();
    fs.mkdirSync(out);
    missed(await runCli(['checkout', 'broken', out, '--remote', nginx.url, '--store', freshStore(), '--json']));
    assert.deepEqual(fs.readdirSync(out), []);
    const r = await runCli(['checkout', 'broken', out, '--remote', nginx.url, '--fallback', 'good', '--store', freshStore(), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const hit = json(r).remoteRef as { name: string; fallback: boolean; missed: { name: string; reason: string }[] };
    assert.equal(hit.name, 'good');
    assert.equal(hit.fallback, true);
    assert.deepEqual(hit.missed.map((m) => [m.name, m.reason]), [['broken', 'incomplete']]);
    assert.deepEqual(describeTree(out), describeTree(other));
  });

  test('what a user puts into the target while the checkout runs survives the undo, with its directory', async () => {
    const out = freshDir();
    const pause = join(base, `pause-${n++}`);
    const child = startCli(['checkout', 'broken', out, '--remote', nginx.url, '--store', freshStore(), '--json'], { TREECAST_TEST_PAUSE_FILE: pause });
    const until = Date.now() + 20_000;
    while (!fs.existsSync(pause)) {
      assert.ok(Date.now() < until && child.exitCode === null, `the checkout did not pause: ${child.out.stderr}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    // The checkout made d0000 and wrote files; the user adds one there and one at the top.
    assert.ok(fs.existsSync(join(out, 'd0000')));
    fs.writeFileSync(join(out, 'd0000', 'mine.txt'), 'mine\n');
    fs.writeFileSync(join(out, 'notes.txt'), 'notes\n');
    fs.rmSync(pause);
    missed(await waitExit(child));
    assert.deepEqual(fs.readdirSync(out).sort(), ['d0000', 'notes.txt']);
    assert.deepEqual(fs.readdirSync(join(out, 'd0000')), ['mine.txt']);
    assert.equal(fs.readFileSync(join(out, 'd0000', 'mine.txt'), 'utf8'), 'mine\n');
    assert.equal(fs.readFileSync(join(out, 'notes.txt'), 'utf8'), 'notes\n');
  });

  test('into a target holding files, every blob is fetched before anything is written: a miss touches nothing', async () => {
    const out = freshDir();
    fs.mkdirSync(join(out, 'd0000'), { recursive: true });
    fs.writeFileSync(join(out, 'keep.txt'), 'keep\n');
    fs.writeFileSync(join(out, 'd0000', 'f1.txt'), 'a local version\n');
    const before = describeTree(out);
    missed(await runCli(['checkout', 'broken', out, '--remote', nginx.url, '--force', '--store', freshStore(), '--json']));
    assert.deepEqual(describeTree(out), before);
  });

  test('a blob answered with wrong bytes is refused: its file is never written, nor the blob stored', async () => {
    const d = join(nginx.root, 'cas', createHash('sha256').update(fs.readFileSync(join(other, 'marker'))).digest('hex'));
    const good = fs.readFileSync(d);
    fs.writeFileSync(d, Buffer.from(good.toString().toUpperCase()));
    try {
      const out = freshDir();
      const store = freshStore();
      const r = await runCli(['checkout', 'good', out, '--remote', nginx.url, '--store', store, '--json']);
      assert.notEqual(r.code, 0, r.stdout);
      assert.match(String((json(r).error as { code: string }).code), /DIGEST_MISMATCH/);
      assert.ok(!fs.existsSync(join(out, 'marker')), 'no file from unverified bytes');
      const hash = createHash('sha256').update(good).digest('hex');
      assert.ok(!new LocalStore(store).hasSync({ hash, size: good.length }), 'the bad blob is not stored');
    } finally {
      fs.writeFileSync(d, good);
    }
  });
});
