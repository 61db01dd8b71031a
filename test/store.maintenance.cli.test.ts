/** `gc` and `verify` through the CLI, on a real store. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { digestOf, formatDigest } from '../src/core/digest.js';
import { LocalStore } from '../src/store/local.js';
import { describeTree, tempDir, writeTree } from './helpers/tmp.js';

const bin = new URL('../../bin/treecast', import.meta.url).pathname;

function tc(args: string[], store: string, input?: string) {
  const r = spawnSync(process.execPath, [bin, ...args], { env: { ...process.env, TREECAST_STORE: store }, input, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('gc keeps the blobs of a live checkout whose ref is gone, and removes them once the checkout directory is gone', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  const files = { 'a': 'alpha content', 'd/b': 'beta content', 'd/e/c': 'gamma content' };
  writeTree(join(dir, 'src'), files);
  const snap = tc(['snapshot', join(dir, 'src'), '--ref', 'tmp'], store);
  assert.equal(snap.code, 0, snap.err);
  const out = join(dir, 'out');
  assert.equal(tc(['checkout', 'tmp', out], store).code, 0);
  fs.rmSync(join(store, 'refs', 'tmp'));
  const orphan = tc(['blob', 'put', '-'], store, 'nobody reaches me').out.trim();
  const blobs = Object.values(files).map((t) => digestOf(Buffer.from(t)));
  const local = new LocalStore(store);

  const first = tc(['gc', '--grace', '0', '--json'], store);
  assert.equal(first.code, 0, first.err);
  assert.deepEqual(JSON.parse(first.out).removed, [orphan.split('/')[0]], 'only the orphan goes');
  for (const b of blobs) assert.ok(local.hasSync(b), `${formatDigest(b)} is kept for the live checkout`);
  // The kept tree still checks out in full.
  assert.equal(tc(['checkout', snap.out.trim().split('\n').pop()!, join(dir, 'again')], store).code, 0);
  assert.deepEqual(describeTree(join(dir, 'again')), describeTree(join(dir, 'src')));

  fs.rmSync(out, { recursive: true });
  fs.rmSync(join(dir, 'again'), { recursive: true });
  const second = tc(['gc', '--grace', '0', '--json'], store);
  assert.equal(second.code, 0, second.err);
  for (const b of blobs) assert.ok(!local.hasSync(b), `${formatDigest(b)} is removed once no checkout holds it`);
  assert.ok(JSON.parse(second.out).removed.length >= blobs.length);
});

test('verify finds a corrupt blob (exit 5); verify --repair removes it (exit 0); putting the bytes back makes the store whole', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { 'good': 'good bytes', 'bad': 'bytes to be corrupted' });
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'r'], store).code, 0);
  const bad = digestOf(Buffer.from('bytes to be corrupted'));
  const local = new LocalStore(store);
  fs.chmodSync(local.blobPath(bad.hash), 0o644);
  fs.writeFileSync(local.blobPath(bad.hash), 'BYTES TO BE CORRUPTED');

  const found = tc(['verify'], store);
  assert.equal(found.code, 5, found.err);
  assert.match(found.out, new RegExp(`^corrupt ${bad.hash} `, 'm'));
  assert.ok(local.hasSync(bad) || fs.existsSync(local.blobPath(bad.hash)), 'verify alone changes nothing');

  const repaired = tc(['verify', '--repair', '--json'], store);
  assert.equal(repaired.code, 0, repaired.err);
  const r = JSON.parse(repaired.out);
  assert.deepEqual(r.corrupt.map((c: { hash: string }) => c.hash), [bad.hash]);
  assert.equal(r.repaired, true);
  assert.equal(fs.existsSync(local.blobPath(bad.hash)), false, 'the corrupt blob is gone');
  assert.equal(tc(['blob', 'get', formatDigest(bad)], store).code, 3);
  assert.equal(tc(['verify'], store).code, 0);

  fs.writeFileSync(join(dir, 'restore'), 'bytes to be corrupted');
  assert.equal(tc(['blob', 'put', join(dir, 'restore')], store).out.trim(), formatDigest(bad));
  assert.equal(tc(['checkout', 'r', join(dir, 'out')], store).code, 0);
  assert.deepEqual(describeTree(join(dir, 'out')), describeTree(join(dir, 'src')));
});
