/** `gc` and `verify` through the CLI, on a real store. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { spawnSync } from 'node:child_process';
import { digestOf, formatDigest, parseDigest } from '../src/core/digest.js';
import { guardTarget, lockStoreForGc } from '../src/fs/target-guard.js';
import { LocalStore } from '../src/store/local.js';
import { snapshot } from '../src/capture/snapshot.js';
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

test('gc keeps the tree a checkout is still reading (named in its lock), with no ref and no record, and removes it once the checkout ends', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  const files = { 'a': 'tree being checked out', 'd/b': 'its second file' };
  writeTree(join(dir, 'src'), files);
  const snap = tc(['snapshot', join(dir, 'src')], store);
  assert.equal(snap.code, 0, snap.err);
  const root = snap.out.trim().split('\n').pop()!;
  const blobs = Object.values(files).map((t) => digestOf(Buffer.from(t)));
  const local = new LocalStore(store);
  // This process stands for a checkout that has taken its lock and is reading the tree.
  const running = guardTarget(join(dir, 'out'), store, 'checkout', root);
  try {
    const during = tc(['gc', '--grace', '0', '--json'], store);
    assert.equal(during.code, 0, during.err);
    for (const b of blobs) assert.ok(local.hasSync(b), `${formatDigest(b)} is kept while the checkout runs`);
    assert.ok(local.hasSync(parseDigest(root)), 'the root Directory is kept');
  } finally {
    running.release();
  }
  const after = tc(['gc', '--grace', '0', '--json'], store);
  assert.equal(after.code, 0, after.err);
  for (const b of blobs) assert.ok(!local.hasSync(b), `${formatDigest(b)} is removed once the checkout is gone`);
});

test('a checkout while gc runs refuses to start (exit 9, naming gc and its pid) and leaves the target as it was; after gc it completes', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { 'f': 'content' });
  const snap = tc(['snapshot', join(dir, 'src'), '--ref', 'r'], store);
  assert.equal(snap.code, 0, snap.err);
  const out = join(dir, 'out');
  // This process stands for a gc between reading the locks and removing blobs.
  const gc = lockStoreForGc(store);
  try {
    const refused = tc(['checkout', 'r', out], store);
    assert.equal(refused.code, 9, refused.err);
    assert.match(refused.err, new RegExp(`being collected by treecast gc \\(pid ${process.pid}\\)`));
    assert.ok(!fs.existsSync(out), 'the target was not created');
    assert.equal(tc(['gc', '--json'], store).code, 9, 'a second gc is refused too');
  } finally {
    gc.release();
  }
  assert.equal(tc(['checkout', 'r', out], store).code, 0);
  assert.deepEqual(describeTree(out), describeTree(join(dir, 'src')));
  assert.deepEqual(fs.readdirSync(join(store, 'locks')), [], 'no lock is left');
});

test('gc while a snapshot runs is refused (exit 9, naming it) and removes nothing, so the ref the snapshot writes names only stored blobs', async () => {
  const dir = tempDir();
  const store = join(dir, 's');
  const files = { 'a': 'alpha content', 'd/b': 'beta content' };
  writeTree(join(dir, 'src'), files);
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'old'], store).code, 0);
  // The ref is dropped: its blobs are unreachable, but the stat cache still vouches for them.
  fs.rmSync(join(store, 'refs', 'old'));
  const local = new LocalStore(store);
  // The snapshot has loaded its stat cache (synchronously, before its first await) when gc runs.
  const running = snapshot(join(dir, 'src'), { store: local, ref: 'new' });
  const gc = tc(['gc', '--grace', '0'], store);
  const { digest } = await running;
  assert.equal(gc.code, 9, gc.err);
  assert.match(gc.err, new RegExp(`in use by treecast snapshot \\(pid ${process.pid}\\); gc removed nothing`));
  for (const t of Object.values(files)) assert.ok(local.hasSync(digestOf(Buffer.from(t))), `the blob of '${t}' is still stored`);
  const out = tc(['checkout', 'new', join(dir, 'out')], store);
  assert.equal(out.code, 0, out.err);
  assert.deepEqual(describeTree(join(dir, 'out')), describeTree(join(dir, 'src')));
  assert.equal(formatDigest(local.readRef('new')!), formatDigest(digest));
  assert.deepEqual(fs.readdirSync(join(store, 'locks')), [], 'no lock is left');
});

test('a snapshot, import, pull or push while gc runs refuses to start (exit 9) and records nothing; gc clears a lock a killed snapshot left', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { 'f': 'content' });
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'r'], store).code, 0);
  const gc = lockStoreForGc(store);
  try {
    const refused = tc(['snapshot', join(dir, 'src'), '--ref', 'r2'], store);
    assert.equal(refused.code, 9, refused.err);
    assert.match(refused.err, new RegExp(`being collected by treecast gc \\(pid ${process.pid}\\); nothing was recorded`));
    assert.ok(!fs.existsSync(join(store, 'refs', 'r2')));
    // import and pull keep stored blobs the same way, and are refused the same way (pull before any request).
    assert.equal(tc(['pack', 'r', join(dir, 'a.zip')], store).code, 0);
    // push reads blobs no ref may reach (a digest, a directory it snapshots) while they upload.
    for (const args of [['import', join(dir, 'a.zip'), '--ref', 'r3'], ['pull', 'r', 'http://127.0.0.1:9', '--ref', 'r3'], ['push', 'r', 'http://127.0.0.1:9'], ['push', join(dir, 'src'), 'http://127.0.0.1:9']]) {
      const r = tc(args, store);
      assert.equal(r.code, 9, `${args[0]}: ${r.err}`);
      assert.match(r.err, /being collected by treecast gc/);
    }
    assert.ok(!fs.existsSync(join(store, 'refs', 'r3')));
  } finally {
    gc.release();
  }
  // A pull or import that fails gives its lock back too.
  fs.writeFileSync(join(dir, 'not.zip'), 'not an archive');
  assert.equal(tc(['import', join(dir, 'not.zip')], store).code, 6);
  assert.equal(tc(['pull', '0'.repeat(64) + '/5', 'http://127.0.0.1:9', '--retries', '0'], store).code, 8);
  assert.equal(tc(['push', 'r', 'http://127.0.0.1:9', '--retries', '0'], store).code, 8);
  assert.deepEqual(fs.readdirSync(join(store, 'locks')), []);
  // A snapshot killed with its lock held: the pid is gone, so gc runs and removes the lock.
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
  fs.writeFileSync(join(store, 'locks', `writer-${dead}-0.lock`), JSON.stringify({ pid: Number(dead), host: hostname(), command: 'snapshot', target: store, token: 't' }));
  // A live writer of another store (the private fallback folder holds every unwritable store's locks) does not hold this one.
  const other = join(store, 'locks', `writer-${process.pid}-1.lock`);
  fs.writeFileSync(other, JSON.stringify({ pid: process.pid, host: hostname(), command: 'pull', target: join(dir, 'another-store'), token: 't' }));
  const after = tc(['gc', '--grace', '0'], store);
  assert.equal(after.code, 0, after.err);
  fs.rmSync(other);
  assert.deepEqual(fs.readdirSync(join(store, 'locks')), []);
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'r2'], store).code, 0);
});

test('a ref file that holds no digest is named (ref and file) by refs, gc and a command resolving it, and gc removes nothing', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { a: 'alpha content' });
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'good'], store).code, 0);
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'team/bad'], store).code, 0);
  const file = join(store, 'refs', 'team', 'bad');
  fs.writeFileSync(file, 'garbage\n');
  const blobs = () => fs.readdirSync(join(store, 'cas'), { recursive: true }).length;
  const before = blobs();
  for (const args of [['refs'], ['gc', '--grace', '0'], ['ls', 'team/bad']]) {
    const r = tc(args, store);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, /ERR_TREECAST_INVALID_DIGEST/);
    assert.ok(r.err.includes(`ref 'team/bad' (${file}) holds no digest`), `${args.join(' ')} names the ref and its file: ${r.err}`);
  }
  assert.equal(blobs(), before, 'gc removed nothing');
});

test('a symlink planted at a blob name is reported by verify, never followed; --repair removes only the link; checkout and gc do not follow it', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  const text = 'planted blob bytes';
  writeTree(join(dir, 'src'), { a: text, b: 'other bytes' });
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'r'], store).code, 0);
  const d = digestOf(Buffer.from(text));
  const local = new LocalStore(store);
  // The target outside the store holds the very bytes (so a re-hash through the link would pass).
  const outside = join(dir, 'outside-file');
  fs.writeFileSync(outside, text);
  fs.rmSync(local.blobPath(d.hash));
  fs.symlinkSync(outside, local.blobPath(d.hash));

  const found = tc(['verify'], store);
  assert.equal(found.code, 5, found.err);
  assert.ok(found.out.includes(`damaged ${local.blobPath(d.hash)} (a symbolic link (not followed))`), found.out);

  for (const method of ['copy', 'hardlink', 'clone']) {
    const out = join(dir, `out-${method}`);
    const r = tc(['checkout', 'r', out, '--method', method], store);
    assert.equal(r.code, 5, `${method}: ${r.err}`);
    assert.match(r.err, /ERR_TREECAST_STORE_DAMAGED/);
    assert.ok(r.err.includes(local.blobPath(d.hash)), r.err);
    assert.equal(fs.lstatSync(join(out, 'a'), { throwIfNoEntry: false })?.isSymbolicLink() ?? false, false, `${method}: no link in the checkout`);
  }

  const repaired = tc(['verify', '--repair', '--json'], store);
  assert.equal(repaired.code, 0, repaired.err);
  assert.deepEqual(JSON.parse(repaired.out).corrupt.map((c: { path: string }) => c.path), [local.blobPath(d.hash)]);
  assert.equal(fs.lstatSync(local.blobPath(d.hash), { throwIfNoEntry: false }), undefined, 'the planted link is gone');
  assert.equal(fs.readFileSync(outside, 'utf8'), text, 'its target is untouched');
  assert.equal(tc(['verify'], store).code, 0);
});

test('a shard folder replaced by a symlink: verify reports it, gc removes nothing through it, --repair removes only the link', () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { a: 'kept content' });
  assert.equal(tc(['snapshot', join(dir, 'src'), '--ref', 'r'], store).code, 0);
  const local = new LocalStore(store);
  // A folder outside the store holding files named like blobs, and old enough for gc's grace.
  const victim = join(dir, 'victim');
  const name = 'ff'.padEnd(64, '0');
  writeTree(victim, { [name]: 'user data', [`.tmp-1-0-1`]: 'user data too' });
  for (const f of fs.readdirSync(victim)) fs.utimesSync(join(victim, f), new Date(0), new Date(0));
  fs.rmSync(join(store, 'cas', 'ff'), { recursive: true, force: true });
  fs.symlinkSync(victim, join(store, 'cas', 'ff'));
  fs.mkdirSync(join(store, 'cas-exec'), { recursive: true });
  fs.rmSync(join(store, 'cas-exec', 'ff'), { recursive: true, force: true });
  fs.symlinkSync(victim, join(store, 'cas-exec', 'ff'));

  const gc = tc(['gc', '--grace', '0'], store);
  assert.equal(gc.code, 0, gc.err);
  assert.deepEqual(fs.readdirSync(victim).sort(), [`.tmp-1-0-1`, name].sort(), 'gc removed nothing through the link');
  const blob = tc(['blob', 'get', `${name}/9`], store);
  assert.equal(blob.code, 5, blob.err);
  assert.ok(blob.err.includes(join(store, 'cas', 'ff')), blob.err);

  const found = tc(['verify'], store);
  assert.equal(found.code, 5, found.err);
  assert.ok(found.out.includes(`damaged ${join(store, 'cas', 'ff')} (a symbolic link (not followed))`), found.out);
  const repaired = tc(['verify', '--repair'], store);
  assert.equal(repaired.code, 0, repaired.err);
  assert.equal(fs.lstatSync(join(store, 'cas', 'ff'), { throwIfNoEntry: false }), undefined);
  assert.equal(fs.lstatSync(join(store, 'cas-exec', 'ff'), { throwIfNoEntry: false }), undefined);
  assert.deepEqual(fs.readdirSync(victim).sort(), [`.tmp-1-0-1`, name].sort(), 'verify --repair removed nothing through the link');
  assert.equal(tc(['verify'], store).code, 0);
  assert.equal(tc(['checkout', 'r', join(dir, 'out')], store).code, 0);
});

test("gc removes nothing through a symlink planted as the store's tmp/, trees/ or cas-exec/ folder", () => {
  const dir = tempDir();
  const store = join(dir, 's');
  writeTree(join(dir, 'src'), { a: 'kept content', x: { text: '#!/bin/sh\n', exec: true } });
  assert.equal(tc(['snapshot', join(dir, 'src')], store).code, 0); // no ref: gc may remove every blob
  assert.equal(tc(['checkout', tc(['snapshot', join(dir, 'src')], store).out.trim().split('\n').pop()!, join(dir, 'co'), '--method', 'hardlink'], store).code, 0);
  fs.rmSync(join(dir, 'co'), { recursive: true, force: true });
  const victims: string[] = [];
  for (const sub of ['tmp', 'trees', 'cas-exec']) {
    const victim = join(dir, `victim-${sub}`);
    fs.mkdirSync(victim);
    // Old enough for the grace period, named like what gc removes there (any name in tmp/ and trees/).
    const name = sub === 'cas-exec' ? '' : 'user-file';
    if (name) fs.writeFileSync(join(victim, name), 'user data');
    if (sub === 'cas-exec') {
      // The user's folder mirrors the twin layout (a shard and a file named as the executable's blob).
      for (const s of fs.readdirSync(join(store, 'cas-exec'))) {
        fs.mkdirSync(join(victim, s));
        for (const f of fs.readdirSync(join(store, 'cas-exec', s))) fs.writeFileSync(join(victim, s, f), 'user data');
      }
    }
    for (const f of fs.readdirSync(victim, { recursive: true }) as string[]) fs.utimesSync(join(victim, f), new Date(0), new Date(0));
    fs.rmSync(join(store, sub), { recursive: true, force: true });
    fs.symlinkSync(victim, join(store, sub));
    victims.push(victim);
  }
  const before = victims.map((v) => fs.readdirSync(v, { recursive: true }).sort());
  assert.ok(before[2]!.length > 0, 'the executable twin was made (hardlink checkout)');
  const gc = tc(['gc', '--grace', '0'], store);
  assert.equal(gc.code, 0, gc.err);
  assert.deepEqual(victims.map((v) => fs.readdirSync(v, { recursive: true }).sort()), before, 'nothing removed through the links');
});

test('a folder of the user chosen as the store is refused; in a store, gc removes from tmp/ and trees/ only what treecast names there', () => {
  const dir = tempDir();
  const store = join(dir, 'project');
  writeTree(store, { 'tmp/draft.txt': 'user notes', 'trees/oak.txt': 'user data', 'notes': 'user notes' });
  writeTree(join(dir, 'src'), { a: 'some content' });
  const refused = tc(['snapshot', join(dir, 'src')], store);
  assert.equal(refused.code, 7, refused.err);
  assert.match(refused.err, /ERR_TREECAST_NOT_A_STORE/);
  assert.deepEqual(fs.readdirSync(store).sort(), ['notes', 'tmp', 'trees'], 'no store folder written into it');
  // The same files put into a store's own folders later: gc still leaves them.
  fs.renameSync(store, join(dir, 'mine'));
  const snap = tc(['snapshot', join(dir, 'src')], store); // no ref: gc may remove what it made
  assert.equal(snap.code, 0, snap.err);
  for (const f of ['tmp/draft.txt', 'trees/oak.txt']) {
    fs.renameSync(join(dir, 'mine', f), join(store, f));
    fs.utimesSync(join(store, f), new Date(0), new Date(0));
  }
  const root = snap.out.trim().split('\n').pop()!.split('/')[0]!;
  assert.ok(fs.existsSync(join(store, 'trees', root)), 'the snapshot wrote its tree pack');
  // A write a killed process left, named as the store names them.
  const left = join(store, 'tmp', `w-${process.pid}-0-1`);
  fs.writeFileSync(left, 'half');
  fs.utimesSync(left, new Date(0), new Date(0));
  const gc = tc(['gc', '--grace', '0'], store);
  assert.equal(gc.code, 0, gc.err);
  assert.equal(fs.readFileSync(join(store, 'tmp', 'draft.txt'), 'utf8'), 'user notes');
  assert.equal(fs.readFileSync(join(store, 'trees', 'oak.txt'), 'utf8'), 'user data');
  assert.ok(!fs.existsSync(left), 'an abandoned temp file is still swept');
  assert.ok(!fs.existsSync(join(store, 'trees', root)), 'an unreachable tree pack still goes');
});
